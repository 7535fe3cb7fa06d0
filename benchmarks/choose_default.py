"""Choose the default personalization recipe by measurement, on raters the tests and the demo table do not use.

The bank is the demo's (cached: run `taskvec-aesthetics demo` first, or this script builds it). The raters and their
shared pool are drawn with another seed than the demo's, so the choice is not made on the demo's numbers.
Prints one JSON line per recipe and a markdown table; writes both to benchmarks/results/choose_default.{json,md}.

    python benchmarks/choose_default.py [--users 6] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import datasets  # noqa: E402

from taskvec_aesthetics.demo.config import DemoConfig
from taskvec_aesthetics.demo.runner import base_and_bank, default_cache_dir
from taskvec_aesthetics.demo.world import build_world, make_pool, make_users, rate  # noqa: E402
from taskvec_aesthetics.experiments.benchmark import run_benchmark
from taskvec_aesthetics.experiments.config import BenchmarkConfig
from taskvec_aesthetics.personalization.config import PersonalizerConfig

RECIPES = {
    "cv: srocc criterion, 1 SE, learned start from the best simple candidate (default)": dict(),
    "cv: rank-loss criterion": dict(criterion="rank_loss"),
    "cv: best candidate, no 1-SE rule": dict(tolerance=0.0),
    "cv: learned start from the softmax init": dict(start="init"),
    "cv: learned start from the output ensemble's weights": dict(start="ensemble"),
    "cv: learned task-wise coefficients as a candidate too": dict(
        candidates=("uniform", "init", "single", "ensemble", "task", "layer")
    ),
    "learned layer-wise, last of 50 steps (no selection)": dict(selection="last"),
    "paper preset (tensor, half-batch pairs, wd 1e-2, last of 500 steps)": dict(
        selection="last",
        granularity="tensor",
        pairing="half",
        learning_rate=1e-2,
        weight_decay=1e-2,
        steps=500,
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1, help="seed of the raters and pool (the demo uses 0)")
    parser.add_argument("--output", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--only", nargs="+", choices=list(RECIPES), help="run only these recipes (results are merged)")
    args = parser.parse_args()
    demo = DemoConfig()
    world = build_world(demo.world)
    base, bank, _, _ = base_and_bank(demo, world, default_cache_dir(), progress=False)
    sources = [photo.downscaled(2 * demo.world.image_size) for photo in world.photos]
    pool = make_pool(sources, demo.world.pool_size, demo.world.image_size, args.seed, id_prefix="pool")
    users = make_users(args.users, args.seed)
    ratings = datasets.concatenate_datasets([rate(user, pool, args.seed) for user in users])
    out = Path(args.output)
    previous = out / "choose_default.json"
    rows = (
        [r for r in json.loads(previous.read_text()) if r["recipe"] not in (args.only or RECIPES)]
        if (args.only and previous.is_file())
        else []
    )
    for name, overrides in RECIPES.items():
        if args.only and name not in args.only:
            continue
        began = time.perf_counter()
        result = run_benchmark(
            base,
            bank,
            ratings,
            BenchmarkConfig(
                shots=demo.shots,
                seed=args.seed,
                methods=("default",),
                progress=False,
                personalizer=PersonalizerConfig(seed=args.seed, **overrides),
            ),
        )
        for row in result.summary():
            row.update(recipe=name, overrides=overrides, wall_s=time.perf_counter() - began)
            rows.append(row)
            print(json.dumps(row), flush=True)
    shots = sorted({r["k"] for r in rows})
    table = [
        "| recipe | " + " | ".join(f"k={k} SROCC [95% CI] | k={k} s/fit" for k in shots) + " |",
        "|---|" + "---|---|" * len(shots),
    ]
    for name in RECIPES:
        cells = {r["k"]: r for r in rows if r["recipe"] == name}
        if not cells:
            continue
        table.append(
            f"| {name} | "
            + " | ".join(
                f"{cells[k]['srocc_mean']:.3f} [{cells[k]['srocc_low']:.3f}, {cells[k]['srocc_high']:.3f}] | "
                f"{cells[k]['seconds_per_fit']:.1f}"
                for k in shots
            )
            + " |"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "choose_default.json").write_text(json.dumps(rows, indent=2) + "\n")
    (out / "choose_default.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
