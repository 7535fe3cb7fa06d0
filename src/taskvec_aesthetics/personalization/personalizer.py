"""Personalization: fit task-vector coefficients c[g, t] to one person's ratings, choosing by cross-validation.

Personalization is a function of the *set* of ratings: rows are put in a canonical order (image content hash, then
score) and an image rated twice is averaged, before any split or minibatch.

Simple and learned answers compete on the same deterministic K folds of the rated images (never any other image):
the best single task model, the softmax(SROCC) mix, the output ensemble's weights used as coefficients, the uniform
mix, learned coefficients (their step count chosen inside the folds) and, given unlabeled photos, coefficients
distilled from the output ensemble on them. The candidate that cross-validates best wins, unless one earlier in that
list is within one standard error of it; the winner is then refitted on all the ratings. The user's estimate of how
well the model ranks their photos is the accuracy of this whole procedure, selection included
(`_procedure_estimate`), with a 90 % interval (`_interval`).

Everything shares one encoding: the frozen prefix of the encoder (blocks no task vector touches) runs once per image,
each task model scores the rated images once (`[T, N]`), and every optimisation step runs only the rest of the
network with merged parameters theta_0 + sum_t c[g(p), t] * tau_t[p], as a functional call, so the base model is
never modified.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from scipy.stats import rankdata
from tqdm.auto import tqdm

from ..constants import PERSONALIZATION_FILE
from ..errors import ConfigError, DivergedError, InputError, InputTypeError
from ..evaluation.metrics import srocc
from ..hub.references import Reference
from ..losses import pairwise_rank_loss
from ..processing import IMAGE_EXTENSIONS, open_image
from ..task_vectors.bank import TaskVectorBank
from ..task_vectors.coefficients import Coefficients
from ..task_vectors.merging import (
    CoefficientLayout,
    coefficient_layout,
    functional_forward,
    merge_parameters,
    streamed_coefficient_grad,
)
from .config import CANDIDATES, LEARNED_CANDIDATES, SIMPLE_CANDIDATES, PersonalizerConfig
from .inputs import (
    as_preferences,
    as_ratings,
    canonical,
    canonical_preferences,
    image_key,
    is_preferences,
)

if TYPE_CHECKING:
    from ..modeling import AestheticModel

__all__ = [
    "CANDIDATES",
    "PersonalizerConfig",
    "Personalizer",
    "PersonalizationReport",
    "PersonalizationResult",
    "PersonalizationState",
    "check_calibration",
    "EncodedRatings",
    "EncodedPreferences",
    "pairwise_rank_loss",
    "resolve_device",
    "unlabeled_images",
]

logger = logging.getLogger(__name__)

#: The output-ensemble fit works on `[N, T]` numbers: a few Newton steps on T weights cost milliseconds.
ENSEMBLE_NEWTON_STEPS, ENSEMBLE_RIDGE = 50, 0.01
BOOTSTRAP_SAMPLES = 200
#: The estimate's interval is a 90 % one (two-sided normal quantile of 0.95).
INTERVAL_LEVEL, INTERVAL_Z = 0.90, 1.6448536269514722
#: Variance of Fisher's z of a Spearman correlation on n units is about 1.06 / (n - 3) (Fieller, Hartley and
#: Pearson 1957): the interval's width for n rated images.
SPEARMAN_Z_VARIANCE = 1.06
#: An interval wider than this (high - low) is called wide, and the estimate says how many ratings in all would
#: narrow it to +- `NARROW_HALF_WIDTH`.
WIDE_INTERVAL, NARROW_HALF_WIDTH = 0.3, 0.15
#: Activations an encoder block keeps for its backward pass, in hidden states of its input (transformer blocks: the
#: layer norms, q/k/v, attention output and probabilities, the 4x MLP before and after its activation), an estimate
#: that sets the micro-batch from `activation_budget_mb`. A ViT-L/14 step at batch 32 in float32 on a GPU held about
#: 20 per block (`benchmarks/paper_scale.py`), so 24 errs on the safe side.
ACTIVATIONS_PER_BLOCK = 24
#: The activation budget on the CPU when none is given (on a GPU: half its free memory).
CPU_ACTIVATION_BUDGET_MB = 1024


def resolve_device(device: str | torch.device | None) -> torch.device:
    """A torch device from a name; `"auto"` or None is the GPU when there is one, else the CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', received {device!r}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} was asked for, but this machine has no usable GPU; use 'cpu' or 'auto'")
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """A torch dtype from a name; `"auto"` is bfloat16 on a GPU (under autocast), float32 elsewhere."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype)


class _BackwardInside(torch.nn.Module):
    """Runs the network and its backward pass within one call, so that inside `functional_call` a checkpointed block
    is recomputed with the same substituted parameters as its forward used."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, objective: Any, inputs: dict[str, Any], autocast: Any) -> torch.Tensor:
        with autocast:
            scores = self.network(**inputs).scores
        value = objective(scores.float())
        value.backward()
        return value.detach()


# Calibrated scores are float32: a larger slope or intercept overflows them to inf for ordinary scores.
_MAX_CALIBRATION = 1e30


def check_calibration(calibration: Any, where: str) -> None:
    """A stored calibration must map scores monotonically and finitely: finite slope > 0, finite intercept."""
    if calibration is None:
        return
    if not isinstance(calibration, Mapping):
        raise ConfigError(f"{where}: field 'calibration' must be an object with slope and intercept")
    for key in ("slope", "intercept"):
        value = calibration.get(key)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or abs(value) > _MAX_CALIBRATION
        ):
            raise ConfigError(
                f"{where}: field 'calibration.{key}' must be a finite number of magnitude <= {_MAX_CALIBRATION:g} "
                f"(calibrated scores are float32), received {value!r}. Such a calibration comes from ratings far "
                "outside any usable scale: check the ratings"
            )
    if calibration["slope"] <= 0:
        raise ConfigError(
            f"{where}: field 'calibration.slope' must be > 0 (a calibration keeps the ranking), received "
            f"{calibration['slope']!r}"
        )
    # A unit of predicted score must stay visible in float32 beside the intercept (float32 keeps ~7 digits; 1e-4
    # leaves room for the predictions' own small differences), else different images get one score.
    smallest = 1e-4 * max(1.0, abs(calibration["intercept"]))
    if calibration["slope"] < smallest:
        raise ConfigError(
            f"{where}: field 'calibration.slope' is {calibration['slope']!r}, below {smallest:g} (1e-4 of the "
            f"intercept {calibration['intercept']!r}): calibrated float32 scores of different images would be equal. "
            "Such a calibration comes from ratings whose differences vanish beside their magnitude: rescale them"
        )


@dataclass
class PersonalizationState:
    """What makes a model personal: the bank and coefficients it was merged from, and facts about the fit.

    Attributes:
        bank: the task-vector bank (None for a merged export loaded from disk).
        coefficients: the coefficients (None for a merged export loaded from disk without them).
        base: the base model the coefficients apply to: where it lives (if known) and its fingerprint.
        info: personalizer config, number of ratings, cross-validation, calibration, ...
        bank_reference: where the bank lives, when the bank itself is not loaded (a merged export read back).
    """

    bank: TaskVectorBank | None
    coefficients: Coefficients | None
    base: Reference
    info: dict[str, Any] = field(default_factory=dict)
    bank_reference: Reference | None = None

    def __post_init__(self) -> None:
        # Checked here, where every personalized model gets its state, so a broken calibration is never used.
        check_calibration((self.info or {}).get("calibration"), "the personalization info")

    @property
    def base_fingerprint(self) -> str | None:
        """The fingerprint of the base model the coefficients apply to."""
        return self.base.fingerprint

    @property
    def bank_ref(self) -> Reference | None:
        """Where the bank lives, with the fingerprint of the base it was built on (None when nothing is known)."""
        if self.bank is None:
            return self.bank_reference
        return (self.bank.source or Reference()).with_fingerprint(self.bank.base_fingerprint)

    @classmethod
    def standalone(cls, record: Mapping[str, Any], where: str = PERSONALIZATION_FILE) -> PersonalizationState:
        """The state of a merged export read back from its `personalization.json` record."""
        coefficients = Coefficients.from_dict(record["coefficients"]) if "coefficients" in record else None
        return cls(
            None,
            coefficients,
            Reference.from_dict(record.get("base"), where, "base") or Reference(),
            dict(record.get("info") or {}),
            bank_reference=Reference.from_dict(record.get("bank"), where, "bank", "base_fingerprint"),
        )

    def to_record(self, export: str) -> dict[str, Any]:
        """The content of `personalization.json` (without its `format_version`)."""
        record: dict[str, Any] = {"export": export, "base": self.base.to_dict(), "info": self.info}
        if self.coefficients is not None:
            record["coefficients"] = self.coefficients.to_dict()
        bank = self.bank_ref
        if bank is not None:
            record["bank"] = bank.to_dict(fingerprint_key="base_fingerprint")
        return record


