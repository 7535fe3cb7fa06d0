"""The planted-truth table: a tiny encoder fine-tuned on three synthetic tasks, and users who mix them.

For each user (a known mixture of the tasks) and each seed, k = 20 rated images train every method and the other
280 images test it (SROCC against the noise-free utility). Prints one JSON line per method and a markdown table.
The same world backs tests/test_personalization.py, which asserts the inequalities on one fixed seed.

    python benchmarks/planted.py [--seeds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from planted import build_world, images, to_pixels, user_ratings  # noqa: E402

from taskvec_aesthetics.metrics import srocc  # noqa: E402
from taskvec_aesthetics.personalization import EncodedRatings, Personalizer, PersonalizerConfig  # noqa: E402

USERS = {
    "0.6 t0 + 0.6 t1 - 0.4 t2": [0.6, 0.6, -0.4],
    "0.75 t0 + 0.5 t1": [0.75, 0.5, 0.0],
    "t2 - 0.5 t0": [-0.5, 0.0, 1.0],
    "t1 - 0.6 t2": [0.0, 1.0, -0.6],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--k", type=int, default=20)
    args = parser.parse_args()
    world = build_world()
    photos = images(300, seed=2)
    pixels = to_pixels(world.base, photos)
    rows: dict[str, list[float]] = {}
    seconds: list[float] = []
    for granularity in ("task", "layer"):
        personalizer = Personalizer(world.base, world.bank, PersonalizerConfig(granularity=granularity))
        prefix = personalizer.encode(pixels)
        task_scores = personalizer.task_scores(prefix)
        for name, weights in USERS.items():
            for seed in range(args.seeds):
                utility, ratings = user_ratings(photos, weights, noise=0.1, seed=100 + seed)
                perm = torch.randperm(len(photos), generator=torch.Generator().manual_seed(100 + seed))
                rated, test = perm[: args.k], perm[args.k :]
                began = time.perf_counter()
                coefficients, report = personalizer.fit_encoded(EncodedRatings(prefix[rated], ratings[rated].double()))
                seconds.append(time.perf_counter() - began)

                def test_srocc(values):
                    return srocc(personalizer.predict(values, prefix[test]), utility[test])

                rows.setdefault(f"learned ({granularity}-wise)", []).append(test_srocc(coefficients))
                if granularity == "layer":
                    rows.setdefault("softmax(10 x SROCC) init", []).append(test_srocc(report.initial_coefficients))
                    rows.setdefault("uniform average (c = 1/T)", []).append(
                        test_srocc(torch.full(coefficients.shape, 1 / len(world.bank)))
                    )
                    for t, task in enumerate(world.bank.task_names):
                        rows.setdefault(f"single task model {task}", []).append(
                            srocc(task_scores[t, test], utility[test])
                        )
    table = ["| method | test SROCC (mean ± std) |", "|---|---|"]
    for method, values in rows.items():
        line = {"method": method, "mean": float(np.mean(values)), "std": float(np.std(values)), "n": len(values)}
        print(json.dumps(line))
        table.append(f"| {method} | {line['mean']:.3f} ± {line['std']:.3f} |")
    print(json.dumps({"seconds_per_personalization": float(np.mean(seconds)), "k": args.k}))
    print("\n".join(table))
    print(f"\nk = {args.k}; {len(USERS)} users x {args.seeds} seeds; {np.mean(seconds):.2f} s per personalization")


if __name__ == "__main__":
    main()
