"""Figures of benchmark results: SROCC by method and k, and a heatmap of one user's coefficients."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from .io import atomic_path

if TYPE_CHECKING:
    from .benchmark import BenchmarkResult

__all__ = ["plot_benchmark"]

logger = logging.getLogger(__name__)


def plot_benchmark(result: BenchmarkResult, path: str | Path, noise_ceiling: float | None = None) -> Path:
    """Save a PNG: test SROCC by method and k (mean over users with its 95 % bootstrap interval; the noise ceiling as
    a dashed line when given), and the example user's coefficients."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError("figures need matplotlib: pip install 'taskvec-aesthetics[demo]'") from error
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
        ax.set_title(f"coefficients of user {result.example_user} (k = {max(shots)})")
        fig.colorbar(image, ax=ax)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path
