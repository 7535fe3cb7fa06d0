"""Database registry, official-format loaders and user ratings, on tiny fixtures in each database's format."""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from database_fixtures import FIXTURE_NAMES, FLICKR_TEST_WORKERS, DatabaseFixture, make_database_fixture
from datasets import Image, List, Value
from PIL import Image as PILImage

from taskvec_aesthetics.data import (
    DATABASES,
    FLICKR_AES_TEST_WORKERS,
    DatabaseFormatError,
    DatabaseSpec,
    get_database_spec,
    list_databases,
    load_database,
    load_ratings,
)

PIAA = ("aadb", "para", "flickr-aes", "real-cur", "lapis")


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> dict[str, DatabaseFixture]:
    """One clean fixture per database, shared by the read-only tests."""
    root = tmp_path_factory.mktemp("databases")
    return {name: make_database_fixture(name, root) for name in FIXTURE_NAMES}


def scores_of(dataset) -> dict:
    if "user_id" in dataset.column_names:
        return dict(zip(zip(dataset["image_id"], dataset["user_id"]), dataset["score"]))
    return dict(zip(dataset["image_id"], dataset["score"]))


def approx(expected: dict) -> dict:
    return {key: pytest.approx(value, rel=1e-6, abs=1e-5) for key, value in expected.items()}


# --- registry ----------------------------------------------------------------------------------------------


def test_registry_lists_every_database_with_its_kind():
    assert list_databases() == list(DATABASES) == [
        "ava", "aadb", "tad66k", "para", "koniq10k", "spaq", "livec", "kadid10k", "flickr-aes", "real-cur", "lapis"
    ]  # fmt: skip
    assert list_databases("iqa") == ["koniq10k", "spaq", "livec", "kadid10k"]
    assert list_databases("giaa") == ["ava", "tad66k"]
    assert list_databases("piaa") == list(PIAA)
    with pytest.raises(ValueError, match="kind must be one of"):
        list_databases("aesthetics")


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("KonIQ-10k", "koniq10k"),
        ("koniq-10k", "koniq10k"),
        ("flickraes", "flickr-aes"),
        ("FLICKR_AES", "flickr-aes"),
        ("LIVE Challenge", "livec"),
        ("live-c", "livec"),
        ("KADID-10k", "kadid10k"),
        ("TAD66K", "tad66k"),
        ("Real-Cur", "real-cur"),
    ],
)
def test_get_database_spec_accepts_case_and_aliases(query, name):
    assert get_database_spec(query).name == name


def test_unknown_database_lists_known_names_and_suggests():
    with pytest.raises(ValueError, match=r"Did you mean 'koniq10k'\?.*Known databases: ava, aadb") as info:
        get_database_spec("konik10k")
    assert "lapis" in str(info.value)
    with pytest.raises(TypeError, match="must be a str"):
        get_database_spec(3)  # type: ignore[arg-type]


def test_specs_carry_scales_histograms_and_are_frozen():
    ranges = {name: spec.score_range for name, spec in DATABASES.items()}
    assert ranges == {
        "ava": (1, 10), "aadb": (0, 1), "tad66k": (1, 10), "para": (1, 5), "koniq10k": (0, 100), "spaq": (0, 100),
        "livec": (0, 100), "kadid10k": (1, 5), "flickr-aes": (1, 5), "real-cur": (1, 5), "lapis": (0, 100),
    }  # fmt: skip
    assert [n for n, s in DATABASES.items() if s.has_distribution] == ["ava", "para", "koniq10k"]
    assert len(DATABASES["ava"].distribution_bins) == 10 and len(DATABASES["para"].distribution_bins) == 9
    assert all(s.higher_is_better and s.citation and s.licence and s.size > 0 for s in DATABASES.values())
    with pytest.raises(dataclasses.FrozenInstanceError):
        DATABASES["ava"].size = 1  # type: ignore[misc]
    with pytest.raises(ValueError, match="kind must be one of"):
        DatabaseSpec("x", "X", "photo", (0, 1), True, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="low < high"):
        DatabaseSpec("x", "X", "iqa", (5, 1), True, 1)


