"""The paper's analyses: task-vector similarity, gains with the number of databases, zero-shot SROCC per user."""

import json

import datasets
import numpy as np
import pytest
from PIL import Image
from planted import images, user_ratings
from tiny_models import perturbed_copy, tiny_model

from taskvec_aesthetics import AestheticModel, TaskVectorBank
from taskvec_aesthetics.cli import main
from taskvec_aesthetics.experiments.analysis import (
    AnalysisError,
    GainsResult,
    benchmark_gains,
    load_benchmark_result,
    subset_orders,
    task_vector_similarity,
    zero_shot_per_user,
)
from taskvec_aesthetics.experiments.benchmark import run_benchmark
from taskvec_aesthetics.experiments.config import BenchmarkConfig
from taskvec_aesthetics.personalization.config import PersonalizerConfig


@pytest.fixture(scope="module")
def saved_bank(tmp_path_factory):
    """A tiny base, a bank of three perturbed copies plus one task that is another's negative, saved to disk."""
    folder = tmp_path_factory.mktemp("analysis") / "bank"
    tiny_model("clip").save_pretrained(folder.parent / "base")
    base = AestheticModel.from_pretrained(folder.parent / "base")  # the bank records where its base is
    tuned = {f"t{i}": perturbed_copy(base, seed=i, scale=0.02 * (i + 1)) for i in range(3)}
    bank = TaskVectorBank.from_finetuned(base, tuned)
    bank.add_task("minus_t0", -bank["t0"])
    bank.save_pretrained(folder)
    return base, folder


def _float64_cosine(bank: TaskVectorBank, names) -> np.ndarray:
    flat = np.stack([np.concatenate([bank[t][n].double().flatten().numpy() for n in names]) for t in bank.task_names])
    norms = np.linalg.norm(flat, axis=1)
    return flat @ flat.T / np.outer(norms, norms)


def test_similarity_is_symmetric_with_ones_on_the_diagonal_and_matches_float64(saved_bank):
    base, folder = saved_bank
    bank = TaskVectorBank.from_pretrained(folder, base=base)
    similarity = bank.similarity("layer", groups=base, progress=False)
    assert similarity.group_names[0] == "all" and len(similarity.group_names) > 3
    for index, group in enumerate(similarity.group_names):
        matrix = similarity.matrix(group)
        assert np.array_equal(matrix, matrix.T) and np.array_equal(np.diag(matrix), np.ones(len(bank)))
        names = [n for n in bank.parameter_names if group == "all" or base.parameter_groups()[n] == group]
        assert similarity.num_values[index] == sum(bank[bank.task_names[0]][n].numel() for n in names)
        np.testing.assert_allclose(matrix, _float64_cosine(bank, names), rtol=0, atol=1e-12)
    everything = similarity.matrix()
    assert everything[0, 3] == pytest.approx(-1.0, abs=1e-12)  # a task and its negative
    assert abs(everything[0, 1]) < 0.2  # independent random perturbations are nearly orthogonal
    task_only = task_vector_similarity(bank, "task", progress=False)
    assert task_only.group_names == ["all"] and np.array_equal(task_only.values[0], everything)


def test_similarity_streams_one_tensor_at_a_time(saved_bank):
    """Computed from the files, the bank keeps no stacked copy of its task vectors afterwards."""
    base, folder = saved_bank
    bank = TaskVectorBank.from_pretrained(folder, base=base)
    bank.similarity(progress=False)
    assert bank._stacked is None


def test_similarity_rejects_bad_input(saved_bank):
    base, folder = saved_bank
    bank = TaskVectorBank.from_pretrained(folder, base=base)
    with pytest.raises(AnalysisError, match="granularity must be one of"):
        bank.similarity("tensor")
    with pytest.raises(AnalysisError, match="needs the base model's layer groups"):
        bank.similarity("layer")
    zero = TaskVectorBank.from_finetuned(base, {"same": base, "moved": perturbed_copy(base, seed=9)})
    matrix = zero.similarity(progress=False).matrix()  # a zero task vector has no direction
    assert np.isnan(matrix[0]).all() and np.isnan(matrix[:, 0]).all() and matrix[1, 1] == 1.0


