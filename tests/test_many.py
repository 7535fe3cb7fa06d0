"""Many users: batched fits equal sequential ones, exports and summary, feature cache, resume after kill -9, and two
real processes under `accelerate launch` giving the one-process output."""

import csv
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from planted import images, user_ratings
from safetensors.torch import load_file

from taskvec_aesthetics import AestheticModel, TaskVectorBank
from taskvec_aesthetics.cli import main
from taskvec_aesthetics.errors import IntegrityError
from taskvec_aesthetics.personalization.batched import BatchedPersonalizer, _conv2d_as_matmul
from taskvec_aesthetics.personalization.config import PersonalizerConfig
from taskvec_aesthetics.personalization.feature_cache import FeatureCache
from taskvec_aesthetics.personalization.inputs import EncodedRatings
from taskvec_aesthetics.personalization.many import personalize_many, user_folder_name
from taskvec_aesthetics.personalization.personalizer import Personalizer
from taskvec_aesthetics.task_vectors.coefficients import Coefficients

QUICK = dict(steps=6, eval_every=3)
TASTES = [[0.6, 0.6, -0.4], [-0.5, 0.2, 0.8], [0.1, -0.7, 0.3], [0.9, 0.0, 0.0], [0.0, 0.4, 0.4], [-0.3, -0.3, 0.9]]


@pytest.fixture(scope="module")
def saved(planted_world, tmp_path_factory):
    """The planted base and bank saved and loaded back (exports record where they live)."""
    root = tmp_path_factory.mktemp("saved")
    planted_world.base.save_pretrained(root / "base")
    base = AestheticModel.from_pretrained(root / "base")
    planted_world.bank.save_pretrained(root / "bank")
    return root, base, TaskVectorBank.from_pretrained(root / "bank", base=base)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """A ratings CSV of six users over one shared pool of image files (k = 9..14), and two users with bad ratings."""
    root = tmp_path_factory.mktemp("ratings")
    photos = images(24, seed=5)
    for i, photo in enumerate(photos):
        photo.save(root / f"img{i:02d}.png")
    rows = []
    for u, taste in enumerate(TASTES):
        _, scores = user_ratings(photos, taste, noise=0.05, seed=u)
        picked = np.random.default_rng(u).permutation(24)[: 9 + u]
        rows += [(f"img{i:02d}.png", round(float(scores[i]) * 10, 3), f"user {u}") for i in picked]
    rows += [(f"img{i:02d}.png", 3.0, "flat") for i in range(6)]  # all ratings equal: nothing to learn
    rows += [("img00.png", 4.0, "alone")]  # one rating
    path = root / "ratings.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "score", "user_id"])
        writer.writerows(rows)
    return path


