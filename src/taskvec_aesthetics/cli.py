"""The `taskvec-aesthetics` command.

Each subcommand is one `add_<name>(subparsers)` function that declares its arguments and sets `run` to a small
function calling one library function. To add a subcommand, write both and list `add_<name>` in `SUBCOMMANDS`.

The command starts fast: this module imports nothing heavy (the settings classes whose fields become flags,
`FinetuneConfig` and `PersonalizerConfig`, live in the torch-free `settings` module), and each `run_<name>` imports
what it needs.

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
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .constants import (
    BANK_CONFIG_FILE,
    CARD_FILE,
    COEFFICIENTS,
    COEFFICIENTS_FILE,
    CONFIG_FILE,
    EXPORTS,
    MERGED,
    STORAGE_DTYPE_NAMES,
    WEIGHTS_FILE,
)
from .errors import InputError, MissingFileError, TaskvecAestheticsError
from .personalization.config import PRESETS, PersonalizerConfig
from .training.config import FinetuneConfig
from .utils.fields import field_kind
from .utils.io import read_json

__all__ = ["main", "build_parser", "push_saved", "saved_kind", "SUBCOMMANDS"]

logger = logging.getLogger(__name__)

# Stated here rather than imported, so that --help needs no heavy import; tests check them against the library.
BENCHMARK_METHODS = (  # benchmark.METHODS
    "single",
    "best_single",
    "uniform",
    "init",
    "paper",
    "default",
    "head_finetune",
    "full_finetune",
    "ensemble",
)
RATINGS_HELP = (
    "a ratings CSV, or an image folder with metadata.csv. Columns: the image (image, file_name or path; a relative "
    "path resolves against the CSV's folder), the score (score or rating)"
)


def _optional(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        return None if text.lower() == "none" else kind(text)

    parse.__name__ = kind.__name__  # argparse names the type in its error messages
    return parse


def add_config_arguments(parser: argparse.ArgumentParser, config_class: type, skip: Sequence[str] = ()) -> None:
    """One `--field-name` option per field of a settings dataclass (see `settings.option`), typed and documented
    from the field itself: its annotation, its `help`, its `choices`.

    Options left out keep the dataclass default (or the preset's), so the command line and the library share one
    set of defaults, and a field added to the class is a flag without more code. Fields marked `cli=False`, fields in
    ``skip`` and fields of a type a flag cannot hold are left out.
    """
    group = parser.add_argument_group(f"{config_class.__name__} options")
    for item in dataclasses.fields(config_class):
        kind = field_kind(item)
        if item.name in skip or not item.metadata.get("cli", True) or kind.scalar is None:
            continue
        default = item.default if item.default is not dataclasses.MISSING else None
        help_text = item.metadata.get("help", "")
        help_text += "" if "default" in help_text else f" (default: {default})"
        flag = "--" + item.name.replace("_", "-")
        if kind.scalar is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
            continue
        choices = item.metadata.get("choices")
        group.add_argument(
            flag,
            type=_optional(kind.scalar) if kind.optional and not kind.sequence else kind.scalar,
            nargs="+" if kind.sequence else None,
            choices=choices,
            default=argparse.SUPPRESS,
            metavar=None if choices else item.name.upper(),
            help=help_text,
        )


def config_values(args: argparse.Namespace, config_class: type) -> dict[str, Any]:
    """The fields of ``config_class`` given on the command line (fields without a flag are not read)."""
    names = {f.name for f in dataclasses.fields(config_class) if f.metadata.get("cli", True)}
    return {k: v for k, v in vars(args).items() if k in names}


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
    from .training.bank_building import init_base

    extra = {"score_range": args.score_range} if args.score_range else {}
    model = init_base(args.encoder, seed=args.seed, image_size=args.image_size, save_directory=args.output, **extra)
    print(
        f"saved base model ({model.config.encoder_config.model_type} encoder, "
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
        type=_optional(str),
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

    from .training.fine_tuning import finetune_database

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
    from .training.bank_building import build_bank

    bank = build_bank(args.runs, args.base, storage_dtype=args.storage_dtype, save_directory=args.output)
    print(f"saved {bank!r} to {args.output}")


# -- score ---------------------------------------------------------------------------------------------------------
def add_score(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "score",
        help="score images with a model (base, merged or coefficients-only)",
        description="Score image files and folders of images. Prints a table, or writes CSV / JSON with --output.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders of images")
    parser.add_argument("--model", required=True, help="model folder or Hub id (base, merged or coefficients-only)")
    parser.add_argument("--revision", help="Hub revision of the model")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: 32)")
    parser.add_argument("--output", help="write the scores to this .csv or .json file instead of printing them")
    _add_compute_options(parser, gradients=False)
    parser.set_defaults(run=run_score)


def run_score(args: argparse.Namespace) -> None:
    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:  # before the (slow) model load
        raise MissingFileError(f"no such image file or folder: {', '.join(missing)}")
    _check_locations(args.model, revision=args.revision)
    from .evaluation.scores_output import write_scores
    from .modeling import AestheticModel
    from .processing import list_images

    files = [f for p in args.paths for f in (list_images(p) if Path(p).is_dir() else [Path(p)])]
    import contextlib

    import torch

    settings = _compute_settings(args)
    device, dtype = torch.device(settings["device"]), getattr(torch, settings["dtype"])
    model = AestheticModel.from_pretrained(args.model, revision=args.revision).to(device)
    half = dtype in (torch.bfloat16, torch.float16)
    with torch.autocast(device.type, dtype=dtype) if half else contextlib.nullcontext():
        scores = model.score([str(f) for f in files], batch_size=args.batch_size, progress=args.progress)
    print(write_scores(files, scores.tolist(), args.output))


def _check_locations(model: str | None, bank: str | None = None, revision: str | None = None) -> None:
    """A model or bank that is neither a folder nor a Hub repository fails now, before the slow imports and loads."""
    from .hub.repository import locate

    if model is not None:
        _check_is_model(model)
        locate(model, "model", revision=revision)
    if bank is not None:
        locate(bank, "bank")


def _check_is_model(location: str) -> None:
    """A saved bank passed where a model is expected gets an error that says so."""
    if (Path(location) / BANK_CONFIG_FILE).is_file():
        raise InputError(
            f"{location} is a task-vector bank ({BANK_CONFIG_FILE}), not a model: pass it as --bank, and its base "
            "model (the folder or Hub id its card names) as --model"
        )


def _add_compute_options(parser: argparse.ArgumentParser, gradients: bool = True) -> None:
    """--device and --dtype (and, where gradients are computed, --micro-batch-size and --gradient-checkpointing)."""
    parser.add_argument("--device", default="auto", help="auto (a GPU when there is one, default), cpu, cuda, cuda:N")
    parser.add_argument(
        "--dtype",
        choices=("auto", "float32", "bfloat16", "float16"),
        default="auto",
        help="precision of the network (autocast; weights stay float32). auto (default): bfloat16 on a GPU, "
        "float32 on the CPU",
    )
    if gradients:
        parser.add_argument(
            "--micro-batch-size",
            type=int,
            help="images whose activations are held at once; the gradient stays exactly the batch's (default: the "
            "whole batch when it fits the activation budget)",
        )
        parser.add_argument(
            "--gradient-checkpointing",
            action="store_true",
            help="recompute each encoder block in the backward pass: less memory, about a third more compute",
        )


def _compute_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The PersonalizerConfig fields of the compute options, with auto resolved."""
    from .personalization.optimisation import resolve_device, resolve_dtype

    device = resolve_device(args.device)
    dtype = str(resolve_dtype(args.dtype, device)).removeprefix("torch.")
    settings: dict[str, Any] = {"device": str(device), "dtype": dtype}
    for name in ("batch_size", "micro_batch_size"):
        if getattr(args, name, None) is not None:
            settings[name] = getattr(args, name)
    if getattr(args, "gradient_checkpointing", False):
        settings["gradient_checkpointing"] = True
    return settings


# -- personalize ---------------------------------------------------------------------------------------------------
UNLABELED_HELP = (
    "a folder of the person's photos without ratings (for example those to be ranked): the distil candidate learns "
    "to reproduce the output ensemble of the task models on them"
)


def add_personalize(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "personalize",
        help="fit a personalized model to one person's ratings or pairwise preferences",
        description="Fit task-vector coefficients to one person's ratings, or preferences between pairs of images, "
        "and save the personalized model as coefficients only (kilobytes) or merged. Given a personalized model, its "
        "base is personalized again with the new ratings.",
    )
    parser.add_argument(
        "--ratings",
        required=True,
        help=RATINGS_HELP + "; or a preferences CSV with columns image_a, image_b (paths resolved the same way) and "
        "preferred (a, b or tie).",
    )
    parser.add_argument("--model", required=True, help="base model folder or Hub id, or a personalized model")
    parser.add_argument(
        "--bank",
        help="bank folder or Hub id (default: the bank the model refers to: a personalized model's, or the `bank` "
        "of the model's config.json)",
    )
    parser.add_argument("--output", required=True, help="folder to save the personalized model in")
    parser.add_argument(
        "--export",
        choices=EXPORTS,
        default=COEFFICIENTS,
        help="what to save (default: coefficients)",
    )
    parser.add_argument("--unlabeled", metavar="DIR", help=UNLABELED_HELP)
    _add_recipe_options(parser)
    parser.set_defaults(run=run_personalize)


def _add_recipe_options(parser: argparse.ArgumentParser) -> None:
    """The options of the personalization recipe: a preset, every `PersonalizerConfig` field, --skip-invalid."""
    parser.add_argument(
        "--preset",
        choices=PRESETS,
        default="default",
        help="recipe; the options below override its values (default: default; paper: the authors' recipe)",
    )
    parser.add_argument("--skip-invalid", action="store_true", help="skip malformed rows and missing images")
    add_config_arguments(parser, PersonalizerConfig)


def run_personalize(args: argparse.Namespace) -> None:
    _check_locations(args.model, args.bank)
    from .data import is_preferences_file, load_preferences, load_ratings

    load = load_preferences if is_preferences_file(args.ratings) else load_ratings
    ratings = load(args.ratings, skip_invalid=args.skip_invalid)
    base, bank = _base_and_bank(args.model, args.bank)
    overrides = config_values(args, PersonalizerConfig)
    model = base.personalize(
        ratings, bank=bank, preset=args.preset, progress=args.progress, unlabeled=args.unlabeled, **overrides
    )
    model.save_pretrained(args.output, export=args.export)
    state = model.personalization
    weights = ", ".join(f"{k} {v:+.3f}" for k, v in state.coefficients.task_weights().items())
    given = (
        f"{state.info['num_pairs']} pairs" if state.info.get("num_pairs") else f"{state.info['num_ratings']} ratings"
    )
    print(
        f"personalized on {given} ({state.info['wall_time_s']:.1f} s); "
        f"mean coefficient per task: {weights}\n{state.info['cross_validation']['estimate']}\n"
        f"saved ({args.export}) to {args.output}"
    )


def _base_and_bank(model_location: str, bank_location: str | None) -> tuple[Any, Any]:
    """The base model to personalize and its bank: the given one, else the one the model refers to."""
    from .modeling import AestheticModel
    from .task_vectors.bank import TaskVectorBank

    _check_is_model(model_location)
    model = AestheticModel.from_pretrained(model_location)
    state = model.personalization
    if state is not None:  # a personalized model: personalize its base again
        if state.base.location is None:
            raise InputError(f"{model_location} is personalized but does not record where its base model lives")
        model = AestheticModel.from_pretrained(state.base.location, **state.base.load_kwargs())
    if bank_location is not None:
        return model, TaskVectorBank.from_pretrained(bank_location, base=model)
    if state is not None and state.bank is not None:
        return model, state.bank
    reference = state.bank_ref if state is not None else model.config.bank_reference
    if reference is None or reference.location is None:
        raise InputError(f"{model_location} refers to no bank (its config.json has no `bank`): pass --bank")
    revision = reference.load_kwargs().get("revision")
    return model, TaskVectorBank.from_pretrained(reference.location, revision=revision, base=model)


# -- personalize-many ----------------------------------------------------------------------------------------------
def add_personalize_many(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "personalize-many",
        help="personalize every user of a ratings table (batched, resumable, runs under accelerate launch)",
        description="Fit every user of a ratings table with a user_id column and write OUTPUT/users/<user>/ (a "
        "coefficients-only export each), OUTPUT/summary.csv and OUTPUT/summary.json. Each image is encoded once "
        "and its features cached; a rerun skips users already written; a user whose ratings are bad gets an error "
        "in the summary. Under 'accelerate launch --num_processes N -m taskvec_aesthetics.cli personalize-many ...' "
        "the users are split across the processes.",
    )
    parser.add_argument(
        "--ratings", required=True, help=RATINGS_HELP + ", and the rater (user_id); or a .parquet table."
    )
    parser.add_argument("--model", required=True, help="base model folder or Hub id")
    parser.add_argument("--bank", help="bank folder or Hub id (default: the one the model refers to)")
    parser.add_argument("--output", required=True, help="output folder (reuse it to resume)")
    parser.add_argument("--batch-users", type=int, default=16, help="users fitted at once (default: 16)")
    parser.add_argument("--cache-dir", help="feature cache folder (default: OUTPUT/feature_cache)")
    parser.add_argument("--retry-failed", action="store_true", help="fit again users with a recorded error")
    parser.add_argument("--unlabeled", metavar="DIR", help=UNLABELED_HELP)
    _add_recipe_options(parser)
    parser.set_defaults(run=run_personalize_many)


def run_personalize_many(args: argparse.Namespace) -> None:
    _check_locations(args.model, args.bank)
    from accelerate import PartialState

    from .personalization.many import personalize_many

    config = PersonalizerConfig.from_preset(args.preset, **config_values(args, PersonalizerConfig))
    base, bank = _base_and_bank(args.model, args.bank)
    result = personalize_many(
        base,
        bank,
        args.ratings,
        args.output,
        config,
        batch_users=args.batch_users,
        cache_dir=args.cache_dir,
        retry_failed=args.retry_failed,
        skip_invalid=args.skip_invalid,
        progress=args.progress,
        unlabeled=args.unlabeled,
    )
    if PartialState().is_main_process:
        print(result.report())


# -- demo ----------------------------------------------------------------------------------------------------------
def add_demo(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the offline demo: real photos, simulated databases and raters, end to end",
        description="Build a small world from real photographs (simulated databases and raters with known tastes), "
        "fine-tune a bank on an ImageNet EfficientNet-Lite0 (cached for later runs), personalize every rater with "
        "k ratings, and compare every method. Writes the table (JSON, markdown), a figure and two exports. The "
        "base and bank are cached in --cache-dir, else $TASKVEC_AESTHETICS_CACHE, else "
        "$XDG_CACHE_HOME/taskvec-aesthetics, else ~/.cache/taskvec-aesthetics.",
    )
    parser.add_argument("--quick", action="store_true", help="a tiny world: minutes even with an empty cache")
    parser.add_argument("--output", default="demo_output", help="folder for the results (default: demo_output)")
    parser.add_argument(
        "--cache-dir",
        help="where the base and bank are cached (default: $TASKVEC_AESTHETICS_CACHE, else "
        "$XDG_CACHE_HOME/taskvec-aesthetics, else ~/.cache/taskvec-aesthetics)",
    )
    parser.set_defaults(run=run_demo)


def run_demo(args: argparse.Namespace) -> None:
    from .demo.runner import DemoConfig
    from .demo.runner import run_demo as demo

    config = DemoConfig.preset("quick" if args.quick else "default")
    result = demo(config, args.output, args.cache_dir, progress=args.progress)
    print(result.report())


# -- benchmark -----------------------------------------------------------------------------------------------------
def add_benchmark(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "benchmark",
        help="run the few-shot PIAA protocol on a database with per-user ratings",
        description="For every user and repeat, draw k rated images, personalize with every method, and test on "
        "the user's other images. No test image takes part in any choice. Writes results.json, results.md and "
        "results.png into --output.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--database", help="registered PIAA database, e.g. flickr-aes (with --root)")
    source.add_argument("--ratings", help=RATINGS_HELP + ", and the rater (user_id).")
    parser.add_argument("--root", help="the database folder as distributed")
    parser.add_argument(
        "--split", default="test", help="database split (default: test; FLICKR-AES: the 37 test workers)"
    )
    parser.add_argument("--model", required=True, help="base model folder or Hub id")
    parser.add_argument("--bank", required=True, help="bank folder or Hub id")
    parser.add_argument("--shots", type=int, nargs="+", default=[10, 100], help="k values (default: 10 100)")
    parser.add_argument("--repeats", type=int, default=10, help="draws per user and k (default: 10)")
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=BENCHMARK_METHODS,
        default=list(BENCHMARK_METHODS),
        metavar="METHOD",
        help=f"methods to run, of {', '.join(BENCHMARK_METHODS)} (default: all)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws (default: 0)")
    parser.add_argument("--output", default="benchmark_output", help="results folder (default: benchmark_output)")
    parser.add_argument("--batch-size", type=int, help="rated images per optimisation step (default: each recipe's)")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes that run the draws in parallel on a CPU, torch's threads shared among them (default: 1)",
    )
    subsets = parser.add_argument_group("gains with the number of databases (writes gains.json, .md and .png)")
    orders = subsets.add_mutually_exclusive_group()
    orders.add_argument(
        "--order",
        nargs="+",
        metavar="TASK",
        help="also run the protocol on nested subsets of the bank, adding its tasks in this order (the first alone, "
        "the first two, ...)",
    )
    orders.add_argument(
        "--random-orders",
        type=int,
        metavar="N",
        help="as --order, for N seeded random orders of all tasks (every size, averaged over the subsets reached)",
    )
    _add_reference_option(subsets)
    _add_compute_options(parser)
    parser.set_defaults(run=run_benchmark)


