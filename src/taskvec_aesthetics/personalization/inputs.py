"""One person's ratings or pairwise preferences in any accepted form, validated and decoded.

Ratings are images with scores. Preferences are pairs of images with which one the person preferred (`"a"`, `"b"` or
`"tie"`): a natural input for a Bradley-Terry loss, and about as cheap for a person to give as one rating.

Both have a raw form (`Ratings`, `Preferences`: images and numbers, validated) and an encoded one (`EncodedRatings`,
`EncodedPreferences`: the images after the frozen prefix, as tensors), each with its canonical order: the
personalizer is a function of the *set* of ratings.
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

import torch
from PIL import Image, UnidentifiedImageError
from scipy.stats import rankdata

from ..constants import PREFERENCE_COLUMNS, PREFERRED_VALUES
from ..errors import InputError, InputTypeError
from ..losses import pairwise_rank_loss
from ..processing import IMAGE_EXTENSIONS, open_image, to_rgb

__all__ = [
    "PREFERENCE_COLUMNS",
    "Encoded",
    "EncodedPreferences",
    "EncodedRatings",
    "Unlabeled",
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
    "unlabeled_images",
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
        pair, value = ((i, j), p) if i < j else ((j, i), 1.0 - p)
        merged_pairs.setdefault(pair, []).append(value)
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


@dataclass
class EncodedRatings:
    """Rated images after the frozen prefix, with their ratings: the only input the optimisation needs.

    Args:
        prefix: `[N, ...]` output of the frozen prefix (see `Personalizer.encode`).
        ratings: `[N]` ratings.
        keys: one content hash per image (see `image_key`); by default a hash of its prefix row.
        duplicates: rows merged into others because they rated the same image.
        model_scores: optionally `[T + 1, N]` scores of the base and of each task model on these images
            (`Personalizer.model_scores`), when computed once for images many users rated; else computed by the fit.
    """

    prefix: torch.Tensor
    ratings: torch.Tensor
    keys: list[str] | None = None
    duplicates: int = 0
    model_scores: torch.Tensor | None = None

    #: What cross-validation reports for ratings.
    metric = "srocc"

    def __len__(self) -> int:
        """The number of rated images: the units that folds, batches and the criterion count."""
        return int(self.ratings.shape[0])

    @property
    def target(self) -> torch.Tensor:
        """`[N]` what the model's unit scores are compared with: the ratings."""
        return self.ratings

    def unit_scores(self, scores: torch.Tensor) -> torch.Tensor:
        """`[..., N]` image scores as unit scores: for ratings, the scores themselves."""
        return scores

    def held_out_scores(self, scores: torch.Tensor, held: torch.Tensor) -> torch.Tensor:
        """`[..., N]` one fold's model's scores of every rated image -> `[..., H]` unit scores of the held-out
        images ``held``: their quantile among all N.

        Each fold's model scores on a scale of its own (another task model, another mix), and pooling raw scores
        across folds ranks one fold's images against another's by those scales, which drags the pooled SROCC down
        most where folds are smallest. A quantile among the same images (their scores only, no rating) puts every
        fold on one scale.
        """
        ranks = torch.from_numpy(rankdata(scores.double().numpy(), axis=-1))
        return (ranks[..., held] - 0.5) / scores.shape[-1]

    def loss(self, scores: torch.Tensor, pairing: str = "all") -> torch.Tensor:
        """Bradley-Terry loss of image scores over pairs of differently rated images (see `pairwise_rank_loss`)."""
        return pairwise_rank_loss(scores, self.ratings.to(scores.device, scores.dtype), pairing)

    def check(self) -> None:
        _check_ratings(self.ratings)

    def subset(self, index: torch.Tensor) -> EncodedRatings:
        keys = None if self.keys is None else [self.keys[i] for i in index.tolist()]
        return EncodedRatings(
            self.prefix[index], self.ratings[index], keys, self.duplicates, _columns(self.model_scores, index)
        )

    def canonical(self) -> EncodedRatings:
        """The same ratings ordered by (image key, rating), each image once (its ratings averaged)."""
        keys = self.keys or _row_keys(self.prefix)
        if len(keys) != len(self):
            raise InputError(f"received {len(keys)} image keys for {len(self)} ratings; expected one key per rating")
        rows: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            rows.setdefault(key, []).append(i)
        merged = len(self) - len(rows)
        if merged:
            warnings.warn(
                f"{merged} of {len(self)} rated images are duplicates of another rated image; "
                "each image's ratings were averaged",
                stacklevel=3,
            )
        ratings = self.ratings.double()
        mean = {key: float(ratings[index].mean()) for key, index in rows.items()}
        order = sorted(rows, key=lambda key: (key, mean[key]))
        first = torch.tensor([rows[key][0] for key in order])
        return EncodedRatings(
            self.prefix[first],
            torch.tensor([mean[key] for key in order], dtype=torch.float64),
            order,
            self.duplicates + merged,
            _columns(self.model_scores, first),
        )


