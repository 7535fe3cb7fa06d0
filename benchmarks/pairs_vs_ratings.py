"""Pairwise preferences against ratings: test SROCC after n pairs or n ratings (a pair costs about one rating).

On the demo's bank and pool (cached: `taskvec-aesthetics demo` builds them, or this script does), each simulated rater
answers n questions from the first half of the pool: either n ratings of random photos, or n "which of these two do
you prefer?" questions about 2n random photos. A rater perceives a photo as in their ratings (their standardised
utility plus their rating noise, drawn afresh for each question) and prefers the photo they perceive as better; ratings
are then rounded to half stars, preferences are not. Our default recipe personalizes on the answers, and the test
SROCC is measured against the rater's ratings of the second half of the pool. Intervals are 95 % bootstrap intervals
over raters (each rater's mean over repeats); the difference pairs - ratings is paired by rater, with win/tie/loss
counts (a tie is |difference| < 0.005).

Prints one JSON line and a markdown table; writes both to benchmarks/results/pairs_vs_ratings.{json,md}.

    python benchmarks/pairs_vs_ratings.py [--raters 16] [--repeats 1] [--questions 5 10 20] [--steps N]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
import zlib
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from active_selection import comparison_row, paired, summarize, write_results  # noqa: E402

from taskvec_aesthetics.demo.config import DemoConfig
from taskvec_aesthetics.demo.runner import base_and_bank, default_cache_dir
from taskvec_aesthetics.demo.world import build_world  # noqa: E402
from taskvec_aesthetics.evaluation.metrics import srocc  # noqa: E402
from taskvec_aesthetics.personalization.config import PersonalizerConfig
from taskvec_aesthetics.personalization.inputs import EncodedPreferences, EncodedRatings
from taskvec_aesthetics.personalization.personalizer import Personalizer

KINDS = ("ratings", "pairs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raters", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--questions", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, help="personalizer steps (default: the default recipe's)")
    parser.add_argument("--output", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    began = time.perf_counter()
    demo = DemoConfig()
    world = build_world(dataclasses.replace(demo.world, num_users=args.raters))  # raters do not change the bank
    base, bank, _, _ = base_and_bank(demo, world, default_cache_dir(), progress=False)
    steps = {"steps": args.steps} if args.steps else {}
    personalizer = Personalizer(base, bank, PersonalizerConfig(seed=args.seed, progress=False, **steps))
    prefix = personalizer.encode([world.pool.image(i) for i in range(len(world.pool))])
    users = [user.user_id for user in world.users]
    results = {kind: {n: np.full((len(users), args.repeats), np.nan) for n in args.questions} for kind in KINDS}
    seconds = {kind: [] for kind in KINDS}
    for repeat in range(args.repeats):
        split = np.random.default_rng([args.seed, repeat]).permutation(len(world.pool))
        candidates, test = split[: len(split) // 2], split[len(split) // 2 :]
        for u, user_id in enumerate(users):
            user = world.user(user_id)
            ratings = np.asarray(world.ratings[user_id]["score"], dtype=np.float64)
            utility = user.utility(world.pool.strengths)
            z = (utility - utility.mean()) / utility.std()
            rng = np.random.default_rng(zlib.crc32(f"{user_id}/{repeat}".encode()))
            order = rng.permutation(candidates)
            for n in args.questions:
                rated = order[:n]
                shown = order[: 2 * n].reshape(n, 2)
                perceived = z[shown] + rng.normal(0.0, user.noise, shown.shape)
                preference = torch.tensor((perceived[:, 0] > perceived[:, 1]).astype(np.float64))
                inputs = {
                    "ratings": EncodedRatings(prefix[rated], torch.tensor(ratings[rated])),
                    "pairs": EncodedPreferences(prefix[shown.ravel()], torch.arange(2 * n).view(n, 2), preference),
                }
                for kind, encoded in inputs.items():
                    mark = time.perf_counter()
                    try:
                        coefficients, _ = personalizer.fit_encoded(encoded)
                    except ValueError:  # all answers equal: nothing to learn an order from, the base model
                        coefficients = torch.zeros(1, len(bank))
                    seconds[kind].append(time.perf_counter() - mark)
                    value = srocc(personalizer.predict(coefficients, prefix[test]).numpy(), ratings[test])
                    results[kind][n][u, repeat] = 0.0 if np.isnan(value) else value
            print(f"repeat {repeat} {user_id} done ({time.perf_counter() - began:.0f} s)", flush=True)
    per_rater = {kind: {n: results[kind][n].mean(axis=1) for n in args.questions} for kind in KINDS}
    table = {kind: {n: summarize(per_rater[kind][n]) for n in args.questions} for kind in KINDS}
    differences = {n: paired(per_rater["pairs"][n], per_rater["ratings"][n]) for n in args.questions}
    record = {
        "benchmark": "pairs_vs_ratings",
        "raters": len(users),
        "repeats": args.repeats,
        "pool": len(world.pool),
        "tasks": bank.task_names,
        "personalizer": personalizer.config.to_dict(),
        "srocc": {kind: {str(n): v for n, v in table[kind].items()} for kind in KINDS},
        "difference": {str(n): v for n, v in differences.items()},
        "seconds_per_fit": {kind: float(np.mean(v)) for kind, v in seconds.items()},
        "total_s": time.perf_counter() - began,
    }
    print(json.dumps(record))

    lines = [
        f"Test SROCC against held-out ratings, mean [95 % bootstrap CI] over {len(users)} simulated raters "
        f"({args.repeats} pool split{'s' if args.repeats > 1 else ''}; {len(test)} test photos). Difference: pairs - "
        "ratings, paired by rater, with wins/ties/losses.",
        "",
        "| questions | n ratings | n pairs | difference | W/T/L |",
        "|---|---|---|---|---|",
    ]
    lines += [comparison_row(n, table["ratings"][n], table["pairs"][n], differences[n]) for n in args.questions]
    write_results(args.output, "pairs_vs_ratings", record, "\n".join(lines))


if __name__ == "__main__":
    main()