def run_benchmark(args: argparse.Namespace) -> None:
    if args.database and not args.root:
        raise InputError("--database needs --root, the folder of the database as distributed")
    _check_locations(args.model, args.bank)
    from .data import load_database, load_ratings
    from .experiments.benchmark import BenchmarkConfig
    from .experiments.benchmark import run_benchmark as benchmark
    from .modeling import AestheticModel
    from .personalization.config import PersonalizerConfig
    from .task_vectors.bank import TaskVectorBank

    references = _references(args.reference)
    compute = _compute_settings(args)
    dataset = (
        load_database(args.database, args.root, split=args.split) if args.database else load_ratings(args.ratings)
    )
    base = AestheticModel.from_pretrained(args.model)
    bank = TaskVectorBank.from_pretrained(args.bank, base=base)
    config = BenchmarkConfig(
        shots=tuple(args.shots),
        repeats=args.repeats,
        methods=tuple(args.methods),
        seed=args.seed,
        workers=args.workers,
        progress=args.progress,
        personalizer=PersonalizerConfig(**compute),
        paper=PersonalizerConfig.from_preset("paper", **compute),
    )
    gains_paths: dict[str, Path] = {}
    if args.order or args.random_orders:
        from .experiments.analysis import benchmark_gains, subset_orders

        orders = subset_orders(bank.task_names, args.order, args.random_orders or 0, seed=args.seed)
        gains, results = benchmark_gains(base, bank, dataset, config, orders, references)
        result = max(results.values(), key=lambda r: len(r.task_names))  # the whole bank, or the longest order
        gains_paths = gains.save(args.output)
        print(gains.to_markdown())
    else:
        result = benchmark(base, bank, dataset, config)
    paths = {**result.save(args.output), **{f"gains {kind}": path for kind, path in gains_paths.items()}}
    if "single" in config.methods:
        from .experiments.analysis import zero_shot_per_user

        zero_shot = zero_shot_per_user(result).save(args.output)
        paths.update({f"zero-shot {kind}": path for kind, path in zero_shot.items()})
    print(result.to_markdown() + "\n" + "\n".join(f"{kind}: {path}" for kind, path in paths.items()))


