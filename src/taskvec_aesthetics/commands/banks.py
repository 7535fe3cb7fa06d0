"""Producing a bank: `init-base`, `finetune` (plain or under `accelerate launch`) and `build-bank`.

Fine-tuning runs plain or under Accelerate, e.g. two CPU processes on one machine:

```bash
ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 --main_process_port 0 \\
    -m taskvec_aesthetics.cli finetune --database koniq10k --root data/koniq10k --base base --output runs/koniq10k
```
"""

from __future__ import annotations

import argparse
from typing import Any

from ..constants import STORAGE_DTYPE_NAMES
from ..training.config import FinetuneConfig
from .options import add_config_arguments, config_values, optional

__all__ = ["add_build_bank", "add_finetune", "add_init_base"]


# -- init-base -----------------------------------------------------------------------------------------------------
def add_init_base(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "init-base",
        help="create a base model: a pretrained encoder plus a seeded score head",
        description="Create a base model from a local encoder folder, a Hub id (the vision tower of CLIP / SigLIP "
        "checkpoints is taken) or 'efficientnet-lite0-imagenet', and save it with save_pretrained.",
    )
    parser.add_argument("--encoder", required=True, help="encoder folder, Hub id or 'efficientnet-lite0-imagenet'")
    parser.add_argument("--output", required=True, help="folder to save the base model in")
    parser.add_argument("--seed", type=int, default=0, help="seed of the head's initialisation (default: 0)")
    parser.add_argument("--image-size", type=int, help="input resolution, for encoders that accept any size")
    parser.add_argument(
        "--score-range",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="scale of the predicted scores (default: 1 10)",
    )
    parser.set_defaults(run=run_init_base)


def run_init_base(args: argparse.Namespace) -> None:
    from transformers import PreTrainedConfig

    from ..training.bank_building import init_base

    extra = {"score_range": args.score_range} if args.score_range else {}
    model = init_base(args.encoder, seed=args.seed, image_size=args.image_size, save_directory=args.output, **extra)
    encoder = model.config.encoder_config
    assert isinstance(encoder, PreTrainedConfig)  # a made config holds its encoder's as a config, never a dict
    print(
        f"saved base model ({encoder.model_type} encoder, "
        f"{sum(p.numel() for p in model.parameters()):,} parameters) to {args.output}"
    )


# -- finetune ------------------------------------------------------------------------------------------------------
def add_finetune(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune the base model on one database (plain or under accelerate launch)",
        description="Fine-tune a copy of the base model on one database loaded from its official files, with "
        "Accelerate. Writes OUTPUT/model, OUTPUT/finetune_result.json and, with --checkpoint-every, "
        "OUTPUT/checkpoints. Run it under 'accelerate launch -m taskvec_aesthetics.cli finetune ...' for several "
        "processes.",
    )
    parser.add_argument("--database", required=True, help="registered database name, e.g. koniq10k")
    parser.add_argument("--root", required=True, help="the database folder as distributed")
    parser.add_argument("--base", required=True, help="base model folder (from init-base)")
    parser.add_argument("--output", required=True, help="run folder")
    parser.add_argument("--split", default="train", help="training split (default: train)")
    parser.add_argument(
        "--eval-split",
        default="validation",
        type=optional(str),
        help="evaluation split, or 'none' (default: validation)",
    )
    parser.add_argument("--split-seed", type=int, default=0, help="seed of seeded splits (default: 0)")
    parser.add_argument("--skip-invalid", action="store_true", help="skip malformed rows and missing images")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        default=None,
        metavar="CHECKPOINT",
        help="resume from a checkpoint folder, or (no value) from the newest in OUTPUT/checkpoints",
    )
    add_config_arguments(parser, FinetuneConfig, skip=("output_dir",))
    parser.set_defaults(run=run_finetune)


def run_finetune(args: argparse.Namespace) -> None:
    from accelerate import PartialState

    from ..training.fine_tuning import finetune_database

    config = FinetuneConfig(**config_values(args, FinetuneConfig), output_dir=args.output)
    result = finetune_database(
        args.database,
        args.root,
        args.base,
        config,
        split=args.split,
        eval_split=args.eval_split,
        split_seed=args.split_seed,
        skip_invalid=args.skip_invalid,
        resume_from_checkpoint=args.resume,
    )
    if PartialState().is_main_process:
        scores = ", ".join(f"{k} {v:.4f}" for k, v in result.metrics.items()) or "no evaluation"
        print(
            f"fine-tuned on {result.num_images} images ({scores} on {result.num_eval_images}); saved to {args.output}"
        )


# -- build-bank ----------------------------------------------------------------------------------------------------
def add_build_bank(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "build-bank",
        help="build a task-vector bank from fine-tuning runs of one base",
        description="Build a task-vector bank (bank_config.json + task_vectors/) from run folders written by "
        "'finetune', checking that every run started from the given base.",
    )
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders written by finetune")
    parser.add_argument("--base", required=True, help="the base model folder the runs started from")
    parser.add_argument("--output", required=True, help="bank folder")
    parser.add_argument(
        "--storage-dtype",
        default="float32",
        choices=list(STORAGE_DTYPE_NAMES),
        help="dtype of the task files (default: float32)",
    )
    parser.set_defaults(run=run_build_bank)


def run_build_bank(args: argparse.Namespace) -> None:
    from ..training.bank_building import build_bank

    bank = build_bank(args.runs, args.base, storage_dtype=args.storage_dtype, save_directory=args.output)
    print(f"saved {bank!r} to {args.output}")
