"""The real app in headless Chromium: rate, personalize, see the ranking, download and reload the model, bad input.

Needs Gradio, Playwright (the Python package only: the browser is Debian's `chromium`, never a downloaded one) and a
`chromium` executable; skipped with the reason where any is missing. Screenshots of the main screens go to
`$TASKVEC_TEST_OUTPUT/app` (default: `test-output/app` in the repository).
"""

from __future__ import annotations

import os
import re
import shutil
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from app_world import FAST, NUM_PHOTOS, free_port, write_app_inputs
from PIL import Image

from taskvec_aesthetics import AestheticModel
from taskvec_aesthetics.data import load_ratings

pytest.importorskip("gradio", reason="the app needs Gradio: pip install -e '.[app]'")
sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests need the playwright package")
CHROMIUM = next(
    (path for name in ("chromium", "chromium-browser") if (path := shutil.which(name))),
    None,
)
if CHROMIUM is None:
    pytest.skip("no chromium executable on PATH (apt-get install -y chromium)", allow_module_level=True)

pytestmark = pytest.mark.slow
OUTPUT = Path(os.environ.get("TASKVEC_TEST_OUTPUT", Path(__file__).resolve().parents[1] / "test-output")) / "app"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    from taskvec_aesthetics.app import build_app, load_resources
    from taskvec_aesthetics.app.ui import launch

    inputs = write_app_inputs(tmp_path_factory.mktemp("app"))
    resources = load_resources(inputs["model"], inputs["bank"], inputs["photos"], config=FAST)
    app = build_app(resources)
    port = free_port()
    launch(app, resources, port, prevent_thread_lock=True, quiet=True, server_name="127.0.0.1")
    yield {"url": f"http://127.0.0.1:{port}/", "resources": resources, "folder": app.app_folder}
    app.close()
    app.app_folder.cleanup()


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(server["url"])
    page.wait_for_selector("#photo img")
    yield page
    context.close()


def shot(page, name: str) -> None:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUTPUT / f"{name}.png"), full_page=True)


def rate(page, stars: int) -> None:
    """Click a star button and wait for the next photo."""
    before = page.locator("#photo img").get_attribute("src")
    page.click(f"#star-{stars}")
    page.wait_for_function(
        "before => { const img = document.querySelector('#photo img'); return !img || img.src !== before; }",
        arg=before,
    )


def test_rate_personalize_rank_download_and_reload(page, tmp_path: Path) -> None:
    shot(page, "1-rate")
    assert "About 20 answers" in page.inner_text("#progress")
    for stars in (5, 1, 4, 2, 5, 1, 3, 2):
        rate(page, stars)
    assert page.inner_text("#progress").startswith("8 rated · 12 more are useful")
    assert not page.locator("#results").is_visible()
    began = time.perf_counter()
    page.click("#personalize")
    # The progress bar is drawn in its own place under the button, never over the status line or the notice.
    page.wait_for_selector("#fit-progress .progress-text, #fit-progress .eta-bar, #fit-progress .progress-level")
    shot(page, "2-personalizing")
    assert page.locator("#progress .progress-text, #notice .progress-text").count() == 0
    page.wait_for_selector("#personal-ranking img")
    seconds = time.perf_counter() - began
    page.wait_for_selector("#chart canvas, #chart svg")
    # The results are in view: the page scrolled to them, at its top.
    page.wait_for_function(
        "() => { const r = document.querySelector('#results').getBoundingClientRect(); "
        "return r.top >= -2 && r.top < window.innerHeight / 3; }"
    )
    shot(page, "3-your-model")
    assert "fitted on 8 ratings" in page.inner_text("#summary")
    assert page.locator("#personal-ranking img").count() == NUM_PHOTOS - 8
    assert page.locator("#base-ranking img").count() == NUM_PHOTOS - 8
    print(f"Personalize to ranked gallery: {seconds:.1f} s")

    with page.expect_download() as download:
        page.click("#download-model")
    archive = tmp_path / download.value.suggested_filename
    download.value.save_as(archive)
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(tmp_path)
    # Base and bank are local folders here: the download is merged weights, and the page says so.
    assert "Merged weights" in page.inner_text("#model-kind")
    assert (tmp_path / "my-aesthetic-model" / "model.safetensors").is_file()
    model = AestheticModel.from_pretrained(tmp_path / "my-aesthetic-model")
    assert model.personalization is not None and model.personalization.info["num_ratings"] == 8

    with page.expect_download() as download:
        page.click("#download-ratings")
    with zipfile.ZipFile(download.value.path()) as zipped:
        zipped.extractall(tmp_path / "answers")
    ratings = load_ratings(tmp_path / "answers" / "my-answers")
    assert len(ratings) == 8 and sorted(set(ratings["score"])) == [1, 2, 3, 4, 5]