# -- analyze -------------------------------------------------------------------------------------------------------
def _add_reference_option(parser: Any) -> None:
    parser.add_argument(
        "--reference",
        action="append",
        default=[],
        metavar="LABEL=SROCC",
        help="a reference line on the gains figure, e.g. 'previous best=0.71' (every k) or 'previous best@10=0.66' "
        "(one k); repeatable",
    )


def _references(items: Sequence[str]) -> dict[str, Any]:
    """``LABEL=SROCC`` / ``LABEL@K=SROCC`` items as `GainsResult.references`."""
    references: dict[str, Any] = {}
    for item in items:
        label, _, value = item.rpartition("=")
        label, at, k = label.rpartition("@") if "@" in label else (label, "", "")
        try:
            number = float(value)
            if at:
                references.setdefault(label, {})[int(k)] = number
            else:
                references[label] = number
        except ValueError:
            raise InputError(f"--reference expects LABEL=SROCC or LABEL@K=SROCC, received {item!r}") from None
        if not label:
            raise InputError(f"--reference expects LABEL=SROCC or LABEL@K=SROCC, received {item!r}")
    return references


def add_analyze(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "analyze",
        help="the paper's analyses: task-vector similarity, gains with the number of databases, zero-shot per user",
        description="Each analysis prints its table and writes it (JSON, markdown) with its figure into --output.",
    )
    analyses = parser.add_subparsers(dest="analysis", required=True, metavar="ANALYSIS")
    similarity = analyses.add_parser(
        "similarity",
        help="cosine similarities between a bank's task vectors, over all parameters and per layer group",
        description="Streams the bank tensor by tensor (memory: about one tensor's task slices). The layer groups "
        "come from the base model's config (--model, else the base the bank records); --granularity task needs "
        "no model.",
    )
    similarity.add_argument("bank", help="bank folder or Hub id")
    similarity.add_argument("--model", help="base model folder or Hub id (default: the base the bank records)")
    similarity.add_argument("--granularity", choices=("task", "layer"), default="layer", help="(default: layer)")
    similarity.add_argument("--output", default="analysis_output", help="folder (default: analysis_output)")
    similarity.set_defaults(run=run_analyze_similarity)
    gains = analyses.add_parser(
        "gains",
        help="redraw the SROCC-vs-number-of-databases table and figure from a gains.json",
        description="The gains are computed by `benchmark --order ...` or `--random-orders N`; this redraws them, "
        "e.g. with other reference lines.",
    )
    gains.add_argument("gains", help="a gains.json written by benchmark")
    _add_reference_option(gains)
    gains.add_argument("--output", default="analysis_output", help="folder (default: analysis_output)")
    gains.set_defaults(run=run_analyze_gains)
    zero_shot = analyses.add_parser(
        "zero-shot",
        help="each database model's zero-shot SROCC per user, from a benchmark's results.json",
    )
    zero_shot.add_argument("results", help="a results.json written by benchmark (with method single)")
    zero_shot.add_argument("--k", type=int, help="the draws' number of rated images (default: the smallest)")
    zero_shot.add_argument("--output", default="analysis_output", help="folder (default: analysis_output)")
    zero_shot.set_defaults(run=run_analyze_zero_shot)


