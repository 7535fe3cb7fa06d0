"""A benchmark's results: one `Trial` per method and draw, summarised per method and k with their uncertainty (the mean
over users with a 95 % bootstrap interval, the paired difference to our default with its interval and win/tie/loss
counts), the default's choices and calibration, and the tables and files that report them."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..task_vectors.coefficients import Coefficients
from ..utils.io import atomic_path, write_json
from .config import METHOD_LABELS, METHODS

__all__ = ["BOOTSTRAP_SAMPLES", "BenchmarkResult", "TIE", "Trial", "bootstrap_interval"]

#: Paired SROCC differences smaller than this count as ties.
TIE = 0.005
BOOTSTRAP_SAMPLES = 2000


def bootstrap_interval(
    values: Sequence[float] | np.ndarray, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (one value per user)."""
    array = np.asarray(values, dtype=np.float64)
    if len(array) < 2:
        return (float("nan"), float("nan"))
    means = array[np.random.default_rng(seed).integers(0, len(array), (BOOTSTRAP_SAMPLES, len(array)))].mean(1)
    tail = 100 * (1 - level) / 2
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


@dataclass
class Trial:
    """One method on one user's k rated images (one repeat): its test SROCC and wall time; for our default, the
    candidate it chose, its estimate of its own SROCC with the 90 % interval, and where the test ratings are noisy
    observations of a known truth (planted worlds), its SROCC against those observations (what the person sees)."""

    user_id: str
    k: int
    repeat: int
    method: str
    srocc: float
    seconds: float
    chosen: str | None = None
    cv_srocc: float | None = None
    candidates: list[dict[str, Any]] | None = None
    cv_interval: list[float] | None = None
    observed_srocc: float | None = None


