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
from pathlib import Path
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
        group.add_argument(
            flag,
            type=kind,
            choices=choices,
            default=argparse.SUPPRESS,
            metavar=None if choices else item.name.upper(),
            help=help_text,
        )


def _config_from(args: argparse.Namespace, config_class: type, **values: Any) -> Any:
    names = {f.name for f in dataclasses.fields(config_class)}
    return config_class(**{k: v for k, v in vars(args).items() if k in names}, **values)


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
    from .bank_production import init_base

    extra = {"score_range": args.score_range} if args.score_range else {}
    model = init_base(args.encoder, seed=args.seed, image_size=args.image_size, save_directory=args.output, **extra)
    print(
        f"saved base model ({model.config.encoder_config.model_type} encoder, "
        f"{sum(p.numel() for p in model.parameters()):,} parameters) to {args.output}"
    )


# -- finetune ------------------------------------------------------------------------------------------------------
def add_finetune(subparsers: Any) -> None:
    from .training import FinetuneConfig

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
    _add_config_arguments(parser, FinetuneConfig, skip=("output_dir",))
    parser.set_defaults(run=run_finetune)


def run_finetune(args: argparse.Namespace) -> None:
    from accelerate import PartialState

    from .training import FinetuneConfig, finetune_database

    config = _config_from(args, FinetuneConfig, output_dir=args.output)
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
    from .bank import STORAGE_DTYPES

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
        choices=list(STORAGE_DTYPES),
        help="dtype of the task files (default: float32)",
    )
    parser.set_defaults(run=run_build_bank)


def run_build_bank(args: argparse.Namespace) -> None:
    from .bank_production import build_bank

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
    parser.add_argument("--model", required=True, help="model folder or Hub id")
    parser.add_argument("--revision", help="Hub revision of the model")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: 32)")
    parser.add_argument("--output", help="write the scores to this .csv or .json file instead of printing them")
    parser.set_defaults(run=run_score)


def run_score(args: argparse.Namespace) -> None:
    from .modeling import AestheticModel
    from .processing import list_images
    from .scores_output import write_scores

    files = [f for p in args.paths for f in (list_images(p) if Path(p).is_dir() else [Path(p)])]
    model = AestheticModel.from_pretrained(args.model, revision=args.revision)
    scores = model.score([str(f) for f in files], batch_size=args.batch_size, progress=True)
    print(write_scores(files, scores.tolist(), args.output))


# -- personalize ---------------------------------------------------------------------------------------------------
def add_personalize(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "personalize",
        help="fit a personalized model to one person's ratings",
        description="Fit task-vector coefficients to the ratings in a CSV file (columns image, score) or an image "
        "folder with metadata.csv, and save the personalized model as coefficients only (kilobytes) or merged.",
    )
    parser.add_argument("--ratings", required=True, help="ratings CSV or image folder with metadata.csv")
    parser.add_argument("--model", required=True, help="base model folder or Hub id")
    parser.add_argument("--bank", help="bank folder or Hub id (default: the bank the model refers to)")
    parser.add_argument("--output", required=True, help="folder to save the personalized model in")
    parser.add_argument(
        "--export",
        choices=("coefficients", "merged"),
        default="coefficients",
        help="what to save (default: coefficients)",
    )
    parser.add_argument("--preset", choices=("default", "paper"), default="default", help="recipe (default: default)")
    parser.add_argument("--steps", type=int, help="optimisation steps (default: the preset's)")
    parser.add_argument("--granularity", choices=("task", "layer", "tensor"), help="coefficient granularity")
    parser.add_argument("--calibrate", action="store_true", help="map predictions onto the rating scale")
    parser.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    parser.set_defaults(run=run_personalize)


def run_personalize(args: argparse.Namespace) -> None:
    from .bank import TaskVectorBank
    from .data import load_ratings
    from .modeling import AestheticModel

    overrides = {k: getattr(args, k) for k in ("steps", "granularity") if getattr(args, k) is not None}
    base = AestheticModel.from_pretrained(args.model)
    bank = TaskVectorBank.from_pretrained(args.bank, base=base) if args.bank else None
    model = base.personalize(
        load_ratings(args.ratings),
        bank=bank,
        preset=args.preset,
        calibrate=args.calibrate,
        seed=args.seed,
        progress=True,
        **overrides,
    )
    model.save_pretrained(args.output, export=args.export)
    state = model.personalization
    weights = ", ".join(f"{k} {v:+.3f}" for k, v in state.coefficients.task_weights().items())
    print(
        f"personalized on {state.info['num_ratings']} ratings ({state.info['wall_time_s']:.1f} s); "
        f"mean coefficient per task: {weights}\nsaved ({args.export}) to {args.output}"
    )


