"""One person's ratings or pairwise preferences in any accepted form, validated and decoded.

Ratings are images with scores. Preferences are pairs of images with which one the person preferred (`"a"`, `"b"` or
`"tie"`): a natural input for a Bradley-Terry loss, and about as cheap for a person to give as one rating.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from ..constants import PREFERENCE_COLUMNS, PREFERRED_VALUES
from ..errors import InputError, InputTypeError
from ..processing import open_image, to_rgb

__all__ = [
    "PREFERENCE_COLUMNS",
    "Preferences",
    "Ratings",
    "as_preferences",
    "as_ratings",
    "canonical",
    "canonical_preferences",
    "decode_images",
    "image_key",
    "is_preferences",
    "rows_by_user",
]

logger = logging.getLogger(__name__)


@dataclass
class Ratings:
    """Decoded RGB images and their float scores, same length, every score finite."""

    images: list[Image.Image]
    scores: list[float]
    duplicates: int = 0


@dataclass
class Preferences:
    """Decoded RGB images and pairs `(a, b, p)` of indices into them, `p` the probability that `a` is preferred
    (1 for `"a"`, 0 for `"b"`, 0.5 for a tie)."""

    images: list[Image.Image]
    pairs: list[tuple[int, int, float]]
    duplicates: int = 0


def image_key(image: Image.Image) -> str:
    """Hash of a decoded image's pixels (mode, size and bytes): the same picture gets the same key in any file."""
    digest = hashlib.sha256(f"{image.mode}:{image.size}:".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def canonical(ratings: Ratings) -> Ratings:
    """The same ratings in a canonical order (image hash, then score), each image once.

    Personalization is then a function of the *set* of ratings: any row order gives the same splits, minibatches and
    coefficients. An image rated several times gets the mean of its ratings (a warning says how many rows were merged)
    so it can never sit on both sides of a split.
    """
    keyed: dict[str, tuple[Image.Image, list[float]]] = {}
    for image, score in zip(ratings.images, ratings.scores):
        keyed.setdefault(image_key(image), (image, []))[1].append(score)
    merged = len(ratings.scores) - len(keyed)
    if merged:
        warnings.warn(
            f"{merged} of {len(ratings.scores)} rated images are duplicates of another rated image; "
            "each image's ratings were averaged",
            stacklevel=2,
        )
    order = sorted(keyed.items(), key=lambda item: (item[0], sum(item[1][1]) / len(item[1][1])))
    return Ratings(
        [image for _, (image, _) in order],
        [sum(scores) / len(scores) for _, (_, scores) in order],
        ratings.duplicates + merged,
    )


def canonical_preferences(preferences: Preferences) -> Preferences:
    """The same preferences in a canonical form: each distinct image once, ordered by its hash; each pair written
    with the lower hash first (its preference flipped to match) and ordered by the two hashes; the same pair given
    several times is one pair with the mean preference (a warning says how many were merged)."""
    keys = [image_key(image) for image in preferences.images]
    first: dict[str, Image.Image] = {}
    for key, image in zip(keys, preferences.images):
        first.setdefault(key, image)
    order = sorted(first)
    index = {key: i for i, key in enumerate(order)}
    merged_pairs: dict[tuple[int, int], list[float]] = {}
    for row, (a, b, p) in enumerate(preferences.pairs):
        i, j = index[keys[a]], index[keys[b]]
        if i == j:
            raise InputError(
                f"the preference in row {row} compares an image with itself (its image_a and image_b hold the same "
                "picture); expected two different images per pair"
            )
        key, value = ((i, j), p) if i < j else ((j, i), 1.0 - p)
        merged_pairs.setdefault(key, []).append(value)
    merged = len(preferences.pairs) - len(merged_pairs)
    if merged:
        warnings.warn(
            f"{merged} of {len(preferences.pairs)} preferences compare a pair of images compared before; "
            "each pair's preferences were averaged",
            stacklevel=2,
        )
    pairs = [(i, j, sum(values) / len(values)) for (i, j), values in sorted(merged_pairs.items())]
    return Preferences([first[key] for key in order], pairs, preferences.duplicates + merged)


def _decode_cell(cell: Any, row: int) -> Image.Image:
    # A datasets Image column read with decode=False gives {"path", "bytes"}; decode here to name the bad row.
    if isinstance(cell, dict):
        if cell.get("bytes"):
            try:
                with Image.open(io.BytesIO(cell["bytes"])) as image:
                    return to_rgb(image)
            except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:
                raise InputError(f"cannot decode the image in row {row} ({cell.get('path')}): {error}") from None
        if cell.get("path"):
            return open_image(Path(cell["path"]), f" in row {row}")
        raise InputError(f"row {row} has an empty image")
    return open_image(cell, f" in row {row}")


def decode_images(dataset: Any, column: str = "image") -> list[Image.Image]:
    """Decode a datasets image column row by row into RGB images, naming the row of any broken image."""
    from datasets import Image as ImageFeature

    if isinstance(dataset.features[column], ImageFeature):
        dataset = dataset.cast_column(column, ImageFeature(decode=False))
    return [_decode_cell(cell, row) for row, cell in enumerate(dataset[column])]


def rows_by_user(dataset: Any, column: str = "user_id") -> dict[str, list[int]]:
    """Row indices of each user of a dataset, users in order of first appearance."""
    rows: dict[str, list[int]] = {}
    for index, user in enumerate(dataset[column]):
        rows.setdefault(str(user), []).append(index)
    return rows


def _score(value: Any, row: int) -> float:
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise InputError(f"the rating in row {row} is not a number: {value!r}") from None
    if not math.isfinite(score):
        raise InputError(f"the rating in row {row} is {score}; ratings must be finite numbers")
    return score


def as_ratings(data: Any, image_column: str = "image", score_column: str = "score") -> Ratings:
    """Accept a `datasets.Dataset`, a list of (image, score) pairs, a pair `(images, scores)` or a ratings path.

    Images may be PIL images or file paths. Every image is decoded here, so a broken file is reported by row.
    """
    if isinstance(data, (str, Path)):
        from ..data import load_ratings

        data = load_ratings(data)
    if hasattr(data, "column_names") and hasattr(data, "cast_column"):
        missing = [c for c in (image_column, score_column) if c not in data.column_names]
        if missing:
            raise InputError(f"the ratings dataset lacks columns {missing}; it has {data.column_names}")
        return Ratings(decode_images(data, image_column), [_score(s, i) for i, s in enumerate(data[score_column])])
    elif (
        isinstance(data, tuple)
        and len(data) == 2
        and all(isinstance(x, Sequence) for x in data)
        and not isinstance(data[0], (str, Image.Image))
    ):
        images, scores = list(data[0]), list(data[1])
        if len(images) != len(scores):
            raise InputError(f"received {len(scores)} ratings for {len(images)} images; expected one rating per image")
    elif isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        pairs = list(data)
        bad = [i for i, p in enumerate(pairs) if not (isinstance(p, Sequence) and len(p) == 2)]
        if bad:
            raise InputError(f"expected (image, score) pairs; rows {bad[:5]} are not pairs")
        images, scores = [p[0] for p in pairs], [p[1] for p in pairs]
    else:
        raise InputTypeError(
            "ratings must be a datasets.Dataset with image and score columns, a list of (image, score) pairs, "
            f"an (images, scores) pair or a ratings file path; received {type(data).__name__}"
        )
    if len(images) < 2:
        raise InputError(f"personalization needs at least 2 rated images, received {len(images)}")
    return Ratings([_decode_cell(c, i) for i, c in enumerate(images)], [_score(s, i) for i, s in enumerate(scores)])


def _preferred(value: Any, row: int) -> float:
    text = str(value).strip().lower()
    if text not in PREFERRED_VALUES:
        raise InputError(
            f"the preference in row {row} is {value!r}; expected one of {list(PREFERRED_VALUES)} "
            "(image a preferred, image b preferred, or a tie)"
        )
    return PREFERRED_VALUES[text]


def is_preferences(data: Any) -> bool:
    """Whether ``data`` is pairwise preferences (a dataset with `image_a`, `image_b`, `preferred` columns, or a list
    of `(image_a, image_b, preferred)` triples) rather than ratings."""
    column_names = getattr(data, "column_names", None)
    if column_names is not None:
        return "image_a" in column_names or "image_b" in column_names or "preferred" in column_names
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes, tuple)) and data:
        first = data[0]  # the first row decides; the others are then checked to be triples too
        return isinstance(first, Sequence) and not isinstance(first, str) and len(first) == 3
    return False