def test_similarity_command_prints_the_matrix_and_writes_the_tables_and_figure(saved_bank, tmp_path, capsys):
    _, folder = saved_bank
    out = tmp_path / "out"
    assert main(["-q", "analyze", "similarity", str(folder), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| t0 | 1.000 |" in printed and "layer group `head`" in printed  # the base is found from the bank
    saved = json.loads((out / "similarity.json").read_text())
    assert saved["task_names"] == ["t0", "t1", "t2", "minus_t0"]
    assert saved["groups"]["all"]["cosine"][0][3] == pytest.approx(-1.0)
    with Image.open(out / "similarity.png") as figure:
        figure.load()
        assert figure.size[0] > 400
    assert main(["analyze", "similarity", str(tmp_path / "missing")]) == 2


def test_subset_orders():
    names = ["a", "b", "c", "d"]
    assert subset_orders(names) == [names]
    assert subset_orders(names, order=["c", "a"]) == [["c", "a"]]
    orders = subset_orders(names, random_orders=5, seed=1)
    assert len(orders) == 5 and all(sorted(o) == names for o in orders) and len({tuple(o) for o in orders}) > 1
    assert orders == subset_orders(names, random_orders=5, seed=1)
    with pytest.raises(AnalysisError, match="not in the bank"):
        subset_orders(names, order=["a", "x"])
    with pytest.raises(AnalysisError, match="not both"):
        subset_orders(names, order=["a"], random_orders=2)


USERS = {"u1": [0.75, 0.5, 0.0], "u2": [0.0, 0.2, 1.0], "u3": [1.0, -0.5, 0.0]}
NUM_IMAGES = 40
CONFIG = BenchmarkConfig(
    shots=(10, 20),
    methods=("single", "best_single", "default"),
    personalizer=PersonalizerConfig(steps=4, folds=2),
    progress=False,
)


@pytest.fixture(scope="module")
def ratings():
    photos = images(NUM_IMAGES, seed=5)
    columns = {"image": [], "score": [], "user_id": [], "image_id": []}
    for i, (user, weights) in enumerate(USERS.items()):
        columns["image"] += photos
        columns["score"] += user_ratings(photos, weights, noise=0.05, seed=i)[1].tolist()
        columns["user_id"] += [user] * NUM_IMAGES
        columns["image_id"] += [f"img{i}" for i in range(NUM_IMAGES)]
    return datasets.Dataset.from_dict(columns).cast_column("image", datasets.Image())


def test_the_full_subset_gives_exactly_the_full_benchmark(planted_world, ratings, tmp_path):
    world = planted_world
    full = run_benchmark(world.base, world.bank, ratings, CONFIG)
    order = list(reversed(world.bank.task_names))
    gains, results = benchmark_gains(
        world.base, world.bank, ratings, CONFIG, orders=[order], references={"earlier work": 0.5}
    )
    in_bank_order = [[t for t in world.bank.task_names if t in order[:n]] for n in range(1, len(order) + 1)]
    assert list(results) == ["+".join(names) for names in in_bank_order]
    assert [r.task_names for r in results.values()] == in_bank_order
    assert results["+".join(order[:1])].task_names == order[:1]
    rows = gains.summary()
    expected = {(r["method"], r["k"]): r for r in full.summary()}
    for row in rows:
        if row["databases"] == len(order):
            reference = expected[row["method"], row["k"]]
            for key in ("srocc_mean", "srocc_low", "srocc_high", "users"):
                assert row[key] == reference[key], (row, key)
    one = [r for r in rows if r["databases"] == 1 and r["method"] == "default" and r["k"] == 20][0]
    assert one["srocc_mean"] != expected["default", 20]["srocc_mean"]  # fewer databases: another model
    paths = gains.save(tmp_path)
    assert GainsResult.from_dict(json.loads(paths["json"].read_text())).summary() == rows
    assert f"| {len(order)} | 1 |" in paths["markdown"].read_text() and "earlier work" in paths["markdown"].read_text()
    with Image.open(paths["figure"]) as figure:
        figure.load()


def test_random_orders_average_the_distinct_subsets(planted_world, ratings):
    world = planted_world
    # best_single depends on the subset and fits nothing: the averaging is the same for every method
    config = BenchmarkConfig(**{**CONFIG.__dict__, "shots": (10,), "methods": ("best_single",)})
    orders = subset_orders(world.bank.task_names, random_orders=3, seed=0)
    gains, results = benchmark_gains(world.base, world.bank, ratings, config, orders=orders)
    rows = {r["databases"]: r for r in gains.summary()}
    assert rows[len(orders[0])]["subsets"] == 1 and rows[1]["subsets"] == len(gains.subsets(1)) > 1
    singles = [np.mean(list(results[s].per_user()["best_single", 10].values())) for s in gains.subsets(1)]
    assert rows[1]["subset_min"] == pytest.approx(min(singles))
    assert rows[1]["subset_max"] == pytest.approx(max(singles))
    per_user = np.mean([list(results[s].per_user()["best_single", 10].values()) for s in gains.subsets(1)], axis=0)
    assert rows[1]["srocc_mean"] == pytest.approx(per_user.mean())


def test_zero_shot_per_user_from_a_saved_benchmark(planted_world, ratings, tmp_path):
    result = run_benchmark(planted_world.base, planted_world.bank, ratings, CONFIG)
    saved = load_benchmark_result(result.save(tmp_path, figure=False)["json"])
    zero_shot = zero_shot_per_user(saved)
    per_user = result.per_user()
    assert zero_shot.k == 10 and zero_shot.users == list(USERS)
    for u, user in enumerate(zero_shot.users):
        for t, task in enumerate(zero_shot.task_names):
            assert zero_shot.values[u, t] == per_user[f"single:{task}", 10][user]
    assert zero_shot.personalized["default"] == per_user["default", 10]
    paths = zero_shot.save(tmp_path / "figures")
    assert "Best database per user" in paths["markdown"].read_text()
    with Image.open(paths["figure"]) as figure:
        figure.load()
    with pytest.raises(AnalysisError, match="zero-shot numbers at k"):
        zero_shot_per_user(saved, k=15)
    assert main(["-q", "analyze", "zero-shot", str(tmp_path / "results.json"), "--output", str(tmp_path / "cli")]) == 0
    assert json.loads((tmp_path / "cli" / "zero_shot.json").read_text())["k"] == 10


def test_benchmark_command_runs_nested_subsets_and_writes_every_view(saved_bank, tmp_path, capsys):
    _, folder = saved_bank
    photos = images(24, seed=3)
    rows = ["image,score,user_id"]
    for i, photo in enumerate(photos):
        photo.save(tmp_path / f"p{i}.png")
        rows += [f"p{i}.png,{(i * 7) % 10 + 1},a", f"p{i}.png,{(i * 3) % 10 + 1},b"]
    (tmp_path / "ratings.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "bench"
    common = [
        "--ratings",
        str(tmp_path / "ratings.csv"),
        "--model",
        str(folder.parent / "base"),
        "--bank",
        str(folder),
    ]
    common += ["--shots", "10", "--repeats", "1", "--methods", "single", "best_single", "--output", str(out)]
    code = main(["-q", "benchmark", *common, "--order", "t2", "t0", "--reference", "prior@10=0.3"])
    assert code == 0, capsys.readouterr().err
    gains = json.loads((out / "gains.json").read_text())
    assert gains["orders"] == [["t2", "t0"]] and set(gains["per_user"]) == {"t2", "t0+t2"}
    assert gains["references"] == {"prior": {"10": 0.3}}
    assert json.loads((out / "results.json").read_text())["task_names"] == ["t0", "t2"]  # the largest subset
    assert json.loads((out / "zero_shot.json").read_text())["task_names"] == ["t0", "t2"]
    assert (out / "gains.png").is_file() and (out / "zero_shot.png").is_file()
    redraw = ["-q", "analyze", "gains", str(out / "gains.json"), "--reference", "other=0.2", "--output", str(out)]
    assert main(redraw) == 0
    assert json.loads((out / "gains.json").read_text())["references"] == {"prior": {"10": 0.3}, "other": 0.2}
    assert main(["benchmark", *common, "--random-orders", "2", "--reference", "no-number"]) == 2
    assert "LABEL=SROCC" in capsys.readouterr().err


def test_gains_for_some_users_keep_every_method_on_those_users_only():
    per_user = {
        "a": {"default": {10: {"u1": 0.1, "u2": 0.3}}, "ensemble": {10: {"u1": 0.2, "u2": 0.4, "u3": 0.9}}},
        "a+b": {"default": {10: {"u1": 0.5, "u2": 0.7}}, "ensemble": {10: {"u1": 0.6, "u2": 0.8, "u3": 0.9}}},
    }
    gains = GainsResult(["a", "b"], [["a", "b"]], per_user, {"line": 0.5})
    same = gains.for_users(["u1", "u2"])
    means = {(r["method"], r["databases"]): r["srocc_mean"] for r in same.summary()}
    assert means == pytest.approx(
        {("default", 1): 0.2, ("ensemble", 1): 0.3, ("default", 2): 0.6, ("ensemble", 2): 0.7}
    )
    assert {r["users"] for r in same.summary()} == {2} and same.references == {}
    with pytest.raises(AnalysisError, match="not every method ran on users"):
        gains.for_users(["u1", "u3"])
