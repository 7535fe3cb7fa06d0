"""What every session of the app shares: the base model, the bank, the photo pool and its encodings.

Loaded once per server. With no model, bank or photos given, the demo's cached base and bank and its shared pool of
rated photos are used (built on first use, with progress bars; see `taskvec_aesthetics.demo`). The pool is encoded
once through the frozen prefix, so a session's personalization and ranking never run the frozen part again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from ..constants import BANK_CONFIG_FILE
from ..errors import InputError
from ..hub.repository import download
from ..modeling import AestheticModel
from ..personalization.config import OUTPUTS, PersonalizerConfig
from ..personalization.personalizer import Personalizer
from ..processing import IMAGE_EXTENSIONS, list_images
from ..task_vectors.bank import TaskVectorBank
from .photos import PhotoError, open_photo

if TYPE_CHECKING:
    from ..demo.config import DemoConfig

__all__ = ["AppResources", "load_resources", "demo_locations"]

logger = logging.getLogger(__name__)


@dataclass
class AppResources:
    """The shared, read-only part of the app.

    Args:
        base ([`AestheticModel`]): The base model the bank was built on.
        bank ([`TaskVectorBank`]): The task-vector bank.
        personalizer ([`Personalizer`]): Fits coefficients; shared, since fitting does not change it.
        photos (`list[Path]`): The pool's photo files, in pool order.
        prefix (`torch.Tensor`): The pool's photos after the frozen prefix (see `Personalizer.encode`).
        task_scores (`np.ndarray`): ``[T, N]`` scores of each single-task model on the pool.
        base_scores (`np.ndarray`): ``[N]`` scores of the base model on the pool.
        description (`str`): Where the base, bank and photos came from, for the page.
        lock (`threading.Lock`): Held while the shared network runs: a functional call swaps the network's parameters
            for the duration of the call, so two visitors' fits must not interleave.
    """

    base: AestheticModel
    bank: TaskVectorBank
    personalizer: Personalizer
    photos: list[Path]
    prefix: torch.Tensor
    task_scores: np.ndarray
    base_scores: np.ndarray
    description: str
    lock: threading.Lock = field(default_factory=threading.Lock)

    def encode(self, images: list[Image.Image]) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """Prefix features, ``[T, n]`` task scores and ``[n]`` base scores of new photos (e.g. a user's uploads)."""
        with self.lock:
            prefix = self.personalizer.encode(images)
            return prefix, self.personalizer.task_scores(prefix).numpy(), self._base(prefix)

    def _base(self, prefix: torch.Tensor) -> np.ndarray:
        zero = torch.zeros(self.personalizer.layout.num_groups, len(self.bank))
        return self.personalizer.predict(zero, prefix).numpy()


def demo_locations(cache_dir: str | Path | None = None, demo: DemoConfig | None = None) -> dict[str, Path]:
    """Where the demo keeps its base model and bank, and where the app keeps the demo's photo pool.

    The pool lives outside the bank's folder: building the bank replaces that folder whole.
    """
    from ..demo.config import DemoConfig
    from ..demo.runner import default_cache_dir

    config = demo or DemoConfig()
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    folder = root / "demo" / config.bank_key()
    world = json.dumps(dataclasses.asdict(config.world), sort_keys=True, default=str)
    pool_key = hashlib.sha256(world.encode()).hexdigest()[:16]
    return {"base": folder / "base", "bank": folder / "bank", "photos": root / "app-photos" / pool_key}


def demo_base_and_bank(cache_dir: Path | None, demo: DemoConfig | None) -> tuple[AestheticModel, TaskVectorBank]:
    """The demo's cached base and bank; built first (minutes, with progress bars) when the cache lacks them."""
    from ..demo.config import DemoConfig
    from ..demo.runner import base_and_bank, default_cache_dir
    from ..demo.world import build_world

    config = demo or DemoConfig()
    where = demo_locations(cache_dir, config)
    if not (where["bank"] / BANK_CONFIG_FILE).is_file():
        logger.info("Building the demo's base model and task-vector bank (first run only; a few minutes on a CPU)")
        base, bank, _, _ = base_and_bank(config, build_world(config.world), cache_dir or default_cache_dir(), True)
        return base, bank
    base = AestheticModel.from_pretrained(where["base"]).eval()
    return base, TaskVectorBank.from_pretrained(where["bank"], base=base)


def demo_photos(cache_dir: Path | None, demo: DemoConfig | None) -> Path:
    """The demo's shared pool (the photos its simulated raters rate), written once as PNG files."""
    from ..demo.config import DemoConfig
    from ..demo.photos import load_photos
    from ..demo.world import make_pool

    folder = demo_locations(cache_dir, demo)["photos"]
    if folder.is_dir() and any(folder.iterdir()):
        return folder
    world = (demo or DemoConfig()).world
    sources = [photo.downscaled(2 * world.image_size) for photo in load_photos(world.num_photos)]
    pool = make_pool(sources, world.pool_size, world.image_size, world.seed, id_prefix="pool")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    for index, image_id in enumerate(pool.image_ids):
        (staging / f"{image_id}.png").write_bytes(pool.png[index])
    try:
        staging.rename(folder)
    except OSError:  # another process wrote it first: theirs is identical
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _hub_photos(repo_id: str) -> Path:
    """The photos of a Hub repository (its image files only), downloaded once into the Hub cache."""
    folder, _ = download(repo_id, [f"*{suffix}" for suffix in IMAGE_EXTENSIONS])
    return folder


def load_resources(
    model: str | Path | None = None,
    bank: str | Path | None = None,
    photos: str | Path | None = None,
    cache_dir: str | Path | None = None,
    max_photos: int = 500,
    config: PersonalizerConfig | None = None,
    demo: DemoConfig | None = None,
) -> AppResources:
    """Load the base model, bank and photo pool for the app and encode the pool.

    Args:
        model (`str` or `Path`, *optional*): Base model folder or Hub id; the demo's when omitted.
        bank (`str` or `Path`, *optional*): Bank folder or Hub id; the one ``model`` refers to, else the demo's.
        photos (`str` or `Path`, *optional*): A folder of photos to rate, or a Hub repository holding them; the demo's
            pool when omitted.
        cache_dir (`str` or `Path`, *optional*): The demo's cache folder (default: see `demo.runner.default_cache_dir`).
        max_photos (`int`): Use at most this many photos of the folder (the first in name order).
        config ([`PersonalizerConfig`], *optional*): How visitors' coefficients are fitted (default: the library's
            default recipe, with a progress bar the page shows). The app serves one-pass models: `max_scoring_cost` is
            set to 0, and a config listing the output ensemble (`"outputs"`) is refused. Unless listed, the distilled
            candidate (`"distil"`) is left out: it triples the fit's time, and a visitor waits on the page.
        demo ([`DemoConfig`], *optional*): Which demo's base, bank and pool to serve when none is given (default:
            the demo's default size).

    Returns:
        [`AppResources`].
    """
    if config is not None and OUTPUTS in config.candidate_names:
        raise InputError(
            f"the app serves one-pass models; received candidates {list(config.candidate_names)} with {OUTPUTS!r} "
            "(the output ensemble, T passes per photo): personalize it with the command line or the library"
        )
    cache = Path(cache_dir) if cache_dir else None
    # The photos first: a wrong folder is reported before the model and bank load.
    if photos is None:
        folder = demo_photos(cache, demo)
    elif Path(photos).expanduser().is_dir() or os.path.isabs(photos) or str(photos).count("/") != 1:
        folder = Path(photos).expanduser()
    else:  # "owner/name" that is no local folder: a Hub repository of photos
        folder = _hub_photos(str(photos))
    if not folder.is_dir():
        raise InputError(f"--photos {str(folder)!r} is not a folder; expected a folder of JPEG/PNG/WebP photos")
    candidates = list_images(folder)[:max_photos]
    if model is None and bank is None:
        base, task_bank = demo_base_and_bank(cache, demo)
        origin = "the demo's base model and bank of simulated databases"
    elif model is None:
        raise InputError(f"--bank {bank} needs --model, the base model the bank was built on")
    else:
        base = AestheticModel.from_pretrained(model).eval()
        task_bank = TaskVectorBank.from_pretrained(bank, base=base) if bank else base.referenced_bank()
        origin = f"model {_name(model)} with bank {_name(bank) if bank else 'it refers to'}"
    files, images = [], []
    for path in candidates:
        try:
            images.append(open_photo(path))
            files.append(path)
        except PhotoError as error:
            logger.warning("Skipping %s", error)
    if len(files) < 2:
        raise InputError(f"the folder {str(folder)!r} holds {len(files)} readable photos; the app needs at least 2")
    # One-pass models only: the page's download must load anywhere (merged weights when the base or the bank is not
    # on the Hub), and an output ensemble has no merged weights. The default candidates, listed, leave out the slow
    # distilled one.
    config = config or PersonalizerConfig(progress=True)
    one_pass = dataclasses.replace(config, max_scoring_cost=0.0, candidates=config.candidate_names)
    personalizer = Personalizer(base, task_bank, one_pass)
    logger.info("Encoding %d photos", len(files))
    prefix = personalizer.encode(images)
    resources = AppResources(base, task_bank, personalizer, files, prefix, np.zeros(0), np.zeros(0), "")
    resources.task_scores = personalizer.task_scores(prefix).numpy()
    resources.base_scores = resources._base(prefix)
    photo_origin = "of the demo's pool" if photos is None else f"from {_name(photos)}"
    resources.description = f"{origin}, {len(task_bank)} tasks; {len(files)} photos {photo_origin}"
    return resources


def _name(name_or_path: str | Path) -> str:
    """How the page names a model, bank or photo folder: a Hub id as is, a local folder by its name only."""
    return f"{Path(name_or_path).name}/" if Path(name_or_path).expanduser().is_dir() else str(name_or_path)
