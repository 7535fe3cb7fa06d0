"""The app's visitor flow without a browser: rating, bad input, uploads, personalizing, downloads, sessions."""

import dataclasses
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from app_world import FAST, NUM_PHOTOS, write_app_inputs
from PIL import Image

from taskvec_aesthetics import AestheticModel
from taskvec_aesthetics.app import RatingSession, load_resources
from taskvec_aesthetics.app.session import cv_estimate
from taskvec_aesthetics.data import load_preferences, load_ratings
from taskvec_aesthetics.selection import choose_next


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_app_inputs(tmp_path_factory.mktemp("app"))


@pytest.fixture(scope="module")
def resources(inputs: dict[str, Path]):
    return load_resources(inputs["model"], inputs["bank"], inputs["photos"], config=FAST)


def rate_some(session: RatingSession, stars: list[int]) -> None:
    for value in stars:
        session.rate(value)


def test_resources_encode_the_pool_once(resources) -> None:
    assert len(resources.photos) == NUM_PHOTOS
    assert resources.task_scores.shape == (3, NUM_PHOTOS) and resources.base_scores.shape == (NUM_PHOTOS,)
    assert resources.prefix.shape[0] == NUM_PHOTOS
    assert "3 tasks" in resources.description


def test_bad_startup_arguments_are_refused(tmp_path: Path, inputs: dict[str, Path]) -> None:
    (tmp_path / "notes.txt").write_text("not a photo")
    with pytest.raises(ValueError, match="found no images"):
        load_resources(inputs["model"], inputs["bank"], tmp_path)
    with pytest.raises(ValueError, match="is not a folder"):
        load_resources(inputs["model"], inputs["bank"], tmp_path / "missing")
    with pytest.raises(ValueError, match="needs --model"):
        load_resources(None, inputs["bank"], inputs["photos"])


def test_photos_are_asked_in_the_chosen_order_and_progress_counts_down(resources) -> None:
    session = RatingSession(resources, strategy="d_optimal")
    order = choose_next(resources.task_scores, count=4)
    assert "About 20 answers" in session.progress()
    shown = []
    for stars in (5, 1, 3):
        shown.append(session.current)
        session.rate(stars)
    session.skip()
    assert shown == order[:3] and session.current == choose_next(resources.task_scores, order, 1)[0]
    assert session.ratings == {order[0]: 5.0, order[1]: 1.0, order[2]: 3.0} and session.skipped == {order[3]}
    assert session.progress().startswith("3 rated · 17 more are useful")
    with pytest.raises(ValueError, match="1 to 5 stars; received 7"):
        session.rate(7)
    with pytest.raises(ValueError, match="1 to 5 stars; received 'lots'"):
        session.rate("lots")
    assert len(session.ratings) == 3  # nothing was lost


def test_by_default_each_visitor_gets_their_own_random_order(resources) -> None:
    first, second = RatingSession(resources), RatingSession(resources)
    assert first.strategy == "random"
    expected = choose_next(resources.task_scores, count=1, strategy="random", seed=first.seed)
    assert first.current == expected[0]
    orders = set()
    for session in (first, second):
        shown = []
        for _ in range(6):
            shown.append(session.current)
            session.skip()
        orders.add(tuple(shown))
    assert len(orders) == 2


def test_ratings_that_show_no_preference_get_a_message(resources) -> None:
    session = RatingSession(resources)
    with pytest.raises(ValueError, match="Rate or compare a few photos first"):
        session.personalize()
    session.rate(4)
    with pytest.raises(ValueError, match="One rating cannot show what you prefer"):
        session.personalize()
    rate_some(session, [4, 4])
    with pytest.raises(ValueError, match="All 3 of your ratings are 4 stars"):
        session.personalize()
    assert session.result is None


