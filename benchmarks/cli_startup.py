"""How long `taskvec-aesthetics ... --help` takes in a fresh process, next to two references measured in the same run.

Each line is the best of `--repeats` runs (wall clock): the bare interpreter (`python -c pass`), the import of
torch alone, then the top-level help and every subcommand's help. On a busy machine compare against the references.

    python benchmarks/cli_startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from taskvec_aesthetics.cli import build_parser


def commands() -> list[str]:
    """The top level (empty) and every subcommand of the parser, so a new subcommand is measured too."""
    return ["", *build_parser()._subparsers._group_actions[0].choices]


def best_wall_time(args: list[str], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, *args], capture_output=True, check=True)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per command; the best is reported (default: 5)")
    repeats = parser.parse_args().repeats
    rows = [("python -c pass", ["-c", "pass"]), ("python -c 'import torch'", ["-c", "import torch"])]
    for command in commands():
        name = " ".join(["taskvec-aesthetics", *([command] if command else []), "--help"])
        rows.append((name, ["-m", "taskvec_aesthetics.cli", *([command] if command else []), "--help"]))
    times = {}
    for name, args in rows:
        times[name] = best_wall_time(args, repeats)
        print(f"{times[name]:6.2f} s  {name}", flush=True)
    print(json.dumps({"repeats": repeats, "seconds": {k: round(v, 3) for k, v in times.items()}}))


if __name__ == "__main__":
    main()
