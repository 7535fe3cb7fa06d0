"""The demo's protocol with more raters or another size: the table and figure, with intervals, into results/.

Runs `taskvec-aesthetics demo` (bank cached as usual) with ``--raters`` raters rating a pool of ``--pool`` images at
the given k, and copies its table (`.md`), records (`.json`) and figure (`.png`) to
benchmarks/results/demo_<preset>.*. The quick preset's bank is fine-tuned for 15 steps on 64 px images: weaker task
models than the full demo's, and minutes instead of hours on a loaded CPU.

    python benchmarks/demo_raters.py --preset quick --raters 24 --pool 150 --shots 10 30 100
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from taskvec_aesthetics.demo.config import DEMO_METHODS, DemoConfig
from taskvec_aesthetics.demo.runner import run_demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=("quick", "default"), default="quick")
    parser.add_argument("--raters", type=int, default=24)
    parser.add_argument("--pool", type=int, default=150, help="images every rater rates")
    parser.add_argument("--shots", type=int, nargs="+", default=[10, 30, 100])
    parser.add_argument("--output", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    preset = DemoConfig.preset(args.preset)
    config = dataclasses.replace(
        preset,
        world=dataclasses.replace(preset.world, num_users=args.raters, pool_size=args.pool),
        shots=tuple(args.shots),
        methods=DEMO_METHODS,
        score_candidates=True,
    )
    with tempfile.TemporaryDirectory() as scratch:
        result = run_demo(config, output_dir=scratch, progress=False)
        print(result.report())
        print(result.benchmark.selection_rules())
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        for suffix in ("md", "json", "png"):
            shutil.copyfile(Path(scratch) / f"results.{suffix}", out / f"demo_{args.preset}.{suffix}")
        shutil.copyfile(Path(scratch) / "demo.json", out / f"demo_{args.preset}_run.json")


if __name__ == "__main__":
    main()
