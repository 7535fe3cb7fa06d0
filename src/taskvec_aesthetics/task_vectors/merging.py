"""Merging task vectors into base parameters: theta_user[p] = theta_0[p] + sum_t c[g(p), t] * tau_t[p], where g(p) is
the coefficient group of parameter p.

The tensor functions are pure (differentiable with respect to the coefficients, inputs never modified);
`merged_copy` writes a merge into a copy of a model, tensor by tensor, and never changes the model it copies.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..constants import GRANULARITIES
from ..errors import InputError, InputTypeError
from .coefficients import ALL_GROUP, Coefficients

if TYPE_CHECKING:
    from .bank import TaskVectorBank

__all__ = [
    "CoefficientLayout",
    "coefficient_layout",
    "merge_parameters",
    "merge_tensor",
    "merged_copy",
    "as_coefficients",
    "functional_forward",
    "streamed_coefficient_grad",
    "check_finite",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CoefficientLayout:
    """Which coefficient row (group) each merged parameter uses.

    Attributes:
        granularity: `"task"`, `"layer"` or `"tensor"`.
        group_names: the G groups, in model order.
        group_of: parameter name -> row index into the [G, T] coefficients, for every parameter the bank covers.
    """

    granularity: str
    group_names: tuple[str, ...]
    group_of: Mapping[str, int]

    @property
    def num_groups(self) -> int:
        return len(self.group_names)

    def check(self, coefficients: Coefficients, task_names: Sequence[str]) -> None:
        """Raise a clear error when ``coefficients`` do not fit this layout and these tasks."""
        if coefficients.granularity != self.granularity or tuple(coefficients.group_names) != self.group_names:
            raise InputError(
                f"coefficients have {coefficients.granularity} groups {coefficients.group_names[:4]}... "
                f"({len(coefficients.group_names)}), but the model and bank expect {self.granularity} groups "
                f"{list(self.group_names[:4])}... ({self.num_groups})"
            )
        if list(coefficients.task_names) != list(task_names):
            raise InputError(f"coefficients are for tasks {coefficients.task_names}, the bank has {list(task_names)}")


def coefficient_layout(
    parameter_groups: Mapping[str, str], covered: Sequence[str], granularity: str
) -> CoefficientLayout:
    """Build the layout of coefficients for the parameters a bank covers.

    Args:
        parameter_groups: every model parameter name -> its layer group, in model order
            (see `AestheticModel.parameter_groups`).
        covered: the parameter names the bank's task vectors cover.
        granularity: `"task"` (one group), `"layer"` (one per layer group) or `"tensor"` (one per parameter).
    """
    if granularity not in GRANULARITIES:
        raise InputError(f"granularity must be one of {GRANULARITIES}, received {granularity!r}")
    unknown = sorted(set(covered) - set(parameter_groups))
    if unknown:
        raise InputError(f"the bank covers parameters the model does not have: {unknown[:5]} ({len(unknown)} in all)")
    covered_set = set(covered)
    ordered = [name for name in parameter_groups if name in covered_set]
    if granularity == "task":
        names = [ALL_GROUP]
        group_of = {name: 0 for name in ordered}
    elif granularity == "tensor":
        names = ordered
        group_of = {name: i for i, name in enumerate(ordered)}
    else:
        names = list(dict.fromkeys(parameter_groups[name] for name in ordered))
        index = {group: i for i, group in enumerate(names)}
        group_of = {name: index[parameter_groups[name]] for name in ordered}
    return CoefficientLayout(granularity, tuple(names), group_of)


def check_finite(values: torch.Tensor, what: str = "coefficients") -> None:
    """Raise when ``values`` hold NaN or inf (a diverged fit must never be merged silently)."""
    if not torch.isfinite(values).all():
        raise InputError(f"{what} must be finite, received {int((~torch.isfinite(values)).sum())} non-finite values")


def merge_tensor(base: torch.Tensor, stacked: torch.Tensor, weights: torch.Tensor, name: str = "") -> torch.Tensor:
    """``base + sum_t weights[t] * stacked[t]`` for one parameter, computed in float32 (or the weights' wider dtype).

    A bfloat16 or float16 stack is upcast here, one tensor at a time, so a bank can stay in its storage dtype.
    Differentiable with respect to ``weights``; the inputs are never modified.
    """
    if stacked.shape[0] != weights.shape[0]:
        raise InputError(
            f"task vectors of '{name}' stack {stacked.shape[0]} tasks but coefficients have {weights.shape[0]}"
        )
    dtype = torch.promote_types(torch.promote_types(weights.dtype, torch.float32), base.dtype)
    delta = torch.tensordot(weights.to(dtype), stacked.to(device=base.device, dtype=dtype), dims=1)
    return base + delta.to(base.dtype)


def merge_parameters(
    base: Mapping[str, torch.Tensor],
    stacked_task_vectors: Mapping[str, torch.Tensor],
    coefficients: torch.Tensor,
    layout: CoefficientLayout,
) -> dict[str, torch.Tensor]:
    """Merged parameters ``base[p] + sum_t coefficients[g(p), t] * tau_t[p]`` for every covered parameter.

    Differentiable with respect to ``coefficients``; the inputs are never modified.

    Args:
        base: base parameters by name (at least the covered ones).
        stacked_task_vectors: parameter name -> tensor `[T, *shape]` of the T task vectors (any float dtype; merged in
            float32, one tensor at a time).
        coefficients: `[G, T]` tensor.
        layout: the coefficient layout (`coefficient_layout`).
    """
    if coefficients.dim() != 2 or coefficients.shape[0] != layout.num_groups:
        raise InputError(f"coefficients must have shape [{layout.num_groups}, T], received {list(coefficients.shape)}")
    return {
        name: merge_tensor(base[name], stacked_task_vectors[name], coefficients[group], name)
        for name, group in layout.group_of.items()
    }


def functional_forward(model: nn.Module, parameters: Mapping[str, torch.Tensor], *args, **kwargs):
    """Call ``model`` with ``parameters`` substituted for its own (the others are the model's); no mutation."""
    return torch.func.functional_call(model, dict(parameters), args, kwargs, strict=False)


def streamed_coefficient_grad(
    parameter_grads: Mapping[str, torch.Tensor],
    task_vector: Callable[[int], Mapping[str, torch.Tensor]],
    num_tasks: int,
    layout: CoefficientLayout,
) -> torch.Tensor:
    """Exact gradient of the loss w.r.t. the [G, T] coefficients from the gradient w.r.t. the merged weights.

    dL/dc[g, t] = sum over parameters p of group g of <dL/dW_p, tau_t[p]>. Tasks are visited one at a time, so only
    one task vector needs to be in memory, and no T x P tensors are held in an autograd graph.

    Args:
        parameter_grads: parameter name -> dL/dW (for the covered parameters).
        task_vector: returns the tensors of task ``t`` by parameter name.
        num_tasks: T.
        layout: the coefficient layout.
    """
    # Accumulated where the gradients are (no host round trip per tensor on a GPU), in float64.
    device = next(iter(parameter_grads.values())).device if parameter_grads else torch.device("cpu")
    grad = torch.zeros(layout.num_groups, num_tasks, dtype=torch.float64, device=device)
    for task in range(num_tasks):
        tensors = task_vector(task)
        for name, group in layout.group_of.items():
            g = parameter_grads.get(name)
            if g is not None:
                grad[group, task] += torch.sum(g.to(torch.float64) * tensors[name].to(device, torch.float64))
    return grad.to(torch.float32)


def as_coefficients(
    value: Coefficients | Mapping[str, float] | torch.Tensor, parameter_groups: Mapping[str, str], bank: TaskVectorBank
) -> Coefficients:
    """`Coefficients` from `Coefficients`, a `{task: weight}` dict (task granularity) or a `[G, T]` tensor (its
    granularity inferred from G: 1 is task, the number of layer groups is layer, the covered tensors are tensor)."""
    if isinstance(value, Coefficients):
        return value
    if isinstance(value, Mapping):
        return Coefficients.from_task_weights(value, bank.task_names)
    if isinstance(value, torch.Tensor):
        if value.dim() != 2 or value.shape[1] != len(bank):
            raise InputError(f"a coefficient tensor must be [G, {len(bank)}], received {list(value.shape)}")
        for granularity in GRANULARITIES:
            layout = coefficient_layout(parameter_groups, bank.parameter_names, granularity)
            if layout.num_groups == value.shape[0]:
                return Coefficients(value, list(layout.group_names), bank.task_names, granularity)
        raise InputError(
            f"a [G, T] tensor with G = {value.shape[0]} fits no granularity: task needs 1, layer "
            f"{coefficient_layout(parameter_groups, bank.parameter_names, 'layer').num_groups}, tensor "
            f"{len(bank.parameter_names)}"
        )
    raise InputTypeError(
        f"coefficients must be Coefficients, a {{task: weight}} dict or a [G, T] tensor, received {type(value).__name__}"
    )


def merged_copy(
    model: nn.Module, layout: CoefficientLayout, bank: TaskVectorBank, coefficients: Coefficients, in_place: bool
) -> nn.Module:
    """A copy of ``model`` (or, ``in_place``, the model itself, for a base nobody else holds) with the task vectors
    merged in, and the coefficients' extra tensors (an adapted head layer) written over their parameters.

    Merges tensor by tensor, reading each parameter's T task slices when it is merged: the peak is the model (two
    with a copy) plus one tensor's T slices, whatever the bank's size.
    """
    own = dict(model.named_parameters())
    unknown = sorted(set(coefficients.extra) - set(own))
    if unknown:
        raise InputError(f"coefficients carry extra tensors for parameters the model lacks: {unknown}")
    merged = model if in_place else copy.deepcopy(model)
    target = dict(merged.named_parameters())
    with torch.no_grad():
        for name, stacked in bank.iter_stacked(layout.group_of):
            value = merge_tensor(own[name], stacked, coefficients.values[layout.group_of[name]], name)
            target[name].copy_(value.to(target[name].dtype))
        for name, value in coefficients.extra.items():
            if value.shape != target[name].shape:
                raise InputError(
                    f"'{name}' has shape {list(value.shape)}, the model expects {list(target[name].shape)}"
                )
            target[name].copy_(value.to(target[name].dtype))
    return merged
