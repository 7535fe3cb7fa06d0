"""A planted-truth world: a tiny encoder fine-tuned on T synthetic scoring tasks, and users who mix them."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from tiny_models import tiny_model

from taskvec_aesthetics import AestheticModel, TaskVectorBank

NUM_TASKS = 3


def images(n: int, seed: int) -> list[Image.Image]:
    """Small photos whose per-channel brightness varies from image to image, plus texture."""
    rng = np.random.default_rng(seed)
    brightness = rng.uniform(40, 215, size=(n, 1, 1, 3))
    texture = rng.normal(0, 30, size=(n, 32, 32, 3))
    arrays = np.clip(brightness + texture, 0, 255).astype(np.uint8)
    return [Image.fromarray(a) for a in arrays]


def criteria(photos: list[Image.Image]) -> torch.Tensor:
    """`[N, T]` noise-free task criteria: task t rewards the brightness of channel t."""
    return torch.tensor(np.stack([np.asarray(p, dtype=np.float64).mean(axis=(0, 1)) / 255 for p in photos]))


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
    """A user's noise-free utility (a known mixture of the tasks) and noisy ratings of it."""
    utility = criteria(photos) @ torch.tensor(weights, dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    return utility, utility + noise * torch.randn(len(utility), generator=generator)