def command_env():
    env = dict(os.environ, OMP_NUM_THREADS="1", TQDM_DISABLE="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def outputs(folder: Path) -> dict:
    """What must not depend on how the run was done: each user's coefficients (exact values) and summary row. (The
    files' bytes are not compared: safetensors orders its metadata differently in each process.)"""
    summary = json.loads((folder / "summary.json").read_text())["users"]
    rows = {row["user_id"]: {k: v for k, v in row.items() if k != "fit_time_s"} for row in summary}
    files = {}
    for path in sorted((folder / "users").glob("[!.]*/coefficients.safetensors")):
        loaded = Coefficients.load(path)
        files[path.parent.name] = (loaded.values.tolist(), loaded.group_names, loaded.task_names, loaded.granularity)
    return {"rows": rows, "coefficients": files}


def test_convolutions_as_matrix_products_equal_conv2d():
    x = torch.randn(3, 6, 2, 2)
    for weight, kwargs in [
        (torch.randn(5, 6, 1, 1), {}),
        (torch.randn(6, 1, 5, 5), dict(padding=2, groups=6)),
        (torch.randn(6, 1, 3, 3), dict(padding=1, stride=2, groups=6)),
    ]:
        expected = torch.nn.functional.conv2d(x, weight, torch.ones(weight.shape[0]), **kwargs)
        got = _conv2d_as_matmul(x, weight, torch.ones(weight.shape[0]), **kwargs)
        assert torch.allclose(got, expected, atol=1e-5)
    assert _conv2d_as_matmul(x, torch.randn(4, 3, 3, 3), groups=2) is None  # not one of the two: left to conv2d


@pytest.mark.parametrize(
    "overrides",
    [
        {},  # the default candidates: simple ones and learned layer-wise coefficients
        dict(candidates=("task", "layer"), tolerance=0.0, loss="pairwise+mse", init_pull=0.1, batch_size=8),
    ],
)
def test_batched_fits_equal_sequential_fits(planted_world, overrides):
    config = PersonalizerConfig(**QUICK, **overrides)
    sequential = Personalizer(planted_world.base, planted_world.bank, config)
    batched = BatchedPersonalizer(planted_world.base, planted_world.bank, config)
    assert batched.vectorised
    photos = images(40, seed=9)
    pixels = sequential.encode(photos)
    encoded = []
    for u, (taste, k) in enumerate(zip(TASTES, (7, 12, 20, 15))):
        ratings = user_ratings(photos, taste, noise=0.05, seed=u)[1]
        pick = torch.randperm(40, generator=torch.Generator().manual_seed(u))[:k]
        encoded.append(EncodedRatings(pixels[pick], ratings[pick]))
    flat = EncodedRatings(pixels[:5], torch.full((5,), 2.0, dtype=torch.float64))
    together = batched.fit_encoded_many([*encoded, flat])
    assert isinstance(together[-1], ValueError) and "at least 2 distinct ratings" in str(together[-1])
    learned = 0
    for item, (coefficients, report) in zip(encoded, together):
        expected, expected_report = sequential.fit_encoded(item)
        assert report.chosen == expected_report.chosen and report.chosen_step == expected_report.chosen_step
        assert torch.allclose(coefficients.values, expected.values, atol=1e-5), report.chosen
        assert report.cv_srocc == pytest.approx(expected_report.cv_srocc, abs=1e-3)
        assert report.loss_history == pytest.approx(expected_report.loss_history, abs=1e-4)
        learned += report.chosen in ("task", "layer")
    if overrides:
        assert learned == len(encoded)  # the refit of learned candidates was batched too


def test_user_folder_names_are_safe_and_distinct():
    assert user_folder_name("alice_01") == "alice_01"
    odd = [user_folder_name(u) for u in ("../etc", "a/b", "a b", "a_b", ".hidden", "")]
    assert all("/" not in n and not n.startswith(".") and n for n in odd) and len(set(odd)) == len(odd)


def test_personalize_many_writes_exports_summary_and_resumes(saved, table, tmp_path):
    _, base, bank = saved
    out = tmp_path / "out"
    config = PersonalizerConfig(**QUICK)
    result = personalize_many(base, bank, table, out, config, batch_users=4, progress=False)
    assert (result.fitted, result.skipped, len(result.failed)) == (6, 0, 2)
    rows = {row["user_id"]: row for row in result.rows}
    assert list(rows) == [f"user {u}" for u in range(6)] + ["flat", "alone"]
    assert "at least 2 distinct ratings" in rows["flat"]["error"] and "received 1 ratings" in rows["alone"]["error"]
    assert rows["alone"]["num_ratings"] == 1 and not (out / "users" / "alone").exists()
    with open(out / "summary.csv") as handle:
        assert [r["user_id"] for r in csv.DictReader(handle)] == list(rows)
    # each export reloads into the personalized model; the summary says what the fit chose
    user = rows["user 3"]
    assert user["num_ratings"] == 12 and user["error"] == "" and user["chosen"] and user["cv_srocc_se"] > 0
    assert user["cv_low"] <= user["cv_srocc"] <= user["cv_high"]
    reloaded = AestheticModel.from_pretrained(out / user["folder"])
    pixels = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    coefficients = reloaded.personalization.coefficients
    assert not torch.allclose(reloaded(pixel_values=pixels).scores, base(pixel_values=pixels).scores)
    expected = base.with_coefficients(bank, coefficients)(pixel_values=pixels).scores
    assert torch.allclose(reloaded(pixel_values=pixels).scores, expected, atol=1e-6)
    # the same user fitted alone, sequentially, from the same rows: the same coefficients
    own = datasets.Dataset.from_csv(str(table)).filter(lambda r: r["user_id"] == "user 3")
    from taskvec_aesthetics.data import load_ratings

    rated = load_ratings(table).filter(lambda r: r["user_id"] == "user 3")
    assert len(own) == len(rated) == 12
    alone = Personalizer(base, bank, config).fit(rated).coefficients
    assert torch.allclose(alone.values, coefficients.values, atol=1e-5)
    # every distinct image was encoded once into the cache; a rerun fits nobody and encodes nothing
    shards = sorted((out / "feature_cache").rglob("*.safetensors"))
    assert len(shards) == 1
    again = personalize_many(base, bank, table, out, config, batch_users=4, progress=False)
    # a failed user is counted among the errors, never among the users "already done"
    assert (again.fitted, again.skipped, len(again.failed)) == (0, 6, 2)
    assert "6 of 8 users personalized (0 fitted now, 6 already done, 2 with errors)" in again.report()
    assert sorted((out / "feature_cache").rglob("*.safetensors")) == shards
    assert outputs(out)["rows"] == {
        r["user_id"]: {k: v for k, v in r.items() if k != "fit_time_s"} for r in again.rows
    }


def test_table_formats_and_errors(saved, table, tmp_path):
    _, base, bank = saved
    from taskvec_aesthetics.data import load_ratings

    dataset = load_ratings(table).filter(lambda r: r["user_id"] in ("user 0", "user 1"))
    dataset.to_parquet(str(tmp_path / "ratings.parquet"))
    config = PersonalizerConfig(**QUICK)
    from_parquet = personalize_many(base, bank, tmp_path / "ratings.parquet", tmp_path / "a", config, progress=False)
    personalize_many(base, bank, dataset, tmp_path / "b", config, batch_users=1, progress=False)
    assert not from_parquet.failed and len(from_parquet.rows) == 2
    # batched (2 at once) and one by one: the same choices and, to float rounding, the same coefficients
    batched, single = outputs(tmp_path / "a"), outputs(tmp_path / "b")
    assert {u: r["chosen"] for u, r in batched["rows"].items()} == {u: r["chosen"] for u, r in single["rows"].items()}
    for name in single["coefficients"]:
        assert np.allclose(batched["coefficients"][name][0], single["coefficients"][name][0], atol=1e-5)
    with pytest.raises(ValueError, match="'user_id' column"):
        personalize_many(base, bank, dataset.remove_columns("user_id"), tmp_path / "c", config, progress=False)
    with pytest.raises(FileNotFoundError, match="parquet"):
        personalize_many(base, bank, tmp_path / "none.parquet", tmp_path / "c", config, progress=False)


def _cli(table, root, out, *extra):
    return [
        "personalize-many",
        "--ratings",
        str(table),
        "--model",
        str(root / "base"),
        "--bank",
        str(root / "bank"),
        "--output",
        str(out),
        "--steps",
        "6",
        *extra,
    ]


def written_users(folder: Path) -> int:
    """Complete exports (a save in progress is a hidden staging folder beside them)."""
    return len(list((folder / "users").glob("[!.]*/personalization.json")))


def test_resume_after_kill_equals_an_uninterrupted_run(saved, table, tmp_path, capsys):
    root, _, _ = saved
    # The reference: one uninterrupted run, one user at a time so that a kill lands between users.
    assert main(_cli(table, root, tmp_path / "whole", "--batch-users", "1")) == 0
    assert "6 of 8 users personalized (6 fitted now, 0 already done, 2 with errors)" in capsys.readouterr().out
    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "taskvec_aesthetics.cli", *_cli(table, root, killed, "--batch-users", "1")],
        env=command_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and written_users(killed) < 2:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    written = written_users(killed)
    assert 2 <= written < 6 and not (killed / "summary.json").exists(), written
    assert main(_cli(table, root, killed, "--batch-users", "1")) == 0
    printed = capsys.readouterr().out
    already = int(printed.split(" already done")[0].rsplit(", ", 1)[1])
    assert written <= already < 8, printed  # the rerun skipped what the killed run wrote
    assert outputs(killed) == outputs(tmp_path / "whole")


