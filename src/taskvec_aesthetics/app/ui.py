"""The page: rate photos one at a time or compare two, personalize, see your ranking, download or share your model.

Each browser session gets its own [`RatingSession`] (a `gr.State`), so visitors never see each other's ratings.
Every handler turns bad input into a message in the page (`ValueError`, `OSError`, Hub errors) and leaves the
page usable; anything unexpected is logged and reported the same way.
"""

from __future__ import annotations

import functools
import html
import logging
from collections.abc import Callable
from operator import methodcaller
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from ..constants import COEFFICIENTS
from ..errors import InputError
from .files import AppFolder
from .resources import AppResources
from .session import DEFAULT_STRATEGY, STARS, RatingSession, cv_estimate

#: The comparison buttons: label, element id, answer.
COMPARE_BUTTONS = (
    ("◀ This one", "prefer-left", "a"),
    ("About the same", "prefer-neither", "tie"),
    ("This one ▶", "prefer-right", "b"),
)

__all__ = ["build_app", "launch", "THEME", "CSS"]

logger = logging.getLogger(__name__)

TITLE = "Rate a few photos, get a model of your taste"
THEME = gr.themes.Soft(
    primary_hue="indigo",
    neutral_hue="slate",
    # Local fonts only, so the page works offline.
    font=[gr.themes.Font(name) for name in ("ui-sans-serif", "system-ui", "sans-serif")],
    font_mono=[gr.themes.Font(name) for name in ("ui-monospace", "monospace")],
)
CSS = """
.gradio-container { max-width: 1180px !important; margin: auto; }
#header h1 { font-size: 1.9rem; margin: 0.2rem 0 0.1rem; }
#header p { color: var(--body-text-color-subdued); margin: 0; }
#notice .notice { border-radius: 10px; padding: 0.7rem 1rem; background: #fff4e5; border: 1px solid #f5b971;
  color: #7a4100; }
#notice .ok { background: #ecfdf3; border-color: #7fd4a4; color: #05603a; }
#progress { font-size: 1.02rem; }
#stars button { font-size: 1.15rem; letter-spacing: 0.05rem; }
#photo img, #left img, #right img { object-fit: contain; }
#compare button { font-size: 1.05rem; }
#summary .cv { font-size: 1.1rem; }
#fit-progress { min-height: 2.2rem; }
"""
#: Files Gradio copied for visitors are deleted this long after they were made, checked this often (seconds).
CACHE_CHECK, CACHE_AGE = 600, 3600


def _notice(message: str, kind: str = "notice") -> str:
    return f'<div class="notice {kind}" role="alert">{html.escape(message)}</div>' if message else ""