def run_analyze_similarity(args: argparse.Namespace) -> None:
    import torch

    from .configuration import AestheticConfig
    from .modeling import AestheticModel
    from .task_vectors.bank import TaskVectorBank

    bank = TaskVectorBank.from_pretrained(args.bank)
    groups = None
    if args.granularity == "layer":
        location = args.model or bank.base.location
        if location is None:
            raise InputError(f"{args.bank} records no base model: pass --model, or --granularity task")
        _check_is_model(location)
        kwargs = {} if args.model else bank.base.load_kwargs()
        with torch.device("meta"):  # the layer groups need the architecture, not the weights
            groups = AestheticModel(AestheticConfig.from_pretrained(location, **kwargs)).parameter_groups()
    similarity = bank.similarity(args.granularity, groups=groups, progress=args.progress)
    paths = similarity.save(args.output)
    print(similarity.to_markdown() + "\n".join(f"{kind}: {path}" for kind, path in paths.items()))


def run_analyze_gains(args: argparse.Namespace) -> None:
    from .experiments.analysis import GainsResult

    gains = GainsResult.from_dict(read_json(args.gains, "a gains.json (benchmark --order or --random-orders)"))
    gains.references.update(_references(args.reference))
    paths = gains.save(args.output)
    print(gains.to_markdown() + "\n".join(f"{kind}: {path}" for kind, path in paths.items()))