# --- every loader: columns, dtypes, scores, splits --------------------------------------------------------


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_columns_dtypes_and_lazy_images(fixtures, name):
    dataset = load_database(name, fixtures[name].root, split="all")
    spec = get_database_spec(name)
    expected = ["image", "image_id", "score"] + (["score_distribution"] if name in ("ava", "koniq10k") else [])
    expected += ["user_id"] if name in PIAA else []
    assert dataset.column_names == expected
    assert dataset.features["image"] == Image()
    assert dataset.features["image_id"] == Value("string")
    assert dataset.features["score"] == Value("float32")
    if "score_distribution" in expected:
        assert dataset.features["score_distribution"] == List(Value("float32"))
    if "user_id" in expected:
        assert dataset.features["user_id"] == Value("string")
    stored = dataset.cast_column("image", Image(decode=False))[0]["image"]
    assert stored["bytes"] is None and Path(stored["path"]).is_file()
    first = dataset[0]["image"]
    assert isinstance(first, PILImage.Image) and first.size == (16, 16)
    low, high = spec.score_range
    assert all(low <= s <= high for s in dataset["score"])
    assert dataset.info.citation == spec.citation and dataset.split == "all"


def test_relative_root_stores_absolute_image_paths(fixtures, monkeypatch):
    root = fixtures["kadid10k"].root
    monkeypatch.chdir(root.parent)
    dataset = load_database("kadid10k", root.name, "all")
    paths = [image["path"] for image in dataset.cast_column("image", Image(decode=False))["image"]]
    assert all(Path(path).is_absolute() and Path(path).is_file() for path in paths)


@pytest.mark.parametrize("name", ["ava", "tad66k", "koniq10k", "spaq", "livec", "kadid10k"])
def test_image_level_scores_match_the_files(fixtures, name):
    fixture = fixtures[name]
    dataset = load_database(name, fixture.root, split="all")
    assert scores_of(dataset) == approx(fixture.images)


@pytest.mark.parametrize("name", ["ava", "koniq10k", "para"])
def test_vote_histograms_are_normalised_counts(fixtures, name):
    fixture = fixtures[name]
    dataset = load_database(name, fixture.root, split="all", level="image")
    distributions = dict(zip(dataset["image_id"], dataset["score_distribution"]))
    assert distributions.keys() == fixture.distributions.keys()
    bins = len(get_database_spec(name).distribution_bins)
    for image_id, expected in fixture.distributions.items():
        assert len(distributions[image_id]) == bins
        np.testing.assert_allclose(distributions[image_id], expected, rtol=1e-6)


@pytest.mark.parametrize("name", ["ava", "aadb", "tad66k", "para", "koniq10k", "lapis"])
def test_official_splits(fixtures, name):
    fixture = fixtures[name]
    level = "image" if name in PIAA else None
    loaded = {
        s: set(load_database(name, fixture.root, s, level=level)["image_id"]) for s in ("train", "validation", "test")
    }
    official = {s: {i for i, split in fixture.splits.items() if split == s} for s in ("train", "validation", "test")}
    assert loaded["test"] == official["test"]
    if official["validation"]:
        assert loaded["validation"] == official["validation"] and loaded["train"] == official["train"]
    else:  # a seeded validation carved out of the official training split
        assert loaded["validation"] and loaded["validation"] | loaded["train"] == official["train"]
        assert not loaded["validation"] & loaded["train"]


@pytest.mark.parametrize("name", ["spaq", "livec", "kadid10k"])
def test_seeded_splits_are_disjoint_reproducible_and_depend_on_seed(fixtures, name):
    root = fixtures[name].root
    splits = {s: load_database(name, root, s, seed=1)["image_id"] for s in ("train", "validation", "test")}
    ids = [i for s in splits.values() for i in s]
    assert sorted(ids) == sorted(load_database(name, root, "all")["image_id"])  # a partition
    assert len(splits["test"]) >= 2 and len(splits["validation"]) >= 1
    assert load_database(name, root, "test", seed=1)["image_id"] == splits["test"]
    tests = {tuple(sorted(load_database(name, root, "test", seed=seed)["image_id"])) for seed in range(4)}
    assert len(tests) > 1


# --- database quirks ---------------------------------------------------------------------------------------


def test_ava_mean_vote_and_test_list(fixtures):
    fixture = fixtures["ava"]
    lines = (fixture.root / "AVA.txt").read_text().splitlines()
    assert all(len(line.split(" ")) == 15 for line in lines)
    test = load_database("ava", fixture.root, "test")
    assert set(test["image_id"]) == set(
        (fixture.root / "aesthetics_image_lists/generic_test.jpgl").read_text().split()
    )
    for score, distribution in zip(test["score"], test["score_distribution"]):
        assert score == pytest.approx(np.dot(np.arange(1, 11), distribution), rel=1e-5)


