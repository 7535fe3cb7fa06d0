"""What a fit leaves behind: the state that makes a model personal, the report of the fit, and the calibration.

`PersonalizationState` travels with a personalized model (and into `personalization.json`); `PersonalizationReport`
is what `Personalizer.fit` found: the coefficients, the cross-validation table, the chosen candidate and the estimate
of how well the model ranks the person's photos.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from ..constants import PERSONALIZATION_FILE
from ..errors import ConfigError
from ..hub.references import Reference
from ..task_vectors.bank import TaskVectorBank
from ..task_vectors.coefficients import Coefficients
from .config import CANDIDATES
from .inputs import Encoded, EncodedPreferences
from .model_selection import INTERVAL_LEVEL
from .output_ensemble import OutputEnsemble

if TYPE_CHECKING:
    from ..modeling import AestheticModel

__all__ = [
    "PersonalizationReport",
    "PersonalizationResult",
    "PersonalizationState",
    "check_calibration",
    "fit_calibration",
]

#: An interval wider than this (high - low) is called wide, and the estimate says how many ratings in all would
#: narrow it to +- `NARROW_HALF_WIDTH`.
WIDE_INTERVAL, NARROW_HALF_WIDTH = 0.3, 0.15


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


def fit_calibration(predicted: torch.Tensor, ratings: torch.Tensor) -> dict[str, float]:
    """Least-squares ratings ~ slope * prediction + intercept of `[N]` predicted scores, with slope kept positive
    (monotone), checked usable for float32 scores."""
    predicted, ratings = predicted.double(), ratings.double()
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


@dataclass
class PersonalizationState:
    """What makes a model personal: the bank and coefficients it was merged from, and facts about the fit.

    Attributes:
        bank: the task-vector bank (None for a merged export loaded from disk).
        coefficients: the coefficients (None for a merged export loaded from disk without them).
        base: the base model the coefficients apply to: where it lives (if known) and its fingerprint.
        info: personalizer config, number of ratings, cross-validation, calibration, ...
        bank_reference: where the bank lives, when the bank itself is not loaded (a merged export read back).
        ensemble: for a model that scores as the output ensemble of its task models (then `coefficients` is None).
    """

    bank: TaskVectorBank | None
    coefficients: Coefficients | None
    base: Reference
    info: dict[str, Any] = field(default_factory=dict)
    bank_reference: Reference | None = None
    ensemble: OutputEnsemble | None = None

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
        if self.ensemble is not None:
            record["ensemble"] = self.ensemble.to_dict()
        bank = self.bank_ref
        if bank is not None:
            record["bank"] = bank.to_dict(fingerprint_key="base_fingerprint")
        return record


@dataclass
class PersonalizationReport:
    """What a fit did: the coefficients, the cross-validation table, the chosen candidate, timings.

    Attributes:
        coefficients: the fitted coefficients (task granularity unless a finer learned candidate won); when the output
            ensemble won (`ensemble`), the softmax(SROCC) mix, its one-pass reference.
        initial_coefficients: the softmax(SROCC) init on all the ratings (task granularity), a reference point.
        zero_shot_srocc: each task model's SROCC on the rated images (empty for preferences).
        chosen: the winning candidate (see `CANDIDATES`).
        chosen_step: optimisation steps of the refit (0 for a candidate that learns nothing).
        cross_validation: one row per candidate: its cross-validated SROCC, standard error, criterion, steps.
        cv_srocc: the expected SROCC of the whole procedure on new photos, selection included (`model_selection.procedure_estimate`):
            not the winner's own cross-validated SROCC, which is the best of several noisy values
            (`selected_cv`); cv_srocc_se: the winner's bootstrap standard error.
        cv_interval: a 90 % prediction interval of the SROCC (pair accuracy, for preferences) on new photos.
        selected_cv: the winner's own cross-validated SROCC (pair accuracy), biased upward by the selection.
        unlabeled: unlabeled photos the fit used (`distil`), 0 when none were given.
        ensemble: the output ensemble, when it won (`"outputs"`): the personalized model scores as it.
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
    ensemble: OutputEnsemble | None = None

    @classmethod
    def of_fit(
        cls,
        encoded: Encoded,
        task_names: list[str],
        agreement: list[float],
        estimate: tuple[float | None, float | None, tuple[float, float] | None, float | None],
        **fields: Any,
    ) -> PersonalizationReport:
        """The report of a fit to ``encoded``: its ratings or pairs counted, the estimate ``(value, standard error,
        interval, selected value)`` and each task model's ``agreement`` (SROCC; for preferences 2 x pair accuracy - 1)
        stored as SROCC or pair accuracy; the other ``fields`` as given."""
        pairs = isinstance(encoded, EncodedPreferences)
        value, value_se, interval, selected = estimate
        return cls(
            zero_shot_srocc={} if pairs else dict(zip(task_names, agreement)),
            num_ratings=0 if pairs else len(encoded),
            cv_srocc=None if pairs else value,
            cv_srocc_se=None if pairs else value_se,
            num_pairs=len(encoded) if pairs else 0,
            cv_accuracy=value if pairs else None,
            cv_accuracy_se=value_se if pairs else None,
            zero_shot_accuracy={n: (a + 1) / 2 for n, a in zip(task_names, agreement)} if pairs else {},
            cv_interval=interval,
            selected_cv=selected,
            **fields,
        )

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
        """How many ratings (pairs) in all would bring the interval's width down to 2 x `NARROW_HALF_WIDTH`, if its
        variance shrinks as 1 / n: the sampling part does, and the pick's spread (an average's variance) about so."""
        if self.cv_interval is None:
            return None
        low, high = self.cv_interval
        if self.num_pairs:  # a proportion's half-width
            return math.ceil(self.num_pairs * ((high - low) / (2 * NARROW_HALF_WIDTH)) ** 2)
        if self.cv_srocc is None or self.num_ratings <= 3:
            return None
        # In Fisher's z the interval is z +- h, its variance (h / 1.645)^2 proportional to 1 / (n - 3); find the h
        # whose interval is narrow enough (its width in r grows with h), then the n that gives it.
        z = math.atanh(min(max(self.cv_srocc, -0.999), 0.999))
        now = max(math.atanh(min(high, 0.999)) - z, z - math.atanh(max(low, -0.999)))
        small, large = 0.0, now
        for _ in range(60):
            middle = (small + large) / 2
            width = math.tanh(z + middle) - math.tanh(z - middle)
            small, large = (middle, large) if width <= 2 * NARROW_HALF_WIDTH else (small, middle)
        return 3 + math.ceil((self.num_ratings - 3) * (now / max(small, 1e-9)) ** 2)

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