def run_analyze_zero_shot(args: argparse.Namespace) -> None:
    from .experiments.analysis import load_benchmark_result, zero_shot_per_user

    zero_shot = zero_shot_per_user(load_benchmark_result(args.results), k=args.k)
    paths = zero_shot.save(args.output)
    print(zero_shot.to_markdown() + "\n".join(f"{kind}: {path}" for kind, path in paths.items()))


# -- push ----------------------------------------------------------------------------------------------------------
def add_push(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "push",
        help="push a saved model, coefficients export or task-vector bank to the Hub",
        description="Upload a folder written by save_pretrained (a base or merged model, a coefficients-only "
        "personalized model or a task-vector bank, told apart by its files) to a Hub repository in one commit, with "
        "its model card. The folder is loaded first, so a coefficients export whose base or bank cannot be resolved "
        "is never published. Authenticate with `hf auth login` or the HF_TOKEN variable.",
    )
    parser.add_argument("path", help="the saved folder")
    parser.add_argument("repo_id", help="Hub repository, e.g. user/my-aesthetic-model (created if missing)")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument(
        "--revision",
        "--branch",
        dest="revision",
        metavar="BRANCH",
        help="branch to push to, created from main if missing (default: main)",
    )
    parser.add_argument(
        "--export",
        choices=EXPORTS,
        help="personalized models: push merged weights or coefficients only (default: as saved)",
    )
    parser.add_argument("--commit-message", help="message of the commit")
    parser.add_argument("--license", help="license of the card metadata (default: other)")
    parser.add_argument(
        "--overwrite-card",
        action="store_true",
        help="replace a README.md you wrote (in the folder or on the Hub) with the generated card",
    )
    parser.set_defaults(run=run_push)