@dataclass
class EncodedRatings:
    """Rated images after the frozen prefix, with their ratings: the only input the optimisation needs.

    Args:
        prefix: `[N, ...]` output of the frozen prefix (see `Personalizer.encode`).
        ratings: `[N]` ratings.
        keys: one content hash per image (see `ratings_input.image_key`); by default a hash of its prefix row.
        duplicates: rows merged into others because they rated the same image.
        model_scores: optionally `[T + 1, N]` scores of the base and of each task model on these images
            (`Personalizer.model_scores`), when computed once for images many users rated; else computed by the fit.
    """

    prefix: torch.Tensor
    ratings: torch.Tensor
    keys: list[str] | None = None
    duplicates: int = 0
    model_scores: torch.Tensor | None = None

    #: What cross-validation reports for ratings.
    metric = "srocc"

    def __len__(self) -> int:
        """The number of rated images: the units that folds, batches and the criterion count."""
        return int(self.ratings.shape[0])

    @property
    def target(self) -> torch.Tensor:
        """`[N]` what the model's unit scores are compared with: the ratings."""
        return self.ratings

    def unit_scores(self, scores: torch.Tensor) -> torch.Tensor:
        """`[..., N]` image scores as unit scores: for ratings, the scores themselves."""
        return scores

    def loss(self, scores: torch.Tensor, pairing: str = "all") -> torch.Tensor:
        """Bradley-Terry loss of image scores over pairs of differently rated images (see `pairwise_rank_loss`)."""
        return pairwise_rank_loss(scores, self.ratings.to(scores.device, scores.dtype), pairing)

    def check(self) -> None:
        _check_ratings(self.ratings)

    def subset(self, index: torch.Tensor) -> EncodedRatings:
        keys = None if self.keys is None else [self.keys[i] for i in index.tolist()]
        return EncodedRatings(
            self.prefix[index], self.ratings[index], keys, self.duplicates, _columns(self.model_scores, index)
        )

    def canonical(self) -> EncodedRatings:
        """The same ratings ordered by (image key, rating), each image once (its ratings averaged)."""
        keys = self.keys or _row_keys(self.prefix)
        if len(keys) != len(self):
            raise InputError(f"received {len(keys)} image keys for {len(self)} ratings; expected one key per rating")
        rows: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            rows.setdefault(key, []).append(i)
        merged = len(self) - len(rows)
        if merged:
            warnings.warn(
                f"{merged} of {len(self)} rated images are duplicates of another rated image; "
                "each image's ratings were averaged",
                stacklevel=3,
            )
        ratings = self.ratings.double()
        mean = {key: float(ratings[index].mean()) for key, index in rows.items()}
        order = sorted(rows, key=lambda key: (key, mean[key]))
        first = torch.tensor([rows[key][0] for key in order])
        return EncodedRatings(
            self.prefix[first],
            torch.tensor([mean[key] for key in order], dtype=torch.float64),
            order,
            self.duplicates + merged,
            _columns(self.model_scores, first),
        )


@dataclass
class EncodedPreferences:
    """Compared images after the frozen prefix, with which of each pair the person preferred.

    The units of cross-validation, batches and the criterion are the pairs; a pair's score is the difference of
    its images' scores, and its loss the Bradley-Terry loss against the preference (0.5 for a tie).

    Args:
        prefix: `[N, ...]` output of the frozen prefix, one row per distinct image.
        pairs: `[M, 2]` row indices `(a, b)` into ``prefix``.
        preference: `[M]` probability that `a` is preferred: 1, 0, 0.5 for a tie (or a mean of those).
        keys: one content hash per image; by default a hash of its prefix row.
        duplicates: preferences merged into another because they compared the same pair.
        model_scores: optionally `[T + 1, N]` scores of the base and of each task model on the images (see
            `EncodedRatings`).
    """

    prefix: torch.Tensor
    pairs: torch.Tensor
    preference: torch.Tensor
    keys: list[str] | None = None
    duplicates: int = 0
    model_scores: torch.Tensor | None = None
    metric = "accuracy"

    def __len__(self) -> int:
        return int(self.pairs.shape[0])

    @property
    def target(self) -> torch.Tensor:
        return self.preference

    def unit_scores(self, scores: torch.Tensor) -> torch.Tensor:
        """`[..., N]` image scores -> `[..., M]` score of image a minus score of image b."""
        return scores[..., self.pairs[:, 0]] - scores[..., self.pairs[:, 1]]

    def loss(self, scores: torch.Tensor, pairing: str = "all") -> torch.Tensor:
        """Bradley-Terry loss of image scores on these pairs (``pairing`` concerns ratings only)."""
        pairs = self.pairs.to(scores.device)
        return _pair_loss(scores[..., pairs[:, 0]] - scores[..., pairs[:, 1]], self.preference.to(scores.device))

    def check(self) -> None:
        if not torch.isfinite(self.preference).all() or ((self.preference < 0) | (self.preference > 1)).any():
            raise InputError("preferences must be probabilities that image a is preferred, 0 to 1")
        if bool((self.preference == 0.5).all()):
            raise InputError(
                f"personalization needs at least one pair with a preference; received {len(self)} pairs, all ties"
            )

    def subset(self, index: torch.Tensor) -> EncodedPreferences:
        """The pairs ``index`` and only the images they compare."""
        pairs = self.pairs[index]
        images, inverse = torch.unique(pairs.flatten(), sorted=True, return_inverse=True)
        keys = None if self.keys is None else [self.keys[i] for i in images.tolist()]
        return EncodedPreferences(
            self.prefix[images],
            inverse.view(-1, 2),
            self.preference[index],
            keys,
            self.duplicates,
            _columns(self.model_scores, images),
        )

    def canonical(self) -> EncodedPreferences:
        """Images ordered by key, each once; pairs written lower key first and ordered; a repeated pair averaged."""
        keys = self.keys or _row_keys(self.prefix)
        if len(keys) != self.prefix.shape[0]:
            raise InputError(
                f"received {len(keys)} image keys for {self.prefix.shape[0]} images; expected one key per image"
            )
        order = sorted(set(keys))
        position = {key: i for i, key in enumerate(order)}
        first = {key: i for i, key in reversed(list(enumerate(keys)))}
        merged: dict[tuple[int, int], list[float]] = {}
        for (a, b), p in zip(self.pairs.tolist(), self.preference.double().tolist()):
            i, j = position[keys[a]], position[keys[b]]
            if i == j:
                raise InputError("a preference compares an image with itself; expected two different images per pair")
            pair, value = ((i, j), p) if i < j else ((j, i), 1.0 - p)
            merged.setdefault(pair, []).append(value)
        count = len(self) - len(merged)
        if count:
            warnings.warn(
                f"{count} of {len(self)} preferences compare a pair of images compared before; "
                "each pair's preferences were averaged",
                stacklevel=3,
            )
        pairs = sorted(merged)
        images = torch.tensor([first[key] for key in order])
        return EncodedPreferences(
            self.prefix[images],
            torch.tensor(pairs, dtype=torch.long).view(-1, 2),
            torch.tensor([sum(merged[pair]) / len(merged[pair]) for pair in pairs], dtype=torch.float64),
            order,
            self.duplicates + count,
            _columns(self.model_scores, images),
        )


#: What a personalizer fits: ratings of images or preferences between pairs of images.
Encoded = EncodedRatings | EncodedPreferences


def _columns(scores: torch.Tensor | None, index: torch.Tensor) -> torch.Tensor | None:
    """The columns ``index`` of `[T + 1, N]` model scores (None stays None)."""
    return None if scores is None else scores[:, index]


def _row_keys(prefix: torch.Tensor) -> list[str]:
    return [hashlib.sha256(row.cpu().contiguous().numpy().tobytes()).hexdigest() for row in prefix]


def _pair_loss(differences: torch.Tensor, preference: torch.Tensor) -> torch.Tensor:
    """Bradley-Terry loss: -log sigmoid of each pair's score difference towards its preference, ties at 0.5."""
    return torch.nn.functional.binary_cross_entropy_with_logits(differences, preference.to(differences.dtype))


@dataclass
class _Unlabeled:
    """Photos without ratings, after the frozen prefix, and each task model's scores on them."""

    prefix: torch.Tensor  # [M, ...]
    tasks: torch.Tensor  # [T, M]


