"""Seconds per personalization with the default recipe on a demo bank (or a planted world's), at k = 10 and k = 100.

Measures whatever version of the library is importable, so two versions can be compared in one session:

    PYTHONPATH=old/src python benchmarks/timing.py --preset quick --users 4
    PYTHONPATH=src     python benchmarks/timing.py --preset quick --users 4
    PYTHONPATH=src     python benchmarks/timing.py --world first --threads 1

With ``--world first|second`` the bank is a planted world's (tests/planted.py; every parameter fine-tuned, so the
output ensemble costs 4x and its distillation competes) and the users are its first tastes, 400 photos each.

Prints one JSON line. Timings on a shared machine are only comparable within one session.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

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


def planted_users(world_name: str, users: int) -> tuple[Personalizer, torch.Tensor, dict[str, torch.Tensor]]:
    """The default recipe on a planted world's bank, its 400 photos encoded, and its first ``users`` tastes' ratings."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import planted
    import planted_second

    spec = planted if world_name == "first" else planted_second
    torch.manual_seed(0)
    world = planted.build_world(photos_of=spec.images, traits_of=spec.criteria)
    photos = spec.images(400, 2)
    personalizer = Personalizer(world.base, world.bank, PersonalizerConfig())
    prefix = personalizer.encode(planted.to_pixels(world.base, photos))
    ratings = {
        user: planted.user_ratings(photos, weights, 0.1, 1000 * u, spec.criteria)[1].double()
        for u, (user, weights) in enumerate(list(spec.USERS.items())[:users])
    }
    return personalizer, prefix, ratings


def demo_users(args: argparse.Namespace) -> tuple[Personalizer, torch.Tensor, dict[str, torch.Tensor], str]:
    """The default recipe on the demo's bank, its pool encoded, and each simulated rater's ratings."""
    config = DemoConfig.preset(args.preset)
    if args.freeze_prefix_blocks is not None:
        config = dataclasses.replace(config, freeze_prefix_blocks=args.freeze_prefix_blocks)
    world_config = dataclasses.replace(config.world, num_users=args.users, pool_size=max(150, max(args.shots) + 50))
    config = dataclasses.replace(config, world=world_config)
    world = build_world(config.world)
    base, bank, _, _ = base_and_bank(config, world, default_cache_dir(), progress=False)
    personalizer = Personalizer(base, bank, PersonalizerConfig())
    prefix = personalizer.encode([world.pool.image(i) for i in range(len(world.pool))])
    ratings = {
        user.user_id: torch.tensor(world.ratings[user.user_id]["score"], dtype=torch.float64) for user in world.users
    }
    return personalizer, prefix, ratings, config.bank_key()


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
    parser.add_argument("--world", choices=("demo", "first", "second"), default="demo", help="whose bank and users")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.world == "demo":
        personalizer, prefix, ratings, bank_name = demo_users(args)
    else:
        (personalizer, prefix, ratings), bank_name = planted_users(args.world, args.users), f"planted {args.world}"
    seconds = {}
    for k in args.shots:
        times = []
        for user, scores in ratings.items():
            rated = torch.from_numpy(draw_order(len(scores), 0, k, 0, user)[:k])
            began = time.perf_counter()
            personalizer.fit_encoded(EncodedRatings(prefix[rated], scores[rated]))
            times.append(time.perf_counter() - began)
        seconds[k] = sum(times) / len(times)
    print(
        json.dumps(
            {
                "world": args.world,
                "preset": args.preset,
                "users": args.users,
                "threads": torch.get_num_threads(),
                "bank": bank_name,
                "seconds_per_fit": seconds,
            }
        )
    )


if __name__ == "__main__":
    main()
