"""The app's visitor flow without a browser: rating, bad input, uploads, personalizing, downloads, sessions."""

import dataclasses
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from app_world import FAST, NUM_PHOTOS, free_port, write_app_inputs
from PIL import Image

from taskvec_aesthetics import AestheticModel
from taskvec_aesthetics.app import RatingSession, load_resources
from taskvec_aesthetics.app.session import cv_estimate
from taskvec_aesthetics.data import load_preferences, load_ratings
from taskvec_aesthetics.personalization.model_selection import candidate_names
from taskvec_aesthetics.personalization.photo_choice import choose_next


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
    # the page serves one-pass models (its download may be merged weights): the ensemble never competes, and a
    # visitor waits on the page: the slow distilled candidate is left out
    personalizer = resources.personalizer
    assert personalizer.config.max_scoring_cost == 0.0
    assert candidate_names(personalizer.config, None, personalizer.ensemble_cost) == (
        "init",
        "single",
        "ensemble",
        "layer",
    )


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
    # The base and bank are local folders, so the model download is merged weights: it reloads anywhere.
    assert result.export == "merged" and session.download_export() == "merged"
    with zipfile.ZipFile(result.model_zip) as archive:
        archive.extractall(tmp_path)
        assert "my-aesthetic-model/model.safetensors" in archive.namelist()
        assert "my-aesthetic-model/coefficients.safetensors" not in archive.namelist()
    reloaded = AestheticModel.from_pretrained(tmp_path / "my-aesthetic-model")
    photos = [session.photos[i] for i in range(4)]
    torch.testing.assert_close(reloaded.score(photos), torch.tensor(result.scores[:4]), atol=1e-4, rtol=0)
    assert (reloaded.score(photos) - resources.base.score(photos)).abs().max() > 1e-5  # it is personalized
    # The answers download is a zip of the rated photos and a metadata.csv that load_ratings reads as is.
    with zipfile.ZipFile(result.answers_zip) as archive:
        archive.extractall(tmp_path / "answers")
    loaded = load_ratings(tmp_path / "answers" / "my-answers")
    expected = {session.name(i): score for i, score in session.ratings.items()}
    assert dict(zip(loaded["image_id"], loaded["score"])) == expected
    first = min(session.ratings)
    first_row = loaded.sort("image_id")[0]
    assert np.array_equal(np.asarray(first_row["image"]), np.asarray(Image.open(session.photos[first])))


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


def test_a_79_megapixel_upload_is_refused_before_it_is_decoded(resources, tmp_path: Path) -> None:
    import resource

    session = RatingSession(resources)
    png = tmp_path / "panorama.png"
    Image.new("1", (10_880, 7_260)).save(png)  # 79 megapixels: decoding it to RGB takes over 1 GB
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    problems = session.add_uploads([png])
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert problems == [
        "panorama.png is a PNG of 10880 x 7260 pixels; PNG photos up to 16 megapixels are accepted (JPEG up to 80): "
        "downscale it, or save it as JPEG"
    ]
    assert session.uploads == [] and grown_mb < 100
    jpeg = tmp_path / "panorama.jpg"
    Image.new("RGB", (10_880, 7_260), (90, 140, 200)).save(jpeg, quality=70)
    assert session.add_uploads([jpeg]) == []  # a JPEG decodes at an eighth of its size: accepted, and downscaled
    assert max(Image.open(session.uploads[0]).size) == 1024


def test_an_upload_is_offered_next_and_always_ranked_with_its_rank(resources, tmp_path: Path) -> None:
    session = RatingSession(resources)
    rate_some(session, [5, 1, 4, 2])
    photo = tmp_path / "pool-00000.png"  # the name of a pool photo: the upload must not take it
    Image.fromarray(np.full((64, 64, 3), 30, np.uint8)).save(photo)
    assert session.add_uploads([photo]) == []
    assert session.current == NUM_PHOTOS and session.name(NUM_PHOTOS) == "upload-pool-00000.png"
    session.rate(1)  # rated: no longer among the unrated photos, still shown with its rank among all photos
    result = session.personalize()
    ranking = session.ranking(result.scores, limit=3)
    rank = 1 + sorted(result.scores, reverse=True).index(result.scores[NUM_PHOTOS])
    assert ranking[-1] == (session.uploads[0], f"your photo: #{rank} of {NUM_PHOTOS + 1} · {result.scores[-1]:.2f}")
    assert len(ranking) == 4 and all(caption.startswith("#") for _, caption in ranking[:3])


