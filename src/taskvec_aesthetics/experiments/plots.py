"""Figures: benchmark results (SROCC by method and k, one user's coefficients) and the paper's analyses (gains with the
number of databases, zero-shot SROCC per user and database). The task-vector similarity draws its own
(`Similarity.save`)."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..utils.plotting import pyplot, save_figure

if TYPE_CHECKING:
    from .analysis import GainsResult, ZeroShotPerUser
    from .results import BenchmarkResult

__all__ = ["plot_benchmark", "plot_gains", "plot_zero_shot"]

logger = logging.getLogger(__name__)


def plot_benchmark(result: BenchmarkResult, path: str | Path, noise_ceiling: float | None = None) -> Path:
    """Save a PNG: test SROCC by method and k (mean over users with its 95 % bootstrap interval; the noise ceiling as
    a dashed line when given), and the example user's coefficients."""
    plt = pyplot()
    rows = result.summary()
    labels = list(dict.fromkeys(r["label"] for r in rows))
    shots = sorted({r["k"] for r in rows})
    coefficients = result.example_coefficients
    fig, axes = plt.subplots(
        1,
        2 if coefficients is not None else 1,
        figsize=(15, 0.38 * len(labels) + 2.5),
        squeeze=False,
        gridspec_kw={"width_ratios": [3, 2]} if coefficients is not None else None,
    )
    ax = axes[0][0]
    height = 0.8 / len(shots)
    for j, k in enumerate(shots):
        cells = {r["label"]: r for r in rows if r["k"] == k}
        present = [(i, cells[label]) for i, label in enumerate(labels) if label in cells]
        ax.barh(
            [i + j * height for i, _ in present],
            [row["srocc_mean"] for _, row in present],
            height=height,
            xerr=[
                [row["srocc_mean"] - row["srocc_low"] for _, row in present],
                [row["srocc_high"] - row["srocc_mean"] for _, row in present],
            ],
            label=f"k = {k}",
            capsize=2,
        )
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(labels))], labels, fontsize=8)
    ax.invert_yaxis()
    users = max(row["users"] for row in rows)
    ax.set_xlabel(f"test SROCC (mean over {users} users, 95 % bootstrap interval)")
    ax.axvline(0.0, color="black", linewidth=0.5)
    if noise_ceiling is not None:
        ax.axvline(
            noise_ceiling, color="grey", linestyle="--", linewidth=1, label=f"noise ceiling {noise_ceiling:.2f}"
        )
    ax.legend(loc="upper right")
    ax.set_title("Few-shot personalization")
    if coefficients is not None:
        ax = axes[0][1]
        image = ax.imshow(
            coefficients.values.numpy(),
            aspect="auto",
            cmap="RdBu_r",
            vmin=-abs(coefficients.values).max(),
            vmax=abs(coefficients.values).max(),
        )
        ax.set_xticks(
            range(len(coefficients.task_names)), coefficients.task_names, rotation=45, ha="right", fontsize=8
        )
        ax.set_yticks(range(len(coefficients.group_names)), coefficients.group_names, fontsize=7)
        ax.set_title(f"one-pass coefficients of user {result.example_user} (k = {max(shots)})")
        fig.colorbar(image, ax=ax)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_gains(gains: GainsResult, path: str | Path) -> Path:
    """Save a PNG, one panel per k: mean test SROCC against the number of databases in the bank, per method, with
    its 95 % interval over users (band), each subset's mean (dots, with several orders) and the reference lines."""
    plt = pyplot()
    rows = gains.summary()
    shots = sorted({r["k"] for r in rows})
    fig, axes = plt.subplots(1, len(shots), figsize=(max(7, 5.5 * len(shots)), 4.5), squeeze=False)
    for ax, k in zip(axes[0], shots):
        for method in dict.fromkeys(r["method"] for r in rows):
            line = sorted((r for r in rows if r["k"] == k and r["method"] == method), key=lambda r: r["databases"])
            sizes = [r["databases"] for r in line]
            (drawn,) = ax.plot(sizes, [r["srocc_mean"] for r in line], marker="o", label=method)
            low, high = [r["srocc_low"] for r in line], [r["srocc_high"] for r in line]
            ax.fill_between(sizes, low, high, alpha=0.08, color=drawn.get_color())
            for n in sizes:
                subsets = gains.subsets(n)
                if len(subsets) > 1:
                    means = [np.nanmean(list(gains.per_user[s][method][k].values())) for s in subsets]
                    ax.scatter([n] * len(means), means, s=8, alpha=0.4, color=drawn.get_color())
        for label, reference in gains.references.items():
            value = reference.get(k) if isinstance(reference, dict) else reference
            if value is not None:
                ax.axhline(value, linestyle=":", color="black", linewidth=1.2, label=label)
        ax.set_xticks(range(1, len(gains.task_names) + 1))
        ax.set_xlabel("number of databases in the bank")
        ax.set_ylabel("test SROCC (mean over users, 95 % CI)")
        ax.set_title(f"k = {k} rated images")
        ax.legend(fontsize=8)
    orders = len(gains.orders)
    title = "Test SROCC against the number of databases " + (
        f"(added in the order {' → '.join(gains.orders[0])})"
        if orders == 1
        else f"({orders} random orders; dots: each subset's mean)"
    )
    fig.suptitle(textwrap.fill(title, 110), fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_zero_shot(zero_shot: ZeroShotPerUser, path: str | Path, columns: int = 6) -> Path:
    """Save a PNG of small multiples, one panel per user: each database model's zero-shot test SROCC (bars, the best
    one dark), with the personalized methods' SROCC on the same draws as lines."""
    plt = pyplot()
    users = len(zero_shot.users)
    columns = min(columns, users)
    rows = -(-users // columns)
    tasks = len(zero_shot.task_names)
    fig, axes = plt.subplots(
        rows, columns, figsize=(2.3 * columns, 1.9 * rows + 0.8), squeeze=False, sharex=True, sharey=True
    )
    styles = ["--", "-", "-."]
    for index, ax in enumerate(axes.flat):
        if index >= users:
            ax.axis("off")
            continue
        user, values = zero_shot.users[index], zero_shot.values[index]
        best = max(range(tasks), key=lambda t: values[t] if values[t] == values[t] else -2.0)
        ax.bar(range(tasks), values, color=["tab:blue" if t == best else "tab:gray" for t in range(tasks)])
        for style, (method, by_user) in zip(styles, zero_shot.personalized.items()):
            if user in by_user:
                ax.axhline(by_user[user], color="tab:red", linestyle=style, linewidth=1, label=method)
        ax.axhline(0.0, color="black", linewidth=0.5)
        ax.set_title(user, fontsize=8)
        ax.tick_params(labelsize=7)
        if index % columns == 0:
            ax.set_ylabel("SROCC", fontsize=7)
    for ax in axes[-1]:
        ax.set_xticks(range(tasks), zero_shot.task_names, rotation=90, fontsize=7)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper right", fontsize=8)
    title = f"Zero-shot test SROCC of each database's model per user (k = {zero_shot.k}; best database in blue)"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
