"""The `taskvec-aesthetics` command.

Each subcommand is one `add_<name>(subparsers)` function that declares its arguments and sets `run` to a small
function calling one library function. To add a subcommand, write both and list `add_<name>` in `SUBCOMMANDS`.

Fine-tuning runs plain or under Accelerate, e.g. two CPU processes on one machine:

```bash
ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 --main_process_port 0 \\
    -m taskvec_aesthetics.cli finetune --database koniq10k --root data/koniq10k --base base --output runs/koniq10k
```
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import typing
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["main", "build_parser", "SUBCOMMANDS"]

logger = logging.getLogger(__name__)


def _optional(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        return None if text.lower() == "none" else kind(text)

    parse.__name__ = kind.__name__  # argparse names the type in its error messages
    return parse


def _add_config_arguments(parser: argparse.ArgumentParser, config_class: type, skip: Sequence[str] = ()) -> None:
    """One `--field-name` option per dataclass field, typed and documented from the field itself.

    Options left out keep the dataclass default, so the CLI and the library share one set of defaults.
    """
    hints = typing.get_type_hints(config_class)
    group = parser.add_argument_group(f"{config_class.__name__} options")
    for item in dataclasses.fields(config_class):
        if item.name in skip:
            continue
        hint = hints[item.name]
        args = typing.get_args(hint)
        optional = type(None) in args
        base = next((a for a in args if a is not type(None)), hint)
        default = item.default if item.default is not dataclasses.MISSING else None
        help_text = item.metadata.get("help", "")
        help_text += "" if "default" in help_text else f" (default: {default})"
        flag = "--" + item.name.replace("_", "-")
        if base is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
            continue
        kind = _optional(base) if optional else base
        choices = item.metadata.get("choices")
        group.add_argument(flag, type=kind, choices=choices, default=argparse.SUPPRESS,
                           metavar=None if choices else item.name.upper(), help=help_text)


def _config_from(args: argparse.Namespace, config_class: type, **values: Any) -> Any:
    names = {f.name for f in dataclasses.fields(config_class)}
    return config_class(**{k: v for k, v in vars(args).items() if k in names}, **values)


# -- init-base -----------------------------------------------------------------------------------------------------
def add_init_base(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "init-base", help="create a base model: a pretrained encoder plus a seeded score head",
        description="Create a base model from a local encoder folder, a Hub id (the vision tower of CLIP / SigLIP "
        "checkpoints is taken) or 'efficientnet-lite0-imagenet', and save it with save_pretrained.",
    )
    parser.add_argument("--encoder", required=True, help="encoder folder, Hub id or 'efficientnet-lite0-imagenet'")
    parser.add_argument("--output", required=True, help="folder to save the base model in")
    parser.add_argument("--seed", type=int, default=0, help="seed of the head's initialisation (default: 0)")
    parser.add_argument("--image-size", type=int, help="input resolution, for encoders that accept any size")
    parser.add_argument("--score-range", type=float, nargs=2, metavar=("LOW", "HIGH"),
                        help="scale of the predicted scores (default: 1 10)")
    parser.set_defaults(run=run_init_base)


def run_init_base(args: argparse.Namespace) -> None:
    from .bank_production import init_base

    extra = {"score_range": args.score_range} if args.score_range else {}
    model = init_base(args.encoder, seed=args.seed, image_size=args.image_size, save_directory=args.output, **extra)
    print(f"saved base model ({model.config.encoder_config.model_type} encoder, "
          f"{sum(p.numel() for p in model.parameters()):,} parameters) to {args.output}")


# -- finetune ------------------------------------------------------------------------------------------------------
def add_finetune(subparsers: Any) -> None:
    from .training import FinetuneConfig

    parser = subparsers.add_parser(
        "finetune", help="fine-tune the base model on one database (plain or under accelerate launch)",
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
    parser.add_argument("--eval-split", default="validation", type=_optional(str),
                        help="evaluation split, or 'none' (default: validation)")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of seeded splits (default: 0)")
    parser.add_argument("--skip-invalid", action="store_true", help="skip malformed rows and missing images")
    parser.add_argument("--resume", nargs="?", const="latest", default=None, metavar="CHECKPOINT",
                        help="resume from a checkpoint folder, or (no value) from the newest in OUTPUT/checkpoints")
    _add_config_arguments(parser, FinetuneConfig, skip=("output_dir",))
    parser.set_defaults(run=run_finetune)


def run_finetune(args: argparse.Namespace) -> None:
    from accelerate import PartialState

    from .training import FinetuneConfig, finetune_database

    config = _config_from(args, FinetuneConfig, output_dir=args.output)
    result = finetune_database(
        args.database, args.root, args.base, config, split=args.split, eval_split=args.eval_split,
        split_seed=args.split_seed, skip_invalid=args.skip_invalid, resume_from_checkpoint=args.resume,
    )
    if PartialState().is_main_process:
        scores = ", ".join(f"{k} {v:.4f}" for k, v in result.metrics.items()) or "no evaluation"
        print(f"fine-tuned on {result.num_images} images ({scores} on {result.num_eval_images}); saved to {args.output}")


# -- build-bank ----------------------------------------------------------------------------------------------------
def add_build_bank(subparsers: Any) -> None:
    from .bank import STORAGE_DTYPES

    parser = subparsers.add_parser(
        "build-bank", help="build a task-vector bank from fine-tuning runs of one base",
        description="Build a task-vector bank (bank_config.json + task_vectors/) from run folders written by "
        "'finetune', checking that every run started from the given base.",
    )
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders written by finetune")
    parser.add_argument("--base", required=True, help="the base model folder the runs started from")
    parser.add_argument("--output", required=True, help="bank folder")
    parser.add_argument("--storage-dtype", default="float32", choices=list(STORAGE_DTYPES),
                        help="dtype of the task files (default: float32)")
    parser.set_defaults(run=run_build_bank)


def run_build_bank(args: argparse.Namespace) -> None:
    from .bank_production import build_bank

    bank = build_bank(args.runs, args.base, storage_dtype=args.storage_dtype, save_directory=args.output)
    print(f"saved {bank!r} to {args.output}")


SUBCOMMANDS: tuple[Callable[[Any], None], ...] = (add_init_base, add_finetune, add_build_bank)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taskvec-aesthetics",
        description="Personalized image aesthetics with task vectors: build bases, fine-tune databases, build banks.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debugging details")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 success, 2 usage or input error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, or a usage error argparse already reported
        return int(exit_.code or 0)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("taskvec_aesthetics").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        args.run(args)
    except (ValueError, FileNotFoundError) as error:
        logger.debug("Details of the error", exc_info=True)
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