def test_uploads_are_bounded_per_visitor(resources, tmp_path: Path) -> None:
    from taskvec_aesthetics.app.files import MAX_UPLOADS

    session = RatingSession(resources)
    photo = tmp_path / "small.png"
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(photo)
    problems = session.add_uploads([photo] * (MAX_UPLOADS + 2))
    assert len(session.uploads) == MAX_UPLOADS and len(problems) == 2
    assert problems[0] == f"small.png was not added: up to {MAX_UPLOADS} photos of your own are kept per visit."


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
    # The download holds the photos and a comparisons.csv that load_preferences reads as is.
    with zipfile.ZipFile(result.answers_zip) as archive:
        archive.extractall(tmp_path / "answers")
    loaded = load_preferences(tmp_path / "answers" / "my-answers" / "comparisons.csv")
    assert list(zip(loaded["preferred"])) == [(c,) for c in session.comparisons.values()]
    assert loaded[0]["image_a"].size == Image.open(session.photos[first[0]]).size
    # Ratings join as comparisons of photos rated differently; both downloads come in one zip.
    rate_some(session, [5, 1, 1])
    assert len(session.preferences()) == 10 + 2
    both = session.personalize()
    # a rated pair that was also compared counts once (the fit averages a repeated pair)
    distinct = len({frozenset((a, b)) for a, b, _ in session.preferences()})
    assert both.report.num_pairs == distinct >= 10
    with zipfile.ZipFile(both.answers_zip) as archive:
        names = {name for name in archive.namelist() if not name.endswith("/")}
    photos = {f"my-answers/{session.name(i)}" for i in session.answered()}
    assert names == {"my-answers/metadata.csv", "my-answers/comparisons.csv"} | photos


@pytest.fixture(scope="module")
def served(resources):
    """The app on a loopback port, as `taskvec-aesthetics app` serves it."""
    pytest.importorskip("gradio", reason="the app needs Gradio: pip install -e '.[app]'")
    from taskvec_aesthetics.app import build_app
    from taskvec_aesthetics.app.ui import launch

    port = free_port()
    app = build_app(resources)
    launch(app, resources, port, prevent_thread_lock=True, quiet=True, server_name="127.0.0.1")
    yield {"url": f"http://127.0.0.1:{port}", "app": app}
    app.close()
    app.app_folder.cleanup()


def http_get(url: str) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, b""
    except urllib.error.URLError:  # nothing listening (yet)
        return 0, b""


def test_the_server_serves_the_pool_and_a_visitors_own_files_and_nothing_else(served, resources, tmp_path) -> None:
    import tempfile
    from urllib.parse import quote

    from gradio_client import Client, handle_file

    url, folder = served["url"], served["app"].app_folder
    status, body = http_get(f"{url}/gradio_api/file={quote(str(resources.photos[0]))}")
    assert status == 200 and body == resources.photos[0].read_bytes()
    with tempfile.NamedTemporaryFile(suffix=".txt", delete=False) as other:  # another program's temp file
        other.write(b"secret")
    try:
        assert http_get(f"{url}/gradio_api/file={quote(other.name)}") == (403, b"")
    finally:
        Path(other.name).unlink()
    # A visitor uploads a photo: it is shown to them (the page's copy is served) ...
    photo = tmp_path / "mine.png"
    Image.fromarray(np.full((48, 48, 3), 77, np.uint8)).save(photo)
    visitor = Client(url, download_files=False, verbose=False)
    shown = visitor.predict([handle_file(str(photo))], api_name="/add_photos")[0]
    status, body = http_get(shown["url"])
    assert status == 200 and np.asarray(Image.open(io.BytesIO(body))).mean() == pytest.approx(77, abs=1)
    assert Path(shown["path"]).resolve().is_relative_to(folder.root.resolve())  # Gradio's copies stay in the folder
    # ... but the files in the visitor's own folder are never served by path, to anyone.
    stored = [p for p in folder.sessions.rglob("*") if p.is_file()]
    assert stored and all(p.resolve().is_relative_to(folder.root.resolve()) for p in stored)
    for path in stored:
        assert http_get(f"{url}/gradio_api/file={quote(str(path))}")[0] == 403
    assert http_get(f"{url}/gradio_api/file={quote(str(folder.root.parent))}")[0] == 403


def test_the_first_start_on_an_empty_cache_builds_the_demo_and_serves_its_pool(tmp_path: Path) -> None:
    from taskvec_aesthetics.app.resources import demo_locations
    from taskvec_aesthetics.demo.config import DemoConfig, WorldConfig

    world = WorldConfig.preset("quick", images_per_database=8, pool_size=6, databases=("sharpness", "noise"))
    demo = DemoConfig(world=world, finetune_steps=1, finetune_batch_size=4)
    cache = tmp_path / "empty-cache"
    # The pool is written first, then the bank is built, which replaces the demo's folder whole.
    resources = load_resources(cache_dir=cache, config=FAST, demo=demo)
    assert len(resources.photos) == 6 and len(resources.bank) == 2
    assert resources.description.endswith("6 photos of the demo's pool")
    where = demo_locations(cache, demo)
    assert (where["bank"] / "bank_config.json").is_file() and len(list(where["photos"].iterdir())) == 6
    again = load_resources(cache_dir=cache, config=FAST, demo=demo)  # the second start reads it all back
    assert again.photos == resources.photos


