"""Fingerprints of base models: a bank or a coefficients export only applies to the exact base it was built on."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import torch
from torch import nn

__all__ = ["model_fingerprint", "state_fingerprint", "FingerprintMismatchError"]

# Values sampled per tensor: enough to tell two trainings apart, cheap for billion-parameter encoders.
_SAMPLES_PER_TENSOR = 64


class FingerprintMismatchError(ValueError):
    """A bank or export was built on a different base model than the one it is applied to."""


def state_fingerprint(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the sorted (name, shape, dtype) of every tensor and a deterministic sample of its values."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach()
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}\n".encode())
        flat = tensor.reshape(-1)
        if flat.numel() == 0:
            continue
        index = torch.linspace(0, flat.numel() - 1, min(flat.numel(), _SAMPLES_PER_TENSOR)).round().long()
        sample = flat[index.to(flat.device)].to("cpu", torch.float64)
        digest.update(sample.numpy().tobytes())
    return "sha256:" + digest.hexdigest()


def model_fingerprint(model: nn.Module) -> str:
    """Fingerprint of a model's parameters (persistent buffers such as BatchNorm statistics included)."""
    return state_fingerprint(model.state_dict())
