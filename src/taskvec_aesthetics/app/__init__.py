"""The web app: a visitor rates a few photos and gets a model of their taste (`pip install taskvec-aesthetics[app]`).

```bash
taskvec-aesthetics app                                 # the demo's base, bank and photos
taskvec-aesthetics app --model base/ --bank bank/ --photos my_photos/ --port 7860
```

`resources` (what all visitors share) and `session` (one visitor's ratings and model) are plain Python; `ui` is the
Gradio page over them, imported only when the page is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .files import AppFolder
from .resources import AppResources, load_resources
from .session import DEFAULT_STRATEGY, USEFUL_RATINGS, RatingSession

if TYPE_CHECKING:
    import gradio

__all__ = [
    "AppFolder",
    "AppResources",
    "DEFAULT_STRATEGY",
    "USEFUL_RATINGS",
    "RatingSession",
    "build_app",
    "load_resources",
    "serve",
]


def build_app(
    resources: AppResources, strategy: str = DEFAULT_STRATEGY, folder: AppFolder | None = None
) -> gradio.Blocks:
    """The Gradio page over shared resources (see `ui.build_app`)."""
    from .ui import build_app as build

    return build(resources, strategy, folder)


def serve(
    model: str | None = None,
    bank: str | None = None,
    photos: str | None = None,
    port: int | None = None,
    cache_dir: str | None = None,
    **launch_kwargs: Any,
) -> Any:
    """Load the resources (the demo's by default, built on first use) and serve the app until interrupted.

    Every file written for visitors lives in the app's own temporary folder, removed when the server stops (Ctrl+C,
    SIGTERM or a normal exit).
    """
    from .ui import build_app as build
    from .ui import launch

    resources = load_resources(model, bank, photos, cache_dir)
    folder = AppFolder()
    folder.remove_on_exit()
    try:
        return launch(build(resources, folder=folder), resources, port, **launch_kwargs)
    finally:
        if not launch_kwargs.get("prevent_thread_lock"):
            folder.cleanup()