@pytest.mark.slow
def test_the_space_runs_from_hub_ids_and_cleans_up_on_sigterm(local_hub, tmp_path: Path) -> None:
    """`app.py` as a Space runs it: base, bank and photos pushed by `push_demo`, loaded by id, nothing built."""
    pytest.importorskip("gradio", reason="the app needs Gradio: pip install -e '.[app]'")
    import json
    import signal
    import subprocess
    import sys
    import time

    from gradio_client import Client
    from hub_server import TEST_TOKEN, TEST_USER, hub_env, run_client

    pushed = run_client(
        f"""
        import json
        from taskvec_aesthetics.app.space import push_demo
        from taskvec_aesthetics.demo.runner import DemoConfig
        from taskvec_aesthetics.demo.world import WorldConfig
        world = WorldConfig.preset("quick", images_per_database=8, pool_size=6, databases=("sharpness", "noise"))
        demo = DemoConfig(world=world, finetune_steps=1, finetune_batch_size=4)
        print(json.dumps(push_demo({TEST_USER!r}, prefix="space", cache_dir={str(tmp_path / "build")!r}, demo=demo)))
        """,
        hub_env(local_hub, tmp_path / "hf-push", token=TEST_TOKEN),
        timeout=300,
    )
    variables = json.loads(pushed.stdout.strip().splitlines()[-1])
    assert variables == {
        "TASKVEC_MODEL": f"{TEST_USER}/space-base",
        "TASKVEC_BANK": f"{TEST_USER}/space-bank",
        "TASKVEC_PHOTOS": f"{TEST_USER}/space-photos",
    }
    port = free_port()
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = hub_env(local_hub, tmp_path / "hf-space") | variables
    env |= {"PORT": str(port), "TMPDIR": str(temp), "XDG_CACHE_HOME": str(tmp_path / "empty-cache")}
    env |= {"GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    began = time.perf_counter()
    space = subprocess.Popen(
        [sys.executable, "app.py"], cwd=Path(__file__).resolve().parents[1], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        while http_get(f"{url}/config")[0] != 200:
            assert space.poll() is None, f"app.py exited:\n{space.stdout.read()}"
            assert time.perf_counter() - began < 120, "app.py did not start within 120 s"
            time.sleep(0.5)
        started = time.perf_counter() - began
        print(f"app.py served from Hub ids after {started:.1f} s")
        config = http_get(f"{url}/config")[1].decode()
        assert f"6 photos from {TEST_USER}/space-photos" in config and f"model {TEST_USER}/space-base" in config
        assert not (tmp_path / "empty-cache" / "taskvec-aesthetics").exists()  # no demo was built
        # A visitor's download is a coefficients export that names the base and bank by Hub id, and says so.
        visitor = Client(url, download_files=False, verbose=False)
        for stars in (5, 1, 4, 2):
            visitor.predict(api_name=f"/rate_{stars}")
        outputs = visitor.predict(api_name="/fit")
        words = next(o for o in outputs if isinstance(o, str) and "export" in o)
        assert "A coefficients export" in words and f"{TEST_USER}/space-base" in words
        model_zip = next(o for o in outputs if isinstance(o, dict) and str(o.get("path", "")).endswith(".zip"))
        with zipfile.ZipFile(io.BytesIO(http_get(model_zip["url"])[1])) as archive:
            names = archive.namelist()
            text = archive.read("my-aesthetic-model/config.json").decode()
        assert "my-aesthetic-model/coefficients.safetensors" in names
        assert f"{TEST_USER}/space-bank" in text and str(tmp_path) not in text
        assert [p.name for p in temp.iterdir() if p.name.startswith("taskvec-aesthetics-app-")]
    finally:
        space.send_signal(signal.SIGTERM)
        output = space.communicate(timeout=60)[0]
    assert space.returncode != 0 or "Traceback" not in output
    assert not [p.name for p in temp.iterdir() if p.name.startswith("taskvec-aesthetics-app-")], output[-2000:]


def test_the_app_folder_takes_gradio_files_and_goes_entirely_at_cleanup(resources, monkeypatch) -> None:
    import os

    from taskvec_aesthetics.app import AppFolder

    monkeypatch.setenv("GRADIO_TEMP_DIR", "elsewhere")
    folder = AppFolder()
    assert os.environ["GRADIO_TEMP_DIR"] == str(folder.gradio) and folder.gradio.parent == folder.root
    session = RatingSession(resources, folder=folder.sessions)
    rate_some(session, [5, 1, 3])
    session.personalize()
    assert session.workdir.parent == folder.sessions and folder.size() > 0
    session.close()
    assert not session.workdir.exists() and folder.root.exists()
    folder.cleanup()
    assert not folder.root.exists() and os.environ["GRADIO_TEMP_DIR"] == "elsewhere"
