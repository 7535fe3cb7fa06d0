"""The few-shot PIAA protocol on the planted world: every method runs, outputs are written, test data is unused."""

import dataclasses
import json

import datasets
import numpy as np
import pytest
import torch
from planted import images, user_ratings

from taskvec_aesthetics.experiments.benchmark import draw_order, run_benchmark
from taskvec_aesthetics.experiments.config import METHODS, BenchmarkConfig
from taskvec_aesthetics.experiments.results import TIE, bootstrap_interval
from taskvec_aesthetics.personalization.config import CANDIDATES, PersonalizerConfig

USERS = {"u1": [0.75, 0.5, 0.0], "u2": [0.0, 0.2, 1.0], "u3": [1.0, -0.5, 0.0]}
NUM_IMAGES = 40


@pytest.fixture(scope="module")
def world(planted_world):
    return planted_world


def _dataset(scores_by_user):
    photos = images(NUM_IMAGES, seed=5)
    columns = {"image": [], "score": [], "user_id": [], "image_id": []}
    for user, scores in scores_by_user.items():
        columns["image"] += photos
        columns["score"] += [float(s) for s in scores]
        columns["user_id"] += [user] * NUM_IMAGES
        columns["image_id"] += [f"img{i}" for i in range(NUM_IMAGES)]
    return datasets.Dataset.from_dict(columns).cast_column("image", datasets.Image())


def _ratings():
    photos = images(NUM_IMAGES, seed=5)
    return {u: user_ratings(photos, w, noise=0.05, seed=i)[1].numpy() for i, (u, w) in enumerate(USERS.items())}


CONFIG = dict(
    shots=(10, 20),
    personalizer=PersonalizerConfig(steps=10, folds=3),
    paper=PersonalizerConfig.from_preset("paper", steps=10),
    baseline_steps=10,
    progress=False,
)


