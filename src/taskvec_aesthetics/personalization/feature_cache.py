"""Prefix features of images, by content hash, kept on disk so every image is encoded once across users and runs.

The frozen prefix of the encoder (the blocks no task vector touches) gives the same output for an image whatever the
user, so `personalize_many` computes it once per distinct image (`inputs.image_key`, a hash of the decoded
pixels) and keeps it here. A cache folder is keyed by everything the features depend on: the base model's fingerprint,
the prefix depth, the precision and the image processor's settings; features of another model are never mixed in.
Each writer adds its own safetensors shard (written atomically), so processes never write the same file and a killed
run leaves only complete shards. A shard is named after the sha256 of its bytes, checked when it is read: a shard that
differs from its name, is truncated or holds features of another shape is reported, removed and its images encoded
again, once, for every user.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file

from ..errors import InputError, IntegrityError
from ..utils.io import atomic_path, check_digest, file_digest

if TYPE_CHECKING:
    from .personalizer import Personalizer

__all__ = ["FeatureCache", "feature_key"]

logger = logging.getLogger(__name__)

_SHARD_PREFIX = "features-"
# A shard being written is hidden (`.pending-*`); one an hour old was left by a writer that was killed.
_PENDING = "pending-"
_ABANDONED_AFTER_S = 3600
# `features-<sha256 of the file>.safetensors`; shards of earlier releases carry a random 16-digit name, unchecked.
_CHECKED_NAME = re.compile(rf"{_SHARD_PREFIX}([0-9a-f]{{64}})\.safetensors")


def feature_key(personalizer: Personalizer) -> str:
    """Hash of what a personalizer's prefix features depend on (base fingerprint, prefix depth, dtype, processor)."""
    processor = personalizer.model.image_processor
    settings = processor.to_dict() if hasattr(processor, "to_dict") else repr(processor)
    record = {
        "base": personalizer.bank.base_fingerprint,
        "prefix_blocks": personalizer.prefix_blocks,
        "dtype": personalizer.config.dtype,
        "processor": settings,
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:24]


class FeatureCache:
    """Features by image key, read from and added to ``root / key`` (one safetensors shard per writer and flush).

    Args:
        root: the cache folder (several models' caches live side by side in it).
        key: what the features depend on (see `feature_key`).
    """

    def __init__(self, root: str | Path, key: str, shape: tuple[int, ...] | None = None) -> None:
        self.folder = Path(root) / key
        self.shape = None if shape is None else tuple(shape)
        self._features: dict[str, torch.Tensor] = {}
        self._new: dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._features)

    def __contains__(self, image_key: str) -> bool:
        return image_key in self._features

    def load(self) -> FeatureCache:
        """Read every shard of the folder (shards written since the last load included).

        A damaged shard (its bytes differ from the sha256 in its name, it is truncated, or its features do not have
        the cache's `shape`) is logged with its name and removed, so its images count as missing and are encoded again.
        """
        if self.folder.is_dir():
            self._remove_abandoned()
            for shard in sorted(self.folder.glob(f"{_SHARD_PREFIX}*.safetensors")):
                try:
                    features = self.read_shard(shard)
                except FileNotFoundError:  # removed as damaged by another process meanwhile
                    continue
                except IntegrityError as error:
                    logger.warning("Removing a damaged feature cache shard; its images are encoded again: %s", error)
                    shard.unlink(missing_ok=True)
                    continue
                for name, tensor in features.items():
                    self._features.setdefault(name, tensor)
        logger.info("Feature cache %s: %d images", self.folder, len(self._features))
        return self

    def _remove_abandoned(self) -> None:
        """Remove unfinished shards of writers killed mid-write (hidden files an hour old: no live writer's)."""
        for path in self.folder.glob(f".*{_PENDING}*"):
            try:
                if time.time() - path.stat().st_mtime > _ABANDONED_AFTER_S:
                    logger.info("Removing %s, left by a writer that was stopped", path)
                    path.unlink()
            except FileNotFoundError:
                continue

    def read_shard(self, shard: Path) -> dict[str, torch.Tensor]:
        """The features of one shard, checked; an [`IntegrityError`] naming the shard when it is damaged."""
        data = shard.read_bytes()  # read once: the bytes checked are the bytes loaded
        named = _CHECKED_NAME.fullmatch(shard.name)
        if named:
            check_digest(shard, {"sha256": named.group(1), "size": None}, "its file name", data=data)
        try:
            features = load_safetensors(data)
        except (SafetensorError, ValueError, RuntimeError) as error:
            raise IntegrityError(f"{shard} is not a valid safetensors file (truncated or damaged): {error}") from None
        for name, tensor in features.items():
            if self.shape is not None and tuple(tensor.shape) != self.shape:
                raise IntegrityError(
                    f"{shard}: the features of {name[:16]}... have shape {list(tensor.shape)}, but this cache holds "
                    f"features of shape {list(self.shape)}"
                )
        return features

    def missing(self, keys: Iterable[str]) -> list[str]:
        """The keys (each once, in order) that have no features yet."""
        return [k for k in dict.fromkeys(keys) if k not in self._features]

    def get(self, keys: list[str]) -> torch.Tensor:
        """`[N, ...]` features of ``keys``; a clear error for any key not cached."""
        absent = self.missing(keys)
        if absent:
            raise KeyError(f"{len(absent)} images have no cached features (first: {absent[0][:16]}...)")
        return torch.stack([self._features[k] for k in keys])

    def add(self, keys: list[str], features: torch.Tensor) -> None:
        """Keep the features of ``keys`` (rows of ``features``); written to disk by `flush`."""
        if len(keys) != len(features):
            raise InputError(f"received {len(features)} feature rows for {len(keys)} image keys")
        if self.shape is not None and tuple(features.shape[1:]) != self.shape:
            raise InputError(
                f"received features of shape {list(features.shape[1:])}, this cache holds {list(self.shape)}"
            )
        for key, row in zip(keys, features):
            row = row.detach().cpu().contiguous().clone()
            self._features[key] = row
            self._new[key] = row

    def flush(self) -> Path | None:
        """Write the features added since the last flush as a new shard; returns its path (None if nothing new)."""
        if not self._new:
            return None
        self.folder.mkdir(parents=True, exist_ok=True)
        # Written under a hidden name, then renamed after its own sha256 (which `load` checks).
        pending = self.folder / f".{_PENDING}{uuid.uuid4().hex[:16]}.safetensors"
        with atomic_path(pending) as tmp:
            save_file(self._new, str(tmp), metadata={"format": "pt"})
        try:
            target = self.folder / f"{_SHARD_PREFIX}{file_digest(pending)[0]}.safetensors"
            os.replace(pending, target)
        finally:
            pending.unlink(missing_ok=True)
        self._new = {}
        return target

    def describe(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "images": len(self._features)}