def build_app(resources: AppResources, strategy: str = DEFAULT_STRATEGY, folder: AppFolder | None = None) -> gr.Blocks:
    """The Gradio app over shared [`AppResources`]; launch it with [`launch`].

    Every file written for a visitor goes into ``folder`` (a new [`AppFolder`] when omitted; the page keeps it as
    ``app.app_folder``): their own subfolder, deleted when their tab closes, and Gradio's copies.
    """
    folder = folder or AppFolder()
    visitors: dict[str, RatingSession] = {}  # by Gradio session, to close each one when its tab closes

    def new_session(request: gr.Request | None) -> RatingSession:
        state = RatingSession(resources, strategy, folder=folder.sessions)
        if request is not None and request.session_hash:
            previous = visitors.pop(request.session_hash, None)
            if previous is not None:
                previous.close()
            visitors[request.session_hash] = state
        return state

    def close_session(request: gr.Request) -> None:
        state = visitors.pop(request.session_hash or "", None)
        if state is not None:
            state.close()

    with gr.Blocks(title=TITLE, delete_cache=(CACHE_CHECK, CACHE_AGE)) as app:
        session = gr.State(None, time_to_live=CACHE_AGE, delete_callback=lambda s: s.close() if s else None)
        gr.HTML(
            f"<h1>{TITLE}</h1><p>Rate photos from 1 to 5 stars, or pick the better of two. Each answer teaches a "
            f"model which of {len(resources.bank)} aesthetics and quality criteria your taste draws on; then it ranks "
            "the photos you have not seen.</p>",
            elem_id="header",
        )
        notice = gr.HTML("", elem_id="notice")
        with gr.Column(visible=False, elem_id="results") as results:
            summary = gr.Markdown(elem_id="summary")
            with gr.Row():
                personal = gr.Gallery(
                    label="Ranked for you", columns=4, height="auto", elem_id="personal-ranking", object_fit="cover"
                )
                base = gr.Gallery(
                    label="The base model's ranking",
                    columns=4,
                    height="auto",
                    elem_id="base-ranking",
                    object_fit="cover",
                )
            with gr.Row():
                chart = gr.BarPlot(
                    x="criterion",
                    y="weight",
                    title="Which databases your taste draws on",
                    y_title="mean coefficient",
                    height=300,
                    elem_id="chart",
                    sort="-y",
                )
                with gr.Column():
                    gr.Markdown("### Keep your model")
                    model_file = gr.DownloadButton(
                        "Download model (.zip)", elem_id="download-model", variant="primary"
                    )
                    model_kind = gr.Markdown(elem_id="model-kind")
                    ratings_file = gr.DownloadButton(
                        "Download your answers (.zip: photos and CSV)", elem_id="download-ratings"
                    )
                    gr.Markdown("### Share it on the Hugging Face Hub")
                    repo = gr.Textbox(label="Repository", placeholder="your-name/my-aesthetic-model", elem_id="repo")
                    token = gr.Textbox(label="Access token (write)", type="password", elem_id="token")
                    export = gr.Radio(
                        [
                            ("merged weights", "merged"),
                            ("coefficients only (base and bank on the Hub)", "coefficients"),
                        ],
                        value="merged",
                        label="Export",
                    )
                    push = gr.Button("Push to the Hub", elem_id="push")
                    hub_status = gr.HTML("", elem_id="hub-status")

        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                progress = gr.Markdown(elem_id="progress")
                with gr.Tabs():
                    with gr.Tab("Rate with stars", elem_id="tab-rate"):
                        photo = gr.Image(
                            type="filepath",
                            interactive=False,
                            height=430,
                            show_label=False,
                            elem_id="photo",
                            buttons=[],
                        )
                        with gr.Row(elem_id="stars"):
                            star_buttons = [
                                gr.Button("★" * stars, elem_id=f"star-{stars}", variant="secondary", min_width=60)
                                for stars in STARS
                            ]
                        skip = gr.Button("Skip this photo", size="sm", elem_id="skip")
                    with gr.Tab("Compare two", elem_id="tab-compare"):
                        gr.Markdown("Which of these two photos do you prefer?")
                        with gr.Row():
                            left, right = (
                                gr.Image(
                                    type="filepath",
                                    interactive=False,
                                    height=330,
                                    show_label=False,
                                    elem_id=side,
                                    buttons=[],
                                )
                                for side in ("left", "right")
                            )
                        with gr.Row(elem_id="compare"):
                            compare_buttons = [
                                gr.Button(label, elem_id=element, variant="secondary", min_width=80)
                                for label, element, _ in COMPARE_BUTTONS
                            ]
            with gr.Column(scale=2):
                gr.Markdown("### Your taste model")
                personalize = gr.Button("Personalize", variant="primary", size="lg", elem_id="personalize")
                fit_progress = gr.HTML("", elem_id="fit-progress")  # Personalize's progress bar, in a place of its own
                gr.Markdown("### Your own photos")
                upload = gr.File(
                    file_count="multiple", label="Add photos to rate and rank (JPEG, PNG, WebP)", elem_id="upload"
                )
                gr.Markdown(f"<small>Scoring with {html.escape(resources.description)}.</small>")

        def guarded(handler: Callable[..., dict]) -> Callable[..., dict]:
            """Run a handler; bad input, Hub and unexpected errors become a message in the page."""

            @functools.wraps(handler)
            def run(*args: Any, **kwargs: Any) -> dict:
                try:
                    return handler(*args, **kwargs)
                except (ValueError, OSError) as error:  # bad input, files, Hub (HfHubHTTPError is an OSError)
                    logger.info("Shown to the visitor: %s", error)
                    return {notice: _notice(str(error))}
                except Exception as error:  # noqa: BLE001 - the page must stay alive whatever happens
                    logger.exception("Unexpected error in %s", handler.__name__)
                    return {notice: _notice(f"Something went wrong ({type(error).__name__}: {error}). Try again.")}

            return run

        def screen(state: RatingSession, message: str = "", kind: str = "notice") -> dict:
            """The rating card for the session's current photo."""
            current = None if state.current is None else str(state.photos[state.current])
            pair = [None, None] if state.current_pair is None else [str(state.photos[i]) for i in state.current_pair]
            text = state.progress()
            if current is None:
                text += "\n\nYou have rated every photo. Upload more, or press **Personalize**."
            return {
                session: state,
                photo: current,
                left: pair[0],
                right: pair[1],
                progress: text,
                notice: _notice(message, kind),
            }

        def start(request: gr.Request) -> dict:
            return screen(new_session(request))

        def answer_with(name: str, answer: Callable[[RatingSession], None]) -> Callable[[RatingSession], dict]:
            """A button's handler: record its answer (stars, or a choice between two photos) and show the next."""

            @guarded
            def record(state: RatingSession | None, request: gr.Request) -> dict:
                state = state or new_session(request)
                answer(state)
                # Once there is a model, its answers download follows every new answer.
                return {**screen(state), ratings_file: state.write_answers() if state.result else gr.skip()}

            record.__name__ = name
            return record

        @guarded
        def skip_photo(state: RatingSession | None, request: gr.Request) -> dict:
            state = state or new_session(request)
            state.skip()
            return screen(state)

        @guarded
        def add_photos(files: list[str] | None, state: RatingSession | None, request: gr.Request) -> dict:
            state = state or new_session(request)
            files = files or []
            problems = state.add_uploads(files)
            added = len(files) - len(problems)
            message = " ".join(problems)
            if added:
                message = (
                    f"Added {added} photo{'s' if added != 1 else ''}: rate it now (it is on screen); it will be "
                    f"ranked among all {len(state.photos)} photos. " + message
                )
            return {**screen(state, message.strip(), "ok" if not problems else "notice"), upload: None}

        @guarded
        def fit(state: RatingSession | None, progress_bar: gr.Progress = gr.Progress(track_tqdm=True)) -> dict:  # noqa: B008
            if state is None:
                raise InputError(
                    "Rate or compare a few photos first: personalization learns from your ratings and comparisons."
                )
            state.check_ratings()
            progress_bar(0, desc="Learning your taste")
            result = state.personalize()
            weights = state.task_weights()
            frame = pd.DataFrame({"criterion": list(weights), "weight": list(weights.values())})
            lines = [f"## Your model is ready: fitted on {state.count_answers()} in {result.seconds:.1f} s"]
            estimate = cv_estimate(result.report)
            if estimate is not None and result.report.num_pairs:
                mean, (low, high), how = estimate
                lines.append(
                    f'<p class="cv">Expected agreement with your choices on pairs you have not compared: '
                    f"<b>{mean:.0%}</b>, 90 % interval {low:.0%} to {high:.0%} ({html.escape(how)}).</p>"
                )
            elif estimate is not None:
                mean, (low, high), how = estimate
                lines.append(
                    f'<p class="cv">Expected agreement with your taste (SROCC) on photos you have not rated: '
                    f"<b>{mean:.2f}</b>, 90 % interval {low:.2f} to {high:.2f} ({html.escape(how)}).</p>"
                )
            if estimate is not None and result.report.advice:
                lines.append(f'<p class="cv">{html.escape(result.report.advice)}.</p>')
            agreement = state.agreement()
            if agreement is not None:
                lines.append(
                    f"Your ranking agrees with the base model's at SROCC {agreement:.2f} on the photos you have not "
                    "rated: the lower, the more your taste differs from the average."
                )
            return {
                results: gr.Column(visible=True),
                summary: "\n\n".join(lines),
                personal: state.ranking(result.scores),
                base: state.ranking(state.base_scores()),
                chart: frame,
                model_file: str(result.model_zip),
                model_kind: _export_words(result.export, resources),
                ratings_file: str(result.answers_zip),
                notice: "",
                session: state,
            }

        @guarded
        def push_model(state: RatingSession | None, repo_id: str, token_text: str, kind: str) -> dict:
            if state is None:
                raise InputError("Personalize first: there is no model to push yet.")
            try:
                url = state.push(repo_id, token_text, kind)
            except Exception as error:  # the Hub's errors, shown where the visitor pushed
                logger.info("Push failed: %s", error)
                return {hub_status: _notice(f"The Hub refused the push: {error}"), token: ""}
            return {hub_status: _notice(f"Pushed: {url}", "ok"), token: ""}

        everything = [session, photo, left, right, progress, notice]
        app.load(start, outputs=everything)
        for stars, button in zip(STARS, star_buttons):
            rate = answer_with(f"rate_{stars}", methodcaller("rate", stars))
            button.click(rate, inputs=session, outputs=[*everything, ratings_file])
        for (_, _, choice), button in zip(COMPARE_BUTTONS, compare_buttons):
            compare = answer_with(f"compare_{choice}", methodcaller("compare", choice))
            button.click(compare, inputs=session, outputs=[*everything, ratings_file])
        skip.click(skip_photo, inputs=session, outputs=everything)
        upload.upload(add_photos, inputs=[upload, session], outputs=[*everything, upload])
        personalize.click(
            fit,
            inputs=session,
            outputs=[results, summary, personal, base, chart, model_file, model_kind, ratings_file, notice, session],
            show_progress_on=[fit_progress],
        ).then(None, js=SCROLL_TO_RESULTS)
        push.click(push_model, inputs=[session, repo, token, export], outputs=[hub_status, token, notice])
        app.unload(close_session)
    app.app_folder = folder
    return app