@dataclass
class BenchmarkResult:
    trials: list[Trial]
    task_names: list[str]
    config: dict[str, Any]
    timings: dict[str, float]
    example_coefficients: Coefficients | None = None
    example_user: str | None = None
    #: What our default reported of the example fit (`PersonalizationReport.summary`).
    example_info: dict[str, Any] | None = None

    def per_user(self) -> dict[tuple[str, int], dict[str, float]]:
        """Each user's mean test SROCC over repeats, by (method, k)."""
        values: dict[tuple[str, int], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for trial in self.trials:
            values[trial.method, trial.k][trial.user_id].append(trial.srocc)
        return {key: {user: float(np.nanmean(v)) for user, v in users.items()} for key, users in values.items()}

    def summary(self, reference: str = "default") -> list[dict[str, Any]]:
        """Per method and k: mean over users (each user's mean over repeats) with its 95 % bootstrap interval, the
        paired difference ``reference - method`` with its interval and the reference's wins/ties/losses (ties:
        within `TIE`), and mean seconds per fit."""
        per_user = self.per_user()
        seconds: dict[tuple[str, int], list[float]] = defaultdict(list)
        for trial in self.trials:
            seconds[trial.method, trial.k].append(trial.seconds)
        rows = []
        for (method, k), users in per_user.items():
            values = np.array(list(users.values()))
            low, high = bootstrap_interval(values, seed=k)
            row = {
                "method": method,
                "k": k,
                "label": _label(method, self.config),
                "srocc_mean": float(np.nanmean(values)),
                "srocc_low": low,
                "srocc_high": high,
                "srocc_std": float(np.nanstd(values)),
                "users": int(len(values)),
                "seconds_per_fit": float(np.mean(seconds[method, k])),
            }
            ours = per_user.get((reference, k))
            if ours is not None and method != reference:
                common = sorted(set(ours) & set(users))
                gaps = np.array([ours[u] - users[u] for u in common])
                row.update(
                    {
                        "diff_mean": float(np.nanmean(gaps)),
                        "diff_low": bootstrap_interval(gaps, seed=k)[0],
                        "diff_high": bootstrap_interval(gaps, seed=k)[1],
                        "wins": int((gaps > TIE).sum()),
                        "ties": int((np.abs(gaps) <= TIE).sum()),
                        "losses": int((gaps < -TIE).sum()),
                    }
                )
            rows.append(row)
        order = {m: i for i, m in enumerate(_ordered_methods(self.task_names))}
        return sorted(rows, key=lambda r: (order.get(r["method"], 99), r["k"]))

    def choices(self, method: str = "default") -> dict[int, dict[str, Any]]:
        """Per k: how often our default chose each candidate, and its mean cross-validated estimate of its own SROCC
        next to the mean test SROCC it reached."""
        out: dict[int, dict[str, Any]] = {}
        for k in sorted({t.k for t in self.trials if t.method == method}):
            trials = [t for t in self.trials if t.method == method and t.k == k]
            counts: dict[str, int] = defaultdict(int)
            for trial in trials:
                counts[trial.chosen or "?"] += 1
            estimates = [t.cv_srocc for t in trials if t.cv_srocc is not None]
            out[k] = {
                "chosen": dict(sorted(counts.items(), key=lambda item: -item[1])),
                "cv_srocc_mean": float(np.mean(estimates)) if estimates else None,
                "test_srocc_mean": float(np.nanmean([t.srocc for t in trials])),
            }
        return out

    def calibration(self, method: str = "default") -> dict[int, dict[str, float]]:
        """Per k, how well our default's estimate predicted its test SROCC: the mean estimate, the mean test SROCC
        (against the observed ratings where a trial has them), their mean absolute difference per draw, and the
        share of draws whose 90 % interval covered the test SROCC."""
        out: dict[int, dict[str, float]] = {}
        for k in sorted({t.k for t in self.trials if t.method == method}):
            trials = [t for t in self.trials if t.method == method and t.k == k and t.cv_interval is not None]
            if not trials:
                continue
            test = np.array([t.srocc if t.observed_srocc is None else t.observed_srocc for t in trials])
            estimate = np.array([t.cv_srocc for t in trials])
            low, high = np.array([t.cv_interval for t in trials]).T
            out[k] = {
                "estimate_mean": float(np.mean(estimate)),
                "test_srocc_mean": float(np.nanmean(test)),
                "abs_error_mean": float(np.nanmean(np.abs(estimate - test))),
                "coverage": float(np.mean((low <= test) & (test <= high))),
                "width_mean": float(np.mean(high - low)),
                "draws": len(trials),
            }
        return out

    def calibration_markdown(self) -> str:
        """The calibration table (see `calibration`)."""
        rows = self.calibration()
        if not rows:
            return ""
        lines = [
            "| k | mean estimate | mean test SROCC | estimate − test | mean abs. error per draw | 90 % interval "
            "coverage | mean width | draws |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for k, r in rows.items():
            lines.append(
                f"| {k} | {r['estimate_mean']:.3f} | {r['test_srocc_mean']:.3f} | "
                f"{r['estimate_mean'] - r['test_srocc_mean']:+.3f} | {r['abs_error_mean']:.3f} | "
                f"{r['coverage']:.0%} | {r['width_mean']:.2f} | {r['draws']} |"
            )
        return "\n".join(lines) + "\n"

    def to_markdown(self, reference: str = "default") -> str:
        """A table: one row per method; per k the SROCC with its 95 % interval, the paired difference of our default
        to the method with its interval and W/T/L, and seconds per fit. Then what the default chose."""
        rows = self.summary(reference)
        shots = sorted({r["k"] for r in rows})
        lines = [
            "| method | "
            + " | ".join(f"k={k} SROCC [95% CI] | k={k} default − method [95% CI], W/T/L | k={k} s/fit" for k in shots)
            + " |",
            "|---|" + "---|---|---|" * len(shots),
        ]
        by_method: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
        for row in rows:
            by_method[row["label"]][row["k"]] = row
        for label, cells in by_method.items():
            parts = []
            for k in shots:
                cell = cells.get(k)
                if cell is None:
                    parts += ["n/a"] * 3
                    continue
                parts.append(f"{cell['srocc_mean']:.3f} [{cell['srocc_low']:.3f}, {cell['srocc_high']:.3f}]")
                parts.append(
                    f"{cell['diff_mean']:+.3f} [{cell['diff_low']:+.3f}, {cell['diff_high']:+.3f}], "
                    f"{cell['wins']}/{cell['ties']}/{cell['losses']}"
                    if "diff_mean" in cell
                    else "—"
                )
                parts.append(f"{cell['seconds_per_fit']:.2f}")
            lines.append(f"| {label} | " + " | ".join(parts) + " |")
        users = max(r["users"] for r in rows)
        lines.append(
            f"\nMeans over {users} users with 95 % bootstrap intervals; W/T/L: users where our default is better / "
            f"within {TIE} / worse."
        )
        for method, who in (
            ("default", "our default"),
            ("one_pass", "our default kept one pass"),
            ("default_ensemble", "our default with the output ensemble competing"),
        ):
            for k, facts in self.choices(method).items():  # no rows for a method the run left out
                chosen = ", ".join(f"{name} {count}" for name, count in facts["chosen"].items())
                estimate = facts["cv_srocc_mean"] if method == "default" else None
                lines.append(
                    f"k={k}: {who} chose {chosen}"
                    + (
                        f"; its cross-validated estimate averaged {estimate:.3f} against "
                        f"{facts['test_srocc_mean']:.3f} on test images"
                        if estimate is not None
                        else ""
                    )
                    + "."
                )
        calibration = self.calibration_markdown()
        if calibration:
            lines += ["", "Calibration of our default's estimate (selection included) and its 90 % interval:", ""]
            lines.append(calibration)
        return "\n".join(lines) + "\n"

    def selection_rules(self) -> str:
        """Where our default refitted every candidate (`score_candidates`): a table of the mean test SROCC per k of
        the candidate each selection rule picks on the same draws (the first, in `CANDIDATES` order, within z
        standard errors of the best cross-validated SROCC), of each candidate always, and of the best on the test
        images; and how often each candidate is the best on the test images."""
        rows = [t for t in self.trials if t.method == "default" and t.candidates]
        if not rows:
            return ""
        shots = sorted({t.k for t in rows})
        lines = ["| selection rule | " + " | ".join(f"k={k}" for k in shots) + " |", "|---|" + "---|" * len(shots)]

        def candidates_of(trial: Trial) -> list[dict[str, Any]]:
            return trial.candidates or []  # every row has them

        def pick(candidates: list[dict[str, Any]], z: float) -> dict[str, Any]:
            best = max(candidates, key=lambda c: c["srocc"])
            return next(c for c in candidates if best["srocc"] - c["srocc"] <= z * best["srocc_se"] + 1e-12)

        def mean(values: list[float]) -> str:
            return f"{np.nanmean(values):.3f}"

        for z in (0.0, 0.5, 1.0):
            cells = [mean([pick(candidates_of(t), z)["test_srocc"] for t in rows if t.k == k]) for k in shots]
            lines.append(f"| first within {z} SE of the best | " + " | ".join(cells) + " |")
        for name in [c["candidate"] for c in candidates_of(rows[0])]:
            cells = [
                mean([c["test_srocc"] for t in rows if t.k == k for c in candidates_of(t) if c["candidate"] == name])
                for k in shots
            ]
            lines.append(f"| always `{name}` | " + " | ".join(cells) + " |")
        cells = [mean([max(c["test_srocc"] for c in candidates_of(t)) for t in rows if t.k == k]) for k in shots]
        lines.append("| the best on the test images (oracle) | " + " | ".join(cells) + " |")
        lines.append("")
        for k in shots:
            wins: dict[str, int] = defaultdict(int)
            for t in rows:
                if t.k == k:
                    wins[max(candidates_of(t), key=lambda c: c["test_srocc"])["candidate"]] += 1
            lines.append(
                f"k={k}: best candidate on the test images: " + ", ".join(f"{n} {c}" for n, c in wins.items())
            )
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {
            "summary": self.summary(),
            "choices": {str(k): v for k, v in self.choices().items()},
            "calibration": {str(k): v for k, v in self.calibration().items()},
            "trials": [asdict(t) for t in self.trials],
            "task_names": self.task_names,
            "config": self.config,
            "timings": self.timings,
            "example": None
            if self.example_coefficients is None
            else {"user_id": self.example_user, "coefficients": self.example_coefficients.to_dict()},
        }

    def save(
        self,
        directory: str | Path,
        figure: bool = True,
        stem: str = "results",
        noise_ceiling: float | None = None,
        caption: str | None = None,
    ) -> dict[str, Path]:
        """Write `{stem}.json`, `{stem}.md` and (with matplotlib) `{stem}.png` into ``directory``; the figure marks
        ``noise_ceiling`` when given, and `{stem}.md` ends with ``caption`` (what the numbers are) when given."""
        directory = Path(directory)
        paths = {"json": write_json(directory / f"{stem}.json", self.to_dict()), "markdown": directory / f"{stem}.md"}
        markdown = self.to_markdown().rstrip("\n") + (f"\n\n{caption}\n" if caption else "\n")
        with atomic_path(paths["markdown"]) as tmp:
            tmp.write_text(markdown, encoding="utf-8")
        if figure:
            from .plots import plot_benchmark

            paths["figure"] = plot_benchmark(self, directory / f"{stem}.png", noise_ceiling=noise_ceiling)
        return paths


def _label(method: str, config: dict[str, Any]) -> str:
    if method.startswith("single:"):
        return f"single task model `{method.split(':', 1)[1]}`, zero-shot"
    return METHOD_LABELS.get(method, method).format(steps=config.get("paper", {}).get("steps", "?"))


def _ordered_methods(task_names: Sequence[str]) -> list[str]:
    return [f"single:{t}" for t in task_names] + [m for m in METHODS if m != "single"]
