"""The methods the few-shot protocol compares, run on one user's draw over images encoded once.

Ours (the default and the paper recipe), each single task model zero-shot, the best single model picked on the rated
images, the uniform average of the task vectors, the softmax(SROCC) init, fine-tuning the head of the best single model,
fine-tuning the base, and a learned weighted ensemble of the task models' outputs. Each sees only the rated images.
"""

from __future__ import annotations

import copy
import dataclasses
import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..evaluation.metrics import srocc
from ..losses import pairwise_rank_loss
from ..personalization.config import OUTPUTS
from ..personalization.inputs import EncodedRatings
from ..personalization.personalizer import Personalizer
from ..task_vectors.coefficients import Coefficients
from .config import METHOD_LABELS, METHODS

if TYPE_CHECKING:
    from .config import BenchmarkConfig

__all__ = ["METHODS", "METHOD_LABELS", "Methods"]


def _srocc(pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant prediction scores NaN, recorded as such
        return srocc(np.asarray(pred, dtype=np.float64), np.asarray(target, dtype=np.float64))


def _adam_fit(params: list[torch.Tensor], loss_fn: Callable[[], torch.Tensor], steps: int, lr: float) -> None:
    optimizer = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss_fn().backward()
        optimizer.step()


class Methods:
    """The methods of the protocol over one set of encoded images (the frozen prefix of each image, once)."""

    def __init__(self, ours: Personalizer, prefix: torch.Tensor, config: BenchmarkConfig):
        self.config = config
        self.ours = ours
        self.paper = Personalizer(ours.model, ours.bank, config.paper) if "paper" in config.methods else None
        self.with_ensemble = None
        if "default_ensemble" in config.methods:  # the same recipe, with the output ensemble as one more candidate
            candidates = (*config.personalizer.candidate_names, OUTPUTS)
            self.with_ensemble = Personalizer(
                ours.model, ours.bank, dataclasses.replace(config.personalizer, candidates=candidates)
            )
        self._one_pass: Personalizer | None = None
        if "one_pass" in config.methods:
            self.kept_one_pass()
        self.prefix = prefix
        began = time.perf_counter()
        self.model_scores = self.ours.model_scores(prefix)  # [T + 1, N]: the base and each task model, once
        self.task_scores = self.model_scores[1:]
        self.task_scoring_seconds = time.perf_counter() - began
        self.example: tuple[Coefficients, dict[str, Any]] | None = None  # our default's last fit and its report

    def kept_one_pass(self) -> Personalizer:
        """Our recipe with the output ensemble never competing, whatever it costs, and dropped from listed candidates
        (made on first use)."""
        if self._one_pass is None:
            listed = self.config.personalizer.candidates
            candidates = None if listed is None else tuple(c for c in listed if c != OUTPUTS) or None
            one_pass = dataclasses.replace(self.config.personalizer, max_scoring_cost=0.0, candidates=candidates)
            self._one_pass = Personalizer(self.ours.model, self.ours.bank, one_pass)
        return self._one_pass

    def run(
        self,
        rated: torch.Tensor,
        test: torch.Tensor,
        ratings: torch.Tensor,
        test_ratings: torch.Tensor,
        observed: torch.Tensor | None = None,
        example: bool = False,
    ):
        """Yield (method, test SROCC, seconds, facts) for one user's draw; facts: what our default chose and
        estimated (and its SROCC against ``observed``, noisy test ratings, when given). With ``example``, keep our
        default's fit as `self.example`, or where the output ensemble won, the same recipe's fit kept one pass (the
        example is exported as coefficients and as merged weights)."""
        methods = self.config.methods
        encoded = EncodedRatings(self.prefix[rated], ratings.double(), model_scores=self.model_scores[:, rated])
        # The transductive setting: every photo of the pool, without a rating.
        pool = (self.prefix, self.model_scores) if self.config.transductive else (None, None)
        rated_srocc = [_srocc(s[rated], ratings) for s in self.task_scores]
        best = int(np.nanargmax(np.nan_to_num(rated_srocc, nan=-1.0)))
        if "single" in methods:
            for t, name in enumerate(self.ours.bank.task_names):
                yield f"single:{name}", _srocc(self.task_scores[t, test], test_ratings), 0.0, {}
        if "best_single" in methods:
            yield "best_single", _srocc(self.task_scores[best, test], test_ratings), 0.0, {}
        for method, personalizer in (
            ("default", self.ours),
            ("one_pass", self._one_pass),
            ("default_ensemble", self.with_ensemble),
            ("paper", self.paper),
        ):
            if method not in methods or personalizer is None:  # None when not among the methods
                continue
            began = time.perf_counter()
            coefficients, report = personalizer.fit_encoded(encoded, *(pool if method != "paper" else ()))
            seconds = time.perf_counter() - began
            if report.ensemble is not None:  # the output ensemble won: it scores with the task models' scores
                predicted = report.ensemble.combine(self.task_scores[:, test]).float()
            else:
                predicted = personalizer.predict(coefficients, self.prefix[test])
            facts: dict[str, Any] = {}
            if method != "paper":
                facts = {
                    "chosen": report.chosen,
                    "cv_srocc": report.cv_srocc,
                    "cv_interval": None if report.cv_interval is None else list(report.cv_interval),
                    "observed_srocc": None if observed is None else _srocc(predicted, observed),
                }
            if method == "default" and self.config.score_candidates:
                refits = personalizer.candidate_coefficients(encoded, report, *pool)

                def tested(name: str) -> torch.Tensor:
                    if name == OUTPUTS:  # no coefficients: the refitted ensemble on the task models' scores
                        return personalizer.candidate_ensemble(encoded, *pool).combine(self.task_scores[:, test])
                    return personalizer.predict(refits[name], self.prefix[test])

                facts["candidates"] = [
                    {**row, "test_srocc": _srocc(tested(row["candidate"]), test_ratings)}
                    for row in report.cross_validation
                ]
            yield method, _srocc(predicted, test_ratings), seconds, facts
            if method == "default" and "init" in methods:
                init = personalizer.predict(report.initial_coefficients, self.prefix[test])
                yield "init", _srocc(init, test_ratings), 0.0, {}
            if method == "default" and example:
                if report.ensemble is not None:
                    coefficients, report = self.kept_one_pass().fit_encoded(encoded)
                self.example = coefficients, report.summary()
        if "uniform" in methods:
            uniform = torch.full((self.ours.layout.num_groups, len(self.ours.bank)), 1.0 / len(self.ours.bank))
            yield "uniform", _srocc(self.ours.predict(uniform, self.prefix[test]), test_ratings), 0.0, {}
        for method, fit in (
            ("head_finetune", self._head_finetune),
            ("full_finetune", self._full_finetune),
            ("ensemble", self._ensemble),
        ):
            if method in methods:
                began = time.perf_counter()
                predicted = fit(rated, test, ratings, best, rated_srocc)
                yield method, _srocc(predicted, test_ratings), time.perf_counter() - began, {}

    def _task_params(self, task: int) -> dict[str, torch.Tensor]:
        one_hot = torch.zeros(self.ours.layout.num_groups, len(self.ours.bank))
        one_hot[:, task] = 1.0
        return {n: t.detach() for n, t in self.ours.merged(one_hot).items()}

    def _forward(self, params: dict[str, torch.Tensor], index: torch.Tensor):
        return self.ours.forward(params, self.prefix[index])

    def _head_finetune(self, rated, test, ratings, best, _rated_srocc) -> torch.Tensor:
        params = self._task_params(best)
        with torch.no_grad():
            features = {"rated": self._forward(params, rated).features, "test": self._forward(params, test).features}
        network = self.ours.network
        head = copy.deepcopy(network.head)
        head.load_state_dict(
            {n[len("head.") :]: params.get(n, p) for n, p in network.named_parameters() if n.startswith("head.")}
        )
        head.eval()  # dropout off: k ratings are too few to regularise by noise, and the fit stays deterministic
        score = lambda x: network.scores_from_distribution(head(x))  # noqa: E731
        torch.manual_seed(self.config.seed)
        _adam_fit(
            list(head.parameters()),
            lambda: pairwise_rank_loss(score(features["rated"]), ratings.to(features["rated"].device)),
            self.config.baseline_steps,
            self.config.head_learning_rate,
        )
        with torch.no_grad():
            return score(features["test"]).float().cpu()

    def _full_finetune(self, rated, test, ratings, _best, _rated_srocc) -> torch.Tensor:
        params = {n: t.detach().clone().requires_grad_(True) for n, t in self.ours.base_parameters.items()}
        generator = torch.Generator().manual_seed(self.config.seed)
        batch_size = self.config.personalizer.batch_size  # the same minibatches as the coefficient fits

        def loss() -> torch.Tensor:
            index = torch.randperm(len(rated), generator=generator)[:batch_size]
            scores = self._forward(params, rated[index]).scores
            return pairwise_rank_loss(scores, ratings[index].to(scores.device))

        _adam_fit(list(params.values()), loss, self.config.baseline_steps, self.config.full_learning_rate)
        with torch.no_grad():
            return self._forward(params, test).scores.float().cpu()

    def _ensemble(self, rated, test, ratings, _best, _rated_srocc) -> torch.Tensor:
        """The learned output ensemble: the `"outputs"` candidate fitted on the rated images alone
        (`Personalizer.candidate_ensemble`: each task model's scores standardized over them, weights by the rank loss
        from the softmax mix)."""
        encoded = EncodedRatings(self.prefix[rated], ratings.double(), model_scores=self.model_scores[:, rated])
        return self.ours.candidate_ensemble(encoded).combine(self.task_scores[:, test])