#: Bring the results (at the top of the page) into view once they are drawn.
SCROLL_TO_RESULTS = (
    "() => requestAnimationFrame(() => setTimeout(() => "
    "document.querySelector('#results')?.scrollIntoView({block: 'start'}), 50))"
)


def _export_words(export: str, resources: AppResources) -> str:
    """What the model download is, for the page."""
    if export == COEFFICIENTS:
        return (
            f"<small>A coefficients export (kilobytes): it loads the base model `{resources.base.source}` and the "
            f"bank `{resources.bank.source}` from the Hub by id.</small>"
        )
    return "<small>Merged weights: a complete model that loads anywhere with `AestheticModel.from_pretrained`.</small>"


def launch(app: gr.Blocks, resources: AppResources, port: int | None = None, **kwargs: Any) -> Any:
    """Launch the app with its theme; returns Gradio's result.

    Only the pool's folders are served as they are; a visitor's files reach them through Gradio's copies, under
    names no one else can guess, inside the app's own folder. Nothing else of the machine is served.
    """
    # A pool downloaded from the Hub is a folder of links into the Hub cache: serve where they point as well.
    folders = sorted({str(folder) for p in resources.photos for folder in (Path(p).parent, Path(p).resolve().parent)})
    return app.launch(
        server_port=port,
        theme=THEME,
        css=CSS,
        allowed_paths=folders,
        max_file_size="40mb",
        footer_links=[],
        **kwargs,
    )
