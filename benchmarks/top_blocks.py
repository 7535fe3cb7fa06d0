"""Top blocks or every parameter: what a bank of top-block fine-tunes costs and gives, against full fine-tunes.

The planted world (tests/planted.py, benchmarks/planted.py) twice, in one run: its four tasks fine-tuned on every
parameter (the paper's banks), and fine-tuned on the top encoder block, the neck and the head only (what
`examples/build_paper_bank.sh` does by default, `TOP_BLOCKS`). With a top-block bank the frozen prefix is encoded
once per image and every personalization step runs the top block alone. For each bank and k: our default's mean test
SROCC over the planted users [95 % bootstrap interval], the best single task model's, the seconds per
personalization, and the paired difference top-block - full with its interval and win/tie/loss counts.

    python benchmarks/top_blocks.py [--shots 10 30 100] [--repeats 1]

Writes benchmarks/results/top_blocks.{json,md} and prints the table.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from active_selection import write_results  # noqa: E402
from planted import USERS, add_protocol_arguments, build_world, images, run_protocol  # noqa: E402

from taskvec_aesthetics.experiments.config import BenchmarkConfig
from taskvec_aesthetics.experiments.results import TIE, BenchmarkResult, bootstrap_interval  # noqa: E402
from taskvec_aesthetics.personalization.config import PersonalizerConfig  # noqa: E402
from taskvec_aesthetics.personalization.personalizer import Personalizer  # noqa: E402

BANKS = {"every parameter": None, "top block, neck and head": 1}


def _interval(values: list[float]) -> str:
    low, high = bootstrap_interval(values)
    return f"{np.mean(values):.3f} [{low:.3f}, {high:.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_protocol_arguments(parser, repeats=1)
    parser.add_argument("--output", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    began = time.perf_counter()
    photos = images(args.images, seed=2)
    config = BenchmarkConfig(
        shots=tuple(args.shots),
        repeats=args.repeats,
        methods=("best_single", "default"),
        personalizer=PersonalizerConfig(),
        progress=False,
    )
    per_bank = {}
    for name, top_blocks in BANKS.items():
        torch.manual_seed(0)
        world = build_world(top_blocks=top_blocks)
        trials, _, _ = run_protocol(world, photos, config, args.noise)
        result = BenchmarkResult(trials=trials, task_names=world.bank.task_names, config={}, timings={})
        seconds = {k: np.mean([t.seconds for t in trials if t.method == "default" and t.k == k]) for k in args.shots}
        per_bank[name] = {
            "per_user": result.per_user(),
            "seconds": seconds,
            "tensors": len(world.bank.parameter_names),
            "prefix_blocks": Personalizer(world.base, world.bank, config.personalizer).prefix_blocks,
        }
    full, top = (per_bank[name] for name in BANKS)
    lines = [
        "| k | bank | our default | best single task model | s per personalization | top block - every parameter "
        "(ours) | W/T/L |",
        "|---|---|---|---|---|---|---|",
    ]
    # The output folder is where the files are, not a setting of the run: no path of this machine goes in the record.
    config = {key: value for key, value in vars(args).items() if key != "output"}
    record = {"config": config, "users": list(USERS), "banks": {}, "rows": []}
    for k in args.shots:
        users = list(USERS)
        ours_full = [full["per_user"]["default", k][u] for u in users]
        ours_top = [top["per_user"]["default", k][u] for u in users]
        difference = [b - a for a, b in zip(ours_full, ours_top)]
        wins = sum(d > TIE for d in difference)
        losses = sum(d < -TIE for d in difference)
        low, high = bootstrap_interval(difference)
        for name, bank in per_bank.items():
            ours = [bank["per_user"]["default", k][u] for u in users]
            single = [bank["per_user"]["best_single", k][u] for u in users]
            paired = f"{np.mean(difference):+.3f} [{low:+.3f}, {high:+.3f}]" if bank is top else ""
            counts = f"{wins}/{len(users) - wins - losses}/{losses}" if bank is top else ""
            lines.append(
                f"| {k} | {name} | {_interval(ours)} | {_interval(single)} | {bank['seconds'][k]:.2f} | {paired} "
                f"| {counts} |"
            )
            record["rows"].append(
                {"k": k, "bank": name, "default": ours, "best_single": single, "seconds": bank["seconds"][k]}
            )
    for name, bank in per_bank.items():
        record["banks"][name] = {"tensors": bank["tensors"], "prefix_blocks": bank["prefix_blocks"]}
    markdown = "\n".join(lines)
    markdown += "\n\n" + "; ".join(
        f"{name}: {bank['tensors']} tensors, prefix of {bank['prefix_blocks'] or 0} block(s) encoded once"
        for name, bank in per_bank.items()
    )
    markdown += f"\n\nWhole run: {time.perf_counter() - began:.0f} s."
    write_results(args.output, "top_blocks", record, markdown)


if __name__ == "__main__":
    main()