def test_an_uploaded_photo_is_offered_next_and_shown_ranked(page, server, tmp_path: Path) -> None:
    assert f"{NUM_PHOTOS} photos from photos/" in page.inner_text("body")  # the footer reads right
    for stars in (5, 1, 4):
        rate(page, stars)
    mine = tmp_path / "my-holiday.jpg"
    Image.new("RGB", (900, 600), (250, 40, 40)).save(mine)
    before = page.locator("#photo img").get_attribute("src")
    page.set_input_files("#upload input[type=file]", str(mine))
    page.wait_for_function("() => document.querySelector('#notice').innerText.includes('Added 1 photo')")
    page.wait_for_function("before => document.querySelector('#photo img')?.src !== before", arg=before)
    assert "my-holiday.png" in page.locator("#photo img").get_attribute("src")  # on screen, to rate next
    shot(page, "5-upload")
    rate(page, 2)
    page.click("#personalize")
    page.wait_for_selector("#personal-ranking img")
    captions = page.inner_text("#personal-ranking")
    assert re.search(rf"your photo: #\d+ of {NUM_PHOTOS + 1}", captions), captions
    shot(page, "6-upload-ranked")
    # Its files are in this visitor's folder inside the app's own folder, which nothing serves by path.
    assert list(server["folder"].sessions.glob("taskvec-aesthetics-visitor-*/uploads/my-holiday.png"))


def test_bad_input_gets_a_message_and_the_page_stays_usable(page, tmp_path: Path) -> None:
    page.click("#personalize")
    page.wait_for_selector("#notice .notice")
    assert "Rate or compare a few photos first" in page.inner_text("#notice")
    rate(page, 4)
    page.click("#personalize")
    page.wait_for_function("() => document.querySelector('#notice').innerText.includes('One rating')")
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo")
    page.set_input_files("#upload input[type=file]", str(notes))
    page.wait_for_function("() => document.querySelector('#notice').innerText.includes('notes.txt')")
    shot(page, "3-bad-input")
    assert "notes.txt is not an image we can read" in page.inner_text("#notice")
    rate(page, 1)  # still rating: the page is alive and kept the rating
    assert page.inner_text("#progress").startswith("2 rated")
    assert not page.locator("#results").is_visible()


def test_visitors_do_not_see_each_others_ratings(browser, server, page) -> None:
    rate(page, 5)
    rate(page, 2)
    other = browser.new_page()
    other.goto(server["url"])
    other.wait_for_selector("#photo img")
    assert "About 20 answers" in other.inner_text("#progress")
    assert page.inner_text("#progress").startswith("2 rated")
    sessions = server["folder"].sessions
    open_before = set(sessions.iterdir())
    other.close()  # the visitor leaves: their folder goes at once, not after a time to live
    deadline = time.perf_counter() + 30
    while len(set(sessions.iterdir())) >= len(open_before) and time.perf_counter() < deadline:
        time.sleep(0.2)
    assert set(sessions.iterdir()) < open_before and page.inner_text("#progress").startswith("2 rated")


def test_compare_two_photos_then_personalize(page) -> None:
    page.get_by_role("tab", name="Compare two").click()
    page.wait_for_selector("#left img")
    for choice in ("prefer-left", "prefer-right", "prefer-left", "prefer-neither", "prefer-right", "prefer-left"):
        before = page.locator("#left img").get_attribute("src")
        page.click(f"#{choice}")
        page.wait_for_function("before => document.querySelector('#left img')?.src !== before", arg=before)
    assert page.inner_text("#progress").startswith("6 compared")
    shot(page, "4-compare")
    page.click("#personalize")
    page.wait_for_selector("#summary .cv, #notice .notice")
    assert "fitted on 6 comparisons" in page.inner_text("#summary")
    assert "Expected agreement with your choices" in page.inner_text("#summary")
