"""The README's two summary tables, from stored benchmark runs: our default against the obvious answers, and the
calibration of the estimate a person is shown, on the demo's raters and both planted worlds.

    python benchmarks/summary_tables.py

Reads benchmarks/results/demo_ensemble.json (`taskvec-aesthetics demo --score-candidates --methods ...
default_ensemble ...`), planted.json and planted_second.json (`benchmarks/planted.py --world first|second`), prints
markdown and writes it to benchmarks/results/summary.md; nothing is typed by hand.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from taskvec_aesthetics.experiments.analysis import load_benchmark_result
from taskvec_aesthetics.utils.io import atomic_path

RESULTS = Path(__file__).parent / "results"
WORLDS = {
    "demo (24 raters)": "demo_ensemble.json",
    "planted, first (9 tastes x 3 draws)": "planted.json",
    "planted, second, untuned (8 x 3)": "planted_second.json",
}
COLUMNS = ("default", "default_ensemble", "ensemble", "best_single", "init")


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    accuracy = [
        "| world | k | our default (one pass) | default + output ensemble as a candidate | learned output ensemble "
        "(T passes) | picked single model | softmax init | default − output ensemble [95% CI], W/T/L |",
        "|---|---|---|---|---|---|---|---|",
    ]
    calibration = [
        "| world | k | mean estimate | mean test SROCC | estimate − test | 90 % interval coverage | mean width |",
        "|---|---|---|---|---|---|---|",
    ]
    for world, name in WORLDS.items():
        result = load_benchmark_result(RESULTS / name)
        rows = {(row["method"], row["k"]): row for row in result.summary()}
        for k in sorted({k for _, k in rows}):
            cells = [
                f"{rows[m, k]['srocc_mean']:.3f}" if (m, k) in rows else "n/a"  # a method the run left out
                for m in COLUMNS
            ]
            gap = rows["ensemble", k]
            accuracy.append(
                f"| {world} | {k} | "
                + " | ".join(cells)
                + f" | {gap['diff_mean']:+.3f} [{gap['diff_low']:+.3f}, {gap['diff_high']:+.3f}], "
                f"{gap['wins']}/{gap['ties']}/{gap['losses']} |"
            )
        for k, facts in result.calibration().items():
            calibration.append(
                f"| {world} | {k} | {facts['estimate_mean']:.3f} | {facts['test_srocc_mean']:.3f} | "
                f"{facts['estimate_mean'] - facts['test_srocc_mean']:+.3f} | {facts['coverage']:.0%} | "
                f"{facts['width_mean']:.2f} |"
            )
    text = "\n".join(accuracy) + "\n\n" + "\n".join(calibration) + "\n"
    with atomic_path(RESULTS / "summary.md") as tmp:
        tmp.write_text(text, encoding="utf-8")
    print(text, end="")


if __name__ == "__main__":
    main()