def run_push(args: argparse.Namespace) -> None:
    commit = push_saved(
        args.path,
        args.repo_id,
        export=args.export,
        private=args.private or None,
        revision=args.revision,
        commit_message=args.commit_message,
        overwrite_card=args.overwrite_card,
        license=args.license,
    )
    print(f"pushed {args.path} to {commit.repo_url.repo_id} at commit {commit.oid}: {commit.commit_url}")


def saved_kind(path: str | Path) -> str:
    """What a saved folder holds: `"bank"`, `"coefficients"` (a coefficients-only export) or `"model"`."""
    folder = Path(path)
    if (folder / BANK_CONFIG_FILE).is_file():
        return "bank"
    if (folder / CONFIG_FILE).is_file():
        config = read_json(folder / CONFIG_FILE, "a model config")
        if config.get("base_model"):
            return COEFFICIENTS
        if any(folder.glob("model*.safetensors")):
            return "model"
    found = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else "no such folder"
    raise InputError(
        f"{path} is not a saved model or bank: expected {BANK_CONFIG_FILE}, or {CONFIG_FILE} with {WEIGHTS_FILE} or "
        f"{COEFFICIENTS_FILE}; found {found}"
    )


def push_saved(
    path: str | Path,
    repo_id: str,
    *,
    export: str | None = None,
    overwrite_card: bool = False,
    **push: Any,
) -> Any:
    """Push a folder written by `save_pretrained`: a base or merged model, a coefficients export or a bank.

    The folder is loaded first (a coefficients export resolves its base and bank, so a broken export is never
    published). A `README.md` the user wrote in the folder is pushed as the card, unless ``overwrite_card``.

    Args:
        path: the saved folder.
        repo_id: the Hub repository (created if missing).
        export: for personalized models, `"merged"` or `"coefficients"`; by default as saved.
        overwrite_card: replace a user-written card, in the folder and on the Hub, with the generated one.
        **push: the other arguments of `push_to_hub` (`private`, `token`, `revision`, `commit_message`, `license`).
    """
    from .hub.cards import is_generated_card
    from .modeling import AestheticModel
    from .task_vectors.bank import TaskVectorBank

    kind = saved_kind(path)
    readme = Path(path) / CARD_FILE
    text = readme.read_text(encoding="utf-8") if readme.is_file() else None
    card = text if text is not None and not overwrite_card and not is_generated_card(text) else None
    if kind == "bank":
        if export is not None:
            raise InputError(f"{path} is a task-vector bank: export={export!r} applies to personalized models only")
        return TaskVectorBank.from_pretrained(path).push_to_hub(
            repo_id, overwrite_card=overwrite_card, card=card, **push
        )
    model = AestheticModel.from_pretrained(path)
    export = export or (COEFFICIENTS if kind == COEFFICIENTS else MERGED)
    return model.push_to_hub(repo_id, export=export, overwrite_card=overwrite_card, card=card, **push)


