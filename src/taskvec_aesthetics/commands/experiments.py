"""The paper's experiments: the offline `demo`, the few-shot `benchmark` protocol and its `analyze` commands."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from ..demo.config import DemoConfig, WorldConfig
from ..errors import InputError
from ..experiments.config import BenchmarkConfig
from ..personalization.config import PersonalizerConfig
from ..utils.io import read_json
from .options import (
    RATINGS_HELP,
    add_compute_options,
    add_config_arguments,
    add_reference_option,
    check_is_model,
    check_locations,
    compute_settings,
    config_values,
    parse_references,
)

__all__ = ["add_analyze", "add_benchmark", "add_demo"]


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
    parser.add_argument(
        "--quick", action="store_true", help="the quick preset, a tiny world: minutes even with an empty cache"
    )
    parser.add_argument("--output", default="demo_output", help="folder for the results (default: demo_output)")
    parser.add_argument(
        "--cache-dir",
        help="where the base and bank are cached (default: $TASKVEC_AESTHETICS_CACHE, else "
        "$XDG_CACHE_HOME/taskvec-aesthetics, else ~/.cache/taskvec-aesthetics)",
    )
    # The options below override the preset's values; those of the world change the cached bank's key.
    add_config_arguments(parser, DemoConfig)
    add_config_arguments(parser, WorldConfig, prefix="world")
    parser.set_defaults(run=run_demo)


def run_demo(args: argparse.Namespace) -> None:
    preset = DemoConfig.preset("quick" if args.quick else "default")
    world = dataclasses.replace(preset.world, **config_values(args, WorldConfig, prefix="world"))
    config = dataclasses.replace(preset, world=world, **config_values(args, DemoConfig))
    from ..demo.runner import run_demo as demo

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
    parser.add_argument("--output", default="benchmark_output", help="results folder (default: benchmark_output)")
    parser.add_argument("--batch-size", type=int, help="rated images per optimisation step (default: each recipe's)")
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
    add_reference_option(subsets)
    add_compute_options(parser)
    add_config_arguments(parser, BenchmarkConfig, defaults={"repeats": 10})
    parser.set_defaults(run=run_benchmark)


def run_benchmark(args: argparse.Namespace) -> None:
    if args.database and not args.root:
        raise InputError("--database needs --root, the folder of the database as distributed")
    check_locations(args.model, args.bank)
    from ..data import load_database, load_ratings
    from ..experiments.benchmark import run_benchmark as benchmark
    from ..modeling import AestheticModel
    from ..task_vectors.bank import TaskVectorBank

    references = parse_references(args.reference)
    compute = compute_settings(args)
    config = BenchmarkConfig(
        **config_values(args, BenchmarkConfig),
        progress=args.progress,
        personalizer=PersonalizerConfig(**compute),
        paper=PersonalizerConfig.from_preset("paper", **compute),
    )
    dataset = (
        load_database(args.database, args.root, split=args.split) if args.database else load_ratings(args.ratings)
    )
    base = AestheticModel.from_pretrained(args.model)
    bank = TaskVectorBank.from_pretrained(args.bank, base=base)
    gains_paths: dict[str, Path] = {}
    if args.order or args.random_orders:
        from ..experiments.analysis import benchmark_gains, subset_orders

        orders = subset_orders(bank.task_names, args.order, args.random_orders or 0, seed=config.seed)
        gains, results = benchmark_gains(base, bank, dataset, config, orders, references)
        result = max(results.values(), key=lambda r: len(r.task_names))  # the whole bank, or the longest order
        gains_paths = gains.save(args.output)
        print(gains.to_markdown())
    else:
        result = benchmark(base, bank, dataset, config)
    paths = {**result.save(args.output), **{f"gains {kind}": path for kind, path in gains_paths.items()}}
    if "single" in config.methods:
        from ..experiments.analysis import zero_shot_per_user

        zero_shot = zero_shot_per_user(result).save(args.output)
        paths.update({f"zero-shot {kind}": path for kind, path in zero_shot.items()})
    print(result.to_markdown() + "\n" + "\n".join(f"{kind}: {path}" for kind, path in paths.items()))


# -- analyze -------------------------------------------------------------------------------------------------------
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
    add_reference_option(gains)
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

    from ..configuration import AestheticConfig
    from ..modeling import AestheticModel
    from ..task_vectors.bank import TaskVectorBank

    bank = TaskVectorBank.from_pretrained(args.bank)
    groups = None
    if args.granularity == "layer":
        location = args.model or bank.base.location
        if location is None:
            raise InputError(f"{args.bank} records no base model: pass --model, or --granularity task")
        check_is_model(location)
        kwargs: dict[str, Any] = {} if args.model else bank.base.load_kwargs()
        with torch.device("meta"):  # the layer groups need the architecture, not the weights
            groups = AestheticModel(AestheticConfig.from_pretrained(location, **kwargs)).parameter_groups()
    similarity = bank.similarity(args.granularity, groups=groups, progress=args.progress)
    paths = similarity.save(args.output)
    print(similarity.to_markdown() + "\n".join(f"{kind}: {path}" for kind, path in paths.items()))


def run_analyze_gains(args: argparse.Namespace) -> None:
    from ..experiments.analysis import GainsResult

    gains = GainsResult.from_dict(read_json(args.gains, "a gains.json (benchmark --order or --random-orders)"))
    gains.references.update(parse_references(args.reference))
    paths = gains.save(args.output)
    print(gains.to_markdown() + "\n".join(f"{kind}: {path}" for kind, path in paths.items()))


def run_analyze_zero_shot(args: argparse.Namespace) -> None:
    from ..experiments.analysis import load_benchmark_result, zero_shot_per_user

    zero_shot = zero_shot_per_user(load_benchmark_result(args.results), k=args.k)
    paths = zero_shot.save(args.output)
    print(zero_shot.to_markdown() + "\n".join(f"{kind}: {path}" for kind, path in paths.items()))
