"""Calibration of the estimate a person is shown: our default alone, on both planted worlds and the demo's raters.

    OMP_NUM_THREADS=1 python benchmarks/calibration.py --world first      (or second, or demo)

Each run fits our default on every draw of that world's full benchmark, with the same seeds, so its rows are the
draws of the comparison tables: planted worlds every taste at k = 10, 30 and 100, 3 draws each (`planted.py`); the
demo each of its 24 raters at k = 10 and 100 (`taskvec-aesthetics demo`, the bank from the cache or built). It stores
the trials and the calibration table in benchmarks/results/calibration_<world>.{json,md}: per k the mean estimate,
the mean test SROCC (against the noisy ratings of the test photos, as the person would measure it), the mean error
per draw, and how many of the 90 % intervals covered the test SROCC. `summary_tables.py` reads them.

Only the estimate and its interval are new here: our default's choices and test SROCC are those of the full runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import planted  # noqa: E402
import planted_second  # noqa: E402
import torch  # noqa: E402

from taskvec_aesthetics.demo.config import DemoConfig  # noqa: E402
from taskvec_aesthetics.demo.runner import run_demo  # noqa: E402
from taskvec_aesthetics.experiments.config import BenchmarkConfig  # noqa: E402
from taskvec_aesthetics.experiments.results import BenchmarkResult  # noqa: E402
from taskvec_aesthetics.personalization.config import PersonalizerConfig  # noqa: E402
from taskvec_aesthetics.utils.io import atomic_path  # noqa: E402

RESULTS = Path(__file__).parent / "results"
COMMAND = "OMP_NUM_THREADS=1 python benchmarks/calibration.py --world {world}"


def planted_world(world: str, repeats: int) -> BenchmarkResult:
    """Our default on every taste, k and draw of a planted world (the draws of `planted.py`)."""
    torch.manual_seed(0)
    spec = planted if world == "first" else planted_second
    built = planted.build_world(photos_of=spec.images, traits_of=spec.criteria)
    photos = spec.images(400, 2)
    config = BenchmarkConfig(
        shots=(10, 30, 100), repeats=repeats, methods=("default",), personalizer=PersonalizerConfig(), progress=False
    )
    trials, _, _ = planted.run_protocol(built, photos, config, 0.1, spec.USERS, spec.criteria)
    return BenchmarkResult(
        trials=trials,
        task_names=built.bank.task_names,
        timings={},
        config={"world": world, "repeats": repeats, "noise": 0.1, "images": 400, "users": spec.USERS},
    )


def demo_raters() -> BenchmarkResult:
    """Our default on the demo's raters (the draws of `taskvec-aesthetics demo`)."""
    with tempfile.TemporaryDirectory() as out:
        return run_demo(DemoConfig(methods=("default",)), output_dir=out, progress=False).benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", choices=("first", "second", "demo"), required=True)
    parser.add_argument("--repeats", type=int, default=3, help="draws per taste and k of a planted world")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()
    began = time.perf_counter()
    result = demo_raters() if args.world == "demo" else planted_world(args.world, args.repeats)
    result.timings = {"total_s": time.perf_counter() - began}
    paths = result.save(Path(args.output), figure=False, stem=f"calibration_{args.world}")
    text = f"`{COMMAND.format(world=args.world)}`\n\n{result.calibration_markdown()}"
    with atomic_path(paths["markdown"]) as tmp:
        tmp.write_text(text, encoding="utf-8")
    print(text, end="")
    print(f"{time.perf_counter() - began:.0f} s; wrote {', '.join(str(p) for p in paths.values())}")


if __name__ == "__main__":
    main()