# -- demo ----------------------------------------------------------------------------------------------------------
def add_demo(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the offline demo: real photos, simulated databases and raters, end to end",
        description="Build a small world from real photographs (simulated databases and raters with known tastes), "
        "fine-tune a bank on an ImageNet EfficientNet-Lite0 (cached for later runs), personalize every rater with "
        "k ratings, and compare every method. Writes the table (JSON, markdown), a figure and two exports.",
    )
    parser.add_argument("--quick", action="store_true", help="a tiny world: about a minute even with an empty cache")
    parser.add_argument("--output", default="demo_output", help="folder for the results (default: demo_output)")
    parser.add_argument(
        "--cache-dir", help="where the base and bank are cached (default: ~/.cache/taskvec-aesthetics)"
    )
    parser.set_defaults(run=run_demo)


def run_demo(args: argparse.Namespace) -> None:
    from .demo.runner import DemoConfig
    from .demo.runner import run_demo as demo

    result = demo(DemoConfig.preset("quick" if args.quick else "default"), args.output, args.cache_dir)
    print(result.report())


# -- benchmark -----------------------------------------------------------------------------------------------------
def add_benchmark(subparsers: Any) -> None:
    from .benchmark import METHODS

    parser = subparsers.add_parser(
        "benchmark",
        help="run the few-shot PIAA protocol on a database with per-user ratings",
        description="For every user and repeat, draw k rated images, personalize with every method, and test on "
        "the user's other images. No test image takes part in any choice. Writes results.json, results.md and "
        "results.png into --output.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--database", help="registered PIAA database, e.g. flickr-aes (with --root)")
    source.add_argument("--ratings", help="a ratings CSV or image folder with a user_id column")
    parser.add_argument("--root", help="the database folder as distributed")
    parser.add_argument(
        "--split", default="test", help="database split (default: test; FLICKR-AES: the 37 test workers)"
    )
    parser.add_argument("--model", required=True, help="base model folder or Hub id")
    parser.add_argument("--bank", required=True, help="bank folder or Hub id")
    parser.add_argument("--shots", type=int, nargs="+", default=[10, 100], help="k values (default: 10 100)")
    parser.add_argument("--repeats", type=int, default=10, help="draws per user and k (default: 10)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), help="methods to run")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws (default: 0)")
    parser.add_argument("--output", default="benchmark_output", help="results folder (default: benchmark_output)")
    parser.set_defaults(run=run_benchmark)


def run_benchmark(args: argparse.Namespace) -> None:
    from .bank import TaskVectorBank
    from .benchmark import BenchmarkConfig
    from .benchmark import run_benchmark as benchmark
    from .data import load_database, load_ratings
    from .modeling import AestheticModel

    if args.database and not args.root:
        raise ValueError("--database needs --root, the folder of the database as distributed")
    dataset = (
        load_database(args.database, args.root, split=args.split) if args.database else load_ratings(args.ratings)
    )
    base = AestheticModel.from_pretrained(args.model)
    bank = TaskVectorBank.from_pretrained(args.bank, base=base)
    result = benchmark(
        base,
        bank,
        dataset,
        BenchmarkConfig(shots=tuple(args.shots), repeats=args.repeats, methods=tuple(args.methods), seed=args.seed),
    )
    paths = result.save(args.output)
    print(result.to_markdown() + "\n" + "\n".join(f"{kind}: {path}" for kind, path in paths.items()))


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
        choices=("merged", "coefficients"),
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
    from .hub import push_saved

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
    parser.set_defaults(run=run_app)


def run_app(args: argparse.Namespace) -> None:
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise ValueError("the app needs Gradio: pip install 'taskvec-aesthetics[app]'") from None
    from .app import serve

    serve(args.model, args.bank, args.photos, args.port, args.cache_dir)


SUBCOMMANDS: tuple[Callable[[Any], None], ...] = (
    add_demo,
    add_score,
    add_personalize,
    add_benchmark,
    add_init_base,
    add_finetune,
    add_build_bank,
    add_push,
    add_app,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taskvec-aesthetics",
        description="Personalized image aesthetics with task vectors: score, personalize, benchmark, and produce "
        "banks (init-base, finetune, build-bank).",
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
    except (ValueError, OSError) as error:  # bad input, missing files, Hub errors (HfHubHTTPError is an OSError)
        logger.debug("Details of the error", exc_info=True)
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
