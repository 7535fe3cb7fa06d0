"""The examples a fine-tuning run trains on: images with their scores (and vote histograms) mapped onto the model's
scale, and, where the encoder's first blocks are frozen, those blocks' output computed once in place of the pixels."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset
from tqdm.auto import tqdm

from ..errors import InputError
from ..modeling import AestheticModel
from ..processing import open_image
from .config import PREFIX_CACHE_BUDGET_GIB, FinetuneConfig

__all__ = [
    "PREFIX_CACHE_BUDGET_BYTES",
    "PrefixEncoded",
    "ScoredImages",
    "caches_prefix",
    "check_dataset",
    "encode_prefix",
    "resample_histogram",
]

logger = logging.getLogger(__name__)

PREFIX_CACHE_BUDGET_BYTES = PREFIX_CACHE_BUDGET_GIB * 2**30


def resample_histogram(histogram: torch.Tensor, num_bins: int) -> torch.Tensor:
    """Resample `[..., K]` vote histograms with equally spaced bins spanning the scale onto `num_bins` bins.

    Each source bin's mass is split linearly between the two nearest target bins, which keeps the total mass and
    the mean position on the scale. With `K == num_bins` the histogram is unchanged.
    """
    k = histogram.shape[-1]
    if k < 2 or num_bins < 2:
        raise InputError(f"histograms need at least 2 bins, received {k} -> {num_bins}")
    if k == num_bins:
        return histogram
    position = torch.linspace(0, num_bins - 1, k, dtype=torch.float64)
    low = position.floor().long().clamp(max=num_bins - 1)
    frac = (position - low).to(histogram.dtype)
    out = histogram.new_zeros(*histogram.shape[:-1], num_bins)
    out.index_add_(-1, low, histogram * (1 - frac))
    out.index_add_(-1, (low + 1).clamp(max=num_bins - 1), histogram * frac)
    return out


class ScoredImages(TorchDataset):
    """Rows of an image dataset as preprocessed pixels, scores on the model's scale and resampled histograms."""

    def __init__(
        self, dataset: Any, processor: Any, source: Sequence[float], target: Sequence[float], bins: int | None
    ):
        self.dataset, self.processor, self.bins = dataset, processor, bins
        self.scale = (target[1] - target[0]) / (source[1] - source[0])
        self.offset = target[0] - source[0] * self.scale

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        row = self.dataset[int(index)]
        pixels = self.processor(images=open_image(row["image"], f" (row {index})"), return_tensors="pt")[
            "pixel_values"
        ]
        item = {"pixel_values": pixels[0], "score": torch.tensor(self.offset + self.scale * float(row["score"]))}
        if self.bins is not None:
            item["distribution"] = resample_histogram(torch.tensor(row["score_distribution"]), self.bins)
        return item


def check_dataset(dataset: Any, what: str) -> None:
    columns = getattr(dataset, "column_names", None)
    if columns is None or not {"image", "score"} <= set(columns):
        raise InputError(
            f"{what} must be a datasets.Dataset with 'image' and 'score' columns, received columns {columns}"
        )
    if len(dataset) == 0:
        raise InputError(f"{what} is empty")


class PrefixEncoded(TorchDataset):
    """Rows of `ScoredImages` with the frozen prefix's output (`prefix_hidden`) in place of the pixels."""

    def __init__(self, columns: dict[str, torch.Tensor]) -> None:
        self.columns = columns

    def __len__(self) -> int:
        return len(self.columns["score"])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {name: column[index] for name, column in self.columns.items()}


@torch.no_grad()
def encode_prefix(
    model: AestheticModel, scored: ScoredImages, blocks: int, config: FinetuneConfig, accelerator: Accelerator
) -> PrefixEncoded:
    """Run the frozen prefix (in eval mode) once over every row of ``scored``. Every process encodes every row: its
    sampler picks the rows it trains on at each epoch."""
    model.eval()
    columns: dict[str, list[torch.Tensor]] = {}
    loader = DataLoader(scored, batch_size=config.batch_size, num_workers=config.num_workers)
    quiet = not accelerator.is_local_main_process
    for batch in tqdm(loader, desc="Encoding the frozen prefix", unit="batch", disable=quiet, leave=False):
        with accelerator.autocast():
            hidden = model.encode_prefix(batch.pop("pixel_values").to(accelerator.device), blocks)
        batch["prefix_hidden"] = hidden.float().cpu()
        for name, value in batch.items():
            columns.setdefault(name, []).append(value)
    return PrefixEncoded({name: torch.cat(parts) for name, parts in columns.items()})


def caches_prefix(config: FinetuneConfig, model: AestheticModel, probe: torch.Tensor, num_images: int) -> bool:
    """Whether to train on the frozen prefix's output: `cache_prefix`, and for "auto" whether it fits the budget."""
    if config.freeze_prefix_blocks is None or config.cache_prefix == "never":
        return False
    if config.cache_prefix == "always":
        return True
    with torch.no_grad():
        per_image = model.eval().encode_prefix(probe, config.freeze_prefix_blocks).numel() * 4
    if per_image * num_images > PREFIX_CACHE_BUDGET_BYTES:
        logger.info(
            "Not caching the frozen prefix: %d images x %.1f MB exceed %d GiB (cache_prefix='always' forces it)",
            num_images,
            per_image / 2**20,
            PREFIX_CACHE_BUDGET_BYTES // 2**30,
        )
        return False
    return True
