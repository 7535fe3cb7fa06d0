"""Correlation metrics for aesthetic and quality scores: SROCC, PLCC, KRCC and pairwise ranking accuracy.

The functions here need only numpy and scipy. The same functions back the `evaluate` metric modules bundled under
`evaluate_metrics/` (one folder per metric), which [`load_metric`] loads offline:

```py
>>> from taskvec_aesthetics.evaluation.metrics import correlation_report, load_metric
>>> correlation_report([0.1, 0.4, 0.35, 0.8], [1.0, 2.0, 3.0, 4.0])["srocc"]
0.8
>>> load_metric("srocc").compute(predictions=[0.1, 0.4, 0.35, 0.8], references=[1.0, 2.0, 3.0, 4.0])
{'srocc': 0.8}
```
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import optimize, special, stats

from ..errors import InputError, InputTypeError, MissingFileError

if TYPE_CHECKING:
    import evaluate

__all__ = [
    "METRIC_NAMES",
    "ConstantInputWarning",
    "correlation_report",
    "krcc",
    "load_metric",
    "metric_path",
    "pairwise_accuracy",
    "plcc",
    "srocc",
]

logger = logging.getLogger(__name__)

#: Names of the bundled `evaluate` metric modules; `aesthetic_correlation` returns every metric at once.
METRIC_NAMES: tuple[str, ...] = ("srocc", "plcc", "krcc", "pairwise_accuracy", "aesthetic_correlation")

_BUNDLE_DIR = Path(__file__).resolve().parent / "evaluate_metrics"


class ConstantInputWarning(RuntimeWarning):
    """Warned when the predictions or the targets are constant, so that a correlation is undefined (NaN)."""


# --------------------------------------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------------------------------------


def _as_vector(values: Any, name: str) -> np.ndarray:
    """Converts a list, numpy array or torch tensor to a 1-D float64 array, rejecting what no metric can use."""
    if hasattr(values, "detach") and hasattr(values, "cpu"):  # torch tensor, without importing torch
        values = values.detach().cpu().double().numpy()
    try:
        array = np.asarray(values)
    except (TypeError, ValueError) as error:
        raise InputTypeError(
            f"`{name}` must be a sequence of real numbers, got {type(values).__name__}: {error}"
        ) from None
    if array.dtype.kind not in "biuf":
        raise InputTypeError(
            f"`{name}` must contain real numbers, got {type(values).__name__} of dtype {array.dtype}."
        )
    # A column or row vector (e.g. model scores of shape [N, 1]) is accepted; anything else is ambiguous.
    if array.ndim == 0 or array.size != max(array.shape):
        raise InputError(f"`{name}` must be one-dimensional, got shape {tuple(array.shape)}.")
    array = array.astype(np.float64).reshape(-1)
    finite = np.isfinite(array)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise InputError(
            f"`{name}` must be finite, got {bad.size} non-finite value(s) (first at index {bad[0]}: {array[bad[0]]})."
        )
    return array


def _as_pair(pred: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = _as_vector(pred, "pred"), _as_vector(target, "target")
    if x.size != y.size:
        raise InputError(f"`pred` and `target` must have the same length, got {x.size} and {y.size}.")
    if x.size < 2:
        raise InputError(f"At least 2 (pred, target) pairs are needed to compute a correlation, got {x.size}.")
    return x, y


# --------------------------------------------------------------------------------------------------------------------
# Metrics on validated, non-constant inputs
# --------------------------------------------------------------------------------------------------------------------


def _standardize(values: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance; dividing by the largest magnitude first keeps huge or tiny values from overflowing."""
    values = values / np.abs(values).max()
    values = values - values.mean()
    return values / np.sqrt(np.mean(values * values))


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.clip(np.mean(_standardize(x) * _standardize(y)), -1.0, 1.0))


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    return _pearson(stats.rankdata(x), stats.rankdata(y))


def _kendall_tau_b(x: np.ndarray, y: np.ndarray) -> float:
    # scipy's default p-value method is kept: its asymptotic one divides by zero for 2 items.
    return float(stats.kendalltau(x, y, variant="b").statistic)


_LOGISTIC_PARAMS = 4


