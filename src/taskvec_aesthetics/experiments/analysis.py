"""The paper's analyses, on any bank: how similar its task vectors are (its Figure 4, computed in `similarity` and
re-exported here), how personalization gains as databases are added (Figure 5), and how well each database's model
fits each user zero-shot (Figure 2).

The gains run the library's own
protocol (`benchmark.run_benchmark`, or any function of a bank that returns a `BenchmarkResult`) on nested subsets of
the bank; every subset sees the same users and the same draws, so sizes are compared on identical data.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from ..errors import AnalysisError
from ..task_vectors.similarity import SIMILARITY_GRANULARITIES, Similarity, task_vector_similarity, write_tables
from ..utils.io import read_json
from .benchmark import run_benchmark
from .config import BenchmarkConfig
from .results import BenchmarkResult, Trial, bootstrap_interval

if TYPE_CHECKING:
    from ..modeling import AestheticModel
    from ..task_vectors.bank import TaskVectorBank

__all__ = [
    "AnalysisError",
    "Similarity",
    "task_vector_similarity",
    "subset_orders",
    "GainsResult",
    "run_gains",
    "benchmark_gains",
    "ZeroShotPerUser",
    "zero_shot_per_user",
    "load_benchmark_result",
    "SIMILARITY_GRANULARITIES",
]

logger = logging.getLogger(__name__)


# -- gains with the number of databases ----------------------------------------------------------------------------
def subset_orders(
    task_names: Sequence[str], order: Sequence[str] | None = None, random_orders: int = 0, seed: int = 0
) -> list[list[str]]:
    """The orders in which databases are added: ``order`` (a fixed order of some or all tasks), or ``random_orders``
    seeded permutations of all tasks, or (neither) the bank's own order."""
    if order is not None and random_orders:
        raise AnalysisError("give either a fixed order or a number of random orders, not both")
    if random_orders < 0:
        raise AnalysisError(f"random_orders must be >= 0, received {random_orders}")
    if order is not None:
        order = list(order)
        unknown = [n for n in order if n not in task_names]
        if unknown or not order or len(set(order)) != len(order):
            raise AnalysisError(
                f"the order must name distinct tasks of the bank {list(task_names)}; received {order}"
                + (f" ({unknown} are not in the bank)" if unknown else "")
            )
        return [order]
    if random_orders:
        generator = np.random.default_rng(seed)
        return [[task_names[i] for i in generator.permutation(len(task_names))] for _ in range(random_orders)]
    return [list(task_names)]


