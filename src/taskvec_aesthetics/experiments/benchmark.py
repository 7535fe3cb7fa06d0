"""The few-shot PIAA protocol: for each user and repeat, k rated images to personalize, the user's others to test.

Every method sees only the k rated images; the test images take part in no choice (not the step, not the task,
not a weight). Images are encoded once (the frozen prefix) and each task model scores them once, so methods are
compared on identical inputs. The methods are in `methods`; the results, with their uncertainty, in `results`.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import InputError
from ..personalization.inputs import decode_images, rows_by_user
from ..personalization.personalizer import Personalizer
from ..task_vectors.bank import TaskVectorBank
from ..task_vectors.coefficients import Coefficients
from .config import BenchmarkConfig
from .methods import Methods
from .results import BenchmarkResult, Trial

if TYPE_CHECKING:
    from ..modeling import AestheticModel

__all__ = ["BenchmarkConfig", "Draw", "DrawResult", "draw_order", "run_benchmark", "run_draw"]

logger = logging.getLogger(__name__)


@dataclass
class Draw:
    """One user's draw at one k: indices of the rated and test images, and their ratings."""

    user_id: str
    k: int
    repeat: int
    rated: torch.Tensor
    test: torch.Tensor
    ratings: torch.Tensor
    test_ratings: torch.Tensor
    observed: torch.Tensor | None = None  # noisy test ratings where test_ratings is a known truth
    example: bool = False  # the draw whose one-pass fit of our default is the run's example model


DrawResult = tuple[list[tuple[str, float, float, dict]], tuple[Coefficients, dict[str, Any]] | None]


def run_draw(methods: Methods, draw: Draw) -> DrawResult:
    """Every method on one draw, and for the example draw our default's one-pass fit (coefficients and report
    summary)."""
    methods.example = None
    results = list(methods.run(draw.rated, draw.test, draw.ratings, draw.test_ratings, draw.observed, draw.example))
    return results, methods.example


_worker_methods: Methods | None = None


def _start_worker(methods: Methods, threads: int) -> None:
    global _worker_methods
    torch.set_num_threads(threads)
    _worker_methods = methods


def _run_draw_in_worker(draw: Draw) -> DrawResult:
    assert _worker_methods is not None, "the worker was not started with _start_worker"
    return run_draw(_worker_methods, draw)