def test_two_processes_under_accelerate_equal_one_process(saved, table, tmp_path):
    root, _, _ = saved
    # Both runs in fresh processes with one thread each: float sums must not depend on the thread count.
    one = [sys.executable, "-m", "taskvec_aesthetics.cli", *_cli(table, root, tmp_path / "one", "--batch-users", "2")]
    assert subprocess.run(one, env=command_env(), capture_output=True, timeout=300).returncode == 0
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--main_process_port",
        "0",
        "-m",
        "taskvec_aesthetics.cli",
        *_cli(table, root, tmp_path / "two", "--batch-users", "2"),
    ]
    # As for fine-tuning: ACCELERATE_USE_CPU with --multi_gpu starts several CPU processes on one machine.
    done = subprocess.run(
        command, env={**command_env(), "ACCELERATE_USE_CPU": "1"}, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("users personalized") == 1  # the main process reports, once
    assert outputs(tmp_path / "two") == outputs(tmp_path / "one")
    (folder,) = (tmp_path / "two" / "feature_cache").iterdir()
    assert len(FeatureCache(folder.parent, folder.name).load()) == 24  # each distinct image encoded once


# -- bad rows, damaged records, a damaged feature cache ---------------------------------------------------------------
@pytest.fixture()
def two_users(table, tmp_path):
    """users 0 and 1 of the table; user 1's second row gets a NaN score."""
    with open(table) as handle:
        rows = [r for r in csv.DictReader(handle) if r["user_id"] in ("user 0", "user 1")]
    bad = [i for i, r in enumerate(rows) if r["user_id"] == "user 1"][1]
    rows[bad]["score"] = "nan"
    path = table.parent / f"two_users_{tmp_path.name}.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file_name", "score", "user_id"])
        writer.writeheader()
        writer.writerows(rows)
    return path, bad + 2  # the file's line of the bad row (the header is line 1)


