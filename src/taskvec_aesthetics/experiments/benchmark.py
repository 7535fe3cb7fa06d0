"""The few-shot PIAA protocol: for each user and repeat, k rated images to personalize, the user's others to test.

Every method sees only the k rated images; the test images take part in no choice (not the step, not the task,
not a weight). Images are encoded once (the frozen prefix) and each task model scores them once, so methods are
compared on identical inputs. Baselines: each single task model zero-shot, the best single model picked on the rated
images, the uniform average of the task vectors, the softmax(SROCC) init, the paper's recipe, our default, fine-tuning
the head of the best single model, fine-tuning the base, and a learned weighted ensemble of the task models' outputs.

Results carry their uncertainty: per method, the mean over users with a 95 % bootstrap interval, and the paired
difference to our default with its interval and win/tie/loss counts.
"""

from __future__ import annotations

import copy
import logging
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import InputError
from ..evaluation.metrics import srocc
from ..losses import pairwise_rank_loss
from ..personalization.inputs import decode_images, rows_by_user
from ..personalization.personalizer import EncodedRatings, Personalizer
from ..task_vectors.bank import TaskVectorBank
from ..task_vectors.coefficients import Coefficients
from ..utils.io import atomic_path, write_json
from .config import METHOD_LABELS, METHODS, BenchmarkConfig

if TYPE_CHECKING:
    from ..modeling import AestheticModel

__all__ = [
    "BenchmarkConfig",
    "BenchmarkResult",
    "Trial",
    "run_benchmark",
    "draw_order",
    "bootstrap_interval",
    "METHODS",
    "METHOD_LABELS",
    "TIE",
]

logger = logging.getLogger(__name__)

#: Paired SROCC differences smaller than this count as ties.
TIE = 0.005
BOOTSTRAP_SAMPLES = 2000


