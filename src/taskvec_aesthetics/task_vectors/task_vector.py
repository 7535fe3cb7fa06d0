"""A task vector: tau_t = theta_t - theta_0, what fine-tuning a base model on one database changed.

A `TaskVector` maps parameter names to float32 deltas and supports the arithmetic of task vectors; `changed_values`
takes one from a fine-tuned model tensor by tensor; `StackedRow` is one task's row of a bank's stacked tensors, read
as a task vector without a copy.
"""

from __future__ import annotations

import copy
import gc
import numbers
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import InputError, InputTypeError

__all__ = ["StackedRow", "TaskVector", "changed_values"]


class TaskVector(Mapping[str, torch.Tensor]):
    """A weight delta over named parameters, with arithmetic in float32.

    Supports ``a + b``, ``a - b``, ``-a``, ``s * a`` and ``a * s`` for a scalar ``s``; sums require both vectors to
    cover the same parameters with the same shapes.
    """

    def __init__(self, tensors: Mapping[str, torch.Tensor]) -> None:
        if not tensors:
            raise InputError("a task vector needs at least one parameter tensor, received none")
        self._tensors: Mapping[str, torch.Tensor] = {name: t.detach().to(torch.float32) for name, t in tensors.items()}

    @classmethod
    def lazy(cls, tensors: Mapping[str, torch.Tensor]) -> TaskVector:
        """A task vector over a mapping that reads each tensor when asked (a task file): nothing is held."""
        vector = cls.__new__(cls)
        vector._tensors = tensors
        return vector

    @classmethod
    def from_models(
        cls, base: nn.Module, finetuned: nn.Module, parameter_names: Iterable[str] | None = None
    ) -> TaskVector:
        """tau = finetuned - base over ``parameter_names`` (default: every trainable parameter of ``base``)."""
        base_params = dict(base.named_parameters())
        tuned_params = dict(finetuned.named_parameters())
        names = (
            list(parameter_names)
            if parameter_names is not None
            else [n for n, p in base_params.items() if p.requires_grad]
        )
        missing = [n for n in names if n not in tuned_params or n not in base_params]
        if missing:
            raise InputError(f"parameters missing from the base or fine-tuned model: {missing[:5]} ({len(missing)})")
        mismatched = [n for n in names if base_params[n].shape != tuned_params[n].shape]
        if mismatched:
            name = mismatched[0]
            raise InputError(
                f"fine-tuned parameter '{name}' has shape {list(tuned_params[name].shape)}, the base has "
                f"{list(base_params[name].shape)}: the models do not share one architecture"
            )
        return cls({n: tuned_params[n].detach().float().cpu() - base_params[n].detach().float().cpu() for n in names})

    # -- mapping -----------------------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> torch.Tensor:
        return self._tensors[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    @property
    def num_values(self) -> int:
        return sum(t.numel() for t in self._tensors.values())

    def norm(self) -> float:
        """Euclidean norm over all parameters."""
        squares = sum((torch.sum(t.double() ** 2) for t in self.values()), torch.zeros((), dtype=torch.float64))
        return float(torch.sqrt(squares))

    # -- arithmetic --------------------------------------------------------------------------------------------
    def _check_compatible(self, other: TaskVector) -> None:
        if not isinstance(other, TaskVector):
            raise InputTypeError(f"can only combine a TaskVector with a TaskVector, received {type(other).__name__}")
        if set(self) != set(other):
            diff = sorted(set(self) ^ set(other))
            raise InputError(f"task vectors cover different parameters, e.g. {diff[:5]} ({len(diff)} differ)")
        for name in self:
            if self[name].shape != other[name].shape:
                raise InputError(
                    f"'{name}' has shape {list(self[name].shape)} in one task vector, {list(other[name].shape)} in the other"
                )

    def __add__(self, other: TaskVector) -> TaskVector:
        self._check_compatible(other)
        return TaskVector({n: self[n] + other[n] for n in self})

    def __sub__(self, other: TaskVector) -> TaskVector:
        self._check_compatible(other)
        return TaskVector({n: self[n] - other[n] for n in self})

    def __neg__(self) -> TaskVector:
        return TaskVector({n: -t for n, t in self.items()})

    def __mul__(self, scale: float) -> TaskVector:
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
            raise InputTypeError(f"a task vector can only be scaled by a real number, received {type(scale).__name__}")
        return TaskVector({n: t * float(scale) for n, t in self.items()})

    __rmul__ = __mul__

    def apply_to(self, model: nn.Module, scale: float = 1.0) -> nn.Module:
        """Return a copy of ``model`` with ``scale * tau`` added to its parameters (``model`` is not modified)."""
        params = dict(model.named_parameters())
        missing = [n for n in self if n not in params]
        if missing:
            raise InputError(f"the model has no parameters {missing[:5]} ({len(missing)}) of this task vector")
        result = copy.deepcopy(model)
        result_params = dict(result.named_parameters())
        with torch.no_grad():
            for name, delta in self.items():
                target = result_params[name]
                target.add_((delta * scale).to(target.dtype).to(target.device))
        return result

    def __repr__(self) -> str:
        return f"TaskVector({len(self)} tensors, {self.num_values:,} values)"


def changed_values(
    load: Callable[[], nn.Module | Mapping[str, torch.Tensor]],
    base: Mapping[str, torch.Tensor],
    names: Sequence[str],
    dtype: torch.dtype,
    task: str,
) -> dict[str, torch.Tensor]:
    """The task vector of a fine-tuned model over the parameters ``names`` of ``base``, in ``dtype``, without the
    tensors it did not change; streamed for building a bank (see `TaskVectorBank.save_finetuned`).

    ``load`` gives the fine-tuned model, or its parameters as a mapping read one tensor at a time (then not even one
    whole fine-tuned model is held). A fine-tuned tensor is freed as soon as its difference is taken. ``task`` names
    the task in errors.
    """
    source = load()
    if isinstance(source, nn.Module):
        tuned: Any = dict(source.named_parameters())
        del source  # from here on each fine-tuned tensor lives only in `tuned`, until it is used
        gc.collect()
        take = tuned.pop
    else:
        tuned = source
        take = source.__getitem__
    missing = [n for n in names if n not in tuned]
    if missing:
        raise InputError(f"task {task!r}: the fine-tuned model lacks parameters {missing[:5]}")
    delta: dict[str, torch.Tensor] = {}
    for name in names:
        value = take(name).detach()
        if value.shape != base[name].shape:
            raise InputError(
                f"task {task!r}: fine-tuned parameter '{name}' has shape {list(value.shape)}, the "
                f"base has {list(base[name].shape)}: the models do not share one architecture"
            )
        difference = value.float().cpu() - base[name].detach().float().cpu()
        del value
        if bool(torch.any(difference != 0)):
            delta[name] = difference.to(dtype).contiguous()
    return delta


class StackedRow(Mapping[str, torch.Tensor]):
    """Task ``index``'s values in stacked `[T, *shape]` tensors, as float32 (views when they are float32)."""

    def __init__(self, stacked: Mapping[str, torch.Tensor], index: int) -> None:
        self._stacked, self._index = stacked, index

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._stacked[name][self._index].to(torch.float32)

    def __iter__(self) -> Iterator[str]:
        return iter(self._stacked)

    def __len__(self) -> int:
        return len(self._stacked)
