"""`Coefficients`: how much of each task vector a personalized model uses, per layer group."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..constants import COEFFICIENTS_FILE, GRANULARITIES
from ..errors import ConfigError, InputError, MissingFileError
from ..utils.io import atomic_path

__all__ = [
    "Coefficients",
    "Granularity",
    "GRANULARITIES",
    "COEFFICIENTS_FILE",
    "read_tensor_file",
    "write_tensor_file",
]

logger = logging.getLogger(__name__)

Granularity = Literal["task", "layer", "tensor"]
#: The single group of task-granularity coefficients.
ALL_GROUP = "all"


@dataclass
class Coefficients:
    """Mixing coefficients ``c[g, t]`` of task vectors: one row per layer group, one column per task.

    Args:
        values (`torch.Tensor` of shape `[G, T]`): the coefficients (stored as float32).
        group_names (`list[str]`): the G layer groups, in model order (`["all"]` for task granularity).
        task_names (`list[str]`): the T tasks, in bank order.
        granularity (`str`): `"task"`, `"layer"` or `"tensor"`.
        extra (`dict[str, torch.Tensor]`): parameters stored with the coefficients (e.g. an adapted head layer),
            keyed by model parameter name; they replace the merged values.
    """

    values: torch.Tensor
    group_names: list[str]
    task_names: list[str]
    granularity: str = "layer"
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.values, torch.Tensor):
            self.values = torch.as_tensor(self.values)
        self.values = self.values.detach().to(torch.float32)
        self.group_names = list(self.group_names)
        self.task_names = list(self.task_names)
        if self.granularity not in GRANULARITIES:
            raise InputError(f"granularity must be one of {GRANULARITIES}, received {self.granularity!r}")
        expected = (len(self.group_names), len(self.task_names))
        if self.values.dim() != 2 or tuple(self.values.shape) != expected:
            raise InputError(
                f"coefficients must have shape [groups, tasks] = {list(expected)}, received {list(self.values.shape)}"
            )
        for kind, names in (("group", self.group_names), ("task", self.task_names)):
            if len(set(names)) != len(names):
                raise InputError(f"{kind} names must be unique, received {names}")
        if not torch.isfinite(self.values).all():
            bad = (~torch.isfinite(self.values)).nonzero().tolist()[:5]
            raise InputError(f"coefficients must be finite; non-finite values at [group, task] {bad}")
        self.extra = {name: t.detach().to(torch.float32).clone() for name, t in self.extra.items()}

    # -- constructors --------------------------------------------------------------------------------------
    @classmethod
    def full(
        cls, value: float, group_names: Sequence[str], task_names: Sequence[str], granularity: str = "layer"
    ) -> Coefficients:
        """Every coefficient equal to ``value`` (e.g. ``1 / T`` for the uniform average of the task vectors)."""
        values = torch.full((len(group_names), len(task_names)), float(value))
        return cls(values, list(group_names), list(task_names), granularity)

    @classmethod
    def from_task_weights(cls, weights: Mapping[str, float], task_names: Sequence[str]) -> Coefficients:
        """Task-granularity coefficients from ``{task: weight}``; tasks not named get 0."""
        unknown = sorted(set(weights) - set(task_names))
        if unknown:
            raise InputError(f"unknown tasks {unknown}; the bank has tasks {list(task_names)}")
        row = [float(weights.get(name, 0.0)) for name in task_names]
        return cls(torch.tensor([row]), [ALL_GROUP], list(task_names), "task")

    # -- views -------------------------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return self.values.shape[0], self.values.shape[1]

    def task_weights(self) -> dict[str, float]:
        """Mean coefficient of each task over the groups: a one-number summary of how much a task is used."""
        return {name: float(v) for name, v in zip(self.task_names, self.values.mean(dim=0).tolist())}

    def to_dict(self) -> dict:
        """JSON-compatible description (extra tensors are not included)."""
        return {
            "granularity": self.granularity,
            "group_names": self.group_names,
            "task_names": self.task_names,
            "values": self.values.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> Coefficients:
        try:
            return cls(torch.tensor(data["values"]), data["group_names"], data["task_names"], data["granularity"])
        except KeyError as error:
            raise InputError(f"coefficients dict is missing key {error}; received keys {sorted(data)}") from None

    # -- files -------------------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``coefficients.safetensors`` (values and extra tensors; names and granularity in its metadata)."""
        tensors = {"coefficients": self.values.contiguous()}
        tensors.update({f"extra.{name}": t.contiguous() for name, t in self.extra.items()})
        metadata = {
            "format": "pt",
            "granularity": self.granularity,
            "group_names": json.dumps(self.group_names),
            "task_names": json.dumps(self.task_names),
        }
        return write_tensor_file(path, COEFFICIENTS_FILE, tensors, metadata)

    @classmethod
    def load(cls, path: str | Path) -> Coefficients:
        """Read coefficients written by [`Coefficients.save`] (a file or the folder holding it)."""
        target, tensors, metadata = read_tensor_file(path, COEFFICIENTS_FILE, "coefficients")
        missing = [k for k in ("granularity", "group_names", "task_names") if k not in metadata]
        if "coefficients" not in tensors or missing:
            raise InputError(
                f"{target} is not a coefficients file: expected a 'coefficients' tensor and metadata "
                f"granularity/group_names/task_names; missing {missing or ['coefficients tensor']}"
            )
        extra = {k[len("extra.") :]: v for k, v in tensors.items() if k.startswith("extra.")}
        names = {}
        for key in ("group_names", "task_names"):
            try:
                names[key] = json.loads(metadata[key])
            except json.JSONDecodeError:
                names[key] = None
            if not isinstance(names[key], list) or not all(isinstance(n, str) for n in names[key]):
                raise ConfigError(
                    f"{target}: metadata field '{key}' must be a JSON list of names, received {metadata[key]!r}"
                )
        try:
            return cls(
                tensors["coefficients"], names["group_names"], names["task_names"], metadata["granularity"], extra
            )
        except ValueError as error:
            raise ConfigError(f"{target}: {error}") from None

    def __repr__(self) -> str:
        weights = ", ".join(f"{k}={v:+.3f}" for k, v in self.task_weights().items())
        groups = len(self.group_names)
        # Say what the numbers are: one coefficient per task, or each task's mean over its layer groups.
        summary = "coefficient per task" if groups == 1 else f"mean over the {groups} groups per task"
        extra = f", {len(self.extra)} extra tensors" if self.extra else ""
        return (
            f"Coefficients({self.granularity}, {groups} groups x {len(self.task_names)} tasks{extra}; "
            f"{summary}: {weights})"
        )

    def allclose(self, other: Coefficients, atol: float = 0.0) -> bool:
        return (
            self.group_names == other.group_names
            and self.task_names == other.task_names
            and self.granularity == other.granularity
            and math.isclose(0.0, float((self.values - other.values).abs().max()), abs_tol=atol)
        )


def write_tensor_file(
    path: str | Path, file_name: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str]
) -> Path:
    """Write a small safetensors file (coefficients, an output ensemble) atomically: to ``path``, or to
    ``path / file_name`` when ``path`` is a folder or has no suffix; returns where it went."""
    path = Path(path)
    target = path / file_name if path.is_dir() or not path.suffix else path
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return target


def read_tensor_file(
    path: str | Path, file_name: str, what: str
) -> tuple[Path, dict[str, torch.Tensor], dict[str, str]]:
    """Where a small safetensors file (coefficients, an output ensemble) is (``path``, or ``path / file_name`` when
    ``path`` is a folder), its tensors and its metadata; a missing or unreadable file is an error naming it and
    ``what`` was expected there."""
    path = Path(path)
    target = path / file_name if path.is_dir() else path
    if not target.is_file():
        raise MissingFileError(f"no {what} file at {target}")
    try:
        tensors = load_file(str(target))
        with safe_open(str(target), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError) as error:
        raise InputError(f"{target} is not a valid safetensors file: {error}") from None
    return target, tensors, metadata