# -- app -----------------------------------------------------------------------------------------------------------
def add_app(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "app",
        help="serve the web app: rate a few photos, get a model of your taste (needs the `app` extra)",
        description="A Gradio page where visitors rate photos one at a time, personalize, "
        "see their unrated photos ranked, and download or push their model. With no arguments it uses the demo's "
        "base model, bank and photos, building them on first use (minutes on a CPU).",
    )
    parser.add_argument("--model", help="base model folder or Hub id (default: the demo's)")
    parser.add_argument("--bank", help="task-vector bank folder or Hub id (default: the one --model refers to)")
    parser.add_argument("--photos", help="folder of photos to rate (default: the demo's photo pool)")
    parser.add_argument("--port", type=int, help="port to serve on (default: 7860, or the next free one)")
    parser.add_argument("--cache-dir", help="where the demo's base and bank are cached")
    parser.add_argument(
        "--push-demo",
        metavar="NAMESPACE",
        help="instead of serving: push the demo's base, bank and photos to NAMESPACE on the Hub for a Space, and "
        "print the Space variables to set",
    )
    parser.set_defaults(run=run_app)


def run_app(args: argparse.Namespace) -> None:
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise InputError("the app needs Gradio: pip install 'taskvec-aesthetics[app]'") from None
    if args.push_demo:
        from .app.space import push_demo

        for name, repo_id in push_demo(args.push_demo, cache_dir=args.cache_dir).items():
            print(f"{name}={repo_id}")
        return
    from .app import serve

    serve(args.model, args.bank, args.photos, args.port, args.cache_dir)