def test_aadb_nested_and_flat_label_folders_and_worker_ratings(fixtures, tmp_path):
    fixture = fixtures["aadb"]
    assert (fixture.root / "imgListFiles_label/imgListFiles_label/imgListTrainRegression_score.txt").is_file()
    ratings = load_database("aadb", fixture.root, "all")
    # (rating - 1) / 4 on AADB's 0-1 scale; 0 answers and images outside the official lists dropped.
    expected = {key: (r - 1) / 4 for key, r in fixture.ratings.items() if r != 0}
    assert scores_of(ratings) == approx(expected)
    assert any(r == 0 for r in fixture.ratings.values())
    test = load_database("aadb", fixture.root, "test")
    assert {i for i in test["image_id"]} <= {i for i, s in fixture.splits.items() if s == "test"}

    flat = tmp_path / "AADB"
    shutil.copytree(fixture.root, flat)
    nested = flat / "imgListFiles_label"
    for file in (nested / "imgListFiles_label").iterdir():
        file.rename(nested / file.name)
    (nested / "imgListFiles_label").rmdir()
    images = load_database("aadb", flat, "all", level="image")
    assert scores_of(images) == approx(fixture.images)


def test_tad66k_reads_crlf_and_at_signs(fixtures):
    fixture = fixtures["tad66k"]
    raw = (fixture.root / "labels/merge/train.csv").read_bytes()
    assert raw.startswith(b"image,score\r\n") and b"\n" not in raw.replace(b"\r\n", b"")
    ids = load_database("tad66k", fixture.root, "all")["image_id"]
    assert any("@" in i for i in ids) and not any(i.endswith("\r") for i in ids)


def test_para_sessions_levels_and_validation_images(fixtures):
    fixture = fixtures["para"]
    ratings = load_database("para", fixture.root, "all")
    assert scores_of(ratings) == approx(fixture.ratings)
    paths = ratings.cast_column("image", Image(decode=False))["image"]
    assert all(Path(p["path"]).parent.name.startswith("session") and p["path"].endswith("_.jpg") for p in paths)
    images = load_database("para", fixture.root, "all", level="image")
    assert scores_of(images) == approx(fixture.images) and "user_id" not in images.column_names
    both_levels = [
        set(load_database("para", fixture.root, "validation", level=lv)["image_id"]) for lv in ("rating", "image")
    ]
    assert both_levels[0] == both_levels[1]


def test_koniq_falls_back_to_the_osf_file_and_takes_options(fixtures, tmp_path, caplog):
    fixture = fixtures["koniq10k"]
    copy = tmp_path / "koniq10k"
    shutil.copytree(fixture.root, copy)
    (copy / "koniq10k_distributions_sets.csv").unlink()
    with caplog.at_level(logging.WARNING):
        dataset = load_database("koniq10k", copy, "all")
    assert "seeded split" in caplog.text
    assert scores_of(dataset) == approx(fixture.images)  # MOS_zscore; c1..c5 are counts in this file
    for image_id, distribution in zip(dataset["image_id"], dataset["score_distribution"]):
        np.testing.assert_allclose(distribution, fixture.distributions[image_id], rtol=1e-5)
    with pytest.raises(DatabaseFormatError, match="512x384"):
        load_database("koniq10k", fixture.root, "all", resolution="512x384")
    with pytest.raises(TypeError, match=r"Unknown option\(s\) \['size'\].*resolution='1024x768'"):
        load_database("koniq10k", fixture.root, size=512)


def test_spaq_and_livec_containers(fixtures):
    spaq = load_database("spaq", fixtures["spaq"].root, "all")
    assert sorted(spaq["image_id"])[0] == "00001.jpg"
    livec = load_database("livec", fixtures["livec"].root, "all")
    assert not any(i.startswith("t") for i in livec["image_id"])  # t1-t7 dropped
    assert {Path(i).suffix for i in livec["image_id"]} == {".bmp", ".JPG"}


def test_kadid_split_keeps_reference_content_together(fixtures):
    root = fixtures["kadid10k"].root
    references = {
        s: {i[:3] for i in load_database("kadid10k", root, s)["image_id"]} for s in ("train", "validation", "test")
    }
    assert not references["train"] & references["test"] and not references["validation"] & references["test"]
    assert not references["train"] & references["validation"]


