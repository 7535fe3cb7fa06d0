"""Model selection, as pure functions: folds, the simple candidates, the criterion, the one-standard-error rule, and
the selection-aware estimate of the fit's accuracy with its interval.

Candidates compete on the same deterministic K folds of the rated images (`stratified_folds`). The candidate that
cross-validates best wins, unless one earlier in the list is within one standard error of it (`choose`). The user's
estimate is the accuracy of this whole procedure, selection included (`procedure_estimate`), with a 90 % interval
(`interval`). Everything here works on `[T, N]` numbers (task models' scores), never on the network.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata

from ..errors import InputError
from ..evaluation.metrics import srocc
from ..task_vectors.coefficients import Coefficients
from .config import CANDIDATES, OUTPUTS, PersonalizerConfig
from .inputs import Encoded, EncodedRatings, Unlabeled
from .output_ensemble import OutputEnsemble

__all__ = [
    "BOOTSTRAP_SAMPLES",
    "INTERVAL_LEVEL",
    "INTERVAL_Z",
    "SCALE_PAIRS",
    "Scores",
    "bag_rank_losses",
    "best_step",
    "candidate_names",
    "choose",
    "criterion",
    "criterion_values",
    "ensemble_teacher",
    "ensemble_weights",
    "evaluation_steps",
    "fit_output_ensemble",
    "interval",
    "margins",
    "order_scales",
    "procedure_estimate",
    "rank_correlation",
    "scaled",
    "simple_candidate",
    "spearman_z_variance",
    "stratified_folds",
]

#: The output-ensemble fit works on `[N, T]` numbers: a few Newton steps on T weights cost milliseconds.
ENSEMBLE_NEWTON_STEPS, ENSEMBLE_RIDGE = 50, 0.01
BOOTSTRAP_SAMPLES = 200
#: The estimate's interval is a 90 % one (two-sided normal quantile of 0.95).
INTERVAL_LEVEL, INTERVAL_Z = 0.90, 1.6448536269514722


def spearman_z_variance(correlation: float, units: int) -> float:
    """Variance of Fisher's z of a Spearman correlation on ``units`` images: (1 + r^2 / 2) / (n - 3) (Bonett and
    Wright 2000). Fieller, Hartley and Pearson's 1.06 / (n - 3) holds near r = 0 only; near 0.9 the variance is a
    third larger."""
    return (1.0 + correlation**2 / 2.0) / (units - 3)


@dataclass
class Scores:
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
                2.0 * criterion(self.tasks[:, index].numpy(), self.target[index].numpy(), "srocc", "accuracy") - 1.0
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a constant task model on few images has SROCC NaN: counted as 0
            values = [srocc(s[index].numpy(), self.target[index].numpy()) for s in self.tasks]
        return torch.tensor([0.0 if math.isnan(v) else float(v) for v in values], dtype=torch.float64)


def stratified_folds(target: torch.Tensor, folds: int, seed: int) -> list[torch.Tensor]:
    """Deterministic folds of canonical units (rated images or compared pairs), stratified by the target:
    held-out units of each of at most ``folds`` folds, or none if the units are too few (fewer than 2 per fold)."""
    ratings, n = target, len(target)
    k = min(folds, n // 2)
    if k < 2:
        return []
    by_rating = sorted(range(n), key=lambda i: (float(ratings[i]), i))
    generator = torch.Generator().manual_seed(seed)
    fold = torch.empty(n, dtype=torch.long)
    for start in range(0, n, k):
        block = torch.tensor(by_rating[start : start + k])
        fold[block] = torch.randperm(k, generator=generator)[: len(block)]
    return [torch.nonzero(fold == f).flatten() for f in range(k)]


def evaluation_steps(every: int, steps: int) -> list[int]:
    """The step counts at which learned candidates are evaluated: 0, every ``every`` steps, and the last."""
    return [0, *range(every, steps, every), steps]


def best_step(curve: torch.Tensor, steps: list[int], scores: Scores) -> tuple[torch.Tensor, int]:
    """The row of `[S, U]` out-of-fold unit predictions at ``steps`` that cross-validates best, and its step count
    (the fewest steps among equals)."""
    # Step counts differ by little: the rank loss (at each step's best scale) tells them apart more finely than SROCC
    # does on a few units.
    values = criterion_values(curve.numpy(), scores.target.numpy(), "rank_loss", scores.metric)
    best = int(np.argmax(values))
    return curve[best], steps[best]


def candidate_names(config: PersonalizerConfig, pool: Unlabeled | None, ensemble_cost: float) -> tuple[str, ...]:
    """The configured candidates. With the default list (or the ensemble preset's), the output ensemble itself
    competes too when scoring with it costs at most ``config.max_scoring_cost`` times one model (``ensemble_cost``,
    `output_ensemble.scoring_cost`); where it costs more, or given unlabeled photos ``pool``, its one-pass stand-in
    does: coefficients distilled from it (`"distil"`, on the rated images when no photos are given)."""
    names = set(config.candidate_names)
    cheap = ensemble_cost <= config.max_scoring_cost
    if config.candidates is None and cheap:
        names.add(OUTPUTS)
    if config.default_recipe and (pool is not None or not cheap):
        names.add("distil")
    return tuple(name for name in CANDIDATES if name in names)


def simple_candidate(
    name: str, config: PersonalizerConfig, task_names: list[str], scores: Scores, index: torch.Tensor
) -> torch.Tensor:
    """`[G, T]` coefficients of a candidate that learns nothing in the network, fitted on units ``index`` (given
    `Coefficients` as ``config.init`` are returned as they are: the caller checks them against its layout)."""
    cfg, names = config, task_names
    if name == "init" and isinstance(cfg.init, Coefficients):
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
        return ensemble_weights(scores, index, init).float()[None]
    raise InputError(f"{name!r} is not a simple candidate")


def ensemble_weights(scores: Scores, index: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """Weights w of the output ensemble base + sum_t w_t (task_t - base), fitted with the rank loss.

    To first order in small task vectors, the merged model with task-wise coefficients w scores like this
    ensemble, so w is a good start for coefficients, and it costs T x N numbers instead of T forward passes.
    The loss (Bradley-Terry over the units' pairs, plus a ridge pull toward ``start``) is strictly convex in the
    T weights: Newton's method with step halving finds its minimum in a few iterations.
    """
    target = scores.target[index].numpy()
    base, targets = margins(scores.base[index].numpy()[None], target, scores.metric)
    deltas = margins((scores.tasks[:, index] - scores.base[index]).numpy(), target, scores.metric)[0].T
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


def ensemble_teacher(
    encoded: Encoded, scores: Scores, index: torch.Tensor, pool: Unlabeled | None, temperature: float
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """The output ensemble fitted on units ``index`` (`fit_output_ensemble`) and its scores on photos: ``pool`` when
    given (the person's own unrated photos; returned with their prefix rows), else the images of units ``index``
    (their ratings are not used again; for rated images, returned with prefix rows None: the scores are of
    ``encoded.subset(index)``'s images, in order). Its scores on the photos are what the merged model learns to
    reproduce (`optimisation.Distillation`).
    """
    photos = _standardizing_photos(encoded, scores, index, pool)
    names = [str(t) for t in range(len(scores.tasks))]  # numbers only: the names are not needed here
    ensemble = fit_output_ensemble(encoded, scores, index, pool, temperature, names)
    own_images = pool is None and isinstance(encoded, EncodedRatings)
    return None if own_images else photos.prefix, ensemble.combine(photos.tasks).float()


def _standardizing_photos(encoded: Encoded, scores: Scores, index: torch.Tensor, pool: Unlabeled | None) -> Unlabeled:
    """``pool``, or when none is given the images of units ``index`` with the task models' scores on them."""
    if pool is not None:
        return pool
    images = index if isinstance(encoded, EncodedRatings) else torch.unique(encoded.pairs[index].flatten())
    assert scores.images is not None  # `Personalizer` always keeps the images' scores
    return Unlabeled(encoded.prefix[images], scores.images[1:, images])


def fit_output_ensemble(
    encoded: Encoded,
    scores: Scores,
    index: torch.Tensor,
    pool: Unlabeled | None,
    temperature: float,
    task_names: list[str],
) -> OutputEnsemble:
    """The learned output ensemble, fitted on units ``index`` only.

    Each task model's scores are standardized by their mean and spread over photos, never over ratings: ``pool`` when
    given (the person's own unrated photos), else the images of units ``index``. The weights of the standardized
    scores (any sign: a criterion can count against a taste) are fitted with the rank loss by `ensemble_weights`
    from the softmax(temperature x SROCC) mix.
    """
    tasks = _standardizing_photos(encoded, scores, index, pool).tasks.double()
    mean, spread = tasks.mean(1), tasks.std(1).clamp_min(1e-8)
    standardized = Scores(scores.base * 0.0, scores.tasks / spread[:, None], scores.target, scores.metric)
    init = torch.softmax(temperature * scores.correlation(index), dim=0)
    weights = ensemble_weights(standardized, index, init)
    return OutputEnsemble(task_names, weights, mean, spread)


def choose(
    predictions: dict[str, tuple[torch.Tensor, int, torch.Tensor]],
    scores: Scores,
    rule: str,
    tolerance: float,
    seed: int,
) -> tuple[str, list[dict[str, Any]], float, float, tuple[float, float], float]:
    """The one-standard-error rule: the first candidate (in `CANDIDATES` order) whose criterion is within ``tolerance``
    standard errors of the best candidate's (the bootstrap over the units of the best one's criterion); the
    table; the estimate of the whole procedure's SROCC (pair accuracy for preferences, `procedure_estimate`),
    the winner's standard error, the estimate's 90 % interval, and the winner's own cross-validated value."""
    names, metric = list(predictions), scores.metric
    key = metric if rule == "srocc" else rule  # the criterion's column: srocc, accuracy or rank_loss
    oof = np.stack([predictions[name][0].numpy() for name in names])
    target = scores.target.numpy()
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, len(target), size=(BOOTSTRAP_SAMPLES, len(target)))
    correlation = criterion(oof, target, "srocc", metric)
    correlation_se = np.nanstd([criterion(oof[:, s], target[s], "srocc", metric) for s in samples], axis=0)
    value, value_se = correlation, correlation_se
    if rule != "srocc":  # the SROCC bootstrap above is the criterion's own otherwise
        scaled_oof = scaled(oof, target, rule, metric)
        value = criterion(scaled_oof, target, rule, metric)
        value_se = np.nanstd([criterion(scaled_oof[:, s], target[s], rule, metric) for s in samples], axis=0)
    best = int(np.argmax(value))
    within = value[best] - value <= tolerance * value_se[best] + 1e-12
    chosen = int(np.flatnonzero(within)[0])
    table: list[dict[str, Any]] = [
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
    estimate, spread = procedure_estimate(
        [predictions[name][2].numpy() for name in names],
        target,
        metric,
        tolerance,
        correlation_se,
        seed,
    )
    if math.isnan(estimate):  # too few units for any out-of-bag sample: the winner's own value
        estimate, spread = float(correlation[chosen]), 0.0
    bounds = interval(estimate, len(target), metric, spread)
    return (
        names[chosen],
        table,
        round(estimate, 4),
        table[chosen][f"{metric}_se"],
        (round(bounds[0], 4), round(bounds[1], 4)),
        table[chosen][metric],
    )


#: Scales tried by `order_scales`, relative to the root mean square of a row's margins: 4 decades, 1.33x apart.
_RELATIVE_SCALES = np.geomspace(1e-2, 1e2, 33)
#: The most pairs `order_scales` fits a scale on (all pairs of 200 rated images are 19,900).
SCALE_PAIRS = 20_000


def margins(predictions: np.ndarray, target: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """`[C, P]` Bradley-Terry margins and their `[P]` targets: score differences over pairs of differently rated
    images (target 1), or a compared pair's score difference (target: the preference)."""
    if metric == "accuracy":
        return predictions, target
    above = target[:, None] > target[None, :]
    return (predictions[:, :, None] - predictions[:, None, :])[:, above], np.ones(int(above.sum()))


def order_scales(predictions: np.ndarray, target: np.ndarray, metric: str = "srocc") -> np.ndarray:
    """`[C]` the scale s >= 0 of each row of `[C, U]` unit predictions that minimises its Bradley-Terry loss.

    The rank-loss criterion is taken at this scale, so that it measures how well a candidate orders the units, not
    how far apart its scores happen to lie: unscaled, a model whose scores barely differ scores near log 2 however
    poorly it orders, and beats a model that orders well on a wide scale and is confidently wrong on a few pairs.
    A row that orders worse than chance gets s = 0 (loss log 2). One scale per row is fitted on the same units it
    is then scored on, an advantage every candidate shares. Beyond `SCALE_PAIRS` pairs (about 200 rated images) an
    evenly spaced subset of them fits it: one number needs no more, and the search costs scales x pairs.
    """
    predictions = np.atleast_2d(predictions)
    pairs, target = margins(predictions, target, metric)
    if pairs.shape[1] == 0:
        return np.ones(len(predictions))
    if pairs.shape[1] > SCALE_PAIRS:
        every = np.linspace(0, pairs.shape[1] - 1, SCALE_PAIRS).round().astype(int)
        pairs, target = pairs[:, every], target[every]
    spread = np.sqrt(np.mean(pairs**2, axis=1))
    scales = np.concatenate(
        [np.zeros((len(spread), 1)), _RELATIVE_SCALES / np.where(spread > 0, spread, 1.0)[:, None]], 1
    )
    tried = scales[:, :, None] * pairs[:, None, :]  # [C, S, P]
    losses = np.mean(np.logaddexp(0.0, tried) - target * tried, axis=2)
    return scales[np.arange(len(scales)), np.argmin(losses, axis=1)]


def scaled(predictions: np.ndarray, target: np.ndarray, rule: str, metric: str) -> np.ndarray:
    """For ``"rank_loss"``, each row of `[C, U]` unit predictions at its best scale (`order_scales`); else as is."""
    return predictions * order_scales(predictions, target, metric)[:, None] if rule == "rank_loss" else predictions


def criterion_values(predictions: np.ndarray, target: np.ndarray, rule: str, metric: str) -> np.ndarray:
    """The criterion of each row of `[C, U]` unit predictions (the rank loss at each row's best scale)."""
    return criterion(scaled(predictions, target, rule, metric), target, rule, metric)


def criterion(predictions: np.ndarray, target: np.ndarray, rule: str, metric: str = "srocc") -> np.ndarray:
    """Higher is better, per row of `[C, U]` unit predictions (for ``"rank_loss"``, scale them by `order_scales`
    first: `criterion_values`).

    For ratings (``metric="srocc"``): SROCC (NaN, a constant row, counts as 0) or minus the Bradley-Terry rank loss
    over all pairs of differently rated images. For preferences (``metric="accuracy"``; units are pairs, predictions
    score differences): the share of non-tied pairs ordered as preferred (a zero difference counts half) or minus
    the Bradley-Terry loss against the preferences.
    """
    predictions = np.atleast_2d(predictions)
    if metric == "accuracy":
        if rule == "rank_loss":
            return -np.mean(np.logaddexp(0.0, predictions) - target * predictions, axis=1)
        decided = target != 0.5
        if not decided.any():
            return np.full(len(predictions), 0.5)
        agree = np.where(predictions == 0, 0.5, (predictions > 0) == (target > 0.5))
        return agree[:, decided].mean(axis=1)
    if rule == "srocc":
        return rank_correlation(predictions, target[None])
    above = target[:, None] > target[None, :]
    if not above.any():
        return np.zeros(len(predictions))
    diff = predictions[:, :, None] - predictions[:, None, :]
    return -np.logaddexp(0.0, -diff[:, above]).mean(axis=1)


def procedure_estimate(
    configs: Sequence[np.ndarray], target: np.ndarray, metric: str, tolerance: float, se: np.ndarray, seed: int
) -> tuple[float, float]:
    """The accuracy of the whole selection, not of its winner: bootstrap bias-corrected cross-validation (BBC-CV,
    Tsamardinos, Greasidou and Borboudakis 2018).

    ``configs[c]`` holds `[S_c, U]` out-of-fold unit predictions of candidate c (one row per step count of a learned
    one). In each bootstrap sample of the units the selection is rerun on the in-bag units (each learned candidate's
    best step, then the first candidate within ``tolerance`` standard errors ``se`` of the best, by SROCC or pair
    accuracy) and its pick is scored on the out-of-bag units; the estimate is the mean of those scores. The winner's
    own cross-validated value is the best of several noisy values and errs upward; this does not, and refits nothing.
    As in `best_step`, a learned candidate's step count is the one whose rank loss is lowest (`bag_rank_losses`).

    The picks' out-of-bag predictions of all samples are pooled and scored once. Out-of-fold predictions of ratings
    share one scale (`EncodedRatings.held_out_scores`), so pooling is sound; the mean of each sample's own SROCC
    would be one on a third of the units, which a few units drag toward Kendall's tau and below the SROCC on many.

    Also returns how much the procedure's result varies with the ratings it happens to get: the variance over the
    samples of their pick's criterion on all units (SROCC in Fisher's z, or pair accuracy), which `interval` adds
    to the sampling variance of a correlation on fixed predictions. NaN and 0 when no sample has out-of-bag units.
    """
    configs = [np.atleast_2d(c) for c in configs]
    rows = np.concatenate(configs)
    owner = np.concatenate([np.full(len(c), i) for i, c in enumerate(configs)])
    members = [np.flatnonzero(owner == c) for c in range(len(configs))]
    n = len(target)
    bags = np.random.default_rng(seed).integers(0, n, (BOOTSTRAP_SAMPLES, n))
    if metric == "srocc":  # every sample's in-bag SROCC at once: `[B, R]`
        inside_all = rank_correlation(np.moveaxis(rows[:, bags], 1, 0), target[bags][:, None, :])
    learned = np.concatenate([m for m in members if len(m) > 1] or [np.zeros(0, dtype=int)])
    step_values = np.zeros((len(bags), len(rows)))
    step_values[:, learned] = bag_rank_losses(rows[learned], target, metric, bags)
    whole = criterion(rows, target, "srocc", metric)  # each row's criterion on all units
    predicted, observed, picks = [], [], []
    for b, bag in enumerate(bags):
        out = np.setdiff1d(np.arange(n), bag)
        if len(out) < 2 or len(np.unique(target[bag])) < 2:
            continue
        inside = inside_all[b] if metric == "srocc" else criterion(rows[:, bag], target[bag], "srocc", metric)
        best_rows = np.array([rows_[int(np.argmax(step_values[b, rows_]))] for rows_ in members])
        per = inside[best_rows]
        top = int(np.argmax(per))
        pick = int(np.flatnonzero(per[top] - per <= tolerance * se[top] + 1e-12)[0])
        predicted.append(rows[best_rows[pick], out])
        observed.append(target[out])
        picks.append(best_rows[pick])
    if not predicted or len(np.unique(np.concatenate(observed))) < 2:
        return float("nan"), 0.0
    quality = whole[picks] if metric == "accuracy" else np.arctanh(np.clip(whole[picks], -0.999, 0.999))
    estimate = float(criterion(np.concatenate(predicted)[None], np.concatenate(observed), "srocc", metric)[0])
    return estimate, float(np.var(quality))


def bag_rank_losses(predictions: np.ndarray, target: np.ndarray, metric: str, bags: np.ndarray) -> np.ndarray:
    """`[B, C]` the rank-loss criterion (higher is better) of each row of `[C, U]` unit predictions on each bootstrap
    sample ``bags`` (`[B, U]` unit indices, repeats counted as often as drawn), each row at its best scale on all
    units (`order_scales`: refitted per sample it would cost a scale search each)."""
    predictions = scaled(np.atleast_2d(predictions), target, "rank_loss", metric)
    counts = np.stack([np.bincount(bag, minlength=len(target)) for bag in bags]).astype(np.float64)  # [B, U]
    if metric == "accuracy":
        unit_losses = np.logaddexp(0.0, predictions) - target * predictions  # [C, U]
        return -(counts @ unit_losses.T) / counts.sum(1, keepdims=True)
    above = (target[:, None] > target[None, :]).astype(np.float64)

    def weighted(pair_values: np.ndarray) -> np.ndarray:  # `[B]` sum over in-bag pairs, each as often as drawn
        return np.sum((counts @ pair_values) * counts, axis=1)

    pairs = np.maximum(weighted(above), 1.0)
    out = np.zeros((len(bags), len(predictions)))
    for c, row in enumerate(predictions):  # one `[U, U]` matrix at a time: memory stays U^2
        out[:, c] = -weighted(above * np.logaddexp(0.0, row[None, :] - row[:, None])) / pairs
    return out


def rank_correlation(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman correlation along the last axis, broadcasting (NaN, a constant row, counts as 0)."""
    x, y = rankdata(x, axis=-1), rankdata(y, axis=-1)
    x, y = x - x.mean(axis=-1, keepdims=True), y - y.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nan_to_num((x * y).sum(-1) / np.sqrt((x**2).sum(-1) * (y**2).sum(-1)), nan=0.0)


def interval(estimate: float, units: int, metric: str, spread: float = 0.0) -> tuple[float, float]:
    """A 90 % interval of the SROCC (pair accuracy) on new photos around an estimate from ``units`` rated images
    (compared pairs).

    Its variance has two parts: the sampling variance of a correlation (a proportion) on that many units, and
    ``spread``, how much the procedure's pick varies with the units it is given (`procedure_estimate`). For SROCC
    both are in Fisher's z, the first Bonett and Wright's (`spearman_z_variance`); for pair accuracy the interval
    is a Wilson interval over the pairs with ``spread`` added to the proportion's variance. Both contain the estimate.
    """
    if metric == "accuracy":
        z2 = INTERVAL_Z**2
        centre = (estimate + z2 / (2 * units)) / (1 + z2 / units)
        variance = estimate * (1 - estimate) / units + spread + z2 / (4 * units**2)
        half = INTERVAL_Z * math.sqrt(variance) / (1 + z2 / units)
        return max(0.0, centre - half), min(1.0, centre + half)
    if units <= 3:
        return -1.0, 1.0
    r = min(max(estimate, -0.999), 0.999)
    z, half = math.atanh(r), INTERVAL_Z * math.sqrt(spearman_z_variance(r, units) + spread)
    return math.tanh(z - half), math.tanh(z + half)