def as_preferences(data: Any) -> Preferences:
    """Accept a `datasets.Dataset` with `image_a`, `image_b` and `preferred` columns (`"a"`, `"b"` or `"tie"`),
    a list of `(image_a, image_b, preferred)` triples, or a preferences CSV path (see `load_preferences`).

    Images may be PIL images or file paths; each distinct file is decoded once, and a broken one is named by row.
    """
    if isinstance(data, (str, Path)):
        from ..data import load_preferences

        data = load_preferences(data)
    if hasattr(data, "column_names") and hasattr(data, "cast_column"):
        missing = [c for c in PREFERENCE_COLUMNS if c not in data.column_names]
        if missing:
            raise InputError(
                f"the preferences dataset lacks columns {missing}; it has {data.column_names}, expected "
                f"{list(PREFERENCE_COLUMNS)}"
            )
        firsts, seconds = decode_images(data, "image_a"), decode_images(data, "image_b")
        choices = [_preferred(value, row) for row, value in enumerate(data["preferred"])]
    elif isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        rows = list(data)
        bad = [i for i, row in enumerate(rows) if not (isinstance(row, Sequence) and len(row) == 3)]
        if bad:
            raise InputError(f"expected (image_a, image_b, preferred) triples; rows {bad[:5]} are not triples")
        firsts = [_decode_cell(row[0], i) for i, row in enumerate(rows)]
        seconds = [_decode_cell(row[1], i) for i, row in enumerate(rows)]
        choices = [_preferred(row[2], i) for i, row in enumerate(rows)]
    else:
        raise InputTypeError(
            "preferences must be a datasets.Dataset with image_a, image_b and preferred columns, a list of "
            f"(image_a, image_b, preferred) triples or a preferences file path; received {type(data).__name__}"
        )
    if len(choices) < 2:
        raise InputError(f"personalization needs at least 2 preferences, received {len(choices)}")
    images = firsts + seconds
    n = len(firsts)
    return Preferences(images, [(i, n + i, p) for i, p in enumerate(choices)])