@dataclass
class EncodedPreferences:
    """Compared images after the frozen prefix, with which of each pair the person preferred.

    The units of cross-validation, batches and the criterion are the pairs; a pair's score is the difference of
    its images' scores, and its loss the Bradley-Terry loss against the preference (0.5 for a tie).

    Args:
        prefix: `[N, ...]` output of the frozen prefix, one row per distinct image.
        pairs: `[M, 2]` row indices `(a, b)` into ``prefix``.
        preference: `[M]` probability that `a` is preferred: 1, 0, 0.5 for a tie (or a mean of those).
        keys: one content hash per image; by default a hash of its prefix row.
        duplicates: preferences merged into another because they compared the same pair.
        model_scores: optionally `[T + 1, N]` scores of the base and of each task model on the images (see
            `EncodedRatings`).
    """

    prefix: torch.Tensor
    pairs: torch.Tensor
    preference: torch.Tensor
    keys: list[str] | None = None
    duplicates: int = 0
    model_scores: torch.Tensor | None = None
    metric = "accuracy"

    def __len__(self) -> int:
        return int(self.pairs.shape[0])

    @property
    def target(self) -> torch.Tensor:
        return self.preference

    def unit_scores(self, scores: torch.Tensor) -> torch.Tensor:
        """`[..., N]` image scores -> `[..., M]` score of image a minus score of image b."""
        return scores[..., self.pairs[:, 0]] - scores[..., self.pairs[:, 1]]

    def held_out_scores(self, scores: torch.Tensor, held: torch.Tensor) -> torch.Tensor:
        """`[..., N]` one fold's model's scores of every image -> `[..., H]` score differences of the held-out
        pairs ``held`` (a difference's sign, what pair accuracy counts, does not depend on the fold's scale)."""
        return self.unit_scores(scores.double())[..., held]

    def loss(self, scores: torch.Tensor, pairing: str = "all") -> torch.Tensor:
        """Bradley-Terry loss of image scores on these pairs (``pairing`` concerns ratings only)."""
        pairs = self.pairs.to(scores.device)
        return _pair_loss(scores[..., pairs[:, 0]] - scores[..., pairs[:, 1]], self.preference.to(scores.device))

    def check(self) -> None:
        if not torch.isfinite(self.preference).all() or ((self.preference < 0) | (self.preference > 1)).any():
            raise InputError("preferences must be probabilities that image a is preferred, 0 to 1")
        if bool((self.preference == 0.5).all()):
            raise InputError(
                f"personalization needs at least one pair with a preference; received {len(self)} pairs, all ties"
            )

    def subset(self, index: torch.Tensor) -> EncodedPreferences:
        """The pairs ``index`` and only the images they compare."""
        pairs = self.pairs[index]
        images, inverse = torch.unique(pairs.flatten(), sorted=True, return_inverse=True)
        keys = None if self.keys is None else [self.keys[i] for i in images.tolist()]
        return EncodedPreferences(
            self.prefix[images],
            inverse.view(-1, 2),
            self.preference[index],
            keys,
            self.duplicates,
            _columns(self.model_scores, images),
        )

    def canonical(self) -> EncodedPreferences:
        """Images ordered by key, each once; pairs written lower key first and ordered; a repeated pair averaged."""
        keys = self.keys or _row_keys(self.prefix)
        if len(keys) != self.prefix.shape[0]:
            raise InputError(
                f"received {len(keys)} image keys for {self.prefix.shape[0]} images; expected one key per image"
            )
        order = sorted(set(keys))
        position = {key: i for i, key in enumerate(order)}
        first = {key: i for i, key in reversed(list(enumerate(keys)))}
        merged: dict[tuple[int, int], list[float]] = {}
        for (a, b), p in zip(self.pairs.tolist(), self.preference.double().tolist()):
            i, j = position[keys[a]], position[keys[b]]
            if i == j:
                raise InputError("a preference compares an image with itself; expected two different images per pair")
            pair, value = ((i, j), p) if i < j else ((j, i), 1.0 - p)
            merged.setdefault(pair, []).append(value)
        count = len(self) - len(merged)
        if count:
            warnings.warn(
                f"{count} of {len(self)} preferences compare a pair of images compared before; "
                "each pair's preferences were averaged",
                stacklevel=3,
            )
        pairs = sorted(merged)
        images = torch.tensor([first[key] for key in order])
        return EncodedPreferences(
            self.prefix[images],
            torch.tensor(pairs, dtype=torch.long).view(-1, 2),
            torch.tensor([sum(merged[pair]) / len(merged[pair]) for pair in pairs], dtype=torch.float64),
            order,
            self.duplicates + count,
            _columns(self.model_scores, images),
        )


