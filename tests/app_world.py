"""A tiny, instant setting for the app's tests: a tiny base model, a three-task bank and a small pool of photos."""

from __future__ import annotations

import socket
from pathlib import Path

from tiny_models import perturbed_copy, tiny_model

from taskvec_aesthetics import TaskVectorBank
from taskvec_aesthetics.demo.photos import load_photos
from taskvec_aesthetics.demo.world import make_pool
from taskvec_aesthetics.personalization.config import PersonalizerConfig

NUM_PHOTOS = 16
#: The default recipe with fewer steps: the tests check the flow, not the fit.
FAST = PersonalizerConfig(steps=15, eval_every=5)


def write_app_inputs(root: Path, num_photos: int = NUM_PHOTOS) -> dict[str, Path]:
    """Save a tiny base model and a bank of three task vectors (seeded perturbations of the base: instant, and real
    safetensors files), and a folder of real photographs with the demo's traits; returns their folders."""
    base = tiny_model("efficientnet_lite", seed=0)
    bank = TaskVectorBank.from_finetuned(base, {f"task{t}": perturbed_copy(base, seed=t + 1) for t in range(3)})
    base.save_pretrained(root / "base")
    bank.save_pretrained(root / "bank")
    pool = make_pool([photo.downscaled(192) for photo in load_photos(8)], num_photos, 160, seed=0)
    photos = root / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    for image_id, data in zip(pool.image_ids, pool.png):
        (photos / f"{image_id}.png").write_bytes(data)
    return {"model": root / "base", "bank": root / "bank", "photos": photos}


def free_port() -> int:
    """A free loopback port to serve the app on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