def bootstrap_interval(values: Sequence[float], seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (one value per user)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return (float("nan"), float("nan"))
    means = values[np.random.default_rng(seed).integers(0, len(values), (BOOTSTRAP_SAMPLES, len(values)))].mean(1)
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
        by_method: dict[str, dict[int, dict]] = defaultdict(dict)
        for row in rows:
            by_method[row["label"]][row["k"]] = row
        for label, cells in by_method.items():
            parts = []
            for k in shots:
                row = cells.get(k)
                if row is None:
                    parts += ["n/a"] * 3
                    continue
                parts.append(f"{row['srocc_mean']:.3f} [{row['srocc_low']:.3f}, {row['srocc_high']:.3f}]")
                parts.append(
                    f"{row['diff_mean']:+.3f} [{row['diff_low']:+.3f}, {row['diff_high']:+.3f}], "
                    f"{row['wins']}/{row['ties']}/{row['losses']}"
                    if "diff_mean" in row
                    else "—"
                )
                parts.append(f"{row['seconds_per_fit']:.2f}")
            lines.append(f"| {label} | " + " | ".join(parts) + " |")
        users = max(r["users"] for r in rows)
        lines.append(
            f"\nMeans over {users} users with 95 % bootstrap intervals; W/T/L: users where our default is better / "
            f"within {TIE} / worse."
        )
        for k, facts in self.choices().items():
            chosen = ", ".join(f"{name} {count}" for name, count in facts["chosen"].items())
            estimate = facts["cv_srocc_mean"]
            lines.append(
                f"k={k}: our default chose {chosen}"
                + (
                    f"; its cross-validated estimate averaged {estimate:.3f} against {facts['test_srocc_mean']:.3f} "
                    "on test images"
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

        def pick(candidates: list[dict[str, Any]], z: float) -> dict[str, Any]:
            best = max(candidates, key=lambda c: c["srocc"])
            return next(c for c in candidates if best["srocc"] - c["srocc"] <= z * best["srocc_se"] + 1e-12)

        def mean(values: list[float]) -> str:
            return f"{np.nanmean(values):.3f}"

        for z in (0.0, 0.5, 1.0):
            cells = [mean([pick(t.candidates, z)["test_srocc"] for t in rows if t.k == k]) for k in shots]
            lines.append(f"| first within {z} SE of the best | " + " | ".join(cells) + " |")
        for name in [c["candidate"] for c in rows[0].candidates]:
            cells = [
                mean([c["test_srocc"] for t in rows if t.k == k for c in t.candidates if c["candidate"] == name])
                for k in shots
            ]
            lines.append(f"| always `{name}` | " + " | ".join(cells) + " |")
        cells = [mean([max(c["test_srocc"] for c in t.candidates) for t in rows if t.k == k]) for k in shots]
        lines.append("| the best on the test images (oracle) | " + " | ".join(cells) + " |")
        lines.append("")
        for k in shots:
            wins: dict[str, int] = defaultdict(int)
            for t in rows:
                if t.k == k:
                    wins[max(t.candidates, key=lambda c: c["test_srocc"])["candidate"]] += 1
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


def _srocc(pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant prediction scores NaN, recorded as such
        return srocc(np.asarray(pred, dtype=np.float64), np.asarray(target, dtype=np.float64))


def _adam_fit(params: list[torch.Tensor], loss_fn: Callable[[], torch.Tensor], steps: int, lr: float) -> None:
    optimizer = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss_fn().backward()
        optimizer.step()


class _Methods:
    """The methods of the protocol over one set of encoded images (the frozen prefix of each image, once)."""

    def __init__(self, ours: Personalizer, prefix: torch.Tensor, config: BenchmarkConfig):
        self.config = config
        self.ours = ours
        self.paper = Personalizer(ours.model, ours.bank, config.paper) if "paper" in config.methods else None
        self.prefix = prefix
        began = time.perf_counter()
        self.model_scores = self.ours.model_scores(prefix)  # [T + 1, N]: the base and each task model, once
        self.task_scores = self.model_scores[1:]
        self.task_scoring_seconds = time.perf_counter() - began
        self.example: tuple[Coefficients, dict[str, Any]] | None = None  # our default's last fit and its report

    def run(
        self,
        rated: torch.Tensor,
        test: torch.Tensor,
        ratings: torch.Tensor,
        test_ratings: torch.Tensor,
        observed: torch.Tensor | None = None,
    ):
        """Yield (method, test SROCC, seconds, facts) for one user's draw; facts: what our default chose and
        estimated (and its SROCC against ``observed``, noisy test ratings, when given)."""
        methods = self.config.methods
        encoded = EncodedRatings(self.prefix[rated], ratings.double(), model_scores=self.model_scores[:, rated])
        # The transductive setting: every photo of the pool, without a rating.
        pool = (self.prefix, self.model_scores) if self.config.transductive else (None, None)
        rated_srocc = [_srocc(s[rated], ratings) for s in self.task_scores]
        best = int(np.nanargmax(np.nan_to_num(rated_srocc, nan=-1.0)))
        if "single" in methods:
            for t, name in enumerate(self.ours.bank.task_names):
                yield f"single:{name}", _srocc(self.task_scores[t, test], test_ratings), 0.0, {}
        if "best_single" in methods:
            yield "best_single", _srocc(self.task_scores[best, test], test_ratings), 0.0, {}
        for method, personalizer in (("default", self.ours), ("paper", self.paper)):
            if method not in methods:
                continue
            began = time.perf_counter()
            coefficients, report = personalizer.fit_encoded(encoded, *(pool if method == "default" else ()))
            seconds = time.perf_counter() - began
            predicted = personalizer.predict(coefficients, self.prefix[test])
            facts: dict[str, Any] = {}
            if method == "default":
                facts = {
                    "chosen": report.chosen,
                    "cv_srocc": report.cv_srocc,
                    "cv_interval": None if report.cv_interval is None else list(report.cv_interval),
                    "observed_srocc": None if observed is None else _srocc(predicted, observed),
                }
            if method == "default" and self.config.score_candidates:
                refits = personalizer.candidate_coefficients(encoded, report, *pool)
                facts["candidates"] = [
                    {
                        **row,
                        "test_srocc": _srocc(
                            personalizer.predict(refits[row["candidate"]], self.prefix[test]), test_ratings
                        ),
                    }
                    for row in report.cross_validation
                ]
            yield method, _srocc(predicted, test_ratings), seconds, facts
            if method == "default":
                self.example = coefficients, report.summary()
                if "init" in methods:
                    init = personalizer.predict(report.initial_coefficients, self.prefix[test])
                    yield "init", _srocc(init, test_ratings), 0.0, {}
        if "uniform" in methods:
            uniform = torch.full((self.ours.layout.num_groups, len(self.ours.bank)), 1.0 / len(self.ours.bank))
            yield "uniform", _srocc(self.ours.predict(uniform, self.prefix[test]), test_ratings), 0.0, {}
        for method, fit in (
            ("head_finetune", self._head_finetune),
            ("full_finetune", self._full_finetune),
            ("ensemble", self._ensemble),
        ):
            if method in methods:
                began = time.perf_counter()
                predicted = fit(rated, test, ratings, best, rated_srocc)
                yield method, _srocc(predicted, test_ratings), time.perf_counter() - began, {}

    def _task_params(self, task: int) -> dict[str, torch.Tensor]:
        one_hot = torch.zeros(self.ours.layout.num_groups, len(self.ours.bank))
        one_hot[:, task] = 1.0
        return {n: t.detach() for n, t in self.ours.merged(one_hot).items()}

    def _forward(self, params: dict[str, torch.Tensor], index: torch.Tensor):
        return self.ours.forward(params, self.prefix[index])

    def _head_finetune(self, rated, test, ratings, best, _rated_srocc) -> torch.Tensor:
        params = self._task_params(best)
        with torch.no_grad():
            features = {"rated": self._forward(params, rated).features, "test": self._forward(params, test).features}
        network = self.ours._network
        head = copy.deepcopy(network.head)
        head.load_state_dict(
            {n[len("head.") :]: params.get(n, p) for n, p in network.named_parameters() if n.startswith("head.")}
        )
        head.eval()  # dropout off: k ratings are too few to regularise by noise, and the fit stays deterministic
        score = lambda x: network.scores_from_distribution(head(x))  # noqa: E731
        torch.manual_seed(self.config.seed)
        _adam_fit(
            list(head.parameters()),
            lambda: pairwise_rank_loss(score(features["rated"]), ratings.to(features["rated"].device)),
            self.config.baseline_steps,
            self.config.head_learning_rate,
        )
        with torch.no_grad():
            return score(features["test"]).float().cpu()

    def _full_finetune(self, rated, test, ratings, _best, _rated_srocc) -> torch.Tensor:
        params = {n: t.detach().clone().requires_grad_(True) for n, t in self.ours._base.items()}
        generator = torch.Generator().manual_seed(self.config.seed)
        batch_size = self.config.personalizer.batch_size  # the same minibatches as the coefficient fits

        def loss() -> torch.Tensor:
            index = torch.randperm(len(rated), generator=generator)[:batch_size]
            scores = self._forward(params, rated[index]).scores
            return pairwise_rank_loss(scores, ratings[index].to(scores.device))

        _adam_fit(list(params.values()), loss, self.config.baseline_steps, self.config.full_learning_rate)
        with torch.no_grad():
            return self._forward(params, test).scores.float().cpu()

    def _ensemble(self, rated, test, ratings, _best, rated_srocc) -> torch.Tensor:
        scores = self.task_scores.double()
        mean, std = scores[:, rated].mean(1, keepdim=True), scores[:, rated].std(1, keepdim=True).clamp_min(1e-8)
        features = (scores - mean) / std
        init = torch.softmax(10.0 * torch.tensor(np.nan_to_num(rated_srocc, nan=0.0)), dim=0)
        weights = init.clone().requires_grad_(True)
        _adam_fit(
            [weights],
            lambda: pairwise_rank_loss(weights @ features[:, rated], ratings.double()),
            self.config.baseline_steps,
            self.config.ensemble_learning_rate,
        )
        with torch.no_grad():
            return weights @ features[:, test]


@dataclass
class _Draw:
    """One user's draw at one k: indices of the rated and test images, and their ratings."""

    user_id: str
    k: int
    repeat: int
    rated: torch.Tensor
    test: torch.Tensor
    ratings: torch.Tensor
    test_ratings: torch.Tensor
    observed: torch.Tensor | None = None  # noisy test ratings where test_ratings is a known truth


_DrawResult = tuple[list[tuple[str, float, float, dict]], tuple[Coefficients, dict[str, Any]] | None]


def _run_draw(methods: _Methods, draw: _Draw) -> _DrawResult:
    """Every method on one draw, and our default's fit (coefficients and report summary)."""
    methods.example = None
    results = list(methods.run(draw.rated, draw.test, draw.ratings, draw.test_ratings, draw.observed))
    return results, methods.example


_worker_methods: _Methods | None = None


def _start_worker(methods: _Methods, threads: int) -> None:
    global _worker_methods
    torch.set_num_threads(threads)
    _worker_methods = methods


def _run_draw_in_worker(draw: _Draw) -> _DrawResult:
    assert _worker_methods is not None, "the worker was not started with _start_worker"
    return _run_draw(_worker_methods, draw)


def _run_draws(methods: _Methods, draws: list[_Draw], workers: int) -> Iterator[tuple[int, _DrawResult]]:
    """`(index, result of _run_draw)` for each draw as it finishes: in order here, or in ``workers`` processes among
    which torch's threads are split, the largest k first (the slowest draws, so none is left running alone)."""
    if workers == 1 or methods.ours.device.type != "cpu":
        for index, draw in enumerate(draws):
            yield index, _run_draw(methods, draw)
        return
    threads = max(1, torch.get_num_threads() // workers)
    order = sorted(range(len(draws)), key=lambda i: -draws[i].k)
    # On Linux, fork hands the workers the encoded images and the bank without a copy or an import (spawn takes
    # seconds per worker for those); elsewhere fork is unsafe, and spawn pickles them once per worker.
    context = torch.multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    with context.Pool(workers, initializer=_start_worker, initargs=(methods, threads)) as pool:
        yield from zip(order, pool.imap(_run_draw_in_worker, [draws[i] for i in order]))


def draw_order(num_images: int, seed: int, k: int, repeat: int, user_id: str) -> np.ndarray:
    """The seeded order of a user's images for one draw: the first k are rated, the rest are the test set."""
    return np.random.default_rng([seed, k, repeat, *map(ord, user_id)]).permutation(num_images)


def run_benchmark(
    model: AestheticModel,
    bank: TaskVectorBank,
    dataset: Any,
    config: BenchmarkConfig | None = None,
    user_column: str = "user_id",
) -> BenchmarkResult:
    """Run the few-shot PIAA protocol on a dataset with `image`, `score` and `user_id` (and ideally `image_id`).

    Images shared by several users (same `image_id`) are encoded once. For every user, k and repeat, k of the user's
    images are drawn (seeded) as rated images; every method fits on them alone; test SROCC is measured on the user's
    remaining images.
    """
    config = config or BenchmarkConfig()
    missing = [c for c in ("image", "score", user_column) if c not in getattr(dataset, "column_names", [])]
    if missing:
        raise InputError(
            f"the benchmark needs a datasets.Dataset with columns image, score and {user_column}; missing {missing}"
        )
    began = time.perf_counter()
    image_ids = dataset["image_id"] if "image_id" in dataset.column_names else [str(i) for i in range(len(dataset))]
    unique = list(dict.fromkeys(image_ids))
    position = {image_id: i for i, image_id in enumerate(unique)}
    first_row = {image_id: row for row, image_id in reversed(list(enumerate(image_ids)))}
    ours = Personalizer(model, bank, config.personalizer)
    prefix = ours.encode(decode_images(dataset.select([first_row[i] for i in unique])))
    encode_seconds = time.perf_counter() - began
    methods = _Methods(ours, prefix, config)
    scores = np.asarray(dataset["score"], dtype=np.float64)
    draws: list[_Draw] = []
    for user, rows in rows_by_user(dataset, user_column).items():
        for k in config.shots:
            if len(rows) - k < config.min_test_images:
                logger.info(
                    "Skipping user %s at k=%d: %d images leave fewer than %d to test",
                    user,
                    k,
                    len(rows),
                    config.min_test_images,
                )
                continue
            for repeat in range(config.repeats):
                order = draw_order(len(rows), config.seed, k, repeat, user)
                rated_rows, test_rows = [rows[i] for i in order[:k]], [rows[i] for i in order[k:]]
                ratings = torch.tensor(scores[rated_rows])
                if torch.unique(ratings).numel() < 2:
                    logger.info("Skipping a draw of user %s at k=%d: all rated images have the same rating", user, k)
                    continue
                rated = torch.tensor([position[image_ids[r]] for r in rated_rows])
                test = torch.tensor([position[image_ids[r]] for r in test_rows])
                draws.append(_Draw(user, k, repeat, rated, test, ratings, torch.tensor(scores[test_rows])))
    results: list[_DrawResult | None] = [None] * len(draws)
    for index, result in tqdm(
        _run_draws(methods, draws, config.workers),
        total=len(draws),
        desc="Draws",
        unit="draw",
        disable=not config.progress,
    ):
        results[index] = result
    trials: list[Trial] = []
    example_user = None
    for draw, (outcomes, fit) in zip(draws, results):
        for method, value, seconds, facts in outcomes:
            trials.append(Trial(draw.user_id, draw.k, draw.repeat, method, float(value), float(seconds), **facts))
        if draw.k == max(config.shots) and example_user is None and fit is not None:
            example_user, (example, example_info) = draw.user_id, fit
    if not trials:
        raise InputError("no user had enough images for any k; lower shots or min_test_images")
    return BenchmarkResult(
        trials=trials,
        task_names=bank.task_names,
        config={
            "shots": list(config.shots),
            "repeats": config.repeats,
            "seed": config.seed,
            "methods": list(config.methods),
            "personalizer": config.personalizer.to_dict(),
            "paper": config.paper.to_dict(),
            "baseline_steps": config.baseline_steps,
            "transductive": config.transductive,
            "workers": config.workers,
        },
        timings={
            "encode_s": encode_seconds,
            "task_scoring_s": methods.task_scoring_seconds,
            "images": len(unique),
            "total_s": time.perf_counter() - began,
        },
        example_coefficients=example if example_user else None,
        example_user=example_user,
        example_info=example_info if example_user else None,
    )