def test_flickr_aes_test_workers_and_leading_space(fixtures, tmp_path):
    assert len(set(FLICKR_AES_TEST_WORKERS)) == 37 and set(FLICKR_TEST_WORKERS) <= set(FLICKR_AES_TEST_WORKERS)
    fixture = fixtures["flickr-aes"]
    assert (fixture.root / " FLICKR-AES_image_labeled_by_each_worker.csv").is_file()
    test = load_database("flickr-aes", fixture.root, "test")
    assert set(test["user_id"]) == set(FLICKR_TEST_WORKERS)
    test_images = {i for (i, w) in fixture.ratings if w in FLICKR_TEST_WORKERS}
    train = scores_of(load_database("flickr-aes", fixture.root, "train")) | scores_of(
        load_database("flickr-aes", fixture.root, "validation")
    )
    assert train == approx({(i, w): s for (i, w), s in fixture.ratings.items() if i not in test_images})
    images = load_database("flickr-aes", fixture.root, "test", level="image")
    means = {i: np.mean([s for (j, _), s in fixture.ratings.items() if j == i]) for i in test_images}
    assert scores_of(images) == approx(means)
    one = load_database("flickr-aes", fixture.root, "test", user_id=FLICKR_TEST_WORKERS[0])
    assert set(one["user_id"]) == {FLICKR_TEST_WORKERS[0]} and len(one) > 0

    plain = tmp_path / "FLICKR-AES"
    shutil.copytree(fixture.root, plain)
    (plain / " FLICKR-AES_image_labeled_by_each_worker.csv").rename(
        plain / "FLICKR-AES_image_labeled_by_each_worker.csv"
    )
    assert len(load_database("flickr-aes", plain, "test")) == len(test)


def test_real_cur_albums_are_test_users(fixtures):
    fixture = fixtures["real-cur"]
    dataset = load_database("real-cur", fixture.root, "test")
    assert scores_of(dataset) == approx(fixture.ratings)  # the score is the folder name; Thumbs.db ignored
    assert list(dict.fromkeys(dataset["user_id"])) == ["album_1", "album_2", "album_10"]
    with pytest.raises(ValueError, match=r"REAL-CUR has no 'train' split; available: \['test', 'all'\]"):
        load_database("real-cur", fixture.root, "train")


def test_lapis_latin1_and_levels(fixtures):
    fixture = fixtures["lapis"]
    assert b"andr\xe9" in (fixture.root / "annotation/LAPIS_PIAA.csv").read_bytes()  # Latin-1, not UTF-8
    assert scores_of(load_database("lapis", fixture.root, "all")) == approx(fixture.ratings)
    assert scores_of(load_database("lapis", fixture.root, "all", level="image")) == approx(fixture.images)


# --- errors ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_bad_rows_and_missing_images_in_one_error_or_skipped(name, tmp_path, caplog):
    missing = 0 if name == "real-cur" else 1
    fixture = make_database_fixture(name, tmp_path, bad_rows=2, missing_images=missing)
    with pytest.raises(DatabaseFormatError) as info:
        load_database(name, fixture.root, "all")
    issues = info.value.issues
    assert [(i.file, i.line) for i in issues if "not found" not in i.reason] == fixture.bad_rows
    not_found = [i for i in issues if "not found" in i.reason]
    assert len(not_found) >= missing
    assert all(str(fixture.image_files[fixture.missing_images[0]]) in i.reason for i in not_found)
    message = str(info.value)
    assert f"found {len(issues)} invalid row(s)" in message and str(issues[0]) in message
    file, line = fixture.bad_rows[0]
    assert str(issues[0]).startswith(file if line is None else f"{file}, line {line}:")
    assert "skip_invalid=True" in message

    with caplog.at_level(logging.WARNING):
        dataset = load_database(name, fixture.root, "all", skip_invalid=True)
    assert f"skipped {len(issues)} invalid row(s)" in caplog.text
    assert not set(dataset["image_id"]) & set(fixture.missing_images) and len(dataset) > 0