def _run_draws(methods: Methods, draws: list[Draw], workers: int) -> Iterator[tuple[int, DrawResult]]:
    """`(index, result of _run_draw)` for each draw as it finishes: in order here, or in ``workers`` processes among
    which torch's threads are split, the largest k first (the slowest draws, so none is left running alone)."""
    if workers == 1 or methods.ours.device.type != "cpu":
        for index, draw in enumerate(draws):
            yield index, run_draw(methods, draw)
        return
    threads = max(1, torch.get_num_threads() // workers)
    order = sorted(range(len(draws)), key=lambda i: -draws[i].k)
    # On Linux, fork hands the workers the encoded images and the bank without a copy or an import (spawn takes
    # seconds per worker for those); elsewhere fork is unsafe, and spawn pickles them once per worker.
    context = torch.multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    with context.Pool(workers, initializer=_start_worker, initargs=(methods, threads)) as pool:
        yield from zip(order, pool.imap(_run_draw_in_worker, [draws[i] for i in order]))


def draw_order(num_images: int, seed: int, k: int, repeat: int, user_id: str) -> np.ndarray:
    """The seeded order of a user's images for one draw: the first k are rated, the rest are the test set."""
    return np.random.default_rng([seed, k, repeat, *map(ord, user_id)]).permutation(num_images)


def run_benchmark(
    model: AestheticModel,
    bank: TaskVectorBank,
    dataset: Any,
    config: BenchmarkConfig | None = None,
    user_column: str = "user_id",
) -> BenchmarkResult:
    """Run the few-shot PIAA protocol on a dataset with `image`, `score` and `user_id` (and ideally `image_id`).

    Images shared by several users (same `image_id`) are encoded once. For every user, k and repeat, k of the user's
    images are drawn (seeded) as rated images; every method fits on them alone; test SROCC is measured on the user's
    remaining images.
    """
    config = config or BenchmarkConfig()
    missing = [c for c in ("image", "score", user_column) if c not in getattr(dataset, "column_names", [])]
    if missing:
        raise InputError(
            f"the benchmark needs a datasets.Dataset with columns image, score and {user_column}; missing {missing}"
        )
    began = time.perf_counter()
    image_ids = dataset["image_id"] if "image_id" in dataset.column_names else [str(i) for i in range(len(dataset))]
    unique = list(dict.fromkeys(image_ids))
    position = {image_id: i for i, image_id in enumerate(unique)}
    first_row = {image_id: row for row, image_id in reversed(list(enumerate(image_ids)))}
    ours = Personalizer(model, bank, config.personalizer)
    prefix = ours.encode(decode_images(dataset.select([first_row[i] for i in unique])))
    encode_seconds = time.perf_counter() - began
    methods = Methods(ours, prefix, config)
    scores = np.asarray(dataset["score"], dtype=np.float64)
    draws: list[Draw] = []
    for user, rows in rows_by_user(dataset, user_column).items():
        for k in config.shots:
            if len(rows) - k < config.min_test_images:
                logger.info(
                    "Skipping user %s at k=%d: %d images leave fewer than %d to test",
                    user,
                    k,
                    len(rows),
                    config.min_test_images,
                )
                continue
            for repeat in range(config.repeats):
                order = draw_order(len(rows), config.seed, k, repeat, user)
                rated_rows, test_rows = [rows[i] for i in order[:k]], [rows[i] for i in order[k:]]
                ratings = torch.tensor(scores[rated_rows])
                if torch.unique(ratings).numel() < 2:
                    logger.info("Skipping a draw of user %s at k=%d: all rated images have the same rating", user, k)
                    continue
                rated = torch.tensor([position[image_ids[r]] for r in rated_rows])
                test = torch.tensor([position[image_ids[r]] for r in test_rows])
                draws.append(Draw(user, k, repeat, rated, test, ratings, torch.tensor(scores[test_rows])))
    first_at_largest = next((d for d in draws if d.k == max(config.shots)), None)
    if first_at_largest is not None:
        first_at_largest.example = True
    results: dict[int, DrawResult] = {}  # by draw: workers finish them out of order
    for index, result in tqdm(
        _run_draws(methods, draws, config.workers),
        total=len(draws),
        desc="Draws",
        unit="draw",
        disable=not config.progress,
    ):
        results[index] = result
    trials: list[Trial] = []
    example_user = None
    for index, draw in enumerate(draws):
        outcomes, fit = results[index]
        for method, value, seconds, facts in outcomes:
            trials.append(Trial(draw.user_id, draw.k, draw.repeat, method, float(value), float(seconds), **facts))
        if draw.example and fit is not None:
            example_user, (example, example_info) = draw.user_id, fit
    if not trials:
        raise InputError("no user had enough images for any k; lower shots or min_test_images")
    return BenchmarkResult(
        trials=trials,
        task_names=bank.task_names,
        config={
            "shots": list(config.shots),
            "repeats": config.repeats,
            "seed": config.seed,
            "methods": list(config.methods),
            "personalizer": config.personalizer.to_dict(),
            "paper": config.paper.to_dict(),
            "baseline_steps": config.baseline_steps,
            "transductive": config.transductive,
            "workers": config.workers,
        },
        timings={
            "encode_s": encode_seconds,
            "task_scoring_s": methods.task_scoring_seconds,
            "images": len(unique),
            "total_s": time.perf_counter() - began,
        },
        example_coefficients=example if example_user else None,
        example_user=example_user,
        example_info=example_info if example_user else None,
    )