@dataclass
class _Distillation:
    """A training batch plus unlabeled photos: the rank loss on the batch, and the distillation loss that pulls the
    merged model's scores on the unlabeled photos toward the teacher's (1 - their Pearson correlation: only the
    order and spacing matter, not the scale)."""

    batch: Encoded
    unlabeled: torch.Tensor  # [B, ...] prefix rows
    teacher: torch.Tensor  # [B] the output ensemble's scores on them
    weight: float

    @property
    def prefix(self) -> torch.Tensor:
        return torch.cat([self.batch.prefix, self.unlabeled])

    def split(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Image scores of the batch, and the distillation loss of the scores of the unlabeled photos."""
        n = self.batch.prefix.shape[0]
        student = scores[n:] - scores[n:].mean()
        teacher = (self.teacher - self.teacher.mean()).to(scores.device, scores.dtype)
        cosine = torch.sum(student * teacher) / (student.norm() * teacher.norm()).clamp_min(1e-12)
        return scores[:n], self.weight * (1.0 - cosine)


@dataclass
class PersonalizationReport:
    """What a fit did: the coefficients, the cross-validation table, the chosen candidate, timings.

    Attributes:
        coefficients: the fitted coefficients (task granularity unless a finer learned candidate won).
        initial_coefficients: the softmax(SROCC) init on all the ratings (task granularity), a reference point.
        zero_shot_srocc: each task model's SROCC on the rated images (empty for preferences).
        chosen: the winning candidate (see `CANDIDATES`).
        chosen_step: optimisation steps of the refit (0 for a candidate that learns nothing).
        cross_validation: one row per candidate: its cross-validated SROCC, standard error, criterion, steps.
        cv_srocc: the expected SROCC of the whole procedure on new photos, selection included (`_procedure_estimate`):
            not the winner's own cross-validated SROCC, which is the best of several noisy values
            (`selected_cv`); cv_srocc_se: the winner's bootstrap standard error.
        cv_interval: a 90 % prediction interval of the SROCC (pair accuracy, for preferences) on new photos.
        selected_cv: the winner's own cross-validated SROCC (pair accuracy), biased upward by the selection.
        unlabeled: unlabeled photos the fit used (`distil`), 0 when none were given.
        folds: K (0 when there were too few ratings to cross-validate).
        num_ratings: distinct rated images; duplicates: rows averaged into another.
        num_pairs: for preferences, the distinct compared pairs (then `num_ratings` is 0).
        cv_accuracy, cv_accuracy_se, zero_shot_accuracy: for preferences, the share of held-out pairs the model
            orders as the person did (ties count half), and each task model's share on all the pairs.
    """

    coefficients: Coefficients
    initial_coefficients: Coefficients
    zero_shot_srocc: dict[str, float]
    loss_history: list[float]
    chosen: str
    chosen_step: int
    num_ratings: int
    wall_time: float
    gradient: str
    cross_validation: list[dict[str, Any]] = field(default_factory=list)
    cv_srocc: float | None = None
    cv_srocc_se: float | None = None
    folds: int = 0
    criterion: str = "rank_loss"
    duplicates: int = 0
    calibration: dict[str, float] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    num_pairs: int = 0
    cv_accuracy: float | None = None
    cv_accuracy_se: float | None = None
    zero_shot_accuracy: dict[str, float] = field(default_factory=dict)
    cv_interval: tuple[float, float] | None = None
    selected_cv: float | None = None
    unlabeled: int = 0

    @property
    def estimate(self) -> str:
        """One line for the user, e.g. "expected SROCC on your photos: 0.58 (90 % interval 0.45 to 0.69), 5-fold CV
        on 100 ratings, selection included (learned layer-wise coefficients)"; where the interval is wide, it says
        so and how many ratings would narrow it."""
        what, given = ("agreement with your choices", "pairs") if self.num_pairs else ("SROCC", "ratings")
        if self.config.get("selection") == "last":
            return f"no estimate of {what}: selection='last' keeps the last step without cross-validating"
        if not self.folds or self.cv_interval is None:
            return f"no estimate of {what}: {self.num_pairs or self.num_ratings} {given} are too few to cross-validate"
        low, high = self.cv_interval
        how = f"{self.folds}-fold CV on {self.num_pairs or self.num_ratings} {given}, selection included"
        if self.num_pairs:
            line = (
                f"expected agreement with your choices on new pairs: {self.cv_accuracy:.0%} "
                f"({INTERVAL_LEVEL:.0%} interval {low:.0%} to {high:.0%}), {how} ({CANDIDATES[self.chosen]})"
            )
        else:
            line = (
                f"expected SROCC on your photos: {self.cv_srocc:.2f} ({INTERVAL_LEVEL:.0%} interval {low:.2f} to "
                f"{high:.2f}), {how} ({CANDIDATES[self.chosen]})"
            )
        advice = self.advice
        return f"{line}. {advice}" if advice else line

    @property
    def advice(self) -> str:
        """Where the estimate's interval is wide, a sentence that says so and how many ratings would narrow it."""
        if self.cv_interval is None or self.cv_interval[1] - self.cv_interval[0] <= WIDE_INTERVAL:
            return ""
        given, count = ("pairs", self.num_pairs) if self.num_pairs else ("ratings", self.num_ratings)
        more = self.ratings_to_narrow()
        return (
            f"The interval is wide: {count} {given} say little yet; about {more} {given} in all would narrow it to "
            f"± {NARROW_HALF_WIDTH:.2f}"
        )

    def ratings_to_narrow(self) -> int | None:
        """How many ratings (pairs) in all would bring the interval's half-width down to `NARROW_HALF_WIDTH`."""
        if self.num_pairs:
            p = min(max(self.cv_accuracy or 0.5, 0.05), 0.95)
            return math.ceil(p * (1 - p) * (INTERVAL_Z / NARROW_HALF_WIDTH) ** 2)
        if self.cv_srocc is None:
            return None
        # In Fisher's z the half-width is z_0.95 * sqrt(1.06 / (n - 3)); near r it is (1 - r^2) times that.
        slope = max(1 - self.cv_srocc**2, 0.1)
        return 3 + math.ceil(SPEARMAN_Z_VARIANCE * (INTERVAL_Z * slope / NARROW_HALF_WIDTH) ** 2)

    def summary(self) -> dict[str, Any]:
        """JSON-compatible facts stored with a personalized model (`personalization.json`, the model card)."""
        return {
            "num_ratings": self.num_ratings,
            **({"num_pairs": self.num_pairs} if self.num_pairs else {}),
            "duplicates": self.duplicates,
            "chosen": self.chosen,
            "chosen_step": self.chosen_step,
            # Every rated image (or pair) is held out once; the card and the Hub metadata show the holdout SROCC.
            "num_holdout": (self.num_pairs or self.num_ratings) if self.folds else 0,
            "holdout_srocc": self.cv_srocc,
            "cross_validation": {
                "srocc": self.cv_srocc,
                "srocc_se": self.cv_srocc_se,
                **({"accuracy": self.cv_accuracy, "accuracy_se": self.cv_accuracy_se} if self.num_pairs else {}),
                "interval": None if self.cv_interval is None else [round(v, 4) for v in self.cv_interval],
                "level": INTERVAL_LEVEL,
                "selected": self.selected_cv,
                "folds": self.folds,
                "criterion": self.criterion,
                "estimate": self.estimate,
                "candidates": self.cross_validation,
            },
            "unlabeled": self.unlabeled,
            "zero_shot_srocc": self.zero_shot_srocc,
            **({"zero_shot_accuracy": self.zero_shot_accuracy} if self.num_pairs else {}),
            "wall_time_s": round(self.wall_time, 3),
            "personalizer": self.config,
            **({"calibration": self.calibration} if self.calibration else {}),
        }


@dataclass
class PersonalizationResult:
    model: AestheticModel
    report: PersonalizationReport

    @property
    def coefficients(self) -> Coefficients:
        return self.report.coefficients


@dataclass
class _Scores:
    """What every candidate shares on one user's canonical input, per unit (a rated image, or a compared pair):
    the base and each task model's unit scores, and the target."""

    base: torch.Tensor  # [U] unit scores of the base model
    tasks: torch.Tensor  # [T, U] unit scores of each single task model
    target: torch.Tensor  # [U] ratings, or preferences for image a
    metric: str  # "srocc" for ratings, "accuracy" for preferences
    images: torch.Tensor | None = None  # [T + 1, N] scores of the base and each task model on the images

    def correlation(self, index: torch.Tensor) -> torch.Tensor:
        """`[T]` how well each task model agrees with the target on units ``index``: SROCC for ratings, 2 x pair
        accuracy - 1 for preferences (both 0 for chance, 1 for perfect)."""
        if self.metric == "accuracy":
            return torch.from_numpy(
                2.0 * _criterion(self.tasks[:, index].numpy(), self.target[index].numpy(), "srocc", "accuracy") - 1.0
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a constant task model on few images has SROCC NaN: counted as 0
            values = [srocc(s[index].numpy(), self.target[index].numpy()) for s in self.tasks]
        return torch.tensor([0.0 if math.isnan(v) else float(v) for v in values], dtype=torch.float64)


class Personalizer:
    """Fits coefficients of a bank's task vectors to one user's ratings.

    Args:
        model: the base model the bank was built on (checked by fingerprint).
        bank: the task-vector bank.
        config: a `PersonalizerConfig` (default: our recipe).

    Example:
    ```python
    >>> result = Personalizer(model, bank).fit(ratings)     # a Dataset with `image` and `score`
    >>> print(result.report.estimate)
    expected SROCC on your photos: 0.55 (90% interval 0.29 to 0.74), 5-fold CV on 30 ratings, selection included (...)
    ```
    """

    def __init__(self, model: AestheticModel, bank: TaskVectorBank, config: PersonalizerConfig | None = None) -> None:
        self.config = config or PersonalizerConfig()
        bank.check_base(model)
        if len(bank) == 0:
            raise InputError("the bank has no tasks")
        self.model = model
        self.bank = bank
        self.device = resolve_device(self.config.device)
        self.dtype = resolve_dtype(self.config.dtype, self.device)
        self._layouts: dict[str, CoefficientLayout] = {}
        self.layout = self.layout_of(self.config.granularity)
        self.prefix_blocks = model.untouched_prefix_blocks(bank.parameter_names)
        # The network is only ever called with substituted parameters, never changed: the model itself serves unless
        # it must move, change precision or leave training mode (then a copy does).
        weights = torch.float64 if self.dtype == torch.float64 else next(model.parameters()).dtype
        first = next(model.parameters())
        if first.device == self.device and first.dtype == weights and not model.training:
            self._network = model
        else:
            self._network = copy.deepcopy(model).to(self.device, weights).eval()
        self._weights_dtype = weights
        covered = set(bank.parameter_names)
        self._base = {n: p.detach() for n, p in self._network.named_parameters() if n in covered}
        # The bank's one resident copy, in its storage dtype (moved when the network runs elsewhere).
        self._stacked = {n: t.to(self.device) for n, t in bank.stacked().items()}
        own = dict(self._network.named_parameters())
        self._head = (
            {n: own[n].detach() for n in ("head.fc2.weight", "head.fc2.bias")} if self.config.adapt_head else {}
        )
        self._runner = _BackwardInside(self._network)
        self._activation_bytes: int | None = None
        self._bar: Any = None  # the one progress bar of a fit (`fit_encoded`), advanced by every step
        # Resolved once, with the network and bank in place: a budget read at every step would drift with the
        # allocator, and so would the micro-batch.
        self.activation_budget_bytes = self._activation_budget_bytes()
        values = len(bank) * sum(t[0].numel() for t in self._stacked.values())
        streamed = self.config.gradient == "streamed" or (
            self.config.gradient == "auto" and values > self.config.streamed_threshold
        )
        self.gradient = "streamed" if streamed else "autograd"

    def _autocast(self) -> Any:
        """Autocast to `config.dtype` when it is a half precision; nothing otherwise."""
        if self.dtype in (torch.bfloat16, torch.float16):
            return torch.autocast(self.device.type, dtype=self.dtype)
        return contextlib.nullcontext()

    def layout_of(self, granularity: str) -> CoefficientLayout:
        """The coefficient layout of this model and bank at a granularity (built once)."""
        if granularity not in self._layouts:
            self._layouts[granularity] = coefficient_layout(
                self.model.parameter_groups(), self.bank.parameter_names, granularity
            )
        return self._layouts[granularity]

    # -- encoding ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, images: Sequence[Any] | torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        """Output of the frozen prefix for images (PIL, paths or pixel values), computed once and reused.

        When the bank covers the embeddings, nothing is frozen and this is the preprocessed pixel values.
        """
        chunks = []
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            if isinstance(batch, torch.Tensor):
                pixels = batch
            else:
                opened = [open_image(item, f" in row {start + i}") for i, item in enumerate(batch)]
                pixels = self.model.image_processor(images=opened, return_tensors="pt")["pixel_values"]
            pixels = pixels.to(self.device, self._weights_dtype)
            if self.prefix_blocks is not None:
                with self._autocast():
                    pixels = self._network.encode_prefix(pixels, self.prefix_blocks).to(self._weights_dtype)
            chunks.append(pixels)
        return torch.cat(chunks)

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
        """`encode_preferences` for pairwise preferences (see `ratings_input.is_preferences`), else `encode_ratings`."""
        return self.encode_preferences(data) if is_preferences(data) else self.encode_ratings(data)

    # -- prediction ----------------------------------------------------------------------------------------------
    def _layout_for(self, values: torch.Tensor) -> CoefficientLayout:
        """The layout of `[G, T]` values: task granularity for one row, else the configured one."""
        if values.shape[0] == 1:
            return self.layout_of("task")
        for layout in (self.layout, *self._layouts.values()):
            if layout.num_groups == values.shape[0]:
                return layout
        raise InputError(
            f"coefficients have {values.shape[0]} groups; this model and bank have 1 (task) or "
            f"{self.layout.num_groups} ({self.layout.granularity})"
        )

    def merged(self, coefficients: torch.Tensor) -> dict[str, torch.Tensor]:
        """Merged parameters theta_0 + sum_t c[g, t] tau_t for `[G, T]` coefficients."""
        layout = self._layout_for(coefficients)
        return merge_parameters(self._base, self._stacked, coefficients.to(self.device, self._weights_dtype), layout)

    def _params(self, values: torch.Tensor, head: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Merged parameters plus the learned change of the head's last layer (when adapted)."""
        params = self.merged(values)
        for name, delta in head.items():
            params[name] = params.get(name, self._head[name]) + delta
        return params

    def predict(
        self,
        coefficients: Coefficients | torch.Tensor,
        prefix: torch.Tensor,
        batch_size: int | None = None,
        head: Mapping[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Scores of encoded images under ``coefficients`` (no model is materialised), ``batch_size`` images at a
        time (default: `config.batch_size`)."""
        if isinstance(coefficients, Coefficients):
            self.layout_of(coefficients.granularity).check(coefficients, self.bank.task_names)
        values = coefficients.values if isinstance(coefficients, Coefficients) else coefficients
        batch_size = batch_size or self.config.batch_size
        with torch.no_grad():
            params = self._params(values, head or {})
            if isinstance(coefficients, Coefficients):
                params.update({n: t.to(self.device, self._weights_dtype) for n, t in coefficients.extra.items()})
            return torch.cat(
                [
                    self.forward(params, prefix[i : i + batch_size]).scores.float().cpu()
                    for i in range(0, prefix.shape[0], batch_size)
                ]
            )

    def forward(self, params: Mapping[str, torch.Tensor], encoded: torch.Tensor):
        """The network with ``params`` on encoded images (see `encode`): the model's output."""
        with self._autocast():
            return functional_forward(self._network, params, **self._inputs(encoded))

    def _inputs(self, encoded: torch.Tensor) -> dict[str, Any]:
        if self.prefix_blocks is None:
            return {"pixel_values": encoded}
        return {"prefix_hidden": encoded, "prefix_blocks": self.prefix_blocks}

    def task_scores(self, prefix: torch.Tensor) -> torch.Tensor:
        """`[T, N]` scores of each single task model (theta_0 + tau_t) on encoded images."""
        return torch.stack([self.predict(row[None], prefix) for row in torch.eye(len(self.bank))])

    def model_scores(self, prefix: torch.Tensor) -> torch.Tensor:
        """`[T + 1, N]` scores of the base model and of each single task model on encoded images: what every fit on
        these images starts from (`EncodedRatings.model_scores`)."""
        return torch.cat([self.predict(torch.zeros(1, len(self.bank)), prefix)[None], self.task_scores(prefix)])

    def _scores(self, encoded: Encoded) -> _Scores:
        scores = encoded.model_scores
        if scores is None:
            scores = self.model_scores(encoded.prefix)
        elif scores.shape != (len(self.bank) + 1, encoded.prefix.shape[0]):
            raise InputError(
                f"model_scores must be [T + 1, N] = [{len(self.bank) + 1}, {encoded.prefix.shape[0]}] (the base, then "
                f"each task model, on each image), received {list(scores.shape)}"
            )
        scores = scores.double()
        return _Scores(
            encoded.unit_scores(scores[0]),
            encoded.unit_scores(scores[1:]),
            encoded.target.double(),
            encoded.metric,
            scores,
        )

    def coefficients_from(self, values: torch.Tensor, head: Mapping[str, torch.Tensor] | None = None) -> Coefficients:
        """`Coefficients` of `[G, T]` ``values``; an adapted head layer is stored as its final values (`extra`)."""
        extra = {}
        if head:
            with torch.no_grad():
                params = self._params(values.detach(), head)
            extra = {n: params[n].float().cpu() for n in head}
        layout = self._layout_for(values)
        return Coefficients(
            values.detach().float().cpu(), list(layout.group_names), self.bank.task_names, layout.granularity, extra
        )

    def initial_coefficients(self, encoded: Encoded) -> tuple[Coefficients, dict[str, float]]:
        """The softmax(temperature x zero-shot SROCC) init (or the configured one) and each task model's SROCC
        (for preferences: 2 x pair accuracy - 1)."""
        scores = self._scores(encoded)
        everything = torch.arange(len(encoded))
        values = self._simple("init", scores, everything)
        zero_shot = dict(zip(self.bank.task_names, scores.correlation(everything).tolist()))
        return self.coefficients_from(values), zero_shot

    # -- the simple candidates: task weights from [T, N] numbers -------------------------------------------------
    def _simple(self, name: str, scores: _Scores, index: torch.Tensor) -> torch.Tensor:
        """`[G, T]` coefficients of a candidate that learns nothing in the network, fitted on units ``index``."""
        cfg, names = self.config, self.bank.task_names
        if name == "init" and isinstance(cfg.init, Coefficients):
            self.layout_of(cfg.init.granularity).check(cfg.init, names)
            return cfg.init.values.clone()
        if name == "init" and isinstance(cfg.init, Mapping):
            return Coefficients.from_task_weights(cfg.init, names).values
        if name == "uniform" or (name == "init" and cfg.init == "uniform"):
            return torch.full((1, len(names)), 1.0 / len(names))
        correlation = scores.correlation(index)
        if name == "single":
            return torch.nn.functional.one_hot(correlation.argmax(), len(names)).float()[None]
        init = torch.softmax(cfg.temperature * correlation, dim=0)
        if name == "init":
            return init.float()[None]
        if name == "ensemble":
            return self._ensemble_weights(scores, index, init).float()[None]
        raise InputError(f"{name!r} is not a simple candidate")

    @staticmethod
    def _ensemble_weights(scores: _Scores, index: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        """Weights w of the output ensemble base + sum_t w_t (task_t - base), fitted with the rank loss.

        To first order in small task vectors, the merged model with task-wise coefficients w scores like this
        ensemble, so w is a good start for coefficients, and it costs T x N numbers instead of T forward passes.
        The loss (Bradley-Terry over the units' pairs, plus a ridge pull toward ``start``) is strictly convex in the
        T weights: Newton's method with step halving finds its minimum in a few iterations.
        """
        target = scores.target[index].numpy()
        base, targets = _margins(scores.base[index].numpy()[None], target, scores.metric)
        deltas = _margins((scores.tasks[:, index] - scores.base[index]).numpy(), target, scores.metric)[0].T
        base, start_ = base[0], start.double().numpy()
        if not len(targets):  # no ordered pair: nothing to fit
            return start.double().clone()

        def loss(w: np.ndarray) -> float:
            margin = base + deltas @ w
            fit = np.mean(np.logaddexp(0.0, margin) - targets * margin)
            return float(fit + ENSEMBLE_RIDGE * np.sum((w - start_) ** 2))

        weights, current = start_.copy(), loss(start_)
        ridge = 2.0 * ENSEMBLE_RIDGE * np.eye(len(weights))
        for _ in range(ENSEMBLE_NEWTON_STEPS):
            p = 1.0 / (1.0 + np.exp(-(base + deltas @ weights)))
            gradient = deltas.T @ (p - targets) / len(targets) + 2.0 * ENSEMBLE_RIDGE * (weights - start_)
            hessian = (deltas * (p * (1.0 - p))[:, None]).T @ deltas / len(targets) + ridge
            step = np.linalg.solve(hessian, gradient)
            for _ in range(30):  # halve the step until the loss does not rise
                proposal = weights - step
                if (value := loss(proposal)) <= current:
                    break
                step = step / 2.0
            else:
                break
            weights, previous, current = proposal, current, value
            if previous - current < 1e-12:
                break
        return torch.from_numpy(weights)

    def _start(
        self, granularity: str, encoded: Encoded, scores: _Scores, index: torch.Tensor, start: str | None = None
    ) -> torch.Tensor:
        """Where learned coefficients of ``granularity`` start (`start`, by default the configured one), `[G, T]`:
        ``"best"`` starts from the simple candidate that cross-validates best on units ``index`` (`_best_simple`)."""
        given = isinstance(self.config.init, (Coefficients, Mapping))
        start = "init" if given else start or self.config.start
        if start == "best":
            start = self._best_simple(encoded, scores, index)
        values = self._simple(start, scores, index)
        if granularity == "distil":  # distilled coefficients have the configured granularity
            granularity = self.config.granularity
        groups = self.layout_of(granularity).num_groups
        if values.shape[0] != groups:
            values = values.mean(dim=0, keepdim=True)
        return values.expand(groups, -1).clone()

    # -- optimisation ------------------------------------------------------------------------------------------
    def _loss(self, scores: torch.Tensor, batch: Encoded | _Distillation) -> torch.Tensor:
        if isinstance(batch, _Distillation):
            rated, distillation = batch.split(scores)
            return self._loss(rated, batch.batch) + distillation
        loss = scores.sum() * 0.0
        if "pairwise" in self.config.loss:
            loss = loss + batch.loss(scores, self.config.pairing)
        if "mse" in self.config.loss:
            ratings = batch.ratings.to(scores.device)
            low, high = self.model.config.score_range
            predicted = (scores - low) / (high - low)
            span = (ratings.max() - ratings.min()).clamp_min(1e-12)
            loss = loss + torch.mean((predicted - ((ratings - ratings.min()) / span).to(scores.dtype)) ** 2)
        return loss

    def _activation_budget_bytes(self) -> float:
        """`config.activation_budget_mb`, else half the GPU's free memory, else 1 GiB on the CPU."""
        if self.config.activation_budget_mb is not None:
            return self.config.activation_budget_mb * 2**20
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            return free / 2
        return float(CPU_ACTIVATION_BUDGET_MB * 2**20)

    def micro_batch_size(self, batch_size: int) -> int:
        """Images per micro-batch for a step on ``batch_size`` images: `config.micro_batch_size`, else the most whose
        estimated activations fit `config.activation_budget_mb` (the whole batch when it fits)."""
        cfg = self.config
        if cfg.micro_batch_size is not None:
            return min(cfg.micro_batch_size, batch_size)
        if self._activation_bytes is None:
            return batch_size
        fits = int(self.activation_budget_bytes // self._activation_bytes)
        return max(1, min(batch_size, fits))

    def _estimate_activations(self, encoded: torch.Tensor) -> None:
        """Activation bytes per image of a step (see `ACTIVATIONS_PER_BLOCK`), from one image's hidden state."""
        if self._activation_bytes is not None or not len(encoded):
            return
        if self.prefix_blocks is None:
            with torch.no_grad(), self._autocast():
                hidden = self._network.adapter.embed(encoded[:1])
        else:
            hidden = encoded[:1]
        blocks = self._network.adapter.num_blocks - (self.prefix_blocks or 0) + 1
        per_block = hidden.numel() * 4
        kept = blocks + ACTIVATIONS_PER_BLOCK if self.config.gradient_checkpointing else blocks * ACTIVATIONS_PER_BLOCK
        self._activation_bytes = max(1, per_block * kept)

    def _weight_gradient(self, leaves: Mapping[str, torch.Tensor], batch: Encoded | _Distillation) -> torch.Tensor:
        """Accumulate dL/dW of the batch's loss into ``leaves`` (the network's substituted parameters); the loss.

        The pairwise loss needs every score of the batch, but not every activation at once: the scores are computed
        without a graph, d loss / d scores is taken, and then each micro-batch's scores are backpropagated with their
        slice of it. By the chain rule this is exactly the full batch's gradient.
        """
        prefix = batch.prefix
        self._estimate_activations(prefix)
        size, micro = prefix.shape[0], self.micro_batch_size(prefix.shape[0])
        params = {f"network.{name}": tensor for name, tensor in leaves.items()}

        def backward(encoded: torch.Tensor, objective: Any) -> torch.Tensor:
            return torch.func.functional_call(
                self._runner, params, (objective, self._inputs(encoded), self._autocast()), strict=False
            )

        with self._checkpointing():
            if micro >= size:  # one pass: forward with a graph, loss, backward
                return backward(prefix, lambda scores: self._loss(scores, batch))
            with torch.no_grad():
                scores = torch.cat(
                    [self.forward(leaves, prefix[i : i + micro]).scores.float() for i in range(0, size, micro)]
                )
            scores.requires_grad_(True)
            loss = self._loss(scores, batch)
            (slope,) = torch.autograd.grad(loss, scores)
            for i in range(0, size, micro):
                part = slope[i : i + micro]
                backward(prefix[i : i + micro], lambda scores, part=part: torch.sum(scores * part))
            return loss.detach()

    @contextlib.contextmanager
    def _checkpointing(self) -> Any:
        """Gradient checkpointing of the network's blocks while a step runs, when configured."""
        network, enable = self._network, self.config.gradient_checkpointing
        before = getattr(network, "gradient_checkpointing", False)
        network.gradient_checkpointing = enable or before
        try:
            yield
        finally:
            network.gradient_checkpointing = before

    def _step_gradient(
        self,
        values: torch.Tensor,
        head: dict[str, torch.Tensor],
        batch: Encoded | _Distillation,
        init: torch.Tensor,
    ) -> float:
        """Set the gradients of ``values`` (and of the head change) for one batch; return the loss.

        The gradient with respect to the merged weights, dL/dW, is computed micro-batch by micro-batch (see
        `_weight_gradient`); then `"autograd"` backpropagates it through the merge, and `"streamed"` takes its inner
        products with the task vectors one task at a time.
        """
        autograd = self.gradient == "autograd"
        if autograd:
            merged = self._params(values, head)
        else:
            merged = self._params(values.detach(), {n: d.detach() for n, d in head.items()})
        leaves = {n: t.detach().requires_grad_(True) for n, t in merged.items()}
        loss = self._weight_gradient(leaves, batch)
        grads = {n: t.grad for n, t in leaves.items() if t.grad is not None}
        del leaves
        if autograd:
            torch.autograd.backward([merged[n] for n in grads], [grads[n] for n in grads])
        else:
            grad = streamed_coefficient_grad(
                grads,
                lambda t: {n: s[t] for n, s in self._stacked.items()},
                len(self.bank),
                self._layout_for(values),
            )
            grad = grad.to(values.device, values.dtype)
            values.grad = grad if values.grad is None else values.grad + grad
            for name, delta in head.items():  # d(theta + delta)/d(delta) is the identity
                delta.grad = grads[name].clone()
        del merged, grads
        loss = loss.to(values.device, values.dtype)
        if self.config.init_pull > 0:
            loss = loss + self.config.init_pull * torch.sum((values - init) ** 2)
        if head:
            loss = loss + self.config.head_l2 * sum(torch.sum(d**2) for d in head.values())
        if loss.requires_grad:
            loss.backward()
        return float(loss.detach())

    def _optimise(
        self,
        start: torch.Tensor,
        train: Encoded,
        steps: int,
        watch: torch.Tensor | None = None,
        teacher: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[float], list[torch.Tensor]]:
        """Optimise `[G, T]` coefficients from ``start`` on ``train`` for ``steps`` steps.

        With ``teacher`` (unlabeled photos' prefix rows and the teacher's scores on them), each step also distils the
        teacher on `batch_size` of those photos (see `_Distillation`). Returns the final coefficients and head change,
        the loss per step, and, when ``watch`` (encoded images) is given, their scores at step 0 and every
        `eval_every` steps (and the last).
        """
        cfg = self.config
        generator = torch.Generator().manual_seed(cfg.seed)
        values = start.clone().requires_grad_(True)
        head = {n: torch.zeros_like(t, requires_grad=True) for n, t in self._head.items()}
        groups = [{"params": [values]}] + (
            [{"params": list(head.values()), "lr": cfg.head_learning_rate, "weight_decay": 0.0}] if head else []
        )
        optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        losses: list[float] = []
        watched: list[torch.Tensor] = []

        def look() -> None:
            if watch is not None:
                watched.append(self.predict(values.detach(), watch, head={n: d.detach() for n, d in head.items()}))

        look()
        order, cursor = torch.randperm(len(train), generator=generator), 0
        for step in range(1, steps + 1):
            if len(train) <= cfg.batch_size:
                index = torch.randperm(len(train), generator=generator)
            else:
                if cursor + cfg.batch_size > len(train):
                    order, cursor = torch.randperm(len(train), generator=generator), 0
                index, cursor = order[cursor : cursor + cfg.batch_size], cursor + cfg.batch_size
            optimizer.zero_grad(set_to_none=True)
            batch: Encoded | _Distillation = train.subset(index)
            if teacher is not None:
                photos = torch.randperm(teacher[0].shape[0], generator=generator)[: cfg.batch_size]
                batch = _Distillation(batch, teacher[0][photos], teacher[1][photos], cfg.distil_weight)
            losses.append(self._step_gradient(values, head, batch, start))
            if self._bar is not None:
                self._bar.update(1)
            if not torch.isfinite(values.grad).all():
                raise DivergedError(f"non-finite coefficient gradient at step {step}; lower the learning rate")
            optimizer.step()
            if step % cfg.eval_every == 0 or step == steps:
                look()
        return values.detach(), {n: d.detach() for n, d in head.items()}, losses, watched

    def _eval_steps(self) -> list[int]:
        every, steps = self.config.eval_every, self.config.steps
        return [0, *range(every, steps, every), steps]

    # -- selection -----------------------------------------------------------------------------------------------
    def _folds(self, target: torch.Tensor) -> list[torch.Tensor]:
        """Deterministic folds of canonical units (rated images or compared pairs), stratified by the target:
        held-out units of each fold, or none if the units are too few (fewer than 2 per fold)."""
        ratings, n = target, len(target)
        k = min(self.config.folds, n // 2)
        if k < 2:
            return []
        by_rating = sorted(range(n), key=lambda i: (float(ratings[i]), i))
        generator = torch.Generator().manual_seed(self.config.seed)
        fold = torch.empty(n, dtype=torch.long)
        for start in range(0, n, k):
            block = torch.tensor(by_rating[start : start + k])
            fold[block] = torch.randperm(k, generator=generator)[: len(block)]
        return [torch.nonzero(fold == f).flatten() for f in range(k)]

    def _simple_out_of_fold(
        self, encoded: Encoded, scores: _Scores, names: Sequence[str], folds: list[torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Out-of-fold unit predictions of the simple candidates ``names``: each fold's held-out units (indices into
        ``encoded``) are predicted by the candidate fitted on the other folds' units; units in no fold stay 0."""
        units = torch.cat(folds)
        out = {name: torch.zeros(len(encoded), dtype=torch.float64) for name in names}
        if "uniform" in names:  # fits nothing: one prediction serves every fold
            uniform = self.predict(self._simple("uniform", scores, units), encoded.prefix).double()
            out["uniform"][units] = encoded.unit_scores(uniform)[units]
            names = [name for name in names if name != "uniform"]
        for held in folds:
            train = torch.from_numpy(np.setdiff1d(units.numpy(), held.numpy()))
            held_out = encoded.subset(held)
            for name in names:
                if name == "single":  # the task model's own scores: no forward pass
                    out[name][held] = scores.tasks[int(scores.correlation(train).argmax()), held]
                else:
                    values = self._simple(name, scores, train)
                    out[name][held] = held_out.unit_scores(self.predict(values, held_out.prefix).double())
        return out

    def _best_simple(self, encoded: Encoded, scores: _Scores, index: torch.Tensor) -> str:
        """The simple candidate that cross-validates best on units ``index`` alone (the softmax init when they are
        too few to fold): where `start="best"` starts learned coefficients, chosen without the held-out units."""
        folds = [index[fold] for fold in self._folds(scores.target[index])]
        if not folds:
            return "init"
        oof = self._simple_out_of_fold(encoded, scores, SIMPLE_CANDIDATES, folds)
        predictions = torch.stack([oof[name][index] for name in SIMPLE_CANDIDATES]).numpy()
        values = _criterion_values(predictions, scores.target[index].numpy(), "rank_loss", scores.metric)
        return SIMPLE_CANDIDATES[int(np.argmax(values))]

    def _cross_validate(
        self, encoded: Encoded, scores: _Scores, folds: list[torch.Tensor], pool: _Unlabeled | None = None
    ) -> dict[str, tuple[torch.Tensor, int, torch.Tensor]]:
        """Out-of-fold unit predictions of every candidate on every unit (a rated image's score, a compared pair's
        score difference), the step count of learned ones, and `[S, U]` the predictions at every step count
        evaluated (one row for a simple candidate)."""
        n = len(encoded)
        names = self._candidate_names(pool)
        learned = [name for name in names if name in LEARNED_CANDIDATES]
        steps = self._eval_steps()
        simple = self._simple_out_of_fold(encoded, scores, [name for name in names if name not in learned], folds)
        curves = {name: torch.zeros(len(steps), n, dtype=torch.float64) for name in learned}
        for f, held in enumerate(folds):
            train = torch.from_numpy(np.setdiff1d(np.arange(n), held.numpy()))
            held_out = encoded.subset(held)
            for name in learned:
                self._describe(f"fold {f + 1}/{len(folds)}, {name}")
                start = self._start(name, encoded, scores, train)
                teacher = self._teacher(encoded, scores, train, pool) if name == "distil" else None
                watched = self._optimise(start, encoded.subset(train), self.config.steps, held_out.prefix, teacher)[3]
                curves[name][:, held] = held_out.unit_scores(torch.stack(watched).double())
        out = {name: (prediction, 0, prediction[None]) for name, prediction in simple.items()}
        for name, curve in curves.items():
            # Step counts differ by little: the rank loss (at each step's best scale) tells them apart more finely
            # than SROCC does on a few units.
            values = _criterion_values(curve.numpy(), scores.target.numpy(), "rank_loss", scores.metric)
            best = int(np.argmax(values))  # the fewest steps among equals
            out[name] = (curve[best], steps[best], curve)
        return {name: out[name] for name in names}

    def _choose(
        self, predictions: dict[str, tuple[torch.Tensor, int, torch.Tensor]], scores: _Scores
    ) -> tuple[str, list[dict[str, Any]], float, float, tuple[float, float], float]:
        """The one-standard-error rule: the first candidate (simplest first) whose criterion is within `tolerance`
        standard errors of the best candidate's (the bootstrap over the units of the best one's criterion); the
        table; the estimate of the whole procedure's SROCC (pair accuracy for preferences, `_procedure_estimate`),
        the winner's standard error, the estimate's 90 % interval, and the winner's own cross-validated value."""
        names, metric, criterion = list(predictions), scores.metric, self.config.criterion
        key = metric if criterion == "srocc" else criterion  # the criterion's column: srocc, accuracy or rank_loss
        oof = np.stack([predictions[name][0].numpy() for name in names])
        target = scores.target.numpy()
        rng = np.random.default_rng(self.config.seed)
        samples = rng.integers(0, len(target), size=(BOOTSTRAP_SAMPLES, len(target)))
        correlation = _criterion(oof, target, "srocc", metric)
        correlation_se = np.nanstd([_criterion(oof[:, s], target[s], "srocc", metric) for s in samples], axis=0)
        value, value_se = correlation, correlation_se
        if criterion != "srocc":  # the SROCC bootstrap above is the criterion's own otherwise
            scaled = _scaled(oof, target, criterion, metric)
            value = _criterion(scaled, target, criterion, metric)
            value_se = np.nanstd([_criterion(scaled[:, s], target[s], criterion, metric) for s in samples], axis=0)
        best = int(np.argmax(value))
        within = value[best] - value <= self.config.tolerance * value_se[best] + 1e-12
        chosen = int(np.flatnonzero(within)[0])
        table = [
            {
                "candidate": name,
                metric: round(float(correlation[i]), 4),
                f"{metric}_se": round(float(correlation_se[i]), 4),
                key: round(float(value[i]), 4),
                f"{key}_se": round(float(value_se[i]), 4),
                "steps": predictions[name][1],
                "chosen": i == chosen,
            }
            for i, name in enumerate(names)
        ]
        estimate = _procedure_estimate(
            [predictions[name][2].numpy() for name in names],
            target,
            metric,
            self.config.tolerance,
            correlation_se,
            self.config.seed,
        )
        if math.isnan(estimate):  # too few units for any out-of-bag sample: the winner's own value
            estimate = float(correlation[chosen])
        interval = _interval(estimate, len(target), metric)
        return (
            names[chosen],
            table,
            round(estimate, 4),
            table[chosen][f"{metric}_se"],
            (round(interval[0], 4), round(interval[1], 4)),
            table[chosen][metric],
        )

    # -- distillation ----------------------------------------------------------------------------------------------
    def _teacher(
        self, encoded: Encoded, scores: _Scores, index: torch.Tensor, pool: _Unlabeled | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The output ensemble fitted on units ``index`` and its scores on unlabeled photos: ``pool`` when given
        (the person's own unrated photos), else the images of units ``index`` (their ratings are not used again).

        The ensemble weighs each task model's standardized scores (any sign: a criterion can count against a taste),
        fitted with the rank loss by `_ensemble_weights` from the softmax(SROCC) mix; its scores on the photos are
        what the merged model learns to reproduce (`_Distillation`).
        """
        if pool is None:
            images = index if encoded.metric == "srocc" else torch.unique(encoded.pairs[index].flatten())
            pool = _Unlabeled(encoded.prefix[images], scores.images[1:, images])
        tasks = pool.tasks.double()
        mean, spread = tasks.mean(1, keepdim=True), tasks.std(1, keepdim=True).clamp_min(1e-8)
        standardized = _Scores(scores.base * 0.0, scores.tasks / spread, scores.target, scores.metric)
        init = torch.softmax(self.config.temperature * scores.correlation(index), dim=0)
        weights = self._ensemble_weights(standardized, index, init)
        return pool.prefix, (weights @ ((tasks - mean) / spread)).float()

    def _unlabeled(self, prefix: torch.Tensor | None, model_scores: torch.Tensor | None) -> _Unlabeled | None:
        """Encoded unlabeled photos with each task model's scores on them (given once per pool, else computed)."""
        if prefix is None:
            return None
        if model_scores is None:
            return _Unlabeled(prefix, self.task_scores(prefix))
        if model_scores.shape != (len(self.bank) + 1, prefix.shape[0]):
            raise InputError(
                f"unlabeled_scores must be [T + 1, M] = [{len(self.bank) + 1}, {prefix.shape[0]}] (the base, then each "
                f"task model, on each unlabeled photo), received {list(model_scores.shape)}"
            )
        return _Unlabeled(prefix, model_scores[1:])

    def _candidate_names(self, pool: _Unlabeled | None) -> tuple[str, ...]:
        """The configured candidates; given unlabeled photos and no explicit list, the distilled one competes too."""
        names = self.config.candidate_names
        if pool is None or self.config.candidates is not None or "distil" in names:
            return names
        return tuple(name for name in CANDIDATES if name in {*names, "distil"})

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
        folds = self._folds(scores.target) if cfg.selection == "cv" else []
        table: list[dict[str, Any]] = []
        estimate: tuple[float | None, float | None, tuple[float, float] | None, float | None] = (None,) * 4
        learned = [name for name in self._candidate_names(pool) if name in LEARNED_CANDIDATES] if folds else []
        total = cfg.steps * (len(learned) * len(folds) + 1)
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
                    chosen, table, *estimate = self._choose(predictions, scores)
                    steps = predictions[chosen][1]
                bar.total = bar.n + (steps if chosen in LEARNED_CANDIDATES else 0)
                self._describe(f"refit {chosen}")
                coefficients, losses = self._fit_candidate(chosen, steps, encoded, scores, pool)
            finally:
                self._bar = None
        calibration = self._calibration(coefficients, encoded) if cfg.calibrate else None
        initial = self.coefficients_from(self._simple("init", scores, everything))
        agreement = scores.correlation(everything).tolist()
        value, value_se, interval, selected = estimate
        report = PersonalizationReport(
            coefficients=coefficients,
            initial_coefficients=initial,
            zero_shot_srocc={} if pairs else dict(zip(self.bank.task_names, agreement)),
            loss_history=losses,
            chosen=chosen,
            chosen_step=steps if chosen in LEARNED_CANDIDATES else 0,
            num_ratings=0 if pairs else len(encoded),
            wall_time=time.perf_counter() - began,
            gradient=self.gradient,
            cross_validation=table,
            cv_srocc=None if pairs else value,
            cv_srocc_se=None if pairs else value_se,
            folds=len(folds),
            criterion=cfg.criterion,
            duplicates=encoded.duplicates,
            calibration=calibration,
            config=cfg.to_dict(),
            num_pairs=len(encoded) if pairs else 0,
            cv_accuracy=value if pairs else None,
            cv_accuracy_se=value_se if pairs else None,
            zero_shot_accuracy={n: (a + 1) / 2 for n, a in zip(self.bank.task_names, agreement)} if pairs else {},
            cv_interval=interval,
            selected_cv=selected,
            unlabeled=0 if pool is None else int(pool.prefix.shape[0]),
        )
        return coefficients, report

    def _fit_candidate(
        self,
        name: str,
        steps: int,
        encoded: Encoded,
        scores: _Scores | None = None,
        pool: _Unlabeled | None = None,
    ) -> tuple[Coefficients, list[float]]:
        """Fit candidate ``name`` on all of (canonical) ``encoded``; learned ones for ``steps`` steps."""
        scores = scores or self._scores(encoded)
        everything = torch.arange(len(encoded))
        if name not in LEARNED_CANDIDATES:
            return self.coefficients_from(self._simple(name, scores, everything)), []
        start = self._start(name, encoded, scores, everything, "init" if self.config.selection == "last" else None)
        if not steps:
            return self.coefficients_from(start), []
        teacher = self._teacher(encoded, scores, everything, pool) if name == "distil" else None
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
        }

    def _calibration(self, coefficients: Coefficients, encoded: EncodedRatings) -> dict[str, float]:
        """Least-squares ratings ~ slope * prediction + intercept, with slope kept positive (monotone)."""
        predicted = self.predict(coefficients, encoded.prefix).double()
        ratings = encoded.ratings.double()
        centred = predicted - predicted.mean()
        slope = float((centred * (ratings - ratings.mean())).sum() / centred.pow(2).sum().clamp_min(1e-12))
        if slope <= 0:
            slope = float(ratings.std() / predicted.std().clamp_min(1e-12))
        calibration = {"slope": slope, "intercept": float(ratings.mean() - slope * predicted.mean())}
        check_calibration(calibration, "the calibration of these ratings")
        # Scores are float32: ratings such as 1e15 + i or 1 + 1e-9 i have no float32 scale that keeps images apart.
        scores = predicted.float()
        calibrated = scores * calibration["slope"] + calibration["intercept"]
        if len(calibrated.unique()) < len(scores.unique()):
            raise ConfigError(
                f"calibrate=True: the ratings (from {float(ratings.min())!r} to {float(ratings.max())!r}) differ by "
                "too little beside their magnitude for float32 scores, so calibrated scores of different images "
                "would be equal. Rescale the ratings (e.g. subtract their minimum), or fit with calibrate=False"
            )
        return calibration

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
        model = self.model.with_coefficients(self.bank, coefficients, info=report.summary())
        return PersonalizationResult(model, report)


#: Scales tried by `_order_scales`, relative to the root mean square of a row's margins: 4 decades, 1.33x apart.
_RELATIVE_SCALES = np.geomspace(1e-2, 1e2, 33)


def _margins(predictions: np.ndarray, target: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """`[C, P]` Bradley-Terry margins and their `[P]` targets: score differences over pairs of differently rated
    images (target 1), or a compared pair's score difference (target: the preference)."""
    if metric == "accuracy":
        return predictions, target
    above = target[:, None] > target[None, :]
    return (predictions[:, :, None] - predictions[:, None, :])[:, above], np.ones(int(above.sum()))


def _order_scales(predictions: np.ndarray, target: np.ndarray, metric: str = "srocc") -> np.ndarray:
    """`[C]` the scale s >= 0 of each row of `[C, U]` unit predictions that minimises its Bradley-Terry loss.

    The rank-loss criterion is taken at this scale, so that it measures how well a candidate orders the units, not
    how far apart its scores happen to lie: unscaled, a model whose scores barely differ scores near log 2 however
    poorly it orders, and beats a model that orders well on a wide scale and is confidently wrong on a few pairs.
    A row that orders worse than chance gets s = 0 (loss log 2). One scale per row is fitted on the same units it
    is then scored on, an advantage every candidate shares.
    """
    predictions = np.atleast_2d(predictions)
    margins, target = _margins(predictions, target, metric)
    if margins.shape[1] == 0:
        return np.ones(len(predictions))
    spread = np.sqrt(np.mean(margins**2, axis=1))
    scales = np.concatenate(
        [np.zeros((len(spread), 1)), _RELATIVE_SCALES / np.where(spread > 0, spread, 1.0)[:, None]], 1
    )
    scaled = scales[:, :, None] * margins[:, None, :]  # [C, S, P]
    losses = np.mean(np.logaddexp(0.0, scaled) - target * scaled, axis=2)
    return scales[np.arange(len(scales)), np.argmin(losses, axis=1)]


def _scaled(predictions: np.ndarray, target: np.ndarray, criterion: str, metric: str) -> np.ndarray:
    """For ``"rank_loss"``, each row of `[C, U]` unit predictions at its best scale (`_order_scales`); else as is."""
    return (
        predictions * _order_scales(predictions, target, metric)[:, None] if criterion == "rank_loss" else predictions
    )


def _criterion_values(predictions: np.ndarray, target: np.ndarray, criterion: str, metric: str) -> np.ndarray:
    """The criterion of each row of `[C, U]` unit predictions (the rank loss at each row's best scale)."""
    return _criterion(_scaled(predictions, target, criterion, metric), target, criterion, metric)


def _criterion(predictions: np.ndarray, target: np.ndarray, criterion: str, metric: str = "srocc") -> np.ndarray:
    """Higher is better, per row of `[C, U]` unit predictions (for ``"rank_loss"``, scale them by `_order_scales`
    first: `_criterion_values`).

    For ratings (``metric="srocc"``): SROCC (NaN, a constant row, counts as 0) or minus the Bradley-Terry rank loss
    over all pairs of differently rated images. For preferences (``metric="accuracy"``; units are pairs, predictions
    score differences): the share of non-tied pairs ordered as preferred (a zero difference counts half) or minus
    the Bradley-Terry loss against the preferences.
    """
    predictions = np.atleast_2d(predictions)
    if metric == "accuracy":
        if criterion == "rank_loss":
            return -np.mean(np.logaddexp(0.0, predictions) - target * predictions, axis=1)
        decided = target != 0.5
        if not decided.any():
            return np.full(len(predictions), 0.5)
        agree = np.where(predictions == 0, 0.5, (predictions > 0) == (target > 0.5))
        return agree[:, decided].mean(axis=1)
    if criterion == "srocc":
        return _rank_correlation(predictions, target[None])
    above = target[:, None] > target[None, :]
    if not above.any():
        return np.zeros(len(predictions))
    diff = predictions[:, :, None] - predictions[:, None, :]
    return -np.logaddexp(0.0, -diff[:, above]).mean(axis=1)


def _procedure_estimate(
    configs: Sequence[np.ndarray], target: np.ndarray, metric: str, tolerance: float, se: np.ndarray, seed: int
) -> float:
    """The accuracy of the whole selection, not of its winner: bootstrap bias-corrected cross-validation (BBC-CV,
    Tsamardinos, Greasidou and Borboudakis 2018).

    ``configs[c]`` holds `[S_c, U]` out-of-fold unit predictions of candidate c (one row per step count of a learned
    one). In each bootstrap sample of the units the selection is rerun on the in-bag units (each learned candidate's
    best step, then the first candidate within ``tolerance`` standard errors ``se`` of the best, by SROCC or pair
    accuracy) and its pick is scored on the out-of-bag units; the estimate is the mean of those scores. The winner's
    own cross-validated value is the best of several noisy values and errs upward; this does not, and refits nothing.
    """
    configs = [np.atleast_2d(c) for c in configs]
    rows = np.concatenate(configs)
    owner = np.concatenate([np.full(len(c), i) for i, c in enumerate(configs)])
    members = [np.flatnonzero(owner == c) for c in range(len(configs))]
    n = len(target)
    bags = np.random.default_rng(seed).integers(0, n, (BOOTSTRAP_SAMPLES, n))
    if metric == "srocc":  # every sample's in-bag SROCC at once: `[B, R]`
        inside_all = _rank_correlation(np.moveaxis(rows[:, bags], 1, 0), target[bags][:, None, :])
    values = []
    for b, bag in enumerate(bags):
        out = np.setdiff1d(np.arange(n), bag)
        if len(out) < 3 or len(np.unique(target[out])) < 2 or len(np.unique(target[bag])) < 2:
            continue
        inside = inside_all[b] if metric == "srocc" else _criterion(rows[:, bag], target[bag], "srocc", metric)
        best_rows = np.array([rows_[int(np.argmax(inside[rows_]))] for rows_ in members])
        per = inside[best_rows]
        top = int(np.argmax(per))
        pick = int(np.flatnonzero(per[top] - per <= tolerance * se[top] + 1e-12)[0])
        values.append(float(_criterion(rows[best_rows[pick]][None, out], target[out], "srocc", metric)[0]))
    return float(np.mean(values)) if values else float("nan")


def _rank_correlation(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman correlation along the last axis, broadcasting (NaN, a constant row, counts as 0)."""
    x, y = rankdata(x, axis=-1), rankdata(y, axis=-1)
    x, y = x - x.mean(axis=-1, keepdims=True), y - y.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nan_to_num((x * y).sum(-1) / np.sqrt((x**2).sum(-1) * (y**2).sum(-1)), nan=0.0)


def _interval(estimate: float, units: int, metric: str) -> tuple[float, float]:
    """A 90 % interval of the SROCC (pair accuracy) on new photos around an estimate from ``units`` rated images
    (compared pairs): in Fisher's z with the variance of a Spearman correlation on that many images, or a Wilson
    interval of a proportion over that many pairs. Both contain the estimate."""
    if metric == "accuracy":
        z2 = INTERVAL_Z**2
        centre = (estimate + z2 / (2 * units)) / (1 + z2 / units)
        half = INTERVAL_Z * math.sqrt(estimate * (1 - estimate) / units + z2 / (4 * units**2)) / (1 + z2 / units)
        return max(0.0, centre - half), min(1.0, centre + half)
    if units <= 3:
        return -1.0, 1.0
    z = math.atanh(min(max(estimate, -0.999), 0.999))
    half = INTERVAL_Z * math.sqrt(SPEARMAN_Z_VARIANCE / (units - 3))
    return math.tanh(z - half), math.tanh(z + half)


def unlabeled_images(unlabeled: Any) -> list[Any]:
    """The photos of ``unlabeled``: a folder's image files (sorted), or the given images or paths (none: [])."""
    if unlabeled is None:
        return []
    if isinstance(unlabeled, (str, Path)):
        folder = Path(unlabeled)
        if not folder.is_dir():
            raise InputError(f"unlabeled photos must be a folder of images or a list of images, received {folder}")
        photos = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not photos:
            raise InputError(f"the folder of unlabeled photos {folder} holds no image ({', '.join(IMAGE_EXTENSIONS)})")
        return photos
    if not isinstance(unlabeled, Sequence):
        raise InputTypeError(f"unlabeled must be a folder or a list of images, received {type(unlabeled).__name__}")
    return list(unlabeled)


def _check_ratings(ratings: torch.Tensor) -> None:
    if not torch.isfinite(ratings).all():
        rows = (~torch.isfinite(ratings)).nonzero().flatten().tolist()[:5]
        raise InputError(f"ratings must be finite numbers; rows {rows} are NaN or inf")
    if torch.unique(ratings).numel() < 2:
        raise InputError(
            f"personalization needs at least 2 distinct ratings to learn an order, received {ratings.numel()} ratings "
            f"all equal to {ratings[0].item() if ratings.numel() else 'nothing'}"
        )