def _logistic(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """The 4-parameter logistic of VQEG, (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2, written overflow-free."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return (b1 - b2) * special.expit((x - b3) / abs(b4)) + b2


def _fit_logistic(x: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    """Least-squares fit of `_logistic` mapping `x` onto `y`; returns the fitted values, or `None` if it fails."""
    if x.size < _LOGISTIC_PARAMS:
        logger.warning(
            "Logistic fit for PLCC needs at least %d points, got %d; falling back to the linear PLCC.",
            _LOGISTIC_PARAMS,
            x.size,
        )
        return None
    # Fitting on standardised data is better conditioned; the logistic family is closed under these affine maps.
    xs, ys = _standardize(x), _standardize(y)
    high, low = ys.max(), ys.min()
    if _pearson(x, y) < 0:  # start from a decreasing curve when the relation is decreasing
        high, low = low, high
    try:
        with warnings.catch_warnings():
            # The parameter covariance is not used, so its estimation warning is noise.
            warnings.simplefilter("ignore", optimize.OptimizeWarning)
            params, _ = optimize.curve_fit(_logistic, xs, ys, p0=[high, low, 0.0, 1.0], maxfev=10_000)
    except (RuntimeError, ValueError, FloatingPointError) as error:
        logger.warning("Logistic fit for PLCC failed (%s); falling back to the linear PLCC.", error)
        return None
    fitted = _logistic(xs, *params)
    if not np.isfinite(fitted).all() or fitted.min() == fitted.max():
        logger.warning("Logistic fit for PLCC is degenerate (parameters %s); falling back to the linear PLCC.", params)
        return None
    return fitted


def _pearson_logistic(x: np.ndarray, y: np.ndarray) -> float:
    fitted = _fit_logistic(x, y)
    return _pearson(x if fitted is None else fitted, y)


def _tied_pairs(values: np.ndarray) -> int:
    _, counts = np.unique(values, return_counts=True)
    return int((counts * (counts - 1) // 2).sum())


def _pairwise_accuracy(x: np.ndarray, y: np.ndarray) -> float:
    """Fraction of target-untied pairs ordered like the target, prediction ties counting half, in O(n log n).

    With S = concordant - discordant pairs and N = pairs untied in the target, the accuracy is
    (correct + ties / 2) / N = (1 + S / N) / 2, and Kendall's tau-b is S / sqrt((n0 - n1) * N), where n0 is the
    number of pairs and n1 the number of pairs tied in the prediction.
    """
    n0 = x.size * (x.size - 1) // 2
    untied_pred, untied_target = n0 - _tied_pairs(x), n0 - _tied_pairs(y)
    if untied_pred == 0:  # constant predictions: every pair is a tie worth half
        return 0.5
    return 0.5 + 0.5 * _kendall_tau_b(x, y) * math.sqrt(untied_pred / untied_target)


_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "srocc": _spearman,
    "plcc": _pearson,
    "plcc_logistic": _pearson_logistic,
    "krcc": _kendall_tau_b,
    "pairwise_accuracy": _pairwise_accuracy,
}


def _compute(names: tuple[str, ...], pred: Any, target: Any) -> dict[str, float]:
    """Validates once, warns once for constant inputs and computes the named metrics."""
    x, y = _as_pair(pred, target)
    constant = [name for name, values in (("pred", x), ("target", y)) if values.min() == values.max()]
    # Pairwise accuracy stays defined for constant predictions: every pair is a tie worth half.
    undefined = [n for n in names if constant and not (n == "pairwise_accuracy" and constant == ["pred"])]
    if undefined:
        described = " and ".join(
            f"`{side}` (all {x.size} values equal {(x if side == 'pred' else y)[0]:g})" for side in constant
        )
        warnings.warn(
            f"Constant input: {described}; {', '.join(undefined)} undefined, returning nan.",
            ConstantInputWarning,
            stacklevel=3,
        )
    return {name: math.nan if name in undefined else _METRICS[name](x, y) for name in names}


# --------------------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------------------


def srocc(pred: Any, target: Any) -> float:
    """Spearman rank-order correlation coefficient (ties get their average rank).

    Args:
        pred (`list[float]`, `np.ndarray` or `torch.Tensor`): Predicted scores, one per item.
        target (`list[float]`, `np.ndarray` or `torch.Tensor`): Ground-truth scores for the same items.

    Returns:
        `float`: SROCC in [-1, 1], or NaN (with a [`ConstantInputWarning`]) when either input is constant.

    Raises:
        `ValueError`: On mismatched lengths, fewer than 2 items, non-finite values or a non-vector shape.
        `TypeError`: On non-numeric input.
    """
    return _compute(("srocc",), pred, target)["srocc"]


def plcc(pred: Any, target: Any, logistic: bool = False) -> float:
    """Pearson linear correlation coefficient, optionally after the 4-parameter logistic fit used in IQA.

    With `logistic=True`, the predictions are first mapped onto the targets with the least-squares fit of
    f(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2 (VQEG), and the PLCC of f(pred) and the targets is returned.
    The fitted curve may be decreasing, so this measures the strength of a monotone relation whatever its direction.
    If the fit fails, the linear PLCC is returned and a warning is logged.

    Args:
        pred (`list[float]`, `np.ndarray` or `torch.Tensor`): Predicted scores, one per item.
        target (`list[float]`, `np.ndarray` or `torch.Tensor`): Ground-truth scores for the same items.
        logistic (`bool`, *optional*, defaults to `False`): Fit the 4-parameter logistic before correlating.

    Returns:
        `float`: PLCC in [-1, 1], or NaN (with a [`ConstantInputWarning`]) when either input is constant.

    Raises:
        `ValueError`: On mismatched lengths, fewer than 2 items, non-finite values or a non-vector shape.
        `TypeError`: On non-numeric input.
    """
    name = "plcc_logistic" if logistic else "plcc"
    return _compute((name,), pred, target)[name]


def krcc(pred: Any, target: Any) -> float:
    """Kendall rank correlation coefficient, tau-b (adjusted for ties in either input).

    Args:
        pred (`list[float]`, `np.ndarray` or `torch.Tensor`): Predicted scores, one per item.
        target (`list[float]`, `np.ndarray` or `torch.Tensor`): Ground-truth scores for the same items.

    Returns:
        `float`: KRCC in [-1, 1], or NaN (with a [`ConstantInputWarning`]) when either input is constant.

    Raises:
        `ValueError`: On mismatched lengths, fewer than 2 items, non-finite values or a non-vector shape.
        `TypeError`: On non-numeric input.
    """
    return _compute(("krcc",), pred, target)["krcc"]


def pairwise_accuracy(pred: Any, target: Any) -> float:
    """Pairwise ranking accuracy: how often the predictions order two items like the ground truth does.

    Over all pairs whose ground-truth values differ, the fraction whose predicted order agrees; a tie in the
    prediction counts half. Pairs tied in the ground truth are skipped. Computed in O(n log n).

    Args:
        pred (`list[float]`, `np.ndarray` or `torch.Tensor`): Predicted scores, one per item.
        target (`list[float]`, `np.ndarray` or `torch.Tensor`): Ground-truth scores for the same items.

    Returns:
        `float`: Accuracy in [0, 1] (0.5 is chance, and the value for constant predictions), or NaN (with a
        [`ConstantInputWarning`]) when the targets are constant, since no pair can then be judged.

    Raises:
        `ValueError`: On mismatched lengths, fewer than 2 items, non-finite values or a non-vector shape.
        `TypeError`: On non-numeric input.
    """
    return _compute(("pairwise_accuracy",), pred, target)["pairwise_accuracy"]


def correlation_report(pred: Any, target: Any) -> dict[str, float]:
    """All metrics at once, validating the inputs once.

    Args:
        pred (`list[float]`, `np.ndarray` or `torch.Tensor`): Predicted scores, one per item.
        target (`list[float]`, `np.ndarray` or `torch.Tensor`): Ground-truth scores for the same items.

    Returns:
        `dict[str, float]`: Keys `srocc`, `plcc`, `plcc_logistic`, `krcc` and `pairwise_accuracy`, as computed by
        [`srocc`], [`plcc`] (with `logistic=False` and `True`), [`krcc`] and [`pairwise_accuracy`].

    Raises:
        `ValueError`: On mismatched lengths, fewer than 2 items, non-finite values or a non-vector shape.
        `TypeError`: On non-numeric input.
    """
    return _compute(tuple(_METRICS), pred, target)


def metric_path(name: str) -> str:
    """Absolute path of a bundled `evaluate` metric module folder, for `evaluate.load(path)`.

    Args:
        name (`str`): One of [`METRIC_NAMES`]: `srocc`, `plcc`, `krcc`, `pairwise_accuracy` or
            `aesthetic_correlation` (all of them in one module).

    Returns:
        `str`: The folder holding `<name>.py` (and its `README.md` card).

    Raises:
        `ValueError`: If `name` is not a bundled metric.
        `FileNotFoundError`: If the package was installed without its metric modules.
    """
    if name not in METRIC_NAMES:
        raise InputError(f"Unknown metric {name!r}; expected one of {', '.join(METRIC_NAMES)}.")
    folder = _BUNDLE_DIR / name
    if not (folder / f"{name}.py").is_file():
        raise MissingFileError(
            f"The bundled metric module {folder / f'{name}.py'} is missing; reinstall taskvec-aesthetics with its "
            "package data."
        )
    return str(folder)


def metric_info(description: str, citation: str, inputs_description: str, reference_urls: Sequence[str] = ()) -> Any:
    """The `evaluate.MetricInfo` of a bundled metric module: float64 predictions and references.

    float64 in the default (list) format keeps full precision; the numpy format would cast to float32.
    """
    import datasets
    import evaluate

    return evaluate.MetricInfo(
        description=description,
        citation=citation,
        inputs_description=inputs_description,
        features=datasets.Features(
            {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
        ),
        reference_urls=list(reference_urls),
    )


def load_metric(name: str, **kwargs: Any) -> evaluate.EvaluationModule:
    """Loads a bundled metric with `evaluate.load` from its local folder; works offline.

    Args:
        name (`str`): One of [`METRIC_NAMES`].
        kwargs: Forwarded to `evaluate.load` (e.g. `keep_in_memory=True`, `process_id`, `num_process`).

    Returns:
        `evaluate.EvaluationModule`: The metric; call `.compute(predictions=..., references=...)`.
        The `plcc` module takes `logistic=True` in `compute`.
    """
    import evaluate  # optional at import time: the functions above need only numpy and scipy

    return evaluate.load(metric_path(name), **kwargs)
