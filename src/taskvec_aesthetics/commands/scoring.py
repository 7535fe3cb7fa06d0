"""Using a model: `score` images, `personalize` it to one person, `personalize-many` people at once."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..constants import COEFFICIENTS, EXPORTS, MERGED
from ..errors import InputError, MissingFileError
from ..personalization.config import PRESETS, PersonalizerConfig
from .options import (
    RATINGS_HELP,
    UNLABELED_HELP,
    add_compute_options,
    add_config_arguments,
    check_is_model,
    check_locations,
    compute_settings,
    config_values,
)

__all__ = ["add_personalize", "add_personalize_many", "add_score"]


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
    add_compute_options(parser, gradients=False)
    parser.set_defaults(run=run_score)


def run_score(args: argparse.Namespace) -> None:
    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:  # before the (slow) model load
        raise MissingFileError(f"no such image file or folder: {', '.join(missing)}")
    check_locations(args.model, revision=args.revision)
    from ..evaluation.scores_output import write_scores
    from ..modeling import AestheticModel
    from ..processing import list_images

    files = [f for p in args.paths for f in (list_images(p) if Path(p).is_dir() else [Path(p)])]
    import contextlib

    import torch

    settings = compute_settings(args)
    device, dtype = torch.device(settings["device"]), getattr(torch, settings["dtype"])
    model = AestheticModel.from_pretrained(args.model, revision=args.revision).to(device)
    half = dtype in (torch.bfloat16, torch.float16)
    with torch.autocast(device.type, dtype=dtype) if half else contextlib.nullcontext():
        scores = model.score([str(f) for f in files], batch_size=args.batch_size, progress=args.progress)
    print(write_scores(files, scores.tolist(), args.output))


# -- personalize ---------------------------------------------------------------------------------------------------
def add_personalize(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "personalize",
        help="fit a personalized model to one person's ratings or pairwise preferences",
        description="Fit task-vector coefficients to one person's ratings, or preferences between pairs of images, "
        "and save the personalized model as coefficients only (kilobytes) or merged. Where scoring with the output "
        "ensemble of the task models costs at most --max-scoring-cost times one model (a bank that covers only the top "
        "blocks), or with --preset ensemble, that ensemble competes too; when it wins, the model runs the covered "
        "blocks once per task model and is saved as an ensemble export (kilobytes). Given a personalized model, its "
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
        help="what to save (default: coefficients; ensemble when the output ensemble won, the only kind it saves as)",
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
        help="recipe; the options below override its values (default: default; paper: the authors' recipe; "
        "ensemble: the default plus the output ensemble itself as a candidate whatever it costs, which runs the "
        "covered blocks once per task model when it wins)",
    )
    parser.add_argument("--skip-invalid", action="store_true", help="skip malformed rows and missing images")
    add_config_arguments(parser, PersonalizerConfig)


def run_personalize(args: argparse.Namespace) -> None:
    check_locations(args.model, args.bank)
    from ..data import is_preferences_file, load_preferences, load_ratings
    from ..personalization.exports import resolve_export

    load = load_preferences if is_preferences_file(args.ratings) else load_ratings
    ratings = load(args.ratings, skip_invalid=args.skip_invalid)
    base, bank = _base_and_bank(args.model, args.bank)
    overrides = config_values(args, PersonalizerConfig)
    if args.export == MERGED:  # merged weights asked for: the output ensemble, which has none, must not compete
        if args.preset == "ensemble":
            raise InputError(
                "--export merged needs a one-pass model, but --preset ensemble lets the output ensemble (which has no "
                "merged weights) compete; use --export ensemble, or the default preset"
            )
        overrides.setdefault("max_scoring_cost", 0.0)
    model = base.personalize(
        ratings, bank=bank, preset=args.preset, progress=args.progress, unlabeled=args.unlabeled, **overrides
    )
    state = model.personalization
    export = resolve_export(model, args.export or COEFFICIENTS)  # an output ensemble saves as "ensemble"
    model.save_pretrained(args.output, export=export)
    if state.ensemble is not None:
        weights = ", ".join(f"{k} {v:+.3f}" for k, v in state.ensemble.task_weights().items())
        what = (
            f"the output ensemble won; weight per standardized task score: {weights}\n{state.info['scoring']['text']}"
        )
    else:
        weights = ", ".join(f"{k} {v:+.3f}" for k, v in state.coefficients.task_weights().items())
        what = f"mean coefficient per task: {weights}"
    given = (
        f"{state.info['num_pairs']} pairs" if state.info.get("num_pairs") else f"{state.info['num_ratings']} ratings"
    )
    print(
        f"personalized on {given} ({state.info['wall_time_s']:.1f} s); "
        f"{what}\n{state.info['cross_validation']['estimate']}\n"
        f"saved ({export}) to {args.output}"
    )


def _base_and_bank(model_location: str, bank_location: str | None) -> tuple[Any, Any]:
    """The base model to personalize and its bank: the given one, else the one the model refers to."""
    from ..modeling import AestheticModel
    from ..task_vectors.bank import TaskVectorBank

    check_is_model(model_location)
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
    check_locations(args.model, args.bank)
    from accelerate import PartialState

    from ..personalization.many import personalize_many

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
