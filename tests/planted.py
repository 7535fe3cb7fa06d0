"""A planted-truth world: a tiny encoder fine-tuned on T synthetic scoring tasks, and users who mix them.

Each image has five measurable traits (:data:`TRAITS`): the brightness of its red, green and blue channels, the
strength of its texture, and a vertical brightness gradient. Task t is a full fine-tuning of the base toward trait t
for the first four; no task learns the gradient, so a taste on it lies outside the bank's span.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from tiny_models import tiny_model

from taskvec_aesthetics import AestheticModel, TaskVectorBank

TRAITS = ("red", "green", "blue", "texture", "gradient")
NUM_TASKS = 4  # the first four traits; "gradient" is covered by no task


def images(n: int, seed: int) -> list[Image.Image]:
    """Small photos with random per-channel brightness, texture strength and vertical gradient."""
    rng = np.random.default_rng(seed)
    brightness = rng.uniform(40, 215, size=(n, 1, 1, 3))
    texture = rng.normal(0, 1, size=(n, 32, 32, 3)) * rng.uniform(4, 40, size=(n, 1, 1, 1))
    ramp = np.linspace(1, -1, 32)[None, :, None, None] * rng.uniform(-35, 35, size=(n, 1, 1, 1))
    arrays = np.clip(brightness + texture + ramp, 0, 255).astype(np.uint8)
    return [Image.fromarray(a) for a in arrays]


def criteria(photos: list[Image.Image]) -> torch.Tensor:
    """`[N, 5]` noise-free traits, each spread over roughly [0, 1]: channel brightness, texture, gradient."""
    arrays = np.stack([np.asarray(p, dtype=np.float64) / 255 for p in photos])
    channels = arrays.mean(axis=(1, 2))
    texture = 4 * np.abs(np.diff(arrays, axis=2)).mean(axis=(1, 2, 3))  # horizontal: blind to the vertical ramp
    gradient = 0.5 + 2 * (arrays[:, :16].mean(axis=(1, 2, 3)) - arrays[:, 16:].mean(axis=(1, 2, 3)))
    return torch.tensor(np.column_stack([channels, texture, gradient]))


def to_pixels(model: AestheticModel, photos: list[Image.Image]) -> torch.Tensor:
    return model.image_processor(images=photos, return_tensors="pt")["pixel_values"]


def finetune(model: AestheticModel, pixels: torch.Tensor, target: torch.Tensor, seed: int, steps: int = 150):
    """Plain full fine-tuning with MSE on scores (dropout off) from ``model``; returns the tuned copy."""
    tuned = copy.deepcopy(model).train()
    tuned.head.dropout.p = 0.0
    optimizer = torch.optim.Adam(tuned.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        index = torch.randint(0, len(pixels), (32,), generator=generator)
        loss = torch.mean((tuned(pixel_values=pixels[index]).scores - target[index]) ** 2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    tuned.head.dropout.p = model.head.dropout.p
    return tuned.eval()


@dataclass
class PlantedWorld:
    base: AestheticModel
    bank: TaskVectorBank
    tuned: dict[str, AestheticModel]


def build_world(**bank_kwargs) -> PlantedWorld:
    base = tiny_model("clip", seed=0)
    photos = images(256, seed=1)
    pixels = to_pixels(base, photos)
    target = criteria(photos).float()
    target = 5.5 + 2.0 * (target - target.mean(0)) / target.std(0)
    tuned = {f"task{t}": finetune(base, pixels, target[:, t], seed=t) for t in range(NUM_TASKS)}
    return PlantedWorld(base, TaskVectorBank.from_finetuned(base, tuned, **bank_kwargs), tuned)


def user_ratings(
    photos: list[Image.Image], weights: list[float], noise: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """A user's noise-free utility (a known mixture of the traits; missing weights are 0) and noisy ratings."""
    full = torch.zeros(len(TRAITS), dtype=torch.float64)
    full[: len(weights)] = torch.tensor(weights, dtype=torch.float64)
    utility = criteria(photos) @ full
    generator = torch.Generator().manual_seed(seed)
    return utility, utility + noise * torch.randn(len(utility), generator=generator)