def test_personalize_ranks_the_unrated_photos_and_writes_both_downloads(resources, inputs, tmp_path: Path) -> None:
    session = RatingSession(resources)
    rate_some(session, [5, 1, 4, 2, 5, 1, 3, 2])
    result = session.personalize()
    assert session.task_weights().keys() == {"task0", "task1", "task2"}
    # The page shows the report's cross-validated estimate, and nothing when there is none.
    report = result.report
    shown = dataclasses.replace(report, cv_srocc=0.61, cv_interval=(0.45, 0.73), folds=5, num_ratings=30)
    assert cv_estimate(shown) == (0.61, (0.45, 0.73), "5-fold cross-validation on your 30 ratings")
    assert cv_estimate(dataclasses.replace(report, cv_srocc=None, cv_interval=None)) is None
    ranking = session.ranking(result.scores)
    assert len(ranking) == NUM_PHOTOS - 8 and not {p for p, _ in ranking} & {
        session.photos[i] for i in session.ratings
    }
    ranked_scores = [float(caption.split("· ")[1]) for _, caption in ranking]
    assert ranked_scores == sorted(ranked_scores, reverse=True)
    # The model download is a coefficients export that reloads to the same scores.
    with zipfile.ZipFile(result.model_zip) as archive:
        archive.extractall(tmp_path)
        assert "my-aesthetic-model/coefficients.safetensors" in archive.namelist()
    reloaded = AestheticModel.from_pretrained(tmp_path / "my-aesthetic-model")
    photos = [session.photos[i] for i in range(4)]
    torch.testing.assert_close(reloaded.score(photos), torch.tensor(result.scores[:4]), atol=1e-4, rtol=0)
    assert (reloaded.score(photos) - resources.base.score(photos)).abs().max() > 1e-5  # it is personalized
    # The ratings download is what load_ratings reads, next to the photos.
    folder = tmp_path / "photos"
    shutil.copytree(inputs["photos"], folder)
    shutil.copy(result.ratings_csv, folder / "metadata.csv")
    loaded = load_ratings(folder)
    expected = {session.name(i): score for i, score in session.ratings.items()}
    assert dict(zip(loaded["image_id"], loaded["score"])) == expected


def test_uploads_join_only_their_session_and_bad_files_are_named(resources, tmp_path: Path) -> None:
    mine, theirs = RatingSession(resources), RatingSession(resources)
    good = tmp_path / "holiday.jpg"
    Image.new("RGB", (1600, 900), (200, 120, 40)).save(good)
    text = tmp_path / "notes.txt"
    text.write_text("not a photo")
    huge = tmp_path / "huge.png"
    Image.new("L", (10_000, 9_000)).save(huge)  # 90 megapixels: small on disk, too large to accept
    damaged = tmp_path / "damaged.jpg"
    damaged.write_bytes(good.read_bytes()[:300])
    problems = mine.add_uploads([good, text, huge, damaged])
    assert len(problems) == 3
    assert "notes.txt is not an image we can read" in problems[0]
    assert "huge.png is too large" in problems[1]
    assert "damaged.jpg" in problems[2]
    assert [p.name for p in mine.uploads] == ["holiday.png"] and max(Image.open(mine.uploads[0]).size) == 1024
    assert len(mine.photos) == NUM_PHOTOS + 1 and len(theirs.photos) == NUM_PHOTOS
    assert mine.task_scores().shape == (3, NUM_PHOTOS + 1)
    with pytest.raises(ValueError, match="No photos received"):
        mine.add_uploads([])
    mine.rate(5)
    assert theirs.ratings == {} and mine.ratings != {}
    mine.close()
    assert not mine.workdir.exists()


def test_every_photo_rated_then_an_upload_brings_a_new_one(resources, tmp_path: Path) -> None:
    session = RatingSession(resources)
    rate_some(session, [1 + i % 5 for i in range(NUM_PHOTOS)])
    assert session.current is None and "20 ratings" not in session.progress()
    with pytest.raises(ValueError, match="no photo left to rate"):
        session.rate(3)
    photo = tmp_path / "new.png"
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(photo)
    assert session.add_uploads([photo]) == [] and session.current == NUM_PHOTOS


