"""A planted-truth world: a tiny encoder fine-tuned on T synthetic scoring tasks, and users who mix them.

Each image has five measurable traits (:data:`TRAITS`): the brightness of its red, green and blue channels, the
strength of its texture, and a vertical brightness gradient. Task t is a full fine-tuning of the base toward trait t
for the first four; no task learns the gradient, so a taste on it lies outside the bank's span.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from tiny_models import tiny_model

from taskvec_aesthetics import AestheticModel, TaskVectorBank
from taskvec_aesthetics.experiments.benchmark import Draw, draw_order, run_draw
from taskvec_aesthetics.experiments.config import BenchmarkConfig
from taskvec_aesthetics.experiments.methods import Methods
from taskvec_aesthetics.experiments.results import Trial
from taskvec_aesthetics.personalization.personalizer import Personalizer

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


def finetune(
    model: AestheticModel,
    pixels: torch.Tensor,
    target: torch.Tensor,
    seed: int,
    steps: int = 150,
    top_blocks: int | None = None,
):
    """Plain fine-tuning with MSE on scores (dropout off) from ``model``; returns the tuned copy. Every parameter,
    or with ``top_blocks`` only the top encoder blocks, the neck and the head (the rest stays the base's)."""
    tuned = copy.deepcopy(model).train()
    tuned.head.dropout.p = 0.0
    trained = tuned.parameters()
    if top_blocks is not None:
        top = {f"block.{b}" for b in range(model.adapter.num_blocks - top_blocks, model.adapter.num_blocks)}
        groups = model.parameter_groups()
        trained = [p for n, p in tuned.named_parameters() if groups[n] in top | {"neck", "head"}]
    optimizer = torch.optim.Adam(trained, lr=3e-3)
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


#: How a world makes photos (count, seed) and measures their traits (`[N, traits]`, each spread over about 0..1).
Photos = Callable[[int, int], list[Image.Image]]
Traits = Callable[[list[Image.Image]], torch.Tensor]


def build_world(
    top_blocks: int | None = None, *, photos_of: Photos = images, traits_of: Traits = criteria, **bank_kwargs
) -> PlantedWorld:
    """The base, the tasks fine-tuned from it (every parameter, or the top blocks, neck and head) and their bank:
    task t learns trait t of ``traits_of`` (the first `NUM_TASKS`)."""
    base = tiny_model("clip", seed=0)
    photos = photos_of(256, 1)
    pixels = to_pixels(base, photos)
    target = traits_of(photos).float()
    target = 5.5 + 2.0 * (target - target.mean(0)) / target.std(0)
    tuned = {f"task{t}": finetune(base, pixels, target[:, t], seed=t, top_blocks=top_blocks) for t in range(NUM_TASKS)}
    return PlantedWorld(base, TaskVectorBank.from_finetuned(base, tuned, **bank_kwargs), tuned)


def user_ratings(
    photos: list[Image.Image], weights: list[float], noise: float, seed: int, traits_of: Traits = criteria
) -> tuple[torch.Tensor, torch.Tensor]:
    """A user's noise-free utility (a known mixture of the traits; missing weights are 0) and noisy ratings."""
    traits = traits_of(photos)
    full = torch.zeros(traits.shape[1], dtype=torch.float64)
    full[: len(weights)] = torch.tensor(weights, dtype=torch.float64)
    utility = traits @ full
    generator = torch.Generator().manual_seed(seed)
    return utility, utility + noise * torch.randn(len(utility), generator=generator)


#: Weights on the traits (red, green, blue, texture, gradient); tasks 0-3 learn the first four.
USERS = {
    "red only": [1.0, 0.0, 0.0, 0.0, 0.0],
    "texture only": [0.0, 0.0, 0.0, 1.0, 0.0],
    "dislikes green": [0.0, -1.0, 0.0, 0.0, 0.0],
    "0.6 red + 0.6 green - 0.4 blue": [0.6, 0.6, -0.4, 0.0, 0.0],
    "blue - 0.5 red": [-0.5, 0.0, 1.0, 0.0, 0.0],
    "green - 0.6 blue": [0.0, 1.0, -0.6, 0.0, 0.0],
    "0.5 red + 0.5 texture": [0.5, 0.0, 0.0, 0.5, 0.0],
    "gradient + 0.5 green (gradient uncovered)": [0.0, 0.5, 0.0, 0.0, 1.0],
    "gradient only (uncovered)": [0.0, 0.0, 0.0, 0.0, 1.0],
}


def run_protocol(
    world: PlantedWorld,
    photos: list,
    config: BenchmarkConfig,
    noise: float,
    users: dict[str, list[float]] = USERS,
    traits_of: Traits = criteria,
) -> tuple[list[Trial], str | None, object]:
    """Every user of ``users``, k and repeat: draw k rated images, run every method, test on the others (SROCC
    against the noise-free utility; our default's also against the noisy ratings, as the person would measure it).
    Returns the trials, and the user and coefficients of the example (the first user at the largest k)."""
    began = time.perf_counter()
    ours = Personalizer(world.base, world.bank, config.personalizer)
    methods = Methods(ours, ours.encode(to_pixels(world.base, photos)), config)
    trials, example_user, example = [], None, None
    for u, (user, weights) in enumerate(users.items()):
        for k in config.shots:
            for repeat in range(config.repeats):
                utility, ratings = user_ratings(photos, weights, noise, 1000 * u + repeat, traits_of)
                order = torch.from_numpy(draw_order(len(photos), config.seed, k, repeat, user))
                rated, test = order[:k], order[k:]
                draw = Draw(user, k, repeat, rated, test, ratings[rated], utility[test], ratings[test])
                outcomes, fit = run_draw(methods, draw)
                for method, value, seconds, facts in outcomes:
                    trials.append(Trial(user, k, repeat, method, float(value), float(seconds), **facts))
                if example_user is None and k == max(config.shots) and fit is not None:
                    example_user, example = user, fit[0]  # our default's coefficients
        print(f"{user}: done ({time.perf_counter() - began:.0f} s)", flush=True)
    return trials, example_user, example


def add_protocol_arguments(parser, repeats: int) -> None:
    """The protocol's command-line options, shared by the benchmarks that run it."""
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--shots", type=int, nargs="+", default=[10, 30, 100])
    parser.add_argument("--images", type=int, default=400, help="images each user rates (k rated, the rest tested)")
    parser.add_argument("--noise", type=float, default=0.1, help="rating noise (the traits spread over about 0..1)")
