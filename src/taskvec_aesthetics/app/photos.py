"""Reading photos people upload: anything that is not a readable, reasonably sized image is refused with a reason."""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..errors import PhotoError
from ..processing import to_rgb

__all__ = ["MAX_BYTES", "MAX_FULL_DECODE_PIXELS", "MAX_PIXELS", "MAX_SIDE", "PhotoError", "open_photo", "store_photo"]

#: Largest upload accepted, in bytes.
MAX_BYTES = 40 * 1024 * 1024
#: Largest JPEG accepted, in pixels (below PIL's decompression-bomb limit): JPEGs are decoded at a reduced size.
MAX_PIXELS = 80_000_000
#: Largest image of other formats (PNG, WebP, ...), which decode at full size only: about 50 MB of pixels.
MAX_FULL_DECODE_PIXELS = 16_000_000
#: Photos are kept with at most this many pixels on their long side: enough for the page and the model.
MAX_SIDE = 1024


def open_photo(path: str | Path) -> Image.Image:
    """Open a photo as RGB, downscaled to at most :data:`MAX_SIDE` pixels on its long side.

    Raises:
        [`PhotoError`]: the file is missing, too large, not an image, or an image PIL cannot decode.
    """
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise PhotoError(f"{name}: no such file")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise PhotoError(f"{name} is {size / 2**20:.0f} MB; photos up to {MAX_BYTES // 2**20} MB are accepted")
    image: Image.Image  # the opened file, then its RGB copy
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.width * image.height > MAX_PIXELS:
                    raise PhotoError(
                        f"{name} is {image.width} x {image.height} pixels; photos up to "
                        f"{MAX_PIXELS / 1e6:.0f} megapixels are accepted"
                    )
                if image.format != "JPEG" and image.width * image.height > MAX_FULL_DECODE_PIXELS:
                    # Only JPEG decodes at a reduced size; a 79-megapixel PNG would take over 1 GB to decode.
                    raise PhotoError(
                        f"{name} is a {image.format} of {image.width} x {image.height} pixels; {image.format} photos "
                        f"up to {MAX_FULL_DECODE_PIXELS / 1e6:.0f} megapixels are accepted (JPEG up to "
                        f"{MAX_PIXELS / 1e6:.0f}): downscale it, or save it as JPEG"
                    )
                image.draft("RGB", (MAX_SIDE, MAX_SIDE))  # JPEG: decode at a reduced size, fast and lean
                image = to_rgb(image)  # as the model sees it: EXIF orientation, 16-bit images by range
    except PhotoError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PhotoError(f"{name} is too large; photos up to {MAX_PIXELS / 1e6:.0f} megapixels are accepted") from None
    except UnidentifiedImageError:
        raise PhotoError(f"{name} is not an image we can read; expected a JPEG, PNG or WebP photo") from None
    except (OSError, ValueError, SyntaxError) as error:  # truncated or corrupt image data
        raise PhotoError(f"{name} is a damaged image: {error}") from None
    image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    return image


def store_photo(path: str | Path, folder: str | Path, name: str | None = None) -> Path:
    """Check an uploaded photo and keep a normalised copy (RGB, at most :data:`MAX_SIDE` px) in ``folder``.

    The copy keeps the upload's name (made unique in ``folder``), so a ratings file can refer to it.
    """
    image = open_photo(path)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = Path(name or Path(path).name).stem.replace("/", "_") or "photo"
    target = folder / f"{stem}.png"
    counter = 1
    while target.exists():
        counter += 1
        target = folder / f"{stem}-{counter}.png"
    image.save(target, format="PNG")
    return target