def test_push_errors_are_messages(resources) -> None:
    session = RatingSession(resources)
    with pytest.raises(ValueError, match="Personalize first"):
        session.push("me/model", "token")
    rate_some(session, [5, 1, 3])
    session.personalize()
    with pytest.raises(ValueError, match="repository id like"):
        session.push("", "token")
    with pytest.raises(ValueError, match="Paste a Hugging Face access token"):
        session.push("me/model", " ")
    with pytest.raises(ValueError, match="must reference its base model by Hub repo id"):
        session.push("me/model", "hf_token", export="coefficients")  # base and bank are local folders


def test_the_app_command_reports_bad_arguments_without_starting(tmp_path: Path, inputs, capsys) -> None:
    from taskvec_aesthetics.cli import main

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["app", "--model", str(inputs["model"]), "--bank", str(inputs["bank"]), "--photos", str(empty)]) == 2
    assert "found no images" in capsys.readouterr().err


def test_uploads_are_read_as_the_model_reads_images(tmp_path: Path) -> None:
    from taskvec_aesthetics.app.photos import open_photo

    # A portrait stored sideways with an EXIF rotation, as phones write it, is shown upright.
    sideways = Image.new("RGB", (40, 20), "white")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    sideways.save(tmp_path / "portrait.jpg", exif=exif)
    assert open_photo(tmp_path / "portrait.jpg").size == (20, 40)
    # A 16-bit grey image keeps its tones instead of saturating to white.
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp, mode="I;16").save(tmp_path / "ramp.png")
    photo = np.asarray(open_photo(tmp_path / "ramp.png"))
    assert (photo == 255).mean() < 0.05 and photo.min() == 0


def test_comparisons_alone_or_with_ratings_teach_preferences(resources, inputs, tmp_path: Path) -> None:
    session = RatingSession(resources)
    first = session.current_pair
    assert first is not None and first[0] != first[1]
    with pytest.raises(ValueError, match="one of \\['a', 'b', 'tie'\\]; received 'left'"):
        session.compare("left")
    session.compare("tie")
    with pytest.raises(ValueError, match="All 1 of your comparisons are 'about the same'"):
        session.personalize()
    brightness = [float(np.asarray(Image.open(p)).mean()) for p in session.photos]
    for _ in range(9):  # this visitor prefers brighter photos
        a, b = session.current_pair
        session.compare("a" if brightness[a] > brightness[b] else "b")
    assert first in session.comparisons and len(session.comparisons) == 10  # never the same pair twice
    shown = [i for pair in session.comparisons for i in pair]
    fresh = shown[: 2 * (NUM_PHOTOS // 2)]
    assert len(set(fresh)) == len(fresh)  # fresh photos while there are any
    assert session.progress().startswith("10 compared · 10 more are useful")
    result = session.personalize()
    assert result.report.num_pairs == 10 and result.report.num_ratings == 0
    mean, (low, high), how = cv_estimate(result.report)
    assert 0 <= low <= mean <= high <= 1 and how == "5-fold cross-validation on 10 pairs"
    assert not {p for p, _ in session.ranking(result.scores)} & {session.photos[i] for i in shown}
    # The download is what load_preferences reads, next to the photos.
    folder = tmp_path / "photos"
    shutil.copytree(inputs["photos"], folder)
    shutil.copy(result.ratings_csv, folder / "pairs.csv")
    loaded = load_preferences(folder / "pairs.csv")
    assert list(zip(loaded["preferred"])) == [(c,) for c in session.comparisons.values()]
    # Ratings join as comparisons of photos rated differently; both downloads come in one zip.
    rate_some(session, [5, 1, 1])
    assert len(session.preferences()) == 10 + 2
    both = session.personalize()
    # a rated pair that was also compared counts once (the fit averages a repeated pair)
    distinct = len({frozenset((a, b)) for a, b, _ in session.preferences()})
    assert both.report.num_pairs == distinct >= 10 and both.ratings_csv.suffix == ".zip"
    with zipfile.ZipFile(both.ratings_csv) as archive:
        assert sorted(archive.namelist()) == ["my-comparisons.csv", "my-ratings.csv"]
