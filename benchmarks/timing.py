"""Seconds per personalization with the default recipe on a demo bank, at k = 10 and k = 100.

Measures whatever version of the library is importable, so two versions can be compared in one session:

    PYTHONPATH=old/src python benchmarks/timing.py --preset quick --users 4
    PYTHONPATH=src     python benchmarks/timing.py --preset quick --users 4

Prints one JSON line. Timings on a shared machine are only comparable within one session.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402

from taskvec_aesthetics.demo.config import DemoConfig
from taskvec_aesthetics.demo.runner import base_and_bank, default_cache_dir
from taskvec_aesthetics.demo.world import build_world  # noqa: E402
from taskvec_aesthetics.experiments.benchmark import draw_order  # noqa: E402
from taskvec_aesthetics.personalization.config import PersonalizerConfig
from taskvec_aesthetics.personalization.inputs import EncodedRatings
from taskvec_aesthetics.personalization.personalizer import Personalizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=("quick", "default"), default="default")
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--shots", type=int, nargs="+", default=[10, 100])
    parser.add_argument(
        "--freeze-prefix-blocks",
        type=int,
        help="the bank's frozen prefix (default: the version's own), so that two "
        "versions can be timed on the same bank",
    )
    parser.add_argument("--threads", type=int, help="torch's threads (default: torch's own choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = DemoConfig.preset(args.preset)
    if args.freeze_prefix_blocks is not None:
        config = dataclasses.replace(config, freeze_prefix_blocks=args.freeze_prefix_blocks)
    world_config = dataclasses.replace(config.world, num_users=args.users, pool_size=max(150, max(args.shots) + 50))
    config = dataclasses.replace(config, world=world_config)
    world = build_world(config.world)
    base, bank, _, _ = base_and_bank(config, world, default_cache_dir(), progress=False)
    personalizer = Personalizer(base, bank, PersonalizerConfig())
    prefix = personalizer.encode([world.pool.image(i) for i in range(len(world.pool))])
    seconds = {}
    for k in args.shots:
        times = []
        for user in world.users:
            scores = torch.tensor(world.ratings[user.user_id]["score"], dtype=torch.float64)
            rated = torch.from_numpy(draw_order(len(scores), 0, k, 0, user.user_id)[:k])
            began = time.perf_counter()
            personalizer.fit_encoded(EncodedRatings(prefix[rated], scores[rated]))
            times.append(time.perf_counter() - began)
        seconds[k] = sum(times) / len(times)
    print(
        json.dumps(
            {
                "preset": args.preset,
                "users": args.users,
                "threads": torch.get_num_threads(),
                "bank": config.bank_key(),
                "seconds_per_fit": seconds,
            }
        )
    )


if __name__ == "__main__":
    main()
