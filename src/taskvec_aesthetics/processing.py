"""Image inputs: what a user may pass to `score` (PIL images, paths, a folder, tensors) and the image processor."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from transformers import AutoImageProcessor, PreTrainedConfig, ViTImageProcessorPil

from .constants import PREPROCESSOR_FILE
from .errors import ImageTooLargeError, InputError, InputTypeError, MissingFileError

__all__ = [
    "ImageInput",
    "IMAGE_EXTENSIONS",
    "default_image_processor",
    "list_images",
    "open_image",
    "to_rgb",
    "ImageTooLargeError",
    "collect_images",
    "load_image_processor",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")
ImageInput = Union[Image.Image, str, Path, torch.Tensor, Sequence[Union[Image.Image, str, Path]]]

# Normalisation statistics by encoder family; ImageNet statistics otherwise.
_FAMILY_STATS: dict[str, tuple[list[float], list[float]]] = {
    "clip_vision_model": ([0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]),
    "siglip_vision_model": ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
    "siglip2_vision_model": ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
}
_IMAGENET_STATS = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


def default_image_processor(encoder_config: PreTrainedConfig, image_size: int | None = None) -> Any:
    """A deterministic resize + rescale + normalise processor for ``encoder_config``'s input size and statistics.

    Encoder configs that carry `image_mean` / `image_std` (ours do) win over the family defaults.
    """
    size = image_size or getattr(encoder_config, "image_size", None) or 224
    size = size[0] if isinstance(size, (list, tuple)) else int(size)
    mean, std = _FAMILY_STATS.get(encoder_config.model_type, _IMAGENET_STATS)
    mean = list(getattr(encoder_config, "image_mean", None) or mean)
    std = list(getattr(encoder_config, "image_std", None) or std)
    return ViTImageProcessorPil(
        do_resize=True,
        size={"height": size, "width": size},
        do_rescale=True,
        do_normalize=True,
        image_mean=mean,
        image_std=std,
    )


def load_image_processor(folder: str | Path) -> Any:
    """The image processor saved in ``folder`` (`preprocessor_config.json`), or None when there is none."""
    if not (Path(folder) / PREPROCESSOR_FILE).is_file():
        return None
    return AutoImageProcessor.from_pretrained(str(folder))


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingFileError(f"no such folder: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise InputError(f"found no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
    return files


def to_rgb(image: Image.Image) -> Image.Image:
    """An 8-bit RGB copy of ``image`` as it is meant to be seen.

    The EXIF orientation is applied (phones store portraits sideways), and high-bit-depth grey images (`I;16`, `I`,
    `F`) are scaled by their value range, where Pillow's `convert("RGB")` would clip everything above 255.
    """
    image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I;16"):
        values = np.asarray(image, dtype=np.float64) / 257.0  # 0..65535 -> 0..255
    elif image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if image.mode == "F" and low >= 0.0 and high <= 1.0:
            values = values * 255.0  # a float image on [0, 1]
        elif low < 0.0 or high > 255.0:
            # Integer data of 16 bits (how Pillow opens 16-bit PNGs) keeps its nominal range; anything else its own.
            low, high = (0.0, 65535.0) if low >= 0.0 and high <= 65535.0 and image.mode == "I" else (low, high)
            values = (values - low) / max(high - low, 1e-12) * 255.0
    else:
        return image.convert("RGB")
    grey = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")
    return grey.convert("RGB")


def open_image(item: Image.Image | str | Path, where: str = "") -> Image.Image:
    """An RGB PIL image from a PIL image or a file path, with a clear error for unreadable files (see `to_rgb`)."""
    if isinstance(item, Image.Image):
        return to_rgb(item)
    if isinstance(item, (str, Path)):
        path = Path(item)
        if not path.is_file():
            raise MissingFileError(f"image file not found{where}: {path}")
        try:
            with Image.open(path) as image:
                return to_rgb(image)
        except Image.DecompressionBombError as error:
            raise ImageTooLargeError(
                f"image{where} {path} is too large to decode safely ({error}). If you trust it, raise Pillow's limit "
                "before scoring: `PIL.Image.MAX_IMAGE_PIXELS = <pixels>` (None removes it)"
            ) from None
        except (UnidentifiedImageError, OSError) as error:
            raise InputError(f"cannot decode image{where} {path}: {error}") from None
    raise InputTypeError(f"expected a PIL image or a file path{where}, received {type(item).__name__}")


def collect_images(images: ImageInput) -> list[Image.Image | str | Path] | torch.Tensor:
    """Normalise ``score``'s input: a tensor of pixel values stays a tensor; anything else becomes a list.

    A folder expands to its image files; a single image or path becomes a list of one.
    """
    if isinstance(images, torch.Tensor):
        if images.dim() == 3:
            images = images.unsqueeze(0)
        if images.dim() != 4:
            raise InputError(f"pixel_values must have shape [N, C, H, W] or [C, H, W], received {list(images.shape)}")
        return images
    if isinstance(images, (str, Path)):
        return list(list_images(images)) if Path(images).is_dir() else [images]
    if isinstance(images, Image.Image):
        return [images]
    if isinstance(images, Iterable):
        items = list(images)
        if not items:
            raise InputError("received an empty list of images")
        return items
    raise InputTypeError(
        f"expected PIL images, file paths, a folder or a tensor of pixel values, received {type(images).__name__}"
    )
