"""A second planted world, with other traits and other tastes than tests/planted.py: a guard against tuning to one.

Photos mix a colour of random saturation, horizontal stripes, a brighter or darker centre square, coarse blotches and
a warm or cool cast. Four tasks learn saturation, stripes, the centre's brightness and contrast; no task learns the
warmth (red minus blue), so a taste on it lies outside the bank's span. No setting of the library was chosen on this
world: it only checks what the first world and the demo suggested.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from PIL import Image

TRAITS = ("saturation", "stripes", "centre", "contrast", "warmth")
SIZE = 32


def images(n: int, seed: int) -> list[Image.Image]:
    """Small photos: a colour of random grey level and saturation, stripes, a centre square, blotches, a cast."""
    rng = np.random.default_rng(seed)
    grey = rng.uniform(70, 180, size=(n, 1, 1, 1))
    hue = rng.normal(0, 1, size=(n, 1, 1, 3))
    hue = (hue - hue.mean(axis=3, keepdims=True)) / np.abs(hue).max(axis=3, keepdims=True)
    colour = grey + rng.uniform(0, 50, size=(n, 1, 1, 1)) * hue
    rows = np.sin(np.linspace(0, 8 * np.pi, SIZE))[None, :, None, None]
    stripes = rows * rng.uniform(0, 30, size=(n, 1, 1, 1))
    square = np.zeros((1, SIZE, SIZE, 1))
    square[:, 8:24, 8:24] = 1.0
    centre = square * rng.uniform(-35, 35, size=(n, 1, 1, 1))
    blotches = np.kron(rng.normal(0, 1, size=(n, 4, 4, 1)), np.ones((1, 8, 8, 1))) * rng.uniform(0, 25, (n, 1, 1, 1))
    cast = np.array([1.0, 0.0, -1.0])[None, None, None, :] * rng.uniform(-20, 20, size=(n, 1, 1, 1))
    arrays = np.clip(colour + stripes + centre + blotches + cast, 0, 255).astype(np.uint8)
    return [Image.fromarray(a) for a in arrays]


def _raw_traits(photos: list[Image.Image]) -> np.ndarray:
    arrays = np.stack([np.asarray(p, dtype=np.float64) / 255 for p in photos])
    luminance = arrays.mean(axis=3)
    saturation = (arrays.max(axis=3) - arrays.min(axis=3)).mean(axis=(1, 2))
    # Stripes vary down the rows only; blotches vary both ways, so their share cancels.
    stripes = np.abs(np.diff(luminance, axis=1)).mean(axis=(1, 2)) - np.abs(np.diff(luminance, axis=2)).mean(
        axis=(1, 2)
    )
    inner = luminance[:, 8:24, 8:24].mean(axis=(1, 2))
    centre = inner - (luminance.sum(axis=(1, 2)) - inner * 256) / (SIZE * SIZE - 256)
    contrast = luminance.std(axis=(1, 2))
    warmth = arrays[..., 0].mean(axis=(1, 2)) - arrays[..., 2].mean(axis=(1, 2))
    return np.column_stack([saturation, stripes, centre, contrast, warmth])


@lru_cache(maxsize=1)
def _spread() -> tuple[np.ndarray, np.ndarray]:
    """Each trait's 1st and 99th percentile on a fixed reference sample: traits are mapped onto about 0..1."""
    raw = _raw_traits(images(2000, seed=12345))
    return np.percentile(raw, 1, axis=0), np.percentile(raw, 99, axis=0)


def criteria(photos: list[Image.Image]) -> torch.Tensor:
    """`[N, 5]` noise-free traits, each spread over roughly [0, 1]."""
    low, high = _spread()
    return torch.tensor((_raw_traits(photos) - low) / (high - low))


#: Weights on the traits (saturation, stripes, centre, contrast, warmth); tasks 0-3 learn the first four.
USERS = {
    "saturation only": [1.0, 0.0, 0.0, 0.0, 0.0],
    "dislikes contrast": [0.0, 0.0, 0.0, -1.0, 0.0],
    "centre - 0.5 stripes": [0.0, -0.5, 1.0, 0.0, 0.0],
    "an even mix of the four": [0.5, 0.5, 0.5, 0.5, 0.0],
    "0.7 saturation + 0.7 stripes - 0.5 centre": [0.7, 0.7, -0.5, 0.0, 0.0],
    "contrast - saturation": [-1.0, 0.0, 0.0, 1.0, 0.0],
    "warmth + 0.5 saturation (warmth uncovered)": [0.5, 0.0, 0.0, 0.0, 1.0],
    "warmth only (uncovered)": [0.0, 0.0, 0.0, 0.0, 1.0],
}
