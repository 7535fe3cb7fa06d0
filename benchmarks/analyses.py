"""The paper's three analyses on the demo's bank: task-vector similarity (its Figure 4), gains with the number of
databases (Figure 5) and zero-shot SROCC per rater and database (Figure 2).

Needs the demo's cached base and bank (run `taskvec-aesthetics demo` once). The similarity reads the bank; the
zero-shot view reads the demo's own benchmark run (benchmarks/results/demo.json); the gains run the protocol on the
nested subsets of the bank, at a reduced scale that the tables state (the first ``--raters`` raters, one draw, one
process of one thread), so that it takes minutes rather than the seven demo runs it would take at full scale.

    python benchmarks/analyses.py [--raters 6] [--shots 10 100] [--random-orders N | --order TASK ...]

Writes benchmarks/results/demo_{similarity,zero_shot,gains}.{json,md,png} and prints the tables.
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

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from taskvec_aesthetics import AestheticModel, TaskVectorBank  # noqa: E402
from taskvec_aesthetics.demo.config import DemoConfig
from taskvec_aesthetics.demo.runner import default_cache_dir
from taskvec_aesthetics.demo.world import build_world  # noqa: E402
from taskvec_aesthetics.experiments.analysis import (  # noqa: E402
    benchmark_gains,
    load_benchmark_result,
    subset_orders,
    zero_shot_per_user,
)
from taskvec_aesthetics.experiments.config import BenchmarkConfig
from taskvec_aesthetics.personalization.config import PersonalizerConfig
from taskvec_aesthetics.utils.progress import transformers_bars_off  # noqa: E402

RESULTS = Path(__file__).parent / "results"
#: Methods that fit nothing or little (run for more raters than our default; the softmax init comes with our default's
#: fit). The reference line is the best single database per rater in hindsight.
CHEAP_METHODS = ("single", "best_single", "uniform", "ensemble")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raters", type=int, default=24, help="raters of the methods that fit nothing or little")
    parser.add_argument("--default-raters", type=int, default=3, help="raters of our default (0: not run)")
    parser.add_argument("--shots", type=int, nargs="+", default=[10, 100])
    orders = parser.add_mutually_exclusive_group()
    orders.add_argument("--order", nargs="+", metavar="TASK", help="order of adding databases (default: the bank's)")
    orders.add_argument("--random-orders", type=int, default=0, metavar="N")
    parser.add_argument("--cache-dir", type=Path, default=None, help="the demo's cache (default: the demo's)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = DemoConfig()
    folder = (args.cache_dir or default_cache_dir()) / "demo" / config.bank_key()
    if not (folder / "bank").is_dir():
        sys.exit(f"no cached demo bank in {folder}: run `taskvec-aesthetics demo` first")
    with transformers_bars_off():
        base = AestheticModel.from_pretrained(folder / "base").eval()
    bank = TaskVectorBank.from_pretrained(folder / "bank", base=base)

    similarity = bank.similarity("layer", groups=base, progress=False)
    similarity.save(args.output, stem="demo_similarity")
    print(similarity.to_markdown(["all"]))

    demo = load_benchmark_result(RESULTS / "demo.json")
    zero_shot = zero_shot_per_user(demo)
    zero_shot.save(args.output, stem="demo_zero_shot")
    print(zero_shot.to_markdown())

    began, cpu = time.perf_counter(), time.process_time()
    world = build_world(config.world)
    protocol = BenchmarkConfig(
        shots=tuple(args.shots),
        repeats=1,
        seed=config.seed,
        personalizer=PersonalizerConfig(steps=config.personalizer_steps, seed=config.seed),
        baseline_steps=config.baseline_steps,
        progress=False,
    )
    orders = subset_orders(bank.task_names, args.order, args.random_orders, seed=config.seed)
    runs = []
    for methods, count in ((CHEAP_METHODS, args.raters), (("default", "init"), args.default_raters)):
        if count:
            ratings = datasets.concatenate_datasets([world.ratings[u.user_id] for u in world.users[:count]])
            runs.append(benchmark_gains(base, bank, ratings, dataclasses.replace(protocol, methods=methods), orders))
    seconds, cpu_seconds = time.perf_counter() - began, time.process_time() - cpu
    gains, results = runs[0]
    full = results.get("+".join(bank.task_names))
    if full is not None:  # the best single database per rater, known only from the test images: what no choice beats
        per_user = full.per_user()
        best = {k: [max(per_user[f"single:{t}", k][u] for t in bank.task_names) for u in per_user["best_single", k]]
                for k in protocol.shots}  # fmt: skip
        gains.references["best database per rater, in hindsight"] = {k: float(np.mean(v)) for k, v in best.items()}
    for subset, by_method in gains.per_user.items():
        for extra, _ in runs[1:]:
            by_method.update(extra.per_user[subset])
    gains.config.update(
        {
            "methods": [*(["default", "init"] if args.default_raters else []), *CHEAP_METHODS],
            "raters": {"default": args.default_raters, "others": args.raters},
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            "threads": 1,
        }
    )
    ours = (
        f"our default (at the demo's {config.personalizer_steps} steps) on the first {args.default_raters} of the "
        f"{len(world.users)} raters, "
        if args.default_raters
        else "our default and the softmax init not run (--default-raters 0; our default takes 12 s at k = 10 and 24 s "
        "at k = 100 per fit of one thread, for each rater and subset), "
    )
    scale = (
        f"Scale: the demo's bank and world; one draw per rater and k; {ours}the methods that fit nothing or little "
        f"on {args.raters} raters; {len(results)} subsets in {cpu_seconds:.0f} s of CPU time ({seconds:.0f} s wall) "
        "in one process of one thread, the simulated world's build included."
    )
    gains.save(args.output, stem="demo_gains", caption=scale)
    print(gains.to_markdown() + "\n" + scale)
    if 0 < args.default_raters < args.raters:  # every method on the raters our default ran on: lines that compare
        same = gains.for_users([u.user_id for u in world.users[: args.default_raters]])
        same.save(args.output, stem="demo_gains_same_raters", caption=same_raters_caption(args.default_raters, scale))


def same_raters_caption(raters: int, scale: str) -> str:
    return f"Every method on the same {raters} raters (those our default ran on); no reference line. {scale}"


if __name__ == "__main__":
    main()
