"""Cosine similarities between the task vectors of a bank (the paper's Figure 4), over all covered parameters and per
layer group.

The bank is streamed one parameter at a time (`TaskVectorBank.iter_stacked`, as merging reads it) into a float64 Gram
matrix, so the memory it needs beyond one tensor's task slices is a few MiB whatever the bank's size.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import AnalysisError
from ..utils.io import atomic_path, write_json
from ..utils.plotting import pyplot, save_figure
from .coefficients import ALL_GROUP
from .merging import coefficient_layout

if TYPE_CHECKING:
    from ..modeling import AestheticModel
    from .bank import TaskVectorBank

__all__ = ["Similarity", "plot_similarity", "task_vector_similarity", "write_tables", "SIMILARITY_GRANULARITIES"]

logger = logging.getLogger(__name__)

SIMILARITY_GRANULARITIES = ("task", "layer")
#: Values of one tensor upcast to float64 at a time: bounds the extra memory to T x 2 MiB.
_CHUNK_VALUES = 1 << 18


def write_tables(directory: str | Path, stem: str, data: dict[str, Any], markdown: str) -> dict[str, Path]:
    """Write an analysis's table as `{stem}.json` (``data``) and `{stem}.md` (``markdown``), each atomically."""
    directory = Path(directory)
    paths = {"json": write_json(directory / f"{stem}.json", data), "markdown": directory / f"{stem}.md"}
    with atomic_path(paths["markdown"]) as tmp:
        tmp.write_text(markdown, encoding="utf-8")
    return paths


@dataclass
class Similarity:
    """Cosine similarities between a bank's task vectors, over all covered parameters and per layer group.

    Attributes:
        task_names: the T tasks, in bank order.
        group_names: `"all"` (every covered parameter) first, then the layer groups (granularity `"layer"`).
        values: `[G, T, T]` float64 cosines; NaN where a task vector is zero in the group.
        norms: `[G, T]` L2 norms of each task vector in each group.
        num_values: values each group covers.
    """

    task_names: list[str]
    group_names: list[str]
    values: np.ndarray
    norms: np.ndarray
    num_values: list[int]

    def matrix(self, group: str = ALL_GROUP) -> np.ndarray:
        """The `[T, T]` cosine matrix of one group (default: all covered parameters)."""
        if group not in self.group_names:
            raise AnalysisError(f"no layer group {group!r}; the similarity has {self.group_names}")
        return self.values[self.group_names.index(group)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "task_names": self.task_names,
            "groups": {
                g: {"cosine": self.values[i].tolist(), "norms": self.norms[i].tolist(), "values": self.num_values[i]}
                for i, g in enumerate(self.group_names)
            },
        }

    def to_markdown(self, groups: Sequence[str] | None = None) -> str:
        """One table per group (default: all of them): the cosine matrix, then each task vector's norm."""
        out = []
        for group in groups if groups is not None else self.group_names:
            index = self.group_names.index(group)
            title = "all covered parameters" if group == ALL_GROUP else f"layer group `{group}`"
            out += [
                f"Cosine similarity of the task vectors, {title} ({self.num_values[index]:,} values):",
                "",
                "| | " + " | ".join(self.task_names) + " | norm |",
                "|---|" + "---|" * (len(self.task_names) + 1),
            ]
            for t, name in enumerate(self.task_names):
                cells = " | ".join(f"{v:.3f}" for v in self.values[index, t])
                out.append(f"| {name} | {cells} | {self.norms[index, t]:#.4g} |")
            out.append("")
        return "\n".join(out)

    def save(self, directory: str | Path, stem: str = "similarity", figure: bool = True) -> dict[str, Path]:
        """Write `{stem}.json`, `{stem}.md` and (with matplotlib) `{stem}.png` into ``directory``."""
        paths = write_tables(directory, stem, self.to_dict(), self.to_markdown())
        if figure:
            paths["figure"] = plot_similarity(self, Path(directory) / f"{stem}.png")
        return paths


def _layer_groups(bank: TaskVectorBank, groups: Mapping[str, str] | Any) -> tuple[list[str], dict[str, int]]:
    parameter_groups = groups.parameter_groups() if hasattr(groups, "parameter_groups") else groups
    if not isinstance(parameter_groups, Mapping):
        raise AnalysisError(
            "layer-wise similarity needs the base model's layer groups: pass groups=model (an AestheticModel) or "
            f"model.parameter_groups(); received {type(groups).__name__}"
        )
    layout = coefficient_layout(parameter_groups, bank.parameter_names, "layer")
    return list(layout.group_names), dict(layout.group_of)


