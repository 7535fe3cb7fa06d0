"""Personalization: fit task-vector coefficients c[g, t] to one person's ratings, choosing by cross-validation.

Personalization is a function of the *set* of ratings: rows are put in a canonical order (image content hash, then
score) and an image rated twice is averaged, before any split or minibatch.

Simple and learned answers compete on the same deterministic K folds of the rated images (never any other image):
the best single task model, the softmax(SROCC) mix, the output ensemble's weights used as coefficients, the uniform
mix, learned coefficients (their step count chosen inside the folds) and, given unlabeled photos, coefficients
distilled from the output ensemble on them. The candidate that cross-validates best wins, unless one earlier in that
list is within one standard error of it; the winner is then refitted on all the ratings. The user's estimate of how
well the model ranks their photos is the accuracy of this whole procedure, selection included
(`model_selection.procedure_estimate`), with a 90 % interval (`model_selection.interval`).

Everything shares one encoding: the frozen prefix of the encoder (blocks no task vector touches) runs once per image,
each task model scores the rated images once (`[T, N]`), and every optimisation step runs only the rest of the
network with merged parameters: `Personalizer` extends `optimisation.Optimiser`, which runs it. The pure parts of the
selection are in `model_selection`, the inputs in `inputs`, the report in `report`; `Personalizer` composes them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import InputError
from ..task_vectors.coefficients import Coefficients
from .config import LEARNED_CANDIDATES, OUTPUTS, SIMPLE_CANDIDATES, PersonalizerConfig
from .inputs import (
    Encoded,
    EncodedPreferences,
    EncodedRatings,
    Unlabeled,
    as_preferences,
    as_ratings,
    canonical,
    canonical_preferences,
    image_key,
    is_preferences,
    unlabeled_images,
)
from .model_selection import (
    Scores,
    best_step,
    candidate_names,
    choose,
    criterion_values,
    ensemble_teacher,
    evaluation_steps,
    fit_output_ensemble,
    simple_candidate,
    stratified_folds,
)
from .optimisation import Optimiser
from .output_ensemble import OutputEnsemble, scoring_cost
from .report import PersonalizationReport, PersonalizationResult, fit_calibration

if TYPE_CHECKING:
    from ..modeling import AestheticModel
    from ..task_vectors.bank import TaskVectorBank

__all__ = ["Personalizer"]

logger = logging.getLogger(__name__)


class Personalizer(Optimiser):
    """Fits coefficients of a bank's task vectors to one user's ratings.

    Args:
        model: the base model the bank was built on (checked by fingerprint).
        bank: the task-vector bank.
        config: a `PersonalizerConfig` (default: our recipe).

    Example:
    ```python
    >>> result = Personalizer(model, bank).fit(ratings)     # a Dataset with `image` and `score`
    >>> print(result.report.estimate)
    expected SROCC on your photos: 0.51 (90% interval 0.20 to 0.72), 5-fold CV on 30 ratings, selection included (...)
    ```
    """

    def __init__(self, model: AestheticModel, bank: TaskVectorBank, config: PersonalizerConfig | None = None) -> None:
        config = config or PersonalizerConfig()
        bank.check_base(model)
        if len(bank) == 0:
            raise InputError("the bank has no tasks")
        super().__init__(model, bank, config)
        #: What scoring as the output ensemble would cost, relative to one model's encoder blocks per image
        #: (`scoring_cost`): with the default candidates it competes when at most `config.max_scoring_cost`.
        cost = scoring_cost(len(bank), model.adapter.num_blocks, self.prefix_blocks)
        self.ensemble_cost = float(cost["relative_to_one_model"])

    def encode_ratings(self, data: Any) -> EncodedRatings:
        """Validate a user's ratings (Dataset, (image, score) pairs, ratings file), put them in canonical order
        (duplicate images averaged) and encode their images."""
        ratings = canonical(as_ratings(data))
        return EncodedRatings(
            self.encode(ratings.images),
            torch.tensor(ratings.scores, dtype=torch.float64),
            [image_key(image) for image in ratings.images],
            ratings.duplicates,
        )

    def encode_preferences(self, data: Any) -> EncodedPreferences:
        """Validate a user's pairwise preferences (Dataset with `image_a`, `image_b`, `preferred`; triples; a
        preferences CSV), put them in canonical form (repeated pairs averaged) and encode each distinct image once."""
        preferences = canonical_preferences(as_preferences(data))
        pairs = torch.tensor([(a, b) for a, b, _ in preferences.pairs], dtype=torch.long).view(-1, 2)
        return EncodedPreferences(
            self.encode(preferences.images),
            pairs,
            torch.tensor([p for _, _, p in preferences.pairs], dtype=torch.float64),
            [image_key(image) for image in preferences.images],
            preferences.duplicates,
        )

    def encode_input(self, data: Any) -> Encoded:
        """`encode_preferences` for pairwise preferences (see `inputs.is_preferences`), else `encode_ratings`."""
        return self.encode_preferences(data) if is_preferences(data) else self.encode_ratings(data)

    def initial_coefficients(self, encoded: Encoded) -> tuple[Coefficients, dict[str, float]]:
        """The softmax(temperature x zero-shot SROCC) init (or the configured one) and each task model's SROCC
        (for preferences: 2 x pair accuracy - 1)."""
        scores = self._scores(encoded)
        everything = torch.arange(len(encoded))
        values = self._simple("init", scores, everything)
        zero_shot = dict(zip(self.bank.task_names, scores.correlation(everything).tolist()))
        return self.coefficients_from(values), zero_shot

    # -- the simple candidates: task weights from [T, N] numbers -------------------------------------------------
    def _simple(self, name: str, scores: Scores, index: torch.Tensor) -> torch.Tensor:
        """`[G, T]` coefficients of a candidate that learns nothing in the network, fitted on units ``index``."""
        if name == "init" and isinstance(self.config.init, Coefficients):
            self.layout_of(self.config.init.granularity).check(self.config.init, self.bank.task_names)
        return simple_candidate(name, self.config, self.bank.task_names, scores, index)

    def _start(
        self, granularity: str, encoded: Encoded, scores: Scores, index: torch.Tensor, start: str | None = None
    ) -> torch.Tensor:
        """Where learned coefficients of ``granularity`` start, `[G, T]`: the simple candidate ``start``, by default
        `_start_name`'s."""
        values = self._simple(start or self._start_name(encoded, scores, index), scores, index)
        if granularity == "distil":
            granularity = self.config.distil_granularity
        groups = self.layout_of(granularity).num_groups
        if values.shape[0] != groups:
            values = values.mean(dim=0, keepdim=True)
        return values.expand(groups, -1).clone()

    def _start_name(self, encoded: Encoded, scores: Scores, index: torch.Tensor) -> str:
        """The simple candidate learned coefficients start from on units ``index``: the configured `start`, or with
        ``"best"`` the one that cross-validates best on them (`_best_simple`), the softmax mix when `init` is given."""
        if isinstance(self.config.init, (Coefficients, Mapping)):
            return "init"
        return self._best_simple(encoded, scores, index) if self.config.start == "best" else self.config.start

    # -- selection -----------------------------------------------------------------------------------------------
    def _simple_out_of_fold(
        self, encoded: Encoded, scores: Scores, names: Sequence[str], folds: list[torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Out-of-fold unit predictions of the simple candidates ``names``: each fold's held-out units (indices into
        ``encoded``) are predicted by the candidate fitted on the other folds' units, on one scale for all folds
        (`held_out_scores`); units in no fold stay 0."""
        units = torch.cat(folds)
        out = {name: torch.zeros(len(encoded), dtype=torch.float64) for name in names}
        if "uniform" in names:  # fits nothing: one prediction serves every fold
            uniform = self.predict(self._simple("uniform", scores, units), encoded.prefix)
            out["uniform"][units] = encoded.held_out_scores(uniform, units)
            names = [name for name in names if name != "uniform"]
        assert scores.images is not None  # `Personalizer` always keeps the images' scores
        for held in folds:
            train = torch.from_numpy(np.setdiff1d(units.numpy(), held.numpy()))
            for name in names:
                if name == "single":  # the task model's own scores: no forward pass
                    image_scores = scores.images[1 + int(scores.correlation(train).argmax())]
                else:
                    image_scores = self.predict(self._simple(name, scores, train), encoded.prefix)
                out[name][held] = encoded.held_out_scores(image_scores, held)
        return out

    def _output_ensemble(
        self, encoded: Encoded, scores: Scores, index: torch.Tensor, pool: Unlabeled | None
    ) -> OutputEnsemble:
        """The output ensemble fitted on units ``index`` (`model_selection.fit_output_ensemble`)."""
        return fit_output_ensemble(encoded, scores, index, pool, self.config.temperature, self.bank.task_names)

    def _outputs_out_of_fold(
        self, encoded: Encoded, scores: Scores, folds: list[torch.Tensor], pool: Unlabeled | None
    ) -> torch.Tensor:
        """Out-of-fold unit predictions of the output ensemble (`"outputs"`): no network pass, the task models'
        scores are known. Each fold's held-out units are scored by the ensemble whose weights and standardization
        were fitted on the other folds' units (standardized over ``pool`` when given)."""
        units = torch.cat(folds)
        out = torch.zeros(len(encoded), dtype=torch.float64)
        assert scores.images is not None  # `_scores` always keeps the images' scores
        for held in folds:
            train = torch.from_numpy(np.setdiff1d(units.numpy(), held.numpy()))
            ensemble = self._output_ensemble(encoded, scores, train, pool)
            out[held] = encoded.held_out_scores(ensemble.combine(scores.images[1:]), held)
        return out

    def _best_simple(self, encoded: Encoded, scores: Scores, index: torch.Tensor) -> str:
        """The simple candidate that cross-validates best on units ``index`` alone (the softmax init when they are
        too few to fold): where `start="best"` starts learned coefficients, chosen without the held-out units."""
        folds = [index[fold] for fold in stratified_folds(scores.target[index], self.config.folds, self.config.seed)]
        if not folds:
            return "init"
        oof = self._simple_out_of_fold(encoded, scores, SIMPLE_CANDIDATES, folds)
        predictions = torch.stack([oof[name][index] for name in SIMPLE_CANDIDATES]).numpy()
        values = criterion_values(predictions, scores.target[index].numpy(), "rank_loss", scores.metric)
        return SIMPLE_CANDIDATES[int(np.argmax(values))]

    def _cross_validate(
        self, encoded: Encoded, scores: Scores, folds: list[torch.Tensor], pool: Unlabeled | None = None
    ) -> dict[str, tuple[torch.Tensor, int, torch.Tensor]]:
        """Out-of-fold unit predictions of every candidate on every unit (a rated image's score, a compared pair's
        score difference), the step count of learned ones, and `[S, U]` the predictions at every step count
        evaluated (one row for a simple candidate)."""
        n = len(encoded)
        names = candidate_names(self.config, pool, self.ensemble_cost)
        learned = [name for name in names if name in LEARNED_CANDIDATES]
        steps = {name: evaluation_steps(self.config.eval_every, self.config.steps_of(name)) for name in learned}
        simple = self._simple_out_of_fold(encoded, scores, [n for n in names if n not in (*learned, OUTPUTS)], folds)
        if OUTPUTS in names:
            simple[OUTPUTS] = self._outputs_out_of_fold(encoded, scores, folds, pool)
        curves = {name: torch.zeros(len(steps[name]), n, dtype=torch.float64) for name in learned}
        for f, held in enumerate(folds):
            train = torch.from_numpy(np.setdiff1d(np.arange(n), held.numpy()))
            first = self._start_name(encoded, scores, train) if learned else None  # one nested CV per fold
            for name in learned:
                self._describe(f"fold {f + 1}/{len(folds)}, {name}")
                start = self._start(name, encoded, scores, train, first)
                teacher = (
                    ensemble_teacher(encoded, scores, train, pool, self.config.temperature)
                    if name == "distil"
                    else None
                )
                watched = self._optimise(
                    start, encoded.subset(train), self.config.steps_of(name), encoded.prefix, teacher
                )[3]
                curves[name][:, held] = encoded.held_out_scores(torch.stack(watched), held)
        out = {name: (prediction, 0, prediction[None]) for name, prediction in simple.items()}
        for name, curve in curves.items():
            out[name] = (*best_step(curve, steps[name], scores), curve)
        return {name: out[name] for name in names}

    def _describe(self, what: str) -> None:
        if self._bar is not None:
            self._bar.set_description(f"Personalizing ({what})")

    # -- fitting -------------------------------------------------------------------------------------------------
    def fit_encoded(
        self,
        encoded: Encoded,
        unlabeled: torch.Tensor | None = None,
        unlabeled_scores: torch.Tensor | None = None,
    ) -> tuple[Coefficients, PersonalizationReport]:
        """Fit coefficients to encoded ratings or preferences (see `encode_input`); returns them and a report.

        Rows are put in canonical order first (by ``encoded.keys``, else by a hash of each prefix row), so the result
        does not depend on their order.

        Args:
            encoded: the ratings or preferences, encoded.
            unlabeled: `[M, ...]` encoded photos without ratings (`encode`) that the `distil` candidate distils the
                output ensemble on; by default the rated images. Photos the model will rank may be among them (the
                transductive setting): only their images are used, never a rating.
            unlabeled_scores: optionally `[T + 1, M]` `model_scores` of ``unlabeled``, computed once per pool.
        """
        began = time.perf_counter()
        pairs = isinstance(encoded, EncodedPreferences)
        if pairs and ("mse" in self.config.loss or self.config.calibrate):
            raise InputError(
                f"loss={self.config.loss!r} and calibrate={self.config.calibrate} need ratings on a scale; preferences "
                "are fitted with loss='pairwise' and calibrate=False"
            )
        encoded.check()
        encoded = encoded.canonical()
        encoded.check()
        scores = self._scores(encoded)
        pool = self._unlabeled(unlabeled, unlabeled_scores)
        everything = torch.arange(len(encoded))
        cfg = self.config
        folds = stratified_folds(scores.target, cfg.folds, cfg.seed) if cfg.selection == "cv" else []
        table: list[dict[str, Any]] = []
        estimate: tuple[float | None, float | None, tuple[float, float] | None, float | None] = (None,) * 4
        learned = (
            [name for name in candidate_names(self.config, pool, self.ensemble_cost) if name in LEARNED_CANDIDATES]
            if folds
            else []
        )
        total = sum(cfg.steps_of(name) for name in learned) * len(folds) + cfg.steps
        with tqdm(total=total, desc="Personalizing", unit="step", disable=not cfg.progress, leave=False) as bar:
            self._bar = bar
            try:
                if cfg.selection == "last":
                    chosen, steps = cfg.granularity, cfg.steps
                elif not folds:
                    logger.info(
                        "Too few ratings or pairs (%d) to cross-validate; keeping the softmax mix", len(encoded)
                    )
                    chosen, steps = "init", 0
                else:
                    predictions = self._cross_validate(encoded, scores, folds, pool)
                    chosen, table, value, value_se, bounds, selected = choose(
                        predictions, scores, cfg.criterion, cfg.tolerance, cfg.seed
                    )
                    estimate = (value, value_se, bounds, selected)
                    steps = predictions[chosen][1]
                bar.total = bar.n + (steps if chosen in LEARNED_CANDIDATES else 0)
                self._describe(f"refit {chosen}")
                ensemble = self._output_ensemble(encoded, scores, everything, pool) if chosen == OUTPUTS else None
                # The output ensemble has no coefficients: the softmax mix stands beside it as the one-pass reference.
                refit = chosen if ensemble is None else "init"
                coefficients, losses = self._fit_candidate(refit, steps, encoded, scores, pool)
            finally:
                self._bar = None
        calibration = None
        if cfg.calibrate and isinstance(encoded, EncodedRatings):  # preferences were refused above
            if ensemble is None:
                predicted = self.predict(coefficients, encoded.prefix)
            else:
                assert scores.images is not None  # `_scores` always keeps the images' scores
                predicted = ensemble.combine(scores.images[1:]).float()
            calibration = fit_calibration(predicted, encoded.ratings)
        initial = self.coefficients_from(self._simple("init", scores, everything))
        report = PersonalizationReport.of_fit(
            encoded,
            self.bank.task_names,
            scores.correlation(everything).tolist(),
            estimate,
            coefficients=coefficients,
            initial_coefficients=initial,
            loss_history=losses,
            chosen=chosen,
            chosen_step=steps if chosen in LEARNED_CANDIDATES else 0,
            wall_time=time.perf_counter() - began,
            gradient=self.gradient,
            cross_validation=table,
            folds=len(folds),
            criterion=cfg.criterion,
            duplicates=encoded.duplicates,
            calibration=calibration,
            config=cfg.to_dict(),
            unlabeled=0 if pool is None else int(pool.prefix.shape[0]),
            ensemble=ensemble,
        )
        return coefficients, report

    def _fit_candidate(
        self,
        name: str,
        steps: int,
        encoded: Encoded,
        scores: Scores | None = None,
        pool: Unlabeled | None = None,
    ) -> tuple[Coefficients, list[float]]:
        """Fit candidate ``name`` on all of (canonical) ``encoded``; learned ones for ``steps`` steps (the output
        ensemble is no coefficients: `_output_ensemble`)."""
        if name == OUTPUTS:
            raise InputError("the output ensemble ('outputs') is not a set of coefficients")
        scores = scores or self._scores(encoded)
        everything = torch.arange(len(encoded))
        if name not in LEARNED_CANDIDATES:
            return self.coefficients_from(self._simple(name, scores, everything)), []
        start = self._start(name, encoded, scores, everything, "init" if self.config.selection == "last" else None)
        if not steps:
            return self.coefficients_from(start), []
        teacher = (
            ensemble_teacher(encoded, scores, everything, pool, self.config.temperature) if name == "distil" else None
        )
        values, head, losses, _ = self._optimise(start, encoded, steps, teacher=teacher)
        return self.coefficients_from(values, head), losses

    def candidate_coefficients(
        self,
        encoded: Encoded,
        report: PersonalizationReport,
        unlabeled: torch.Tensor | None = None,
        unlabeled_scores: torch.Tensor | None = None,
    ) -> dict[str, Coefficients]:
        """Every cross-validated candidate of ``report`` refitted on all the ratings (the winner's is the fit's), with
        the unlabeled photos the fit had: for studying selection rules on test images."""
        encoded = encoded.canonical()
        scores = self._scores(encoded)
        pool = self._unlabeled(unlabeled, unlabeled_scores)
        return {
            row["candidate"]: self._fit_candidate(row["candidate"], row["steps"], encoded, scores, pool)[0]
            for row in report.cross_validation
            if row["candidate"] != OUTPUTS  # no coefficients: `candidate_ensemble`
        }

    def candidate_ensemble(
        self,
        encoded: Encoded,
        unlabeled: torch.Tensor | None = None,
        unlabeled_scores: torch.Tensor | None = None,
    ) -> OutputEnsemble:
        """The `"outputs"` candidate refitted on all the ratings, with the unlabeled photos the fit had."""
        encoded = encoded.canonical()
        scores = self._scores(encoded)
        pool = self._unlabeled(unlabeled, unlabeled_scores)
        return self._output_ensemble(encoded, scores, torch.arange(len(encoded)), pool)

    def fit(self, data: Any, unlabeled: Any = None) -> PersonalizationResult:
        """Fit to a user's ratings or pairwise preferences and return the personalized model with its report.

        Args:
            data: ratings: a `datasets.Dataset` with `image` and `score` columns, a list of (image, score) pairs, a
                pair `(images, scores)`, or the path of a ratings CSV / image folder (see `load_ratings`); or
                preferences: a `datasets.Dataset` with `image_a`, `image_b` and `preferred` (`"a"`, `"b"` or
                `"tie"`) columns, or a list of (image_a, image_b, preferred) triples.
            unlabeled: photos without ratings (a folder, or a list of images or paths), for example the person's
                own photos to be ranked: the `distil` candidate learns to reproduce the output ensemble on them.
        """
        photos = unlabeled_images(unlabeled)
        encoded_photos = self.encode(photos) if photos else None
        coefficients, report = self.fit_encoded(self.encode_input(data), encoded_photos)
        return PersonalizationResult(self.personalized_model(coefficients, report), report)

    def personalized_model(self, coefficients: Coefficients, report: PersonalizationReport) -> AestheticModel:
        """The personalized model of a fit (`fit_encoded`): the output ensemble where it won, else the base merged
        with the coefficients; the report's summary goes with it."""
        if report.ensemble is not None:
            return self.model.with_output_ensemble(self.bank, report.ensemble, info=report.summary())
        return self.model.with_coefficients(self.bank, coefficients, info=report.summary())
