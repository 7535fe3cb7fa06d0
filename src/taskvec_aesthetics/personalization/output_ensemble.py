"""The learned output ensemble as a model's scoring rule: each task model's standardized score, weighed.

`OutputEnsemble` is what the `"outputs"` candidate fits and what an `"ensemble"` export saves
(`ensemble.safetensors`): the task names, one weight per task, and each task model's mean and spread over the photos
the fit standardized on. It holds numbers only; running the T task models is the model's (`PersonalizableMixin`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..constants import ENSEMBLE_FILE
from ..errors import ConfigError, InputError, IntegrityError
from ..task_vectors.coefficients import read_tensor_file, write_tensor_file

__all__ = ["MAX_ABS_WEIGHT", "OutputEnsemble", "scoring_cost"]

#: Largest accepted weight of a standardized task score: the fit pulls weights toward a softmax mix (sum 1), so a
#: weight beyond this is a damaged file, not a taste.
MAX_ABS_WEIGHT = 1e3
_FIELDS = ("weights", "mean", "spread")


@dataclass
class OutputEnsemble:
    """score(x) = sum_t weights[t] * (s_t(x) - mean[t]) / spread[t], where s_t is task model t's score
    (theta_0 + tau_t) on image x.

    Args:
        task_names: the bank's tasks, in the order of the numbers.
        weights: `[T]` the weight of each task model's standardized score (any sign).
        mean: `[T]` each task model's mean score over the photos the fit standardized on.
        spread: `[T]` each task model's standard deviation over those photos (> 0).
    """

    task_names: list[str]
    weights: torch.Tensor
    mean: torch.Tensor
    spread: torch.Tensor

    def __post_init__(self) -> None:
        self.task_names = list(self.task_names)
        count = len(self.task_names)
        for name in _FIELDS:
            value = torch.as_tensor(getattr(self, name), dtype=torch.float64).detach().cpu().flatten()
            if value.numel() != count:
                raise InputError(f"an output ensemble of {count} tasks needs {count} {name}, received {value.numel()}")
            setattr(self, name, value)

    def check(self, where: str = "the output ensemble") -> None:
        """Finite numbers, spreads > 0 and weights of a sane size: checked where an ensemble is saved or read."""
        for name in _FIELDS:
            if not bool(torch.isfinite(getattr(self, name)).all()):
                raise IntegrityError(f"{where}: its {name} hold NaN or inf values")
        if bool((self.spread <= 0).any()):
            raise IntegrityError(f"{where}: its spreads must be > 0, received {self.spread.tolist()}")
        if len(self) and float(self.weights.abs().max()) > MAX_ABS_WEIGHT:
            raise IntegrityError(f"{where}: its weights must stay within +-{MAX_ABS_WEIGHT:g}")

    def __len__(self) -> int:
        return len(self.task_names)

    def combine(self, task_scores: torch.Tensor) -> torch.Tensor:
        """`[N]` ensemble scores (float64) from `[T, N]` scores of the task models."""
        if task_scores.shape[0] != len(self):
            raise InputError(f"expected scores of {len(self)} task models, received {task_scores.shape[0]}")
        scores = task_scores.double().cpu()
        return self.weights @ ((scores - self.mean[:, None]) / self.spread[:, None])

    def task_weights(self) -> dict[str, float]:
        """Each task's weight of its standardized score."""
        return dict(zip(self.task_names, self.weights.tolist()))

    def to_dict(self) -> dict[str, Any]:
        return {"task_names": self.task_names, **{name: getattr(self, name).tolist() for name in _FIELDS}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "output ensemble") -> OutputEnsemble:
        missing = [key for key in ("task_names", *_FIELDS) if key not in data]
        if missing:
            raise ConfigError(f"{where}: missing fields {missing}")
        return cls._checked(data["task_names"], [data[name] for name in _FIELDS], where)

    @classmethod
    def _checked(cls, names: Any, values: Sequence[Any], where: str) -> OutputEnsemble:
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"{where}: 'task_names' must be a list of names, received {names!r}")
        try:
            ensemble = cls(names, *[torch.as_tensor(value, dtype=torch.float64) for value in values])
        except (InputError, TypeError, ValueError, RuntimeError) as error:
            raise ConfigError(f"{where}: {error}") from None
        ensemble.check(where)
        return ensemble

    # -- files -------------------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write `ensemble.safetensors` (weights, mean, spread in float64; the task names in its metadata)."""
        tensors = {name: getattr(self, name).contiguous() for name in _FIELDS}
        metadata = {"format": "pt", "task_names": json.dumps(self.task_names)}
        return write_tensor_file(path, ENSEMBLE_FILE, tensors, metadata)

    @classmethod
    def load(cls, path: str | Path) -> OutputEnsemble:
        """Read an ensemble written by [`OutputEnsemble.save`] (a file or the folder holding it)."""
        target, tensors, metadata = read_tensor_file(path, ENSEMBLE_FILE, "output-ensemble")
        missing = [name for name in _FIELDS if name not in tensors] + (
            [] if "task_names" in metadata else ["task_names (metadata)"]
        )
        if missing:
            raise ConfigError(f"{target} is not an output-ensemble file: it lacks {missing}")
        try:
            names = json.loads(metadata["task_names"])
        except json.JSONDecodeError:
            names = None
        return cls._checked(names, [tensors[name] for name in _FIELDS], str(target))

    def __repr__(self) -> str:
        weights = ", ".join(f"{k}={v:+.3f}" for k, v in self.task_weights().items())
        return f"OutputEnsemble({weights})"


def scoring_cost(num_tasks: int, blocks: int, prefix_blocks: int | None) -> dict[str, Any]:
    """What scoring one image with an output ensemble of ``num_tasks`` task models costs, in encoder blocks run:
    one pass of the ``prefix_blocks`` no task vector covers, then T passes of the rest (None: the bank covers the
    embeddings, so T full passes)."""
    shared = prefix_blocks or 0
    covered = blocks - shared
    run = shared + num_tasks * covered

    def plural(n: int, what: str) -> str:
        return f"{n} {what}{'' if n == 1 else 's'}"

    if prefix_blocks is None:
        text = f"scores with {num_tasks} full passes of the network (one per task model)"
    elif shared:
        text = (
            f"scores with 1 pass of the {plural(shared, 'frozen encoder block')} + {num_tasks} passes of the "
            f"{plural(covered, 'covered block')} and the head (one per task model)"
        )
    else:
        text = f"scores with {num_tasks} passes of all {plural(blocks, 'encoder block')} and the head (one per task model)"
    relative = run / blocks if blocks else float(num_tasks)
    return {
        "task_models": num_tasks,
        "shared_blocks": shared,
        "covered_blocks": covered,
        "encoder_blocks_per_image": run,
        "relative_to_one_model": round(relative, 3),
        "text": f"{text}: {relative:.2g}x one model's encoder blocks per image",
    }
