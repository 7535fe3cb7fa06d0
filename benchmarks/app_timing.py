"""The app's time from "Personalize" to the ranked gallery on the demo bank, measured on the server side.

Loads what `taskvec-aesthetics app` serves with no arguments (the demo's base, bank and photo pool, built or read from
the demo cache), then, for each run, a fresh visitor answers with stars (or comparisons) drawn at random and the time
of `RatingSession.personalize()` plus `ranking()` is measured: the work between the click and the gallery's data.
The browser's rendering is not included (`tests/test_app_browser.py` prints the whole click-to-gallery time on its
tiny bank).

    python benchmarks/app_timing.py [--answers 20] [--runs 3] [--kind ratings|comparisons]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from taskvec_aesthetics.app import RatingSession, load_resources  # noqa: E402
from taskvec_aesthetics.app.session import CHOICES, STARS  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--answers", type=int, default=20, help="stars or comparisons per visitor (default: 20)")
    parser.add_argument("--runs", type=int, default=3, help="visitors timed (default: 3)")
    parser.add_argument("--kind", choices=("ratings", "comparisons"), default="ratings")
    args = parser.parse_args()
    began = time.perf_counter()
    resources = load_resources()
    loaded = time.perf_counter() - began
    seconds = []
    for run in range(args.runs):
        answers = random.Random(run)
        session = RatingSession(resources)
        for _ in range(args.answers):
            if args.kind == "ratings":
                session.rate(answers.choice(STARS))
            else:
                session.compare(answers.choice(CHOICES[:2]))
        mark = time.perf_counter()
        result = session.personalize()
        session.ranking(result.scores)
        seconds.append(time.perf_counter() - mark)
        session.close()
    record = {
        "benchmark": "app_timing",
        "kind": args.kind,
        "answers": args.answers,
        "photos": len(resources.photos),
        "tasks": len(resources.bank),
        "personalize_to_gallery_s": seconds,
        "median_s": statistics.median(seconds),
        "load_and_encode_pool_s": loaded,
    }
    print(json.dumps(record))
    print(
        f"Personalize -> ranked gallery (server side), {args.answers} {args.kind}, {len(resources.photos)} photos, "
        f"{len(resources.bank)} tasks: median {statistics.median(seconds):.1f} s over {args.runs} visitors"
    )


if __name__ == "__main__":
    main()