def test_one_nan_score_stops_only_its_user_and_skipped_rows_are_noted(saved, two_users, tmp_path):
    _, base, bank = saved
    path, line = two_users
    config = PersonalizerConfig(**QUICK)
    result = personalize_many(base, bank, path, tmp_path / "strict", config, progress=False)
    rows = {row["user_id"]: row for row in result.rows}
    assert rows["user 0"]["error"] == "" and rows["user 0"]["chosen"]
    assert f"line {line}: score 'nan' is not finite" in rows["user 1"]["error"]
    assert (result.fitted, len(result.failed)) == (1, 1)
    skipping = personalize_many(base, bank, path, tmp_path / "skip", config, skip_invalid=True, progress=False)
    rows = {row["user_id"]: row for row in skipping.rows}
    assert rows["user 1"]["error"] == "" and rows["user 1"]["notes"].startswith("skipped 1 invalid row(s)")
    assert f"line {line}" in rows["user 1"]["notes"] and rows["user 0"]["notes"] == ""
    with open(tmp_path / "skip" / "summary.csv") as handle:
        assert [r["notes"] for r in csv.DictReader(handle)] == [rows["user 0"]["notes"], rows["user 1"]["notes"]]
    assert "1 with skipped rows" in skipping.report()


def test_damaged_or_incomplete_records_are_fitted_again_not_fatal(saved, two_users, tmp_path, caplog):
    _, base, bank = saved
    path, _ = two_users
    out = tmp_path / "out"
    config = PersonalizerConfig(**QUICK)
    personalize_many(base, bank, path, out, config, progress=False)
    first = outputs(out)
    fitted, failed = out / "users" / user_folder_name("user 0"), out / "errors" / f"{user_folder_name('user 1')}.json"
    (fitted / "personalization.json").write_text('{"info": ')  # cut short, as by a full disk
    failed.write_text("\x00\x00")
    again = personalize_many(base, bank, path, out, config, progress=False)
    assert (again.fitted, again.skipped, len(again.failed)) == (1, 0, 1)
    assert outputs(out) == first
    # a user folder without its coefficients is not done either
    (fitted / "coefficients.safetensors").unlink()
    third = personalize_many(base, bank, path, out, config, progress=False)
    assert (third.fitted, third.skipped) == (1, 0) and outputs(out) == first