@dataclass
class GainsResult:
    """The protocol on nested subsets of a bank: each order adds databases one at a time.

    Attributes:
        task_names: the bank's tasks, in bank order (every subset keeps this order).
        orders: the orders in which databases were added.
        per_user: for each distinct subset (its tasks joined by `+`, in bank order), each user's mean test SROCC over
            repeats, by method and k: ``per_user[subset][method][k][user]``.
        references: lines to draw, label -> SROCC (every k) or {k: SROCC}.
        config: the protocol's config.
    """

    task_names: list[str]
    orders: list[list[str]]
    per_user: dict[str, dict[str, dict[int, dict[str, float]]]]
    references: dict[str, float | Mapping[int, float]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def subsets(self, size: int) -> list[str]:
        """The distinct subsets of ``size`` databases the orders reach (keys of `per_user`)."""
        return list(dict.fromkeys(_subset_key(order[:size], self.task_names) for order in self.orders))

    def summary(self) -> list[dict[str, Any]]:
        """Per method, k and number of databases n: the mean over users of each user's SROCC averaged over the
        distinct subsets of size n the orders reach, with its 95 % bootstrap interval over users; the lowest and
        highest mean over those subsets; and how many subsets it averages."""
        rows = []
        sizes = range(1, max(len(o) for o in self.orders) + 1)
        first = next(iter(self.per_user.values()))
        for method, by_k in first.items():
            for k in by_k:
                for n in sizes:
                    subsets = [s for s in self.subsets(n) if method in self.per_user[s]]
                    users = list(self.per_user[subsets[0]][method][k])
                    values = np.array(
                        [[self.per_user[s][method][k][u] for u in users] for s in subsets], dtype=np.float64
                    )
                    per_user = values[0] if len(subsets) == 1 else np.nanmean(values, axis=0)
                    low, high = bootstrap_interval(per_user, seed=k)
                    means = np.nanmean(values, axis=1)
                    rows.append(
                        {
                            "method": method,
                            "k": k,
                            "databases": n,
                            "subsets": len(subsets),
                            "srocc_mean": float(np.nanmean(per_user)),
                            "srocc_low": low,
                            "srocc_high": high,
                            "subset_min": float(means.min()),
                            "subset_max": float(means.max()),
                            "users": len(users),
                        }
                    )
        return rows

    def for_users(self, users: Sequence[str]) -> GainsResult:
        """The same result over ``users`` only, for every method: lines drawn over the same people compare.

        References are dropped (they were computed over all the users)."""
        wanted = set(users)
        per_user = {
            s: {m: {k: {u: v for u, v in by_user.items() if u in wanted} for k, by_user in by_k.items()}
                for m, by_k in methods.items()}
            for s, methods in self.per_user.items()
        }  # fmt: skip
        missing = [
            f"{m} ({s})" for s, methods in per_user.items() for m, by_k in methods.items()
            if any(len(by_user) < len(wanted) for by_user in by_k.values())
        ]  # fmt: skip
        if missing:
            raise AnalysisError(f"not every method ran on users {sorted(wanted)}: {missing[:3]}")
        return GainsResult(self.task_names, self.orders, per_user, {}, dict(self.config))

    def to_dict(self) -> dict[str, Any]:
        return {
            "task_names": self.task_names,
            "orders": self.orders,
            "references": dict(self.references),
            "config": self.config,
            "summary": self.summary(),
            "per_user": {
                s: {m: {str(k): users for k, users in by_k.items()} for m, by_k in methods.items()}
                for s, methods in self.per_user.items()
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GainsResult:
        """Read back `to_dict`'s output (e.g. a saved `gains.json`)."""
        try:
            per_user = {
                s: {m: {int(k): dict(users) for k, users in by_k.items()} for m, by_k in methods.items()}
                for s, methods in data["per_user"].items()
            }
            references: dict[str, float | Mapping[int, float]] = {
                label: {int(k): float(v) for k, v in value.items()} if isinstance(value, Mapping) else float(value)
                for label, value in data.get("references", {}).items()
            }
            orders = [list(o) for o in data["orders"]]
            return cls(list(data["task_names"]), orders, per_user, references, dict(data.get("config", {})))
        except (KeyError, TypeError, AttributeError, ValueError) as error:
            raise AnalysisError(f"not a saved gains result (task_names, orders, per_user): {error!r}") from None

    def to_markdown(self) -> str:
        """One table per method: mean SROCC [95 % CI] per number of databases (rows) and k (columns)."""
        rows = self.summary()
        shots = sorted({r["k"] for r in rows})
        out = []
        for method in dict.fromkeys(r["method"] for r in rows):
            users = max(r["users"] for r in rows if r["method"] == method)
            out += [
                f"`{method}`: test SROCC by number of databases in the bank (mean over {users} users [95 % CI]; "
                "lowest / highest subset mean)",
                "",
                "| databases | subsets | " + " | ".join(f"k={k}" for k in shots) + " |",
                "|---|---|" + "---|" * len(shots),
            ]
            for n in sorted({r["databases"] for r in rows}):
                cells = {r["k"]: r for r in rows if r["method"] == method and r["databases"] == n}
                any_row = next(iter(cells.values()))
                parts = [
                    f"{c['srocc_mean']:.3f} [{c['srocc_low']:.3f}, {c['srocc_high']:.3f}]"
                    + (f"; {c['subset_min']:.3f} / {c['subset_max']:.3f}" if c["subsets"] > 1 else "")
                    for c in (cells[k] for k in shots)
                ]
                out.append(f"| {n} | {any_row['subsets']} | " + " | ".join(parts) + " |")
            out.append("")
        orders = "; ".join(" → ".join(o) for o in self.orders[:3]) + (" …" if len(self.orders) > 3 else "")
        out.append(f"{len(self.orders)} order(s) of adding databases: {orders}.")
        for label, value in self.references.items():
            shown = (
                f"{value:.3f}"
                if not isinstance(value, Mapping)
                else ", ".join(f"k={k}: {v:.3f}" for k, v in value.items())
            )
            out.append(f"Reference `{label}`: {shown}.")
        return "\n".join(out) + "\n"

    def save(
        self, directory: str | Path, stem: str = "gains", figure: bool = True, caption: str | None = None
    ) -> dict[str, Path]:
        """Write `{stem}.json`, `{stem}.md` (ending with ``caption``, e.g. the scale of the run, when given) and
        (with matplotlib) `{stem}.png` into ``directory``."""
        markdown = self.to_markdown() + (f"\n{caption}\n" if caption else "")
        paths = write_tables(directory, stem, {**self.to_dict(), "caption": caption}, markdown)
        if figure:
            from .plots import plot_gains

            paths["figure"] = plot_gains(self, Path(directory) / f"{stem}.png")
        return paths


def _subset_key(tasks: Sequence[str], task_names: Sequence[str]) -> str:
    return "+".join(n for n in task_names if n in set(tasks))


def run_gains(
    bank: TaskVectorBank,
    run: Callable[[TaskVectorBank], BenchmarkResult],
    orders: Sequence[Sequence[str]],
    references: Mapping[str, float | Mapping[int, float]] | None = None,
    progress: bool = True,
) -> tuple[GainsResult, dict[str, BenchmarkResult]]:
    """Run ``run`` (the protocol on a bank) on each distinct nested subset of ``bank`` the ``orders`` reach.

    Each subset keeps the bank's task order, so the full subset is the bank itself and gives exactly the full
    protocol's numbers. Returns the gains and each subset's `BenchmarkResult` (by subset key).
    """
    task_names = bank.task_names
    subsets = list(
        dict.fromkeys(_subset_key(order[:n], task_names) for order in orders for n in range(1, len(order) + 1))
    )
    results: dict[str, BenchmarkResult] = {}
    for key in tqdm(subsets, desc="Subsets of the bank", unit="subset", disable=not progress):
        names = key.split("+")
        logger.info("Running the protocol with %d database(s): %s", len(names), ", ".join(names))
        results[key] = run(bank if names == task_names else bank.select(names))
    per_user = {key: _nested_per_user(result) for key, result in results.items()}
    config = next(iter(results.values())).config
    gains = GainsResult(list(task_names), [list(o) for o in orders], per_user, dict(references or {}), dict(config))
    return gains, results


def _nested_per_user(result: BenchmarkResult) -> dict[str, dict[int, dict[str, float]]]:
    nested: dict[str, dict[int, dict[str, float]]] = defaultdict(dict)
    for (method, k), users in result.per_user().items():
        if not method.startswith("single:"):  # a database's own zero-shot model does not depend on the subset
            nested[method][k] = users
    return dict(nested)


def benchmark_gains(
    model: AestheticModel,
    bank: TaskVectorBank,
    dataset: Any,
    config: BenchmarkConfig | None = None,
    orders: Sequence[Sequence[str]] | None = None,
    references: Mapping[str, float | Mapping[int, float]] | None = None,
    user_column: str = "user_id",
) -> tuple[GainsResult, dict[str, BenchmarkResult]]:
    """`run_benchmark` on nested subsets of ``bank`` (see `run_gains`; ``orders`` from `subset_orders`, default the
    bank's order). The full bank's `BenchmarkResult` is among the returned results, under its subset key."""
    config = config or BenchmarkConfig()
    return run_gains(
        bank,
        lambda subset: run_benchmark(model, subset, dataset, config, user_column=user_column),
        orders or subset_orders(bank.task_names),
        references,
        progress=config.progress,
    )


# -- zero-shot per user --------------------------------------------------------------------------------------------
@dataclass
class ZeroShotPerUser:
    """Each database model's zero-shot test SROCC for each user (mean over the user's draws at one k), and what the
    personalized methods reached on the same draws.

    Attributes:
        k: the number of rated images of the draws (their test images are the rest).
        task_names: the databases, users: the users; values: `[U, T]`.
        personalized: method -> user -> SROCC at the same k (e.g. our default), to compare against.
    """

    k: int
    task_names: list[str]
    users: list[str]
    values: np.ndarray
    personalized: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "task_names": self.task_names,
            "srocc": {u: dict(zip(self.task_names, map(float, row))) for u, row in zip(self.users, self.values)},
            "personalized": self.personalized,
        }

    def to_markdown(self) -> str:
        methods = list(self.personalized)
        lines = [
            f"Zero-shot test SROCC of each database's model per user (k = {self.k}: the test images are each user's "
            "images but the k rated ones; mean over draws); best database in bold"
            + (f"; then {', '.join(f'`{m}`' for m in methods)} on the same draws" if methods else "")
            + ".",
            "",
            "| user | " + " | ".join(self.task_names + methods) + " |",
            "|---|" + "---|" * (len(self.task_names) + len(methods)),
        ]
        for user, row in zip(self.users, self.values):
            best = int(np.nanargmax(np.nan_to_num(row, nan=-2.0)))
            cells = [f"**{v:.3f}**" if t == best else f"{v:.3f}" for t, v in enumerate(row)]
            cells += [f"{self.personalized[m].get(user, float('nan')):.3f}" for m in methods]
            lines.append(f"| {user} | " + " | ".join(cells) + " |")
        wins = np.bincount(np.nanargmax(np.nan_to_num(self.values, nan=-2.0), axis=1), minlength=len(self.task_names))
        lines.append("")
        lines.append(
            "Best database per user: " + ", ".join(f"{n} {c}" for n, c in zip(self.task_names, wins) if c) + "."
        )
        return "\n".join(lines) + "\n"

    def save(self, directory: str | Path, stem: str = "zero_shot", figure: bool = True) -> dict[str, Path]:
        """Write `{stem}.json`, `{stem}.md` and (with matplotlib) `{stem}.png` into ``directory``."""
        paths = write_tables(directory, stem, self.to_dict(), self.to_markdown())
        if figure:
            from .plots import plot_zero_shot

            paths["figure"] = plot_zero_shot(self, Path(directory) / f"{stem}.png")
        return paths


def zero_shot_per_user(
    result: BenchmarkResult, k: int | None = None, compare: Sequence[str] = ("best_single", "default")
) -> ZeroShotPerUser:
    """Each database model's zero-shot SROCC per user from a benchmark run (its `single` method), at ``k`` (default:
    the smallest, whose test sets are the largest), with the methods ``compare`` on the same draws where they ran."""
    per_user = result.per_user()
    shots = sorted({key[1] for key in per_user if key[0].startswith("single:")})
    if not shots:
        raise AnalysisError("the benchmark did not run the single task models (method 'single'): no zero-shot numbers")
    k = shots[0] if k is None else k
    if k not in shots:
        raise AnalysisError(f"the benchmark has zero-shot numbers at k = {shots}, received k = {k}")
    users = list(per_user[f"single:{result.task_names[0]}", k])
    values = np.array([[per_user[f"single:{t}", k].get(u, np.nan) for t in result.task_names] for u in users])
    personalized = {m: per_user[m, k] for m in compare if (m, k) in per_user}
    return ZeroShotPerUser(k, list(result.task_names), users, values, personalized)


def load_benchmark_result(path: str | Path) -> BenchmarkResult:
    """A `BenchmarkResult` read back from the `results.json` that `BenchmarkResult.save` wrote (its trials; the
    example coefficients are not read)."""
    data = read_json(path, "a benchmark's results.json (BenchmarkResult.save)")
    try:
        trials = [Trial(**trial) for trial in data["trials"]]
        return BenchmarkResult(trials, list(data["task_names"]), dict(data["config"]), dict(data.get("timings", {})))
    except (KeyError, TypeError) as error:
        raise AnalysisError(f"{path} is not a benchmark's results.json: {error!r}") from None
