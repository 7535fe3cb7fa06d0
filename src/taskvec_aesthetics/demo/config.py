"""The demo's sizes: its simulated world ([`WorldConfig`]) and its run ([`DemoConfig`]), in the library's one config
style.

This module imports neither torch nor PIL: `demo --help` derives its flags from these fields.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError, InputTypeError
from ..experiments.config import METHODS
from ..utils.fields import check_fields, option

__all__ = ["DEMO_METHODS", "SIMULATED_DATABASE_NAMES", "DemoConfig", "WorldConfig"]

#: The names of `world.SIMULATED_DATABASES`, in its order (stated here so that configs need not render images).
SIMULATED_DATABASE_NAMES = ("sharpness", "noise", "jpeg", "exposure", "saturation", "contrast", "general")
#: The full demo leaves out the two baselines that cost most per rater (they run in `--quick` and in benchmarks/),
#: so that 24 raters fit in minutes on a CPU.
DEMO_METHODS = tuple(m for m in METHODS if m not in ("paper", "full_finetune", "one_pass", "default_ensemble"))
#: Bump when the bank-building recipe changes, so stale caches are not reused.
_CACHE_VERSION = 2
#: The smallest working resolution (a bound `option` does not offer).
_MIN_IMAGE_SIZE = 16


@dataclass(frozen=True)
class WorldConfig:
    """Size and seed of the simulated world; see [`WorldConfig.preset`] for named presets.

    Args:
        image_size (`int`): Side of the square working resolution, in pixels (at least 16).
        num_photos (`int`, *optional*): Use only the first photos of [`load_photos`]; ``None`` uses all.
        images_per_database (`int`), pool_size (`int`): Images per database, and in the pool every rater rates.
        num_users (`int`): Number of simulated raters (24: enough for paired comparisons of methods to mean
            something; 6 gave intervals of +-0.15).
        seed (`int`): Seed of everything.
        databases (`tuple[str, ...]`): Simulated databases to build, from :data:`SIMULATED_DATABASES`.
    """

    image_size: int = option(
        112, f"side of the square working resolution in pixels, at least {_MIN_IMAGE_SIZE}", f">={_MIN_IMAGE_SIZE}"
    )
    num_photos: int | None = option(None, "use only the first N photos (none: all)", ">=1")
    images_per_database: int = option(300, "images per simulated database", ">=2")
    pool_size: int = option(250, "images in the pool every rater rates", ">=2")
    num_users: int = option(24, "simulated raters", ">=1")
    seed: int = option(0, "seed of the photos' crops, the traits, the votes and the raters", ">=0")
    databases: tuple[str, ...] = option(
        SIMULATED_DATABASE_NAMES,
        f"simulated databases to build, of {', '.join(SIMULATED_DATABASE_NAMES)} (default: all)",
        choices=SIMULATED_DATABASE_NAMES,
        metavar="DATABASE",
    )

    def __post_init__(self) -> None:
        check_fields(self)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> WorldConfig:
        """A named preset: ``"default"`` (the demo's size) or ``"quick"`` (tiny, for tests), with overrides."""
        if name not in _PRESETS:
            raise InputError(f"unknown world preset {name!r}; expected one of {list(_PRESETS)}")
        return cls(**{**_PRESETS[name], **overrides})


_PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "quick": {"image_size": 64, "num_photos": 12, "images_per_database": 40, "pool_size": 48, "num_users": 4},
}


