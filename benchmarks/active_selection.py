"""Active choice of the photos to rate (greedy D-optimal design, `taskvec_aesthetics.personalization.photo_choice`) against random choice.

On the demo's bank and pool (cached: `taskvec-aesthetics demo` builds them, or this script does), each simulated rater
rates k photos chosen by each strategy, our default recipe personalizes on them, and the test SROCC is measured
against the rater's ratings of held-out photos. Each repeat splits the pool in half, seeded: photos are chosen from the
first half only and every strategy is tested on the same second half, so the strategies differ only in which photos
were rated. Intervals are 95 % bootstrap intervals over raters (each rater's mean over repeats); differences are
paired by rater, with win/tie/loss counts (a tie is |difference| < 0.005).

Prints one JSON line and a markdown table; writes both to benchmarks/results/active_selection.{json,md}.

    python benchmarks/active_selection.py [--raters 24] [--repeats 2] [--shots 5 10 20 30] [--steps N]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
import zlib
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from taskvec_aesthetics.demo.config import DemoConfig
from taskvec_aesthetics.demo.runner import base_and_bank, default_cache_dir
from taskvec_aesthetics.demo.world import build_world  # noqa: E402
from taskvec_aesthetics.evaluation.metrics import srocc  # noqa: E402
from taskvec_aesthetics.personalization.config import PersonalizerConfig
from taskvec_aesthetics.personalization.inputs import EncodedRatings
from taskvec_aesthetics.personalization.personalizer import Personalizer
from taskvec_aesthetics.personalization.photo_choice import STRATEGIES, choose_next  # noqa: E402

TIE = 0.005


def bootstrap_interval(values: np.ndarray, seed: int = 0, resamples: int = 4000) -> tuple[float, float]:
    """95 % percentile bootstrap interval of the mean, resampling raters."""
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (resamples, len(values)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def summarize(values: np.ndarray) -> dict[str, float]:
    low, high = bootstrap_interval(values)
    return {"mean": float(values.mean()), "ci_low": low, "ci_high": high}


def paired(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    difference = a - b
    return {
        **summarize(difference),
        "wins": int((difference >= TIE).sum()),
        "ties": int((np.abs(difference) < TIE).sum()),
        "losses": int((difference <= -TIE).sum()),
    }


def cell(v: dict[str, float]) -> str:
    """A mean and its interval: `0.297 [0.212, 0.383]`."""
    return f"{v['mean']:.3f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}]"


def comparison_row(label: Any, first: dict[str, float], second: dict[str, float], d: dict[str, float]) -> str:
    """A markdown row: two methods' means with intervals, their paired difference and win/tie/loss counts."""
    return (
        f"| {label} | {cell(first)} | {cell(second)} | {d['mean']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] | "
        f"{d['wins']}/{d['ties']}/{d['losses']} |"
    )


def write_results(output: str | Path, name: str, record: dict[str, Any], markdown: str) -> None:
    """Print the markdown table and write both forms to ``output``/``name``.{json,md}."""
    print(markdown)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raters", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--shots", type=int, nargs="+", default=[5, 10, 20, 30])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, help="personalizer steps (default: the default recipe's)")
    parser.add_argument("--output", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    began = time.perf_counter()
    demo = DemoConfig()
    world = build_world(dataclasses.replace(demo.world, num_users=args.raters))  # raters do not change the bank
    base, bank, _, _ = base_and_bank(demo, world, default_cache_dir(), progress=False)
    steps = {"steps": args.steps} if args.steps else {}
    personalizer = Personalizer(base, bank, PersonalizerConfig(seed=args.seed, **steps))
    prefix = personalizer.encode([world.pool.image(i) for i in range(len(world.pool))])
    task_scores = personalizer.task_scores(prefix).numpy()  # [T, N]
    base_scores = personalizer.predict(torch.zeros(personalizer.layout.num_groups, len(bank)), prefix).numpy()
    users = [user.user_id for user in world.users]
    # srocc[strategy][k] -> [raters, repeats]
    results = {s: {k: np.full((len(users), args.repeats), np.nan) for k in args.shots} for s in STRATEGIES}
    unfit = {s: 0 for s in STRATEGIES}
    fit_seconds = []
    for repeat in range(args.repeats):
        split = np.random.default_rng([args.seed, repeat]).permutation(len(world.pool))
        candidates, test = split[: len(split) // 2], split[len(split) // 2 :]
        for u, user in enumerate(users):
            ratings = np.asarray(world.ratings[user]["score"], dtype=np.float64)
            for strategy in STRATEGIES:
                seed = zlib.crc32(f"{user}/{repeat}".encode())
                order = candidates[choose_next(task_scores[:, candidates], (), max(args.shots), strategy, seed)]
                for k in args.shots:
                    rated = order[:k]
                    if np.unique(ratings[rated]).size < 2:  # nothing to learn an order from: the base model
                        unfit[strategy] += 1
                        predicted = base_scores[test]
                    else:
                        mark = time.perf_counter()
                        encoded = EncodedRatings(prefix[rated], torch.tensor(ratings[rated]))
                        coefficients, _ = personalizer.fit_encoded(encoded)
                        fit_seconds.append(time.perf_counter() - mark)
                        predicted = personalizer.predict(coefficients, prefix[test]).numpy()
                    value = srocc(predicted, ratings[test])
                    results[strategy][k][u, repeat] = 0.0 if np.isnan(value) else value  # constant: no order
            print(f"repeat {repeat} {user} done ({time.perf_counter() - began:.0f} s)", flush=True)
    per_rater = {s: {k: results[s][k].mean(axis=1) for k in args.shots} for s in STRATEGIES}
    table = {s: {k: summarize(per_rater[s][k]) for k in args.shots} for s in STRATEGIES}
    differences = {k: paired(per_rater["d_optimal"][k], per_rater["random"][k]) for k in args.shots}
    half = {
        f"d_optimal@{k} - random@{2 * k}": paired(per_rater["d_optimal"][k], per_rater["random"][2 * k])
        for k in args.shots
        if 2 * k in args.shots
    }
    record = {
        "benchmark": "active_selection",
        "raters": len(users),
        "repeats": args.repeats,
        "pool": len(world.pool),
        "candidates": len(world.pool) // 2,
        "tasks": bank.task_names,
        "personalizer": personalizer.config.to_dict(),
        "srocc": {s: {str(k): v for k, v in table[s].items()} for s in STRATEGIES},
        "difference": {str(k): v for k, v in differences.items()},
        "half_the_ratings": half,
        "fits_without_two_distinct_ratings": unfit,
        "seconds_per_fit": float(np.mean(fit_seconds)),
        "total_s": time.perf_counter() - began,
        "note": "2-core CPU shared with other jobs; timings are indicative",
    }
    print(json.dumps(record))
    lines = [
        f"Test SROCC against held-out ratings, mean [95 % bootstrap CI] over {len(users)} simulated raters "
        f"({args.repeats} pool splits each; {len(world.pool) // 2} candidate photos, {len(world.pool) // 2} test "
        "photos). Difference: active - random, paired by rater, with wins/ties/losses.",
        "",
        "| ratings | random | active (D-optimal) | difference | W/T/L |",
        "|---|---|---|---|---|",
    ]
    lines += [comparison_row(k, table["random"][k], table["d_optimal"][k], differences[k]) for k in args.shots]
    for name, d in half.items():
        lines.append(
            f"\n{name}: {d['mean']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}], "
            f"W/T/L {d['wins']}/{d['ties']}/{d['losses']}"
        )
    write_results(args.output, "active_selection", record, "\n".join(lines))


if __name__ == "__main__":
    main()
