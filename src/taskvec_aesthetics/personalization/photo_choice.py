"""Which photos to ask a user to rate next, so that their coefficients are learned from as few ratings as possible.

A personalized model mixes the bank's single-task models, so what a rating teaches is how the user's taste weighs
them. Each photo is described by the single-task models' scores on it (``[T, N]``, e.g. from
`Personalizer.task_scores`), standardized over the pool. Ratings of photos on which the task models agree say
little about the mix; photos on which they disagree, spread over every direction of disagreement, say the most.
That is a D-optimal design for a linear model of the rating on those T features: greedily pick the photo that
most increases the determinant of the information matrix ``ridge * I + sum_rated x x^T``, i.e. the photo with
the largest ``x^T M^-1 x``, then update ``M``. The design depends on which photos were rated, not on the ratings,
so one order serves every user and is recomputed in microseconds after each rating.

``"random"`` (a seeded shuffle) is the baseline; `benchmarks/active_selection.py` compares the two on the demo's
simulated raters, where the design measured no better than random choice (so the app uses random choice).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import numpy as np

from ..errors import InputError

__all__ = ["STRATEGIES", "design_features", "choose_next"]

#: The selection strategies: ``"d_optimal"`` (greedy D-optimal design on the task models' scores) or ``"random"``.
STRATEGIES = ("d_optimal", "random")


def design_features(task_scores: Any) -> np.ndarray:
    """The ``[N, T]`` design features of a pool: each single-task model's scores, standardized over the pool.

    Args:
        task_scores (`np.ndarray` or `torch.Tensor`): ``[T, N]`` scores of T single-task models on N photos.

    Returns:
        `np.ndarray`: float64 ``[N, T]``; a task model that scores every photo alike gives a column of zeros.
    """
    if hasattr(task_scores, "detach"):  # a torch tensor
        task_scores = task_scores.detach().cpu().numpy()
    scores = np.asarray(task_scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[0] < 1 or scores.shape[1] < 1:
        raise InputError(
            f"task_scores must be a [T, N] array of T task models' scores on N photos, received shape {list(scores.shape)}"
        )
    if not np.isfinite(scores).all():
        raise InputError("task_scores must be finite; some scores are NaN or inf")
    centred = scores - scores.mean(axis=1, keepdims=True)
    spread = centred.std(axis=1, keepdims=True)
    return (np.divide(centred, spread, out=np.zeros_like(centred), where=spread > 1e-12)).T


def _check_rated(rated: Collection[int], num_photos: int) -> list[int]:
    rated = [int(i) for i in rated]
    bad = [i for i in rated if not 0 <= i < num_photos]
    if bad:
        raise InputError(f"rated indices must lie in [0, {num_photos}), received {bad[:5]}")
    return rated


def choose_next(
    task_scores: Any,
    rated: Collection[int] = (),
    count: int = 1,
    strategy: str = "d_optimal",
    seed: int = 0,
    ridge: float = 1.0,
) -> list[int]:
    """Choose the next photos to rate from a pool, given the photos already rated.

    Args:
        task_scores (`np.ndarray` or `torch.Tensor`): ``[T, N]`` single-task model scores on the pool.
        rated (`Collection[int]`): Indices of the photos already rated (or skipped); never chosen again.
        count (`int`): How many photos to choose (fewer when fewer are left).
        strategy (`str`): ``"d_optimal"`` or ``"random"`` (see :data:`STRATEGIES`).
        seed (`int`): Seed of ``"random"``; the same seed gives the same order, so ratings can resume.
        ridge (`float`): Prior weight of the information matrix (> 0); larger spreads picks more evenly.

    Returns:
        `list[int]`: Pool indices, in the order they should be asked.

    Example:
    ```python
    >>> personalizer = Personalizer(base, bank)
    >>> task_scores = personalizer.task_scores(personalizer.encode(pool_images))  # [T, N]
    >>> choose_next(task_scores, rated=[12, 40], count=1)
    [87]
    ```
    """
    if strategy not in STRATEGIES:
        raise InputError(f"strategy must be one of {list(STRATEGIES)}, received {strategy!r}")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise InputError(f"count must be an integer >= 0, received {count!r}")
    if not ridge > 0:
        raise InputError(f"ridge must be > 0, received {ridge!r}")
    features = design_features(task_scores)
    num_photos, num_tasks = features.shape
    rated = _check_rated(rated, num_photos)
    available = np.ones(num_photos, dtype=bool)
    available[rated] = False
    count = min(count, int(available.sum()))
    if strategy == "random":
        order = np.random.default_rng(seed).permutation(num_photos)
        return [int(i) for i in order[available[order]][:count]]
    # Inverse information matrix, updated by Sherman-Morrison after each (real or planned) rating.
    inverse = np.eye(num_tasks) / ridge
    for i in rated:
        inverse = _rank_one_update(inverse, features[i])
    chosen: list[int] = []
    for _ in range(count):
        gain = np.einsum("nt,ts,ns->n", features, inverse, features)
        gain[~available] = -np.inf
        best = int(np.argmax(gain))  # ties (e.g. all gains equal) go to the lowest index: deterministic
        chosen.append(best)
        available[best] = False
        inverse = _rank_one_update(inverse, features[best])
    return chosen


def _rank_one_update(inverse: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(M + x x^T)^-1 from M^-1 (Sherman-Morrison)."""
    v = inverse @ x
    return inverse - np.outer(v, v) / (1.0 + x @ v)
