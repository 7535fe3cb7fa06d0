"""Prefix features of images, by content hash, kept on disk so every image is encoded once across users and runs.

The frozen prefix of the encoder (the blocks no task vector touches) gives the same output for an image whatever the
user, so `personalize_many` computes it once per distinct image (`ratings_input.image_key`, a hash of the decoded
pixels) and keeps it here. A cache folder is keyed by everything the features depend on: the base model's fingerprint,
the prefix depth, the precision and the image processor's settings; features of another model are never mixed in.
Each writer adds its own safetensors shard (written atomically), so processes never write the same file and a killed
run leaves only complete shards.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .io import atomic_path

if TYPE_CHECKING:
    from .personalization import Personalizer

__all__ = ["FeatureCache", "feature_key"]

logger = logging.getLogger(__name__)

_SHARD_PREFIX = "features-"


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

    def __init__(self, root: str | Path, key: str) -> None:
        self.folder = Path(root) / key
        self._features: dict[str, torch.Tensor] = {}
        self._new: dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._features)

    def __contains__(self, image_key: str) -> bool:
        return image_key in self._features

    def load(self) -> FeatureCache:
        """Read every shard of the folder (shards written since the last load included)."""
        if self.folder.is_dir():
            for shard in sorted(self.folder.glob(f"{_SHARD_PREFIX}*.safetensors")):
                with safe_open(str(shard), framework="pt") as handle:
                    for name in handle.keys():
                        if name not in self._features:
                            self._features[name] = handle.get_tensor(name)
        logger.info("Feature cache %s: %d images", self.folder, len(self._features))
        return self

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
            raise ValueError(f"received {len(features)} feature rows for {len(keys)} image keys")
        for key, row in zip(keys, features):
            row = row.detach().cpu().contiguous().clone()
            self._features[key] = row
            self._new[key] = row

    def flush(self) -> Path | None:
        """Write the features added since the last flush as a new shard; returns its path (None if nothing new)."""
        if not self._new:
            return None
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / f"{_SHARD_PREFIX}{uuid.uuid4().hex[:16]}.safetensors"
        with atomic_path(target) as tmp:
            save_file(self._new, str(tmp), metadata={"format": "pt"})
        self._new = {}
        return target

    def describe(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "images": len(self._features)}
