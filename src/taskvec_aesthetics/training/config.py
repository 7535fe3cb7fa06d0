"""The settings of fine-tuning one database ([`FinetuneConfig`]), in the library's one config style."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..utils.fields import check_fields, option

__all__ = ["FINETUNE_LOSSES", "FinetuneConfig", "PREFIX_CACHE_BUDGET_GIB", "PREFIX_CACHING"]

# -- fine-tuning ---------------------------------------------------------------------------------------------------
FINETUNE_LOSSES = ("auto", "emd", "mse")
PREFIX_CACHING = ("auto", "always", "never")
#: `cache_prefix="auto"` keeps the frozen prefix's output of every image in memory when it takes at most this much.
PREFIX_CACHE_BUDGET_GIB = 2


@dataclass
class FinetuneConfig:
    """Hyperparameters of fine-tuning one database (learning-rate defaults as measured for the bank's models).

    `max_steps`, when set, overrides `epochs`. Steps are optimizer steps; the batch size is per process, so the
    effective batch is `batch_size * gradient_accumulation_steps * num_processes`. `freeze_prefix_blocks=k` freezes
    the embeddings and the first k encoder blocks: they stay equal to the base and run in eval mode (a fixed feature
    extractor, as personalization uses them), the bank leaves them out, and their output can be computed once per
    image (`cache_prefix`).
    """

    output_dir: str | Path = field(metadata={"help": "run folder: model/, finetune_result.json, checkpoints/"})
    lr_encoder: float = option(1e-4, "learning rate of the encoder", ">0")
    lr_head: float = option(1e-3, "learning rate of the score head", ">0")
    weight_decay: float = option(
        0.0, "AdamW decay of matrices (it adds a pull towards zero to every task vector)", ">=0"
    )
    epochs: int = option(1, "passes over the training set", ">0")
    max_steps: int | None = option(None, "optimizer steps; overrides epochs", ">0")
    batch_size: int = option(32, "images per process and micro-batch", ">0")
    gradient_accumulation_steps: int = option(1, "micro-batches per optimizer step", ">0")
    warmup_ratio: float = option(0.05, "fraction of the steps of linear warmup before the cosine decay", "[0,1)")
    mixed_precision: str | None = option(
        None, "default: as set by accelerate launch, else no", choices=["no", "bf16", "fp16"]
    )
    max_grad_norm: float | None = option(1.0, "gradient clipping norm (none: no clipping)", ">0")
    loss: str = option(
        "auto", "emd (vote histograms), mse (scores) or auto (emd when histograms exist)", choices=FINETUNE_LOSSES
    )
    rank_loss_weight: float = option(0.0, "weight of a pairwise Bradley-Terry rank loss", ">=0")
    freeze_prefix_blocks: int | None = option(
        None, "freeze the embeddings and the first K encoder blocks (none: train all)", ">=0"
    )
    cache_prefix: str = option(
        "auto",
        "with freeze_prefix_blocks: run the frozen prefix once per image and train on its output, the same result "
        f"faster (auto: when those outputs take at most {PREFIX_CACHE_BUDGET_GIB} GiB per process)",
        choices=PREFIX_CACHING,
    )
    seed: int = option(0, "seed of the data order and dropout")
    eval_every_epoch: bool = option(True, "evaluate after every epoch (always at the end)")
    checkpoint_every: int | None = option(None, "save a resumable checkpoint every N steps and at the end", ">0")
    keep_checkpoints: int | None = option(2, "newest checkpoints kept (none: all)", ">0")
    num_workers: int = option(0, "data loading worker processes per training process", ">=0")
    gradient_checkpointing: bool = option(
        False, "keep only each encoder block's input and recompute the block in the backward pass (less memory)"
    )

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)
        check_fields(self)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "output_dir": str(self.output_dir)}
