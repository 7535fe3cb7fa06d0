"""The model card of a task-vector bank: a table of its tasks, its base, and the tasks' metrics in `model-index`."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..constants import LIBRARY_NAME
from ..hub.cards import (
    DEFAULT_LICENSE,
    METRIC_NAMES,
    PAPER,
    card_title,
    cell,
    count,
    number,
    reference_row,
    render_card,
)

if TYPE_CHECKING:
    from .bank import TaskVectorBank

__all__ = ["bank_card"]


def bank_card(bank: TaskVectorBank, repo_id: str | None = None, license: str | None = None) -> ModelCard:
    """The card of ``bank`` (see `TaskVectorBank.generate_model_card`)."""
    location, title = repo_id or "path/to/bank", card_title(repo_id, "Task-vector bank")
    results, rows = [], []
    for task in bank.tasks:
        metrics = {k: float(v) for k, v in (task.metrics or {}).items() if isinstance(v, (int, float))}
        task_type = "image-quality-assessment" if task.kind == "iqa" else "image-aesthetic-assessment"
        results += [
            EvalResult(task_type=task_type, dataset_type=task.database or task.name,
                       dataset_name=f"{task.database or task.name} (task {task.name})", metric_type=key,
                       metric_name=METRIC_NAMES.get(key, key), metric_value=value)
            for key, value in metrics.items()
        ]  # fmt: skip
        rows.append({
            "name": task.name, "database": cell(task.database), "kind": cell(task.kind),
            "num_images": "–" if task.num_images is None else f"{task.num_images:,}",
            "srocc": number(metrics.get("srocc")), "plcc": number(metrics.get("plcc")),
            "licence": cell(task.licence), "citation": cell(task.citation),
        })  # fmt: skip
    kinds = {task.kind for task in bank.tasks}
    tags = ["task-vectors", "image-aesthetics", LIBRARY_NAME] + (
        ["image-quality-assessment"] if "iqa" in kinds else []
    )
    data = ModelCardData(
        library_name=LIBRARY_NAME,
        license=license or DEFAULT_LICENSE,
        tags=tags,
        base_model=bank.base.repo_id if bank.base.on_hub else None,
        model_name=title,
        eval_results=results or None,
    )
    values = sum(math.prod(shape) for shape in bank.parameter_shapes.values())
    return render_card(
        "bank.md",
        data,
        title=title,
        location=location,
        tasks=rows,
        task_names=bank.task_names,
        base_ref=reference_row(bank.base),
        num_tensors=len(bank.parameter_shapes),
        num_values=count(values),
        storage_dtype=bank.storage_dtype,
        paper=PAPER,
    )