@dataclass(frozen=True)
class DemoConfig:
    """Size of the demo. `preset("quick")` runs in about a minute on 2 cores, even with an empty cache.

    Args:
        world: the simulated world.
        freeze_prefix_blocks: encoder blocks shared by every task (frozen and computed once per image, both while
            fine-tuning and while personalizing). EfficientNet-Lite0 has 16; freezing 15 leaves its last block, the
            neck and the head (1.7 M parameters) to the bank. A personalization step at batch 32 then takes about
            55 ms on 2 CPU cores, half the time with two blocks (the 5x5 depthwise convolution of block 14 has a slow
            backward on CPUs). Freezing all 16 halves the demo's time again, but measured on its 24 raters our
            default fell below the softmax init at k = 10 (-0.014): the last block is kept.
        finetune_steps, finetune_batch_size: fine-tuning of each database.
        shots: numbers of rated images per rater.
        repeats: draws of the rated images per rater and k.
        methods: the methods of the protocol (see `benchmark.METHODS`).
        personalizer_steps: steps of our default recipe (the most a learned candidate may take).
        paper_steps: steps of the paper's recipe. The paper runs 500; the demo runs 100 to stay within minutes on
            a CPU (the table says so), and `benchmarks/` measures the full 500.
        baseline_steps: steps of the fine-tuning baselines.
        score_candidates: also record the test SROCC of every candidate our default cross-validated (see
            `BenchmarkConfig.score_candidates`).
        workers: processes that run the protocol's draws (see `BenchmarkConfig.workers`), one thread each; default:
            one per CPU core, at most 4. The numbers do not depend on it.
        seed: seed of the base model's head, fine-tuning and draws.
    """

    world: WorldConfig = field(default_factory=WorldConfig, metadata={"help": "the simulated world"})
    freeze_prefix_blocks: int = option(15, "encoder blocks shared by every task (frozen, computed once)", ">=0")
    finetune_steps: int = option(100, "fine-tuning steps of each database", ">=1")
    finetune_batch_size: int = option(32, "fine-tuning batch size", ">=1")
    shots: tuple[int, ...] = option((10, 100), "numbers k of rated images per rater, each >= 2", ">=2")
    repeats: int = option(1, "draws of the rated images per rater and k", ">=1")
    methods: tuple[str, ...] = option(
        DEMO_METHODS,
        f"methods of the protocol, of {', '.join(METHODS)} (default: all but paper and full_finetune, the two that "
        "cost most per rater, and one_pass and default_ensemble, reruns of our default)",
        choices=METHODS,
        metavar="METHOD",
    )
    personalizer_steps: int = option(50, "steps of our default recipe (the most a learned candidate takes)", ">=1")
    paper_steps: int = option(100, "steps of the paper's recipe (the paper runs 500)", ">=1")
    baseline_steps: int = option(100, "steps of the fine-tuning baselines", ">=1")
    score_candidates: bool = option(False, "also record the test SROCC of every candidate our default compared")
    workers: int | None = option(
        None, "processes that run the protocol's draws, one thread each (default: CPU cores, at most 4)", ">=1"
    )
    seed: int = option(0, "seed of the base model's head, fine-tuning and draws")

    def __post_init__(self) -> None:
        if not isinstance(self.world, WorldConfig):
            raise InputTypeError(f"DemoConfig.world must be a WorldConfig, received {type(self.world).__name__}")
        check_fields(self)

    @classmethod
    def preset(cls, name: str) -> DemoConfig:
        if name == "default":
            return cls()
        if name == "quick":
            return cls(
                world=WorldConfig.preset("quick"),
                finetune_steps=15,
                shots=(10, 20),
                # every method but `one_pass`, our default rerun without the ensemble (and with the slow distillation)
                methods=tuple(method for method in METHODS if method != "one_pass"),
                personalizer_steps=20,
                paper_steps=30,
                baseline_steps=30,
            )
        raise InputError(f"unknown demo preset {name!r}; choose 'default' or 'quick'")

    def bank_key(self) -> str:
        """Hash of everything that determines the base and the bank (not the raters or the protocol)."""
        world = dataclasses.asdict(self.world)
        for unrelated in ("pool_size", "num_users"):
            world.pop(unrelated)
        recipe = {
            "version": _CACHE_VERSION,
            "world": world,
            "freeze": self.freeze_prefix_blocks,
            "steps": self.finetune_steps,
            "batch": self.finetune_batch_size,
            "seed": self.seed,
        }
        return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:16]