def test_score_outside_the_database_scale_is_an_invalid_row(tmp_path):
    fixture = make_database_fixture("tad66k", tmp_path)
    path = fixture.root / "labels/merge/test.csv"
    path.write_bytes(path.read_bytes().replace(b"\r\n", b"\r\nextra.jpg,11.5\r\n", 1))
    with pytest.raises(DatabaseFormatError, match=r"test.csv, line 2: score 11.5 outside TAD66K's \[1, 10\]"):
        load_database("tad66k", fixture.root, "test")


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_root_that_is_not_the_database_names_expected_files(name, tmp_path):
    display = get_database_spec(name).display_name
    with pytest.raises(DatabaseFormatError, match=f"{display}.*Expected layout"):
        load_database(name, tmp_path, "all")
    with pytest.raises(DatabaseFormatError, match="not a directory"):
        load_database(name, tmp_path / "nowhere", "all")


def test_empty_ava_root_names_the_label_file(tmp_path):
    with pytest.raises(
        DatabaseFormatError, match=r"(?s)'AVA.txt' not found.*aesthetics_image_lists/generic_test.jpgl"
    ):
        load_database("ava", tmp_path)


def test_argument_errors(fixtures):
    root = fixtures["flickr-aes"].root
    with pytest.raises(ValueError, match="split must be one of .* got 'dev'"):
        load_database("flickr-aes", root, "dev")
    with pytest.raises(ValueError, match="level must be one of"):
        load_database("flickr-aes", root, level="user")
    with pytest.raises(ValueError, match="publishes no individual ratings"):
        load_database("kadid10k", fixtures["kadid10k"].root, level="rating")
    with pytest.raises(ValueError, match=r"no ratings by user\(s\) \['NOBODY'\]"):
        load_database("flickr-aes", root, "test", user_id=["NOBODY"])
    with pytest.raises(ValueError, match="needs rating-level data"):
        load_database("flickr-aes", root, "test", level="image", user_id=FLICKR_TEST_WORKERS[0])


# --- user ratings ------------------------------------------------------------------------------------------


def _photos(folder: Path, count: int = 3) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        PILImage.new("RGB", (8, 8), (i * 40, 0, 0)).save(folder / f"p{i}.jpg")
        names.append(f"p{i}.jpg")
    return names


def test_load_ratings_from_csv_with_relative_and_absolute_paths(tmp_path):
    names = _photos(tmp_path / "photos")
    absolute = tmp_path / "photos" / names[2]
    rows = [f"photos/{names[0]},4,me", f"photos/{names[1]},2.5,me", f"{absolute},1,you"]
    (tmp_path / "mine.csv").write_text("image,rating,user_id\n" + "\n".join(rows) + "\n")
    dataset = load_ratings(tmp_path / "mine.csv")
    assert dataset.column_names == ["image", "image_id", "score", "user_id"]
    assert dataset.features["score"] == Value("float32") and dataset.features["image"] == Image()
    assert dataset["image_id"] == [f"photos/{names[0]}", f"photos/{names[1]}", str(absolute)]
    assert dataset["score"] == [4.0, 2.5, 1.0] and dataset["user_id"] == ["me", "me", "you"]
    assert dataset[0]["image"].size == (8, 8)


def test_load_ratings_from_an_imagefolder(tmp_path):
    names = _photos(tmp_path)
    (tmp_path / "metadata.csv").write_text(
        "file_name,score\n" + "".join(f"{n},{i + 1}\n" for i, n in enumerate(names))
    )
    dataset = load_ratings(tmp_path)
    assert dataset.column_names == ["image", "image_id", "score"]
    assert dict(zip(dataset["image_id"], dataset["score"])) == {n: i + 1.0 for i, n in enumerate(names)}


def test_load_ratings_errors(tmp_path):
    names = _photos(tmp_path)
    csv_path = tmp_path / "r.csv"
    csv_path.write_text(f"photo,score\n{names[0]},3\n")
    with pytest.raises(
        ValueError,
        match=r"columns \['photo', 'score'\]; expected an image column \(one of \['image', 'file_name', 'path'\]\)",
    ):
        load_ratings(csv_path)
    csv_path.write_text(f"path,score\n{names[0]},3\n{names[1]},great\nmissing.jpg,2\n")
    with pytest.raises(DatabaseFormatError) as info:
        load_ratings(csv_path)
    assert [str(i) for i in info.value.issues] == [
        "r.csv, line 3: score 'great' is not a number",
        f"r.csv, line 4: image {str(tmp_path / 'missing.jpg')!r} not found",
    ]
    assert load_ratings(csv_path, skip_invalid=True)["image_id"] == [names[0]]
    with pytest.raises(ValueError, match="has no metadata.csv"):
        load_ratings(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        load_ratings(tmp_path / "nope.csv")
