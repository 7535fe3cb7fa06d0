"""Publishing what a Hugging Face Space of the app serves: the demo's base model, bank and photo pool, as Hub repos.

```bash
taskvec-aesthetics app --push-demo your-name   # prints the Space variables to set
```

The Space's `app.py` then loads all three by id (`TASKVEC_MODEL`, `TASKVEC_BANK`, `TASKVEC_PHOTOS`): nothing to
build, so it starts in seconds, and its visitors' downloads are small coefficient exports that load anywhere.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError
from ..hub.repository import push_folder
from .resources import demo_base_and_bank, demo_photos

if TYPE_CHECKING:
    from ..demo.config import DemoConfig

__all__ = ["SPACE_VARIABLES", "push_demo"]

logger = logging.getLogger(__name__)

#: The Space variables `app.py` reads, by what they name.
SPACE_VARIABLES = {"base": "TASKVEC_MODEL", "bank": "TASKVEC_BANK", "photos": "TASKVEC_PHOTOS"}


def push_demo(
    namespace: str,
    *,
    prefix: str = "taskvec-aesthetics-demo",
    token: str | None = None,
    private: bool | None = None,
    cache_dir: str | Path | None = None,
    demo: DemoConfig | None = None,
) -> dict[str, str]:
    """Push the demo's base model, bank and photo pool (built first if the cache lacks them) to the Hub.

    Args:
        namespace (`str`): The user or organisation to push to.
        prefix (`str`): The repositories are ``<namespace>/<prefix>-base``, ``-bank`` and ``-photos``.
        token (`str`, *optional*): A Hub token with write access (default: the stored one).
        private (`bool`, *optional*): Create the repositories as private.
        cache_dir, demo: The demo's cache and size (see [`load_resources`]).

    Returns:
        `dict[str, str]`: The Space variables to set (``TASKVEC_MODEL`` etc.) and the repo id each names.
    """
    if not namespace or "/" in namespace:
        raise InputError(f"namespace must be a Hub user or organisation name like 'your-name'; received {namespace!r}")
    cache = Path(cache_dir) if cache_dir else None
    photos = demo_photos(cache, demo)
    base, bank = demo_base_and_bank(cache, demo)
    ids = {what: f"{namespace}/{prefix}-{what}" for what in SPACE_VARIABLES}
    base.push_to_hub(ids["base"], token=token, private=private)  # the base pushed first: the bank refers to it
    bank.push_to_hub(ids["bank"], token=token, private=private)

    def write(folder: Path, repo_id: str) -> None:
        for photo in sorted(photos.iterdir()):
            shutil.copyfile(photo, folder / photo.name)

    push_folder(write, ids["photos"], what="the app's photos", token=token, private=private)
    logger.info("Pushed the demo's base, bank and photos to %s", ", ".join(ids.values()))
    return {SPACE_VARIABLES[what]: repo_id for what, repo_id in ids.items()}
