"""Fingerprints of base models: a bank or a coefficients export only applies to the exact base it was built on.

A fingerprint is `sha256-all:<hex>`: sha256 over the sorted (name, shape, dtype) of every tensor of the state dict
(parameters and persistent buffers) and all of its values, so changing any single value changes it. Hashing runs at
memory speed (see `benchmarks/fingerprint_speed.py` for a 300 M-parameter model).

Files written before this scheme carry `sha256:<hex>` fingerprints that hashed only 64 sampled values per tensor.
They still load: such a fingerprint is checked the old way, with a warning that says how to upgrade the file.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping

import torch
from torch import nn

from ..errors import FingerprintMismatchError

__all__ = [
    "model_fingerprint",
    "state_fingerprint",
    "fingerprint_matches",
    "is_legacy_fingerprint",
    "FingerprintMismatchError",
    "FINGERPRINT_PREFIX",
]

logger = logging.getLogger(__name__)

FINGERPRINT_PREFIX = "sha256-all:"
_LEGACY_PREFIX = "sha256:"
_LEGACY_SAMPLES_PER_TENSOR = 64


def state_fingerprint(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the sorted (name, shape, dtype) of every tensor and all of its values (their bytes)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach()
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}\n".encode())
        if tensor.numel():
            flat = tensor.to("cpu").contiguous().reshape(-1)
            # numpy declares its buffer protocol to type checkers for Python >= 3.12 only.
            digest.update(memoryview(flat.view(torch.uint8).numpy()))  # type: ignore[arg-type]
    return FINGERPRINT_PREFIX + digest.hexdigest()


def _legacy_fingerprint(tensors: Mapping[str, torch.Tensor]) -> str:
    """The fingerprint of earlier versions: 64 sampled values per tensor (kept to read their files)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach()
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}\n".encode())
        flat = tensor.reshape(-1)
        if flat.numel() == 0:
            continue
        index = torch.linspace(0, flat.numel() - 1, min(flat.numel(), _LEGACY_SAMPLES_PER_TENSOR)).round().long()
        sample = flat[index.to(flat.device)].to("cpu", torch.float64)
        digest.update(sample.numpy().tobytes())
    return _LEGACY_PREFIX + digest.hexdigest()


def model_fingerprint(model: nn.Module) -> str:
    """Fingerprint of a model's parameters (persistent buffers such as BatchNorm statistics included)."""
    return state_fingerprint(model.state_dict())


def is_legacy_fingerprint(fingerprint: object) -> bool:
    """True for a fingerprint written by an earlier version (sampled values only)."""
    return isinstance(fingerprint, str) and fingerprint.startswith(_LEGACY_PREFIX)


def fingerprint_matches(model: nn.Module, recorded: object, where: str = "a saved file") -> bool:
    """Whether ``model`` is the base that ``recorded`` (a fingerprint read from ``where``) describes.

    A legacy fingerprint is compared the legacy way, with a warning: it cannot tell bases apart that differ only in
    values it did not sample. Re-saving the file with this version records a full fingerprint.
    """
    if is_legacy_fingerprint(recorded):
        logger.warning(
            "%s records a fingerprint of an earlier version, which samples 64 values per tensor and so cannot detect "
            "every change of the base model. Load it and save it again (save_pretrained) to record a full one",
            where,
        )
        return _legacy_fingerprint(model.state_dict()) == recorded
    return model_fingerprint(model) == recorded
