"""The planted-truth benchmark: a tiny encoder fine-tuned on four synthetic tasks, and users whose taste is known.

Each user's utility is a known mixture of five image traits (tests/planted.py): single-criterion tastes, tastes with
negative weights, and tastes on a trait (a vertical gradient) that no task covers. For each user, k and repeat, k
rated images (noisy ratings) train every method and the others test it, by SROCC against the noise-free utility.
The protocol and statistics are the library's (`taskvec_aesthetics.experiments.benchmark` and `.results`): means over users with 95 % bootstrap
intervals, paired differences to our default with win/tie/loss counts, and which candidate the default chose.

    python benchmarks/planted.py [--world first|second] [--transductive] [--repeats 3] [--shots 10 30 100]
                                 [--gains N]

The second world (tests/planted_second.py) has other traits and other tastes; only the distilled candidate's settings
were chosen on it.
With --transductive our default also gets all 400 photos without their ratings (the test photos among them) as
unlabeled photos. Writes benchmarks/results/planted[_second][_transductive].{json,md,png} and prints the table.
With ``--gains N`` it runs the protocol on the nested subsets of the bank instead (N = 0: the bank's order; N > 0:
N random orders) and writes <stem>_gains.{json,md,png}: mean SROCC against the number of tasks in the bank.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import json  # noqa: E402

import numpy as np  # noqa: E402
import planted  # noqa: E402
import planted_second  # noqa: E402
import torch  # noqa: E402
from planted import add_protocol_arguments, build_world, run_protocol  # noqa: E402

from taskvec_aesthetics.experiments.config import BenchmarkConfig
from taskvec_aesthetics.experiments.results import BenchmarkResult  # noqa: E402
from taskvec_aesthetics.personalization.config import PersonalizerConfig  # noqa: E402
from taskvec_aesthetics.utils.io import atomic_path  # noqa: E402

METHODS = ("single", "best_single", "uniform", "init", "default", "default_ensemble", "head_finetune", "ensemble")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_protocol_arguments(parser, repeats=3)
    parser.add_argument("--output", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--world", choices=("first", "second"), default="first")
    parser.add_argument("--transductive", action="store_true", help="give our default the pool's photos, unrated")
    parser.add_argument("--stem", help="file names of the results (default: from the world and the setting)")
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=JSON", help="PersonalizerConfig overrides")
    parser.add_argument(
        "--gains", type=int, metavar="N", help="nested subsets of the bank, N random orders (0: fixed)"
    )
    args = parser.parse_args()
    began = time.perf_counter()
    torch.manual_seed(0)
    spec = planted if args.world == "first" else planted_second
    users = spec.USERS
    world = build_world(photos_of=spec.images, traits_of=spec.criteria)
    photos = spec.images(args.images, 2)
    stem = args.stem or "planted" + ("_second" if args.world == "second" else "") + (
        "_transductive" if args.transductive else ""
    )
    overrides = {key: json.loads(value) for key, value in (item.split("=", 1) for item in args.set)}
    config = BenchmarkConfig(
        shots=tuple(args.shots),
        repeats=args.repeats,
        methods=METHODS,
        personalizer=PersonalizerConfig(**overrides),
        progress=False,
        score_candidates=True,
        transductive=args.transductive,
    )
    if args.gains is not None:
        return gains(world, photos, config, args, users, spec.criteria, stem)
    trials, example_user, example = run_protocol(world, photos, config, args.noise, users, spec.criteria)
    result = BenchmarkResult(
        trials=trials,
        task_names=world.bank.task_names,
        config={
            "shots": list(config.shots),
            "repeats": config.repeats,
            "noise": args.noise,
            "images": args.images,
            "world": args.world,
            "transductive": args.transductive,
            "users": users,
            "personalizer": config.personalizer.to_dict(),
        },
        timings={"total_s": time.perf_counter() - began},
        example_coefficients=example,
        example_user=example_user,
    )
    out = Path(args.output)
    paths = result.save(out, stem=stem)
    per_user = result.per_user()
    lines = [
        f"`OMP_NUM_THREADS=1 python benchmarks/planted.py --world {args.world} --repeats {args.repeats}"
        + (" --transductive" if args.transductive else "")
        + "` (test SROCC against the noise-free utility; the calibration table against the noisy ratings of the "
        "test photos).",
        "",
        result.to_markdown(),
    ]
    for ours in ("default", "default_ensemble"):  # each user's worst gap to the obvious answers
        for other in ("best_single", "ensemble"):
            for k in config.shots:
                gap, user = min((per_user[ours, k][u] - per_user[other, k][u], u) for u in users)
                lines.append(f"k={k}: worst user {user!r}, {ours} - {other} = {gap:+.3f}")
    lines += ["", result.selection_rules()]
    seconds = [t.seconds for t in trials if t.method == "default"]
    text = "\n".join(lines)
    with atomic_path(paths["markdown"]) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    print(text)
    print(f"{np.mean(seconds):.2f} s per personalization; wrote {', '.join(str(p) for p in paths.values())}")


def gains(world, photos, config: BenchmarkConfig, args, users, criteria, stem: str) -> None:
    """The protocol on the nested subsets of the planted bank (`analysis.run_gains`), written as <stem>_gains.*."""
    from taskvec_aesthetics.experiments.analysis import run_gains, subset_orders

    def protocol(bank):
        trials = run_protocol(dataclasses.replace(world, bank=bank), photos, config, args.noise, users, criteria)[0]
        return BenchmarkResult(trials, bank.task_names, {"shots": list(config.shots), "repeats": config.repeats}, {})

    began = time.perf_counter()
    orders = subset_orders(world.bank.task_names, random_orders=args.gains, seed=config.seed)
    result, _ = run_gains(world.bank, protocol, orders, progress=False)
    scale = (
        f"Planted world ({args.world}): {len(users)} users, {args.images} images each, noise {args.noise}, {config.repeats} "
        f"repeat(s); {time.perf_counter() - began:.0f} s."
    )
    paths = result.save(Path(args.output), stem=f"{stem}_gains", caption=scale)
    print(result.to_markdown() + "\n" + scale + "\nwrote " + ", ".join(str(p) for p in paths.values()))


if __name__ == "__main__":
    main()
