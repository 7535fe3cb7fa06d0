"""The README's two summary tables, from stored benchmark runs: our default against the obvious answers, and the
calibration of the estimate a person is shown, on the demo's raters and both planted worlds.

    python benchmarks/summary_tables.py

Reads benchmarks/results/demo.json (`taskvec-aesthetics demo --score-candidates --methods ... one_pass ...`),
planted.json and planted_second.json (`benchmarks/planted.py --world first|second`) for the first table, and
calibration_demo.json, calibration_first.json and calibration_second.json (`benchmarks/calibration.py`, our default
on the same draws) for the second; prints markdown and writes it to benchmarks/results/summary.md; nothing is typed
by hand.

Our default lets the output ensemble compete where scoring with it costs at most 1.5x one model's encoder blocks
(`PersonalizerConfig.max_scoring_cost`): on the demo's bank (15 frozen blocks of 16, 7 task models: 1.375x) but not
on the planted worlds' (every parameter fine-tuned, 4 task models: 4x). Where a run has no column of its own, the
rule says which it equals: kept one pass = our default where the ensemble costs more, and our default = the default
with the ensemble always competing where it costs less.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from taskvec_aesthetics.experiments.analysis import load_benchmark_result
from taskvec_aesthetics.personalization.config import PersonalizerConfig
from taskvec_aesthetics.personalization.output_ensemble import scoring_cost
from taskvec_aesthetics.utils.io import atomic_path

RESULTS = Path(__file__).parent / "results"
BUDGET = PersonalizerConfig().max_scoring_cost
#: Each world's run, its calibration run, and what its output ensemble costs to score (`scoring_cost(T, blocks,
#: frozen prefix blocks)`).
WORLDS = {
    "demo (24 raters)": ("demo.json", "calibration_demo.json", scoring_cost(7, 16, 15)),
    "planted, first (9 tastes x 3 draws)": ("planted.json", "calibration_first.json", scoring_cost(4, 2, None)),
    "planted, second (8 x 3)": ("planted_second.json", "calibration_second.json", scoring_cost(4, 2, None)),
}
COLUMNS = ("default", "one_pass", "default_ensemble", "ensemble", "best_single", "init")


def cell(rows: dict, method: str, k: int, same: dict[str, str]) -> str:
    """A method's mean test SROCC at k; where the run has no column of its own, the one the rule makes it equal."""
    if (method, k) in rows:
        return f"{rows[method, k]['srocc_mean']:.3f}"
    if method in same:
        return f"= {rows[same[method], k]['srocc_mean']:.3f}"
    return "n/a"  # a method the run left out


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    accuracy = [
        "| world | k | output ensemble's cost | our default | our default kept one pass | default with the output "
        "ensemble always competing | learned output ensemble | picked single model | softmax init | default − "
        "output ensemble [95% CI], W/T/L |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    calibration = [
        "| world | k | mean estimate | mean test SROCC | estimate − test | 90 % interval coverage | mean width |",
        "|---|---|---|---|---|---|---|",
    ]
    for world, (name, calibrated, cost) in WORLDS.items():
        result = load_benchmark_result(RESULTS / name)
        rows = {(row["method"], row["k"]): row for row in result.summary()}
        relative = cost["relative_to_one_model"]
        same = {"one_pass": "default"} if relative > BUDGET else {"default_ensemble": "default"}
        for k in sorted({k for _, k in rows}):
            cells = [cell(rows, m, k, same) for m in COLUMNS]
            gap = rows["ensemble", k]
            accuracy.append(
                f"| {world} | {k} | {relative:g}x | "
                + " | ".join(cells)
                + f" | {gap['diff_mean']:+.3f} [{gap['diff_low']:+.3f}, {gap['diff_high']:+.3f}], "
                f"{gap['wins']}/{gap['ties']}/{gap['losses']} |"
            )
        for k, facts in load_benchmark_result(RESULTS / calibrated).calibration().items():
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