#: What a personalizer fits: ratings of images or preferences between pairs of images.
Encoded = EncodedRatings | EncodedPreferences


def _columns(scores: torch.Tensor | None, index: torch.Tensor) -> torch.Tensor | None:
    """The columns ``index`` of `[T + 1, N]` model scores (None stays None)."""
    return None if scores is None else scores[:, index]


def _row_keys(prefix: torch.Tensor) -> list[str]:
    return [hashlib.sha256(row.cpu().contiguous().numpy().tobytes()).hexdigest() for row in prefix]


def _pair_loss(differences: torch.Tensor, preference: torch.Tensor) -> torch.Tensor:
    """Bradley-Terry loss: -log sigmoid of each pair's score difference towards its preference, ties at 0.5."""
    return torch.nn.functional.binary_cross_entropy_with_logits(differences, preference.to(differences.dtype))


@dataclass
class Unlabeled:
    """Photos without ratings, after the frozen prefix, and each task model's scores on them."""

    prefix: torch.Tensor  # [M, ...]
    tasks: torch.Tensor  # [T, M]


def unlabeled_images(unlabeled: Any) -> list[Any]:
    """The photos of ``unlabeled``: a folder's image files (sorted), or the given images or paths (none: [])."""
    if unlabeled is None:
        return []
    if isinstance(unlabeled, (str, Path)):
        folder = Path(unlabeled)
        if not folder.is_dir():
            raise InputError(f"unlabeled photos must be a folder of images or a list of images, received {folder}")
        photos = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not photos:
            raise InputError(f"the folder of unlabeled photos {folder} holds no image ({', '.join(IMAGE_EXTENSIONS)})")
        return photos
    if not isinstance(unlabeled, Sequence):
        raise InputTypeError(f"unlabeled must be a folder or a list of images, received {type(unlabeled).__name__}")
    return list(unlabeled)


def _check_ratings(ratings: torch.Tensor) -> None:
    if not torch.isfinite(ratings).all():
        rows = (~torch.isfinite(ratings)).nonzero().flatten().tolist()[:5]
        raise InputError(f"ratings must be finite numbers; rows {rows} are NaN or inf")
    if torch.unique(ratings).numel() < 2:
        raise InputError(
            f"personalization needs at least 2 distinct ratings to learn an order, received {ratings.numel()} ratings "
            f"all equal to {ratings[0].item() if ratings.numel() else 'nothing'}"
        )
