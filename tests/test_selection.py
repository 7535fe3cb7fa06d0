"""Choosing which photos to rate: the D-optimal design and the random baseline."""

import numpy as np
import pytest
import torch

from taskvec_aesthetics.personalization.photo_choice import STRATEGIES, choose_next, design_features


def correlated_pool(n: int = 200, seed: int = 0) -> np.ndarray:
    """[T=4, N] task-model scores: two strongly correlated tasks, one independent, one nearly constant."""
    rng = np.random.default_rng(seed)
    shared, other = rng.normal(size=n), rng.normal(size=n)
    return np.stack([5 + 2 * shared, 5 + 2 * shared + 0.3 * rng.normal(size=n), 4 + other, 6 + 1e-3 * other])


def log_det(features: np.ndarray, chosen: list[int]) -> float:
    x = features[chosen]
    return float(np.linalg.slogdet(np.eye(x.shape[1]) + x.T @ x)[1])


def test_design_features_standardize_each_task_over_the_pool() -> None:
    scores = np.array([[1.0, 2.0, 3.0, 4.0], [7.0, 7.0, 7.0, 7.0]])
    features = design_features(torch.tensor(scores))  # tensors are accepted
    assert features.shape == (4, 2)
    np.testing.assert_allclose(features[:, 0].mean(), 0.0, atol=1e-12)
    np.testing.assert_allclose(features[:, 0].std(), 1.0)
    np.testing.assert_array_equal(features[:, 1], 0.0)  # a task that scores all photos alike teaches nothing


@pytest.mark.parametrize(
    "bad, message",
    [(np.ones(5), r"\[T, N\]"), (np.full((2, 3), np.nan), "finite"), (np.ones((2, 0)), r"\[T, N\]")],
)
def test_bad_task_scores_are_refused(bad: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        choose_next(bad)


def test_bad_arguments_are_refused_with_what_was_received() -> None:
    scores = correlated_pool(10)
    with pytest.raises(ValueError, match="strategy must be one of .* received 'smart'"):
        choose_next(scores, strategy="smart")
    with pytest.raises(ValueError, match=r"rated indices must lie in \[0, 10\), received \[10\]"):
        choose_next(scores, rated=[3, 10])
    with pytest.raises(ValueError, match="count must be an integer >= 0"):
        choose_next(scores, count=-1)


def test_d_optimal_first_asks_where_the_task_models_disagree_most() -> None:
    scores = correlated_pool()
    features = design_features(scores)
    first = choose_next(scores)[0]
    assert first == int(np.argmax((features**2).sum(axis=1)))


def test_d_optimal_spreads_over_directions_instead_of_repeating_one() -> None:
    # Five photos far out along task 0, two along task 1: whichever direction the first photo explores, the second
    # explores the other one, although more photos (and more extreme ones) lie along task 0.
    along_0 = np.array([[x, 0.0] for x in (10, 9.5, 9, -9, -9.5)])
    along_1 = np.array([[0.0, y] for y in (3, -3)])
    middle = np.zeros((20, 2))
    scores = np.concatenate([along_0, along_1, middle]).T
    first, second = choose_next(scores, count=2)
    direction = {i: 0 for i in range(5)} | {5: 1, 6: 1}
    assert {direction.get(first), direction.get(second)} == {0, 1}


def test_one_at_a_time_equals_a_batch_and_never_repeats_a_rated_photo() -> None:
    scores = correlated_pool(60)
    batch = choose_next(scores, count=12)
    asked: list[int] = []
    for _ in range(12):
        asked += choose_next(scores, rated=asked)
    assert asked == batch and len(set(batch)) == 12
    rest = choose_next(scores, rated=batch, count=100)
    assert len(rest) == 48 and not set(rest) & set(batch)
    assert choose_next(scores, rated=range(60)) == []


def test_d_optimal_designs_carry_more_information_than_random_ones() -> None:
    scores = correlated_pool()
    features = design_features(scores)
    active = log_det(features, choose_next(scores, count=10))
    randoms = [log_det(features, choose_next(scores, count=10, strategy="random", seed=s)) for s in range(50)]
    assert active > max(randoms)


def test_random_is_a_seeded_shuffle_of_the_unrated_photos() -> None:
    scores = correlated_pool(30)
    order = choose_next(scores, count=30, strategy="random", seed=3)
    assert sorted(order) == list(range(30))
    assert choose_next(scores, count=30, strategy="random", seed=3) == order
    assert choose_next(scores, count=30, strategy="random", seed=4) != order
    assert choose_next(scores, rated=order[:5], count=3, strategy="random", seed=3) == order[5:8]
    assert set(STRATEGIES) == {"d_optimal", "random"}