@pytest.mark.parametrize("damage", ["tampered", "truncated", "wrong shape"])
def test_a_damaged_feature_cache_shard_is_named_and_rebuilt_once(saved, two_users, tmp_path, caplog, damage):
    _, base, bank = saved
    path, _ = two_users
    config = PersonalizerConfig(**QUICK)
    personalize_many(base, bank, path, tmp_path / "clean", config, skip_invalid=True, progress=False)
    expected = outputs(tmp_path / "clean")
    (shard,) = (tmp_path / "clean" / "feature_cache").rglob("features-*.safetensors")
    data = shard.read_bytes()
    shape = tuple(next(iter(load_file(shard).values())).shape)
    if damage == "tampered":  # one feature value changed: every user's coefficients would change
        shard.write_bytes(data[:-8] + bytes(b ^ 0x10 for b in data[-8:]))
    elif damage == "truncated":
        shard.write_bytes(data[: len(data) // 2])
    else:  # written under its own correct name, with features of another shape
        features = {k: v[..., :1].contiguous() for k, v in load_file(shard).items()}
        shard.unlink()
        cache = FeatureCache(shard.parent.parent, shard.parent.name)
        cache.add(list(features), torch.stack(list(features.values())))
        shard = cache.flush()
    with pytest.raises(IntegrityError, match=shard.name):
        FeatureCache(shard.parent.parent, shard.parent.name, shape=shape).read_shard(shard)
    out = tmp_path / "clean" / "rerun"
    with caplog.at_level(logging.WARNING, logger="taskvec_aesthetics.personalization.feature_cache"):
        rerun = personalize_many(
            base,
            bank,
            path,
            out,
            config,
            cache_dir=tmp_path / "clean" / "feature_cache",
            skip_invalid=True,
            progress=False,
        )
    assert not rerun.failed
    assert [r.message for r in caplog.records if shard.name in r.message], "the damaged shard is not named"
    assert outputs(out)["coefficients"] == expected["coefficients"]


def test_the_feature_cache_removes_what_killed_writers_left_and_nothing_else(tmp_path):
    cache = FeatureCache(tmp_path, "key", shape=(2,))
    cache.add(["a", "b"], torch.ones(2, 2))
    shard = cache.flush()
    assert shard.name == f"features-{hashlib.sha256(shard.read_bytes()).hexdigest()}.safetensors"
    folder = shard.parent
    abandoned = [folder / ".pending-dead.safetensors", folder / "..pending-dead.safetensors.0123abcd.tmp"]
    live, mine = folder / ".pending-live.safetensors", folder / "notes.txt"
    for path in [*abandoned, live, mine]:
        path.write_bytes(b"x")
    for path in abandoned:
        os.utime(path, (time.time() - 7200,) * 2)
    assert len(FeatureCache(tmp_path, "key", shape=(2,)).load()) == 2
    assert sorted(p.name for p in folder.iterdir()) == sorted([shard.name, live.name, mine.name])


def test_batched_fits_with_unlabeled_photos_equal_sequential_fits(planted_world):
    """The distilled candidate learns from the same unlabeled photos in a batched fit as in a sequential one."""
    config = PersonalizerConfig(**QUICK, candidates=("init", "distil"), tolerance=0.0)
    sequential = Personalizer(planted_world.base, planted_world.bank, config)
    batched = BatchedPersonalizer(planted_world.base, planted_world.bank, config)
    photos = images(40, seed=9)
    pixels = sequential.encode(photos)
    encoded = []
    for u, taste in enumerate(TASTES[:2]):
        ratings = user_ratings(photos, taste, noise=0.05, seed=u)[1]
        encoded.append(EncodedRatings(pixels[:12], ratings[:12]))
    together = batched.fit_encoded_many(encoded, pixels[12:])
    for item, (coefficients, report) in zip(encoded, together):
        expected, expected_report = sequential.fit_encoded(item, pixels[12:])
        assert report.unlabeled == 28 and report.cross_validation[-1]["candidate"] == "distil"
        assert torch.allclose(coefficients.values, expected.values, atol=1e-5)
        assert report.cv_interval == expected_report.cv_interval
