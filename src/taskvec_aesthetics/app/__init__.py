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

from .resources import AppResources, load_resources
from .session import DEFAULT_STRATEGY, USEFUL_RATINGS, RatingSession

if TYPE_CHECKING:
    import gradio

__all__ = [
    "AppResources",
    "DEFAULT_STRATEGY",
    "USEFUL_RATINGS",
    "RatingSession",
    "build_app",
    "load_resources",
    "serve",
]


def build_app(resources: AppResources, strategy: str = DEFAULT_STRATEGY) -> gradio.Blocks:
    """The Gradio page over shared resources (see `ui.build_app`)."""
    from .ui import build_app as build

    return build(resources, strategy)


def serve(
    model: str | None = None,
    bank: str | None = None,
    photos: str | None = None,
    port: int | None = None,
    cache_dir: str | None = None,
    **launch_kwargs: Any,
) -> Any:
    """Load the resources (the demo's by default, built on first use) and serve the app until interrupted."""
    from .ui import build_app as build
    from .ui import launch

    resources = load_resources(model, bank, photos, cache_dir)
    return launch(build(resources), resources, port, **launch_kwargs)