def task_vector_similarity(
    bank: TaskVectorBank,
    granularity: str = "task",
    groups: Mapping[str, str] | AestheticModel | None = None,
    progress: bool = True,
) -> Similarity:
    """Cosine similarities between the task vectors of ``bank``, streamed from its files in bounded memory.

    Args:
        bank: the bank.
        granularity: `"task"`: over all covered parameters; `"layer"`: also per layer group (needs ``groups``).
        groups: the base model (an `AestheticModel`) or its `parameter_groups()`, for granularity `"layer"`.
        progress: show a progress bar over the bank's tensors.

    Reads one parameter's `[T, *shape]` slices at a time and adds their float64 Gram matrix (in chunks of
    2**18 values), so the memory it needs beyond one tensor's slices is a few MiB whatever the bank's size.
    """
    if granularity not in SIMILARITY_GRANULARITIES:
        raise AnalysisError(f"granularity must be one of {SIMILARITY_GRANULARITIES}, received {granularity!r}")
    if len(bank) == 0:
        raise AnalysisError("the bank has no tasks: there is nothing to compare")
    names: list[str] = [ALL_GROUP]
    group_of: dict[str, int] = {}
    if granularity == "layer":
        layer_names, group_of = _layer_groups(bank, groups)
        names += layer_names
    tasks = len(bank)
    grams = torch.zeros(len(names), tasks, tasks, dtype=torch.float64)
    counts = [0] * len(names)
    for name, stacked in tqdm(
        bank.iter_stacked(),
        desc="Comparing task vectors",
        unit="tensor",
        total=len(bank.parameter_names),
        disable=not progress,
        leave=False,
    ):
        flat = stacked.reshape(tasks, -1)
        gram = torch.zeros(tasks, tasks, dtype=torch.float64)
        for start in range(0, flat.shape[1], _CHUNK_VALUES):
            block = flat[:, start : start + _CHUNK_VALUES].to(torch.float64)
            gram += block @ block.T
        rows = [0] if granularity == "task" else [0, 1 + group_of[name]]
        for row in rows:
            grams[row] += gram
            counts[row] += flat.shape[1]
    grams = (grams + grams.transpose(1, 2)) / 2  # exact symmetry, whatever the matmul's rounding
    norms = torch.diagonal(grams, dim1=1, dim2=2).clamp_min(0).sqrt()
    with np.errstate(divide="ignore", invalid="ignore"):
        cosine = (grams / (norms[:, :, None] * norms[:, None, :])).numpy()
        cosine[(norms[:, :, None] * norms[:, None, :]).numpy() == 0] = np.nan
    diagonal = np.arange(tasks)
    cosine[:, diagonal, diagonal] = np.where(norms.numpy() > 0, 1.0, np.nan)
    return Similarity(bank.task_names, names, np.clip(cosine, -1.0, 1.0), norms.numpy(), counts)


def plot_similarity(similarity: Similarity, path: str | Path, max_groups: int = 8) -> Path:
    """Save a PNG: the cosine matrix over all covered parameters as an annotated heatmap, and beside it up to
    ``max_groups`` layer groups' matrices (the last ones, nearest the output). The colour scale spans the
    off-diagonal values (the diagonal, 1 by definition, is grey), so that small similarities stay visible."""
    plt = pyplot()
    groups = similarity.group_names[:1] + similarity.group_names[1:][-max_groups:]
    tasks = len(similarity.task_names)
    off = ~np.eye(tasks, dtype=bool)
    shown = np.stack([similarity.matrix(g) for g in groups])
    scale = float(np.nanmax(np.abs(shown[:, off]), initial=0.0)) if tasks > 1 else 1.0
    scale = min(1.0, np.ceil(max(scale, 0.01) * 20) / 20)  # up to the next 0.05
    fig, axes = plt.subplots(
        1,
        len(groups),
        figsize=(0.7 * tasks + 2.5 + (len(groups) - 1) * (0.35 * tasks + 0.6), 0.6 * tasks + 1.6),
        squeeze=False,
        gridspec_kw={"width_ratios": [2] + [1] * (len(groups) - 1)},
        layout="constrained",
    )
    colours = plt.get_cmap("RdBu_r").copy()
    colours.set_bad("lightgrey")
    for index, (ax, group) in enumerate(zip(axes[0], groups)):
        matrix = np.where(off, shown[index], np.nan)
        image = ax.imshow(matrix, cmap=colours, vmin=-scale, vmax=scale)
        first = index == 0
        ax.set_xticks(range(tasks), similarity.task_names if first else [], rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(tasks), similarity.task_names if first else [], fontsize=8)
        ax.set_title("all covered parameters" if first else group, fontsize=10 if first else 8)
        if first:
            for i in range(tasks):
                for j in range(tasks):
                    text = "1" if i == j else f"{shown[0, i, j]:.2f}"
                    colour = "white" if i != j and abs(shown[0, i, j]) > 0.6 * scale else "black"
                    ax.text(j, i, text, ha="center", va="center", fontsize=7, color=colour)
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="cosine similarity of task vectors")
    return save_figure(fig, path)
