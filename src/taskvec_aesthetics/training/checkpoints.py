"""A fine-tuning run's checkpoints: written as one folder transaction with nothing pickled (weights and optimizer
tensors in safetensors, everything else in `trainer_state.json`), rotated, and read back checked to resume a run."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file
from torch import nn

from ..constants import WEIGHTS_FILE
from ..errors import ConfigError, IntegrityError, MissingFileError, UnsafePathError
from ..utils.io import (
    atomic_path,
    check_digest,
    digest_record,
    folder_transaction,
    read_json,
    safe_join,
    verify_manifest,
    write_json,
    write_manifest,
)

__all__ = [
    "CHECKPOINTS_DIR",
    "CHECKPOINT_MODEL_FILE",
    "CHECKPOINT_OPTIMIZER_FILE",
    "RESUME_KEYS",
    "TRAINER_STATE_FILE",
    "checkpoint_candidates",
    "load_checkpoint",
    "optimizer_state_dict",
    "run_checkpoints",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
TRAINER_STATE_FILE = "trainer_state.json"
# A checkpoint holds no pickle: weights and optimizer tensors in safetensors, everything else in trainer_state.json.
CHECKPOINT_MODEL_FILE = WEIGHTS_FILE
CHECKPOINT_OPTIMIZER_FILE = "optimizer.safetensors"
# Settings that fix the data order and the schedule: a checkpoint only resumes a run that shares them.
RESUME_KEYS = (
    "base_fingerprint",
    "seed",
    "batch_size",
    "gradient_accumulation_steps",
    "num_processes",
    "num_images",
    "total_steps",
)


def _checkpoint_folder(output_dir: Path, name: str) -> Path:
    """``output_dir/checkpoints/name``, refused when it is a symlink or leads out of the run folder.

    Checkpoints are replaced and rotated (deleted): through a symlink that would happen to a folder outside the run.
    """
    path = safe_join(output_dir, f"{CHECKPOINTS_DIR}/{name}", f"the checkpoint {name} of the run {output_dir}")
    if path.is_symlink():
        raise UnsafePathError(
            f"{path} is a symlink (to {path.resolve()}): checkpoints are replaced and deleted by the run, so they "
            "must be real folders inside it. Remove the link"
        )
    return path


def run_checkpoints(output_dir: Path) -> list[Path]:
    """The run's checkpoint folders, oldest first; a symlinked one (or `checkpoints` leaving the run) is an error."""
    if not (output_dir / CHECKPOINTS_DIR).is_dir():
        return []
    found = [
        _checkpoint_folder(output_dir, p.name)
        for p in (output_dir / CHECKPOINTS_DIR).glob("step-*")
        if p.name[5:].isdigit()
    ]
    return sorted(found, key=lambda p: int(p.name[5:]))


def checkpoint_candidates(resume: str | Path | bool | None, output_dir: Path) -> list[Path]:
    """Checkpoints to try, best first: the one given, or every checkpoint of the run from the newest."""
    if resume is None or resume is False:
        return []
    if resume is True or resume == "latest":
        found = run_checkpoints(output_dir)
        if not found:
            logger.info("No checkpoint in %s; starting from the beginning", output_dir / CHECKPOINTS_DIR)
        return found[::-1]
    if not (Path(resume) / TRAINER_STATE_FILE).is_file():
        raise MissingFileError(f"{resume} is not a checkpoint of finetune (no {TRAINER_STATE_FILE})")
    return [Path(resume)]


def _optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer's state dict split into tensors (for safetensors) and plain values (for JSON)."""
    state = optimizer.state_dict()
    tensors, values = {}, {}
    for index, entries in state["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                values[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "values": values}


def optimizer_state_dict(tensors: Mapping[str, torch.Tensor], record: Mapping[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in [*tensors.items(), *record["values"].items()]:
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": record["param_groups"]}


def save_checkpoint(
    accelerator: Accelerator,
    output_dir: Path,
    state: dict[str, Any],
    keep: int | None,
    model: nn.Module,
    optimizer: Any,
    scheduler: Any,
) -> None:
    """Write a checkpoint folder as one transaction: weights, optimizer tensors (safetensors) and trainer state.

    Nothing is pickled. Only the main process writes: the model and the optimizer are the same on every process.
    """
    final = _checkpoint_folder(output_dir, f"step-{state['global_step']:08d}")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        weights = {n: t.detach().cpu().contiguous() for n, t in accelerator.unwrap_model(model).state_dict().items()}
        optimizer_tensors, optimizer_record = _optimizer_state(optimizer.optimizer)
        scaler = accelerator.scaler.state_dict() if accelerator.scaler is not None else None
        with folder_transaction(final) as staging:
            files = {}
            for name, tensors in ((CHECKPOINT_MODEL_FILE, weights), (CHECKPOINT_OPTIMIZER_FILE, optimizer_tensors)):
                with atomic_path(staging / name) as tmp:
                    save_file(tensors, str(tmp))
                files[name] = digest_record(staging / name)
            record = {**state, "files": files, "optimizer": optimizer_record, "scheduler": scheduler.state_dict()}
            write_json(staging / TRAINER_STATE_FILE, {**record, "scaler": scaler})
            write_manifest(staging, [*files, TRAINER_STATE_FILE])  # the trainer state too: an edited lr is refused
        for old in run_checkpoints(output_dir)[: -keep if keep else 0]:
            shutil.rmtree(old)
            old.with_name(f".{old.name}.lock").unlink(missing_ok=True)
    accelerator.wait_for_everyone()


def _read_checkpoint(checkpoint: Path) -> tuple[dict[str, Any], dict[str, dict[str, torch.Tensor]]]:
    """The trainer state and the tensors of a checkpoint, each file checked against its recorded sha256 and size."""
    where = checkpoint / TRAINER_STATE_FILE
    verify_manifest(checkpoint, [TRAINER_STATE_FILE])  # checkpoints of earlier releases have none
    state = read_json(where, "a finetune checkpoint state")
    files = state.get("files")
    if not isinstance(files, dict) or set(files) != {CHECKPOINT_MODEL_FILE, CHECKPOINT_OPTIMIZER_FILE}:
        raise ConfigError(
            f"{checkpoint} is not a checkpoint of this version (its {TRAINER_STATE_FILE} lists no safetensors files): "
            "earlier versions stored Accelerate checkpoints with pickled state, which is never loaded. Start the run "
            "again without resuming"
        )
    tensors = {}
    for name, record in files.items():
        data = safe_join(checkpoint, name, f"{where}: field files").read_bytes()
        check_digest(checkpoint / name, record, where, data=data)  # the bytes read are the bytes checked
        try:
            tensors[name] = load_safetensors(data)
        except (SafetensorError, ValueError, RuntimeError) as error:
            raise IntegrityError(f"{checkpoint / name} is not a valid safetensors file: {error}") from None
    return state, tensors


def load_checkpoint(
    candidates: Sequence[Path],
) -> tuple[Path, dict[str, Any], dict[str, dict[str, torch.Tensor]]] | None:
    """The first readable checkpoint among ``candidates`` with its trainer state and tensors (None when there are no
    candidates); a damaged one is skipped with a warning."""
    problems = []
    for checkpoint in candidates:
        try:
            return (checkpoint, *_read_checkpoint(checkpoint))
        except (OSError, ValueError) as error:
            if len(candidates) == 1:
                raise
            problems.append(f"{checkpoint.name}: {error}")
            logger.warning("Checkpoint %s cannot be used (%s); trying the previous one", checkpoint, error)
    if problems:
        raise IntegrityError("no usable checkpoint to resume from: " + "; ".join(problems))
    return None