SUBCOMMANDS: tuple[Callable[[Any], None], ...] = (
    add_demo,
    add_score,
    add_personalize,
    add_personalize_many,
    add_benchmark,
    add_analyze,
    add_init_base,
    add_finetune,
    add_build_bank,
    add_push,
    add_app,
)


def build_parser() -> argparse.ArgumentParser:
    """The parser of the command line (built without importing torch, transformers or datasets)."""
    parser = argparse.ArgumentParser(
        prog="taskvec-aesthetics",
        description="Personalized image aesthetics with task vectors: score, personalize, benchmark, and produce "
        "banks (init-base, finetune, build-bank). Progress bars follow --quiet and TQDM_DISABLE=1.",
    )
    _add_global_options(parser, default=False)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(subparsers)
    for subparser in subparsers.choices.values():  # accepted after the subcommand too
        _add_global_options(subparser, default=argparse.SUPPRESS)
    return parser


def _add_global_options(parser: argparse.ArgumentParser, default: Any) -> None:
    """--verbose and --quiet; a subcommand's copy has no default, so it keeps what was given before the subcommand."""
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default,
        help="log debugging details and show transformers' loading bars",
    )
    verbosity.add_argument(
        "-q", "--quiet", action="store_true", default=default, help="print warnings, errors and results only"
    )


@contextmanager
def _output(args: argparse.Namespace) -> Iterator[None]:
    """Log through tqdm (a log line never breaks a progress bar); quiet transformers' own bars unless --verbose.

    Sets `args.progress` for the command's own bars (off with --quiet or TQDM_DISABLE=1). What it changes in the
    logging set-up is undone afterwards.
    """
    from tqdm.auto import tqdm
    from transformers.utils import logging as transformers_logging

    class TqdmHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                tqdm.write(self.format(record), file=sys.stderr)
            except Exception:  # logging must never raise
                self.handleError(record)

    root, ours = logging.getLogger(), logging.getLogger("taskvec_aesthetics")
    handler = TqdmHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    added = not root.handlers  # like logging.basicConfig: keep a set-up the caller made
    if added:
        root.addHandler(handler)
    level, bars = ours.level, transformers_logging.is_progress_bar_enabled()
    ours.setLevel(logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO)
    transformers_logging.disable_default_handler()  # transformers' messages go through the root's handlers
    transformers_logging.enable_propagation()
    if not args.verbose:  # the loads and saves a command makes on the user's behalf show no bars of their own
        transformers_logging.disable_progress_bar()
    args.progress = not args.quiet and os.environ.get("TQDM_DISABLE", "").lower() not in ("1", "true", "yes")
    try:
        yield
    finally:
        if added:
            root.removeHandler(handler)
        ours.setLevel(level)
        transformers_logging.disable_propagation()
        transformers_logging.enable_default_handler()
        if bars:
            transformers_logging.enable_progress_bar()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 success, 2 usage or input error)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, or a usage error argparse already reported
        return int(exit_.code or 0)
    if args.verbose and args.quiet:  # one before the subcommand, the other after it
        print(f"{parser.prog}: error: argument -q/--quiet: not allowed with argument -v/--verbose", file=sys.stderr)
        return 2
    with _output(args):
        try:
            args.run(args)
        # Library errors, bad input, missing files, Hub errors (HfHubHTTPError is an OSError): one line, no traceback.
        except (TaskvecAestheticsError, ValueError, OSError) as error:
            logger.debug("Details of the error", exc_info=True)
            message = " ".join(str(error).split())
            if "skip_invalid" in vars(args):  # advice in the command's own terms
                message = message.replace("pass skip_invalid=True", "pass --skip-invalid")
            print(f"error: {message}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