def test_every_method_runs_and_results_are_written(world, tmp_path):
    result = run_benchmark(world.base, world.bank, _dataset(_ratings()), BenchmarkConfig(**CONFIG))
    rows = result.summary()
    methods = {r["method"] for r in rows}
    assert methods == {f"single:{t}" for t in world.bank.task_names} | (set(METHODS) - {"single"})
    assert {r["k"] for r in rows} == {10, 20} and all(r["users"] == 3 for r in rows)
    default = {r["k"]: r for r in rows if r["method"] == "default"}
    assert default[20]["srocc_mean"] > 0.5 and default[20]["seconds_per_fit"] > 0
    assert default[20]["srocc_low"] <= default[20]["srocc_mean"] <= default[20]["srocc_high"]
    assert "diff_mean" not in default[20]
    # this bank covers every parameter (its output ensemble costs 4x one model): our default stays one pass
    assert {r["k"]: r["srocc_mean"] for r in rows if r["method"] == "one_pass"} == {
        k: r["srocc_mean"] for k, r in default.items()
    }
    per_user = result.per_user()
    for row in rows:
        if row["method"] == "default":
            continue
        gaps = [per_user["default", row["k"]][u] - per_user[row["method"], row["k"]][u] for u in USERS]
        assert row["diff_mean"] == pytest.approx(np.mean(gaps)) and row["diff_low"] <= row["diff_high"]
        assert row["wins"] + row["ties"] + row["losses"] == 3
        assert row["wins"] == sum(g > TIE for g in gaps) and row["losses"] == sum(g < -TIE for g in gaps)
    choices = result.choices()
    assert sum(choices[20]["chosen"].values()) == 3 and set(choices[20]["chosen"]) <= set(CANDIDATES)
    assert -1 <= choices[20]["cv_srocc_mean"] <= 1
    paths = result.save(tmp_path)
    saved = json.loads(paths["json"].read_text())
    assert len(saved["trials"]) == len(result.trials) and saved["example"]["user_id"] == "u1"
    table = paths["markdown"].read_text()
    assert "our default" in table and "k=20 SROCC [95% CI]" in table and "W/T/L" in table
    assert "k=20: our default chose" in table
    assert paths["figure"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("transductive", [False, True])
def test_test_images_take_part_in_no_choice(world, transductive):
    """Scrambling the ratings of every test image changes test SROCC but none of the fitted coefficients, also when
    the test photos themselves (never their ratings) are the unlabeled photos the distilled candidate learns on."""
    personalizer = CONFIG["personalizer"]
    if transductive:
        personalizer = PersonalizerConfig(steps=10, folds=3, candidates=("init", "distil"), tolerance=0.0)
    config = BenchmarkConfig(
        **{**CONFIG, "shots": (10,), "methods": ("default", "best_single"), "personalizer": personalizer},
        transductive=transductive,
    )
    ratings = _ratings()
    honest = run_benchmark(world.base, world.bank, _dataset(ratings), config)
    scrambled = {}
    rng = np.random.default_rng(0)
    for user, scores in ratings.items():
        order = draw_order(NUM_IMAGES, config.seed, 10, 0, user)
        scores = scores.copy()
        scores[order[10:]] = rng.permutation(scores[order[10:]]) + rng.normal(0, 1, NUM_IMAGES - 10)
        scrambled[user] = scores
    other = run_benchmark(world.base, world.bank, _dataset(scrambled), config)
    assert honest.example_coefficients.allclose(other.example_coefficients)
    if transductive:  # the distilled candidate ran, on every photo of the pool
        assert "distil" in {t.chosen for t in honest.trials if t.method == "default"}
        assert honest.example_info["unlabeled"] == NUM_IMAGES
    assert [t.srocc for t in honest.trials] != [t.srocc for t in other.trials]


def test_workers_run_the_same_draws(world):
    """Draws run in 2 worker processes give the trials, in the same order, and the example fit of 1 process."""
    config = BenchmarkConfig(**{**CONFIG, "shots": (10,), "methods": ("default", "best_single", "ensemble")})
    dataset, threads = _dataset(_ratings()), torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # as each of the 2 workers below: the same arithmetic, bit for bit
        here = run_benchmark(world.base, world.bank, dataset, config)
        torch.set_num_threads(2)
        parallel = run_benchmark(world.base, world.bank, dataset, dataclasses.replace(config, workers=2))
    finally:
        torch.set_num_threads(threads)
    key = lambda t: (t.user_id, t.k, t.method, t.srocc, t.chosen, t.cv_srocc)  # noqa: E731
    assert [key(t) for t in parallel.trials] == [key(t) for t in here.trials]
    assert parallel.example_user == here.example_user == "u1"
    assert parallel.example_coefficients.allclose(here.example_coefficients, atol=1e-6)  # numpy's threads vary
    assert parallel.example_info["chosen"] == here.example_info["chosen"] and parallel.config["workers"] == 2


def test_bootstrap_interval():
    values = np.random.default_rng(0).normal(0.5, 0.1, 400)
    low, high = bootstrap_interval(values)
    half_width = 1.96 * values.std() / np.sqrt(len(values))
    assert low < values.mean() < high and (high - low) / 2 == pytest.approx(half_width, rel=0.15)
    assert bootstrap_interval(values, seed=1) != (low, high) and np.isnan(bootstrap_interval([0.3])[0])


def test_bad_input(world):
    with pytest.raises(ValueError, match="missing"):
        run_benchmark(world.base, world.bank, datasets.Dataset.from_dict({"score": [1.0]}))
    with pytest.raises(ValueError, match=r"BenchmarkConfig.methods must be some of .*, received \['magic'\]"):
        BenchmarkConfig(methods=("magic",))
    with pytest.raises(
        TypeError, match="BenchmarkConfig.methods must be a list or tuple, received the string 'default'"
    ):
        BenchmarkConfig(methods="default")
    with pytest.raises(ValueError, match="BenchmarkConfig.workers must be >= 1, received 0"):
        BenchmarkConfig(workers=0)
    with pytest.raises(TypeError, match="BenchmarkConfig.workers must be an int, received 1.5"):
        BenchmarkConfig(workers=1.5)
    with pytest.raises(ValueError, match=r"BenchmarkConfig.shots must be ints >= 2, received \(10, 1\)"):
        BenchmarkConfig(shots=(10, 1))


def test_where_the_output_ensemble_wins_the_example_model_is_the_same_recipe_kept_one_pass(world):
    config = dict(CONFIG, shots=(20,), methods=("default",))
    config["personalizer"] = PersonalizerConfig(steps=10, folds=3, candidates=("init", "outputs"))
    result = run_benchmark(world.base, world.bank, _dataset(_ratings()), BenchmarkConfig(**config))
    first = next(t for t in result.trials if t.user_id == result.example_user and t.method == "default")
    assert first.chosen == "outputs"  # the output ensemble won the example draw ...
    assert result.example_info["chosen"] == "init"  # ... and the example is a set of coefficients, exportable merged
    assert result.example_coefficients is not None
