"""Correlation metrics: agreement with scipy, logistic PLCC, pairwise accuracy, input errors, bundled evaluate modules."""

from __future__ import annotations

import itertools
import logging
import math
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

import taskvec_aesthetics
from taskvec_aesthetics.evaluation.metrics import (
    METRIC_NAMES,
    ConstantInputWarning,
    correlation_report,
    krcc,
    load_metric,
    metric_path,
    pairwise_accuracy,
    plcc,
    srocc,
)

# Any warning from inside numpy/scipy in the numeric tests is a failure.
numeric = pytest.mark.filterwarnings("error")

SEEDS = (0, 1, 2)
SIZES = (3, 17, 200)


def _sample(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Correlated scores with ties in both: predictions on a coarse grid, targets on a 1..10 rating scale."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=n)
    pred = np.round(latent + 0.5 * rng.normal(size=n), 1)
    target = np.clip(np.round(5.5 + 2 * latent + rng.normal(size=n)), 1, 10)
    for values in (pred, target):  # tiny samples could come out constant
        if values.min() == values.max():
            values[0] += 1.0
    return pred, target


def _brute_force_pairwise_accuracy(pred: np.ndarray, target: np.ndarray) -> float:
    score = judged = 0.0
    for i, j in itertools.combinations(range(len(pred)), 2):
        if target[i] == target[j]:
            continue
        judged += 1
        if pred[i] == pred[j]:
            score += 0.5
        elif (pred[i] < pred[j]) == (target[i] < target[j]):
            score += 1
    return score / judged


@numeric
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", SIZES)
def test_matches_scipy_with_ties(seed: int, n: int) -> None:
    pred, target = _sample(seed, n)
    assert len(np.unique(target)) < n or n == 3  # the larger samples do exercise ties
    assert srocc(pred, target) == pytest.approx(stats.spearmanr(pred, target).statistic, abs=1e-9)
    assert plcc(pred, target) == pytest.approx(stats.pearsonr(pred, target).statistic, abs=1e-9)
    assert krcc(pred, target) == pytest.approx(stats.kendalltau(pred, target).statistic, abs=1e-9)


@numeric
@pytest.mark.parametrize("seed", SEEDS)
def test_matches_scipy_continuous_and_extreme_scales(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pred, target = rng.normal(size=500), rng.normal(size=500)
    target += pred
    for scale in (1e-150, 1.0, 1e150):  # overflow-safe Pearson
        assert plcc(pred * scale, target) == pytest.approx(stats.pearsonr(pred, target).statistic, abs=1e-9)
    assert srocc(pred, target) == pytest.approx(stats.spearmanr(pred, target).statistic, abs=1e-9)
    assert krcc(pred, target) == pytest.approx(stats.kendalltau(pred, target).statistic, abs=1e-9)


@numeric
def test_accepts_lists_arrays_and_tensors() -> None:
    pred, target = _sample(3, 50)
    expected = correlation_report(pred, target)
    tensor = torch.tensor(pred, dtype=torch.float64, requires_grad=True)
    for p, t in [
        (pred.tolist(), target.tolist()),
        (tensor, torch.tensor(target)),
        (tensor[:, None], target[None, :]),  # column / row vectors, e.g. model scores of shape [N, 1]
        (tuple(pred), target.astype(np.int64)),  # integer ratings
    ]:
        assert correlation_report(p, t) == expected


@numeric
def test_report_keys_and_values() -> None:
    pred, target = _sample(4, 60)
    report = correlation_report(pred, target)
    assert report == {
        "srocc": srocc(pred, target),
        "plcc": plcc(pred, target),
        "plcc_logistic": plcc(pred, target, logistic=True),
        "krcc": krcc(pred, target),
        "pairwise_accuracy": pairwise_accuracy(pred, target),
    }
    assert -1 <= report["krcc"] <= report["srocc"] <= 1


@numeric
def test_logistic_plcc_on_monotone_nonlinear_relation() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=300)
    y = np.tanh(4 * x) + 0.05 * rng.normal(size=300)
    linear, fitted = plcc(x, y), plcc(x, y, logistic=True)
    assert fitted > linear + 0.02
    assert fitted > 0.99


@numeric
@pytest.mark.parametrize("params", [(8.0, 2.0, 0.3, 0.05), (1.0, 5.0, 40.0, 7.0)])  # increasing and decreasing
def test_logistic_plcc_is_exactly_one_on_a_logistic_relation(params: tuple[float, float, float, float]) -> None:
    b1, b2, b3, b4 = params
    x = np.linspace(b3 - 6 * b4, b3 + 6 * b4, 80)
    y = (b1 - b2) / (1 + np.exp(-(x - b3) / abs(b4))) + b2
    assert plcc(x, y) < 0.99 * abs(plcc(x, y, logistic=True))
    assert plcc(x, y, logistic=True) == pytest.approx(1.0, abs=1e-9)


def test_logistic_plcc_falls_back_to_linear_below_four_points(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="taskvec_aesthetics.evaluation.metrics"):
        value = plcc([0.0, 1.0, 3.0], [1.0, 2.0, 2.5], logistic=True)
    assert value == plcc([0.0, 1.0, 3.0], [1.0, 2.0, 2.5])
    assert "at least 4 points, got 3" in caplog.text


@numeric
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", (2, 9, 120))
def test_pairwise_accuracy_matches_brute_force(seed: int, n: int) -> None:
    pred, target = _sample(seed + 10, n)
    pred = np.round(pred)  # more prediction ties
    if pred.min() == pred.max():
        pred[-1] += 1
    assert pairwise_accuracy(pred, target) == pytest.approx(_brute_force_pairwise_accuracy(pred, target), abs=1e-12)


@numeric
def test_pairwise_accuracy_extremes() -> None:
    target = [1.0, 2.0, 2.0, 5.0]
    assert pairwise_accuracy([0.1, 0.2, 0.3, 0.4], target) == pytest.approx(1.0)
    assert pairwise_accuracy([0.4, 0.3, 0.2, 0.1], target) == pytest.approx(0.0)
    assert pairwise_accuracy([7.0, 7.0, 7.0, 7.0], target) == 0.5  # all ties, no warning (filterwarnings=error)


@pytest.mark.parametrize(
    ("pred", "target", "error", "match"),
    [
        ([1.0, 2.0, 3.0], [1.0, 2.0], ValueError, "same length, got 3 and 2"),
        ([1.0], [2.0], ValueError, "At least 2 .* got 1"),
        ([], [], ValueError, "At least 2 .* got 0"),
        ([1.0, float("nan"), 3.0], [1.0, 2.0, 3.0], ValueError, r"`pred` must be finite.*index 1: nan"),
        ([1.0, 2.0, 3.0], [1.0, 2.0, float("inf")], ValueError, r"`target` must be finite.*index 2: inf"),
        (np.ones((3, 2)), np.ones(6), ValueError, r"one-dimensional, got shape \(3, 2\)"),
        (5.0, 5.0, ValueError, r"one-dimensional, got shape \(\)"),
        (["a", "b"], [1.0, 2.0], TypeError, "real numbers, got list of dtype <U1"),
        ([1.0, None], [1.0, 2.0], TypeError, "real numbers, got list of dtype object"),
    ],
)
def test_invalid_inputs_raise_clear_errors(pred: object, target: object, error: type, match: str) -> None:
    for metric in (srocc, plcc, krcc, pairwise_accuracy, correlation_report):
        with pytest.raises(error, match=match):
            metric(pred, target)


def test_constant_inputs_give_nan_and_one_warning_of_our_own() -> None:
    varying = [1.0, 2.0, 3.0, 4.0]
    constant = [2.0, 2.0, 2.0, 2.0]
    for metric in (srocc, plcc, krcc):
        for args in ((constant, varying), (varying, constant)):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                assert math.isnan(metric(*args))
            assert [w.category for w in caught] == [ConstantInputWarning]
            assert "Constant input" in str(caught[0].message)
            assert caught[0].filename == __file__  # points at the caller, not inside the library
    with pytest.warns(ConstantInputWarning, match="`target` .* pairwise_accuracy undefined"):
        assert math.isnan(pairwise_accuracy(varying, constant))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = correlation_report(constant, varying)
    assert [w.category for w in caught] == [ConstantInputWarning]
    assert "srocc, plcc, plcc_logistic, krcc undefined" in str(caught[0].message)
    assert report["pairwise_accuracy"] == 0.5
    assert all(math.isnan(report[key]) for key in ("srocc", "plcc", "plcc_logistic", "krcc"))


# ---------------------------------------------------------------------------------------------------------------------
# Bundled evaluate modules
# ---------------------------------------------------------------------------------------------------------------------


def test_metric_paths_are_bundled_in_the_package() -> None:
    package_dir = Path(taskvec_aesthetics.__file__).resolve().parent / "evaluation"
    on_disk = sorted(p.name for p in (package_dir / "evaluate_metrics").iterdir() if p.is_dir())
    assert on_disk == sorted(METRIC_NAMES)
    for name in METRIC_NAMES:
        folder = Path(metric_path(name))
        assert folder.is_absolute() and folder.parent.parent == package_dir
        assert (folder / f"{name}.py").is_file() and (folder / "README.md").is_file()
        assert "from taskvec_aesthetics.evaluation.metrics import" in (folder / f"{name}.py").read_text()
    with pytest.raises(ValueError, match="Unknown metric 'spearman'; expected one of srocc"):
        metric_path("spearman")


@pytest.fixture(scope="module")
def modules() -> dict[str, object]:
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["HF_DATASETS_OFFLINE"] == "1"
    return {name: load_metric(name, keep_in_memory=True) for name in METRIC_NAMES}


def test_evaluate_modules_load_offline_with_their_info(modules: dict[str, object]) -> None:
    import evaluate

    for name, module in modules.items():
        assert isinstance(module, evaluate.Metric) and module.name == name
        assert module.info.description.strip() and "@" in module.info.citation
        assert set(module.info.features) == {"predictions", "references"}
        assert all(feature.dtype == "float64" for feature in module.info.features.values())
    # The script file path works too, as evaluate.load documents.
    by_file = evaluate.load(os.path.join(metric_path("krcc"), "krcc.py"), keep_in_memory=True)
    assert by_file.compute(predictions=[1, 2, 3], references=[1, 3, 2]) == {"krcc": krcc([1, 2, 3], [1, 3, 2])}


@pytest.mark.parametrize("seed", SEEDS)
def test_evaluate_modules_equal_the_python_api(modules: dict[str, object], seed: int) -> None:
    rng = np.random.default_rng(seed)
    pred, target = rng.normal(size=40), np.round(rng.uniform(1, 10, size=40))
    report = correlation_report(pred, target)
    # The logistic PLCC comes from an iterative curve fit whose last digits depend on BLAS threading: compare
    # every value within a tolerance far below any meaningful difference.
    combined = modules["aesthetic_correlation"].compute(predictions=pred, references=target)
    assert combined.keys() == report.keys()
    for name, value in report.items():
        tolerance = 1e-4 if name == "plcc_logistic" else 1e-9
        assert combined[name] == pytest.approx(value, abs=tolerance), name
    for name in ("srocc", "plcc", "krcc", "pairwise_accuracy"):
        single = modules[name].compute(predictions=pred.tolist(), references=target.tolist())
        assert single.keys() == {name} and single[name] == pytest.approx(report[name], abs=1e-9)
    logistic = modules["plcc"].compute(predictions=torch.tensor(pred), references=target, logistic=True)
    assert logistic.keys() == {"plcc"} and logistic["plcc"] == pytest.approx(report["plcc_logistic"], abs=1e-4)


def test_evaluate_modules_share_the_input_handling(modules: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="`pred` must be finite"):
        modules["srocc"].compute(predictions=[1.0, float("nan"), 2.0], references=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="At least 2"):
        modules["krcc"].compute(predictions=[1.0], references=[2.0])
    with pytest.warns(ConstantInputWarning):
        result = modules["plcc"].compute(predictions=[1.0, 1.0, 1.0], references=[1.0, 2.0, 3.0])
    assert math.isnan(result["plcc"])
