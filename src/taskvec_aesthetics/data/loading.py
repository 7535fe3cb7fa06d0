"""`load_database`: one entry point from a database's official files to a `datasets.Dataset`.

Every loaded database has the same columns:

- `image`: `datasets.Image()`; the file path is stored and the image is decoded only when accessed.
- `image_id` (`string`): the database's own identifier of the image (usually its file name).
- `score` (`float32`): on the database's own scale, see `get_database_spec(name).score_range`.
- `score_distribution` (list of `float32`): the normalised vote histogram (fractions summing to 1, one per
  `spec.distribution_bins`) for AVA, KonIQ-10k and PARA at image level.
- `user_id` (`string`): the rater, for personalised databases at rating level.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

import numpy as np
from datasets import Dataset, DatasetInfo, Features, Image, List, NamedSplit, Value

from ..errors import InputError, InputTypeError
from .aesthetics import read_aadb, read_ava, read_tad66k
from .personalized import read_flickr_aes, read_lapis, read_para, read_real_cur
from .quality import read_kadid10k, read_koniq10k, read_livec, read_spaq
from .records import DatabaseFormatError, IssueLog, Record, drop_missing_images
from .registry import DatabaseSpec, get_database_spec

__all__ = ["LEVELS", "SPLITS", "TEST_FRACTION", "VALIDATION_FRACTION", "build_dataset", "load_database"]

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test", "all")
LEVELS = ("rating", "image")
# Seeded splits, used only where a database has no official one.
TEST_FRACTION = 0.2
VALIDATION_FRACTION = 0.05

_READERS: dict[str, Callable[..., list[Record]]] = {
    "ava": read_ava,
    "aadb": read_aadb,
    "tad66k": read_tad66k,
    "para": read_para,
    "koniq10k": read_koniq10k,
    "spaq": read_spaq,
    "livec": read_livec,
    "kadid10k": read_kadid10k,
    "flickr-aes": read_flickr_aes,
    "real-cur": read_real_cur,
    "lapis": read_lapis,
}


def load_database(
    name: str,
    root: str | os.PathLike[str],
    split: str = "train",
    *,
    level: str | None = None,
    skip_invalid: bool = False,
    seed: int = 0,
    user_id: str | Sequence[str] | None = None,
    **options: object,
) -> Dataset:
    """Load one split of a public database from its official on-disk files.

    Splits: the official split where one exists; otherwise a seeded split by unique group (image, or
    reference content for KADID-10k): `TEST_FRACTION` (20 %) of the groups go to `"test"`. Where there is
    no official validation split, `VALIDATION_FRACTION` (5 %) of the training groups are held out as
    `"validation"` and `"train"` is the rest (as pyiqa does for AVA). `"all"` is the union.

    | database | official split | seeded | notes |
    |---|---|---|---|
    | ava | test = `generic_test.jpgl`, train = the rest | validation | 1-10, 10-bin histogram |
    | aadb | train / validation / test (`TestNew`) lists | - | 0-1; ratings from `AADB_AllinAll.csv` |
    | tad66k | `labels/merge/{train,test}.csv` | validation | 1-10 |
    | para | `PARA-Giaa{Train,Test}.csv` (by image) | validation | 1-5, 9-bin histogram at image level |
    | koniq10k | `set` column of `koniq10k_distributions_sets.csv` | - | MOS z-score 0-100, 5-bin histogram |
    | spaq | none | test, validation | 0-100 |
    | livec | none | test, validation | 0-100; the 7 training images t1-t7 dropped |
    | kadid10k | none | test, validation by reference image | MOS 1-5 |
    | flickr-aes | test = the 37 `FLICKR_AES_TEST_WORKERS` | validation | 1-5 |
    | real-cur | every album owner is a test user: `"test"`/`"all"` only | - | 1-5 |
    | lapis | `LAPIS_GIAA_{Train,Val,Test}split.csv` (by image) | - | 0-100 |

    Args:
        name (`str`):
            Database name or alias, see [`list_databases`].
        root (`str` or `os.PathLike`):
            Folder holding the database as distributed; when it does not look like the database, the error
            shows the expected layout.
        split (`str`, *optional*, defaults to `"train"`):
            `"train"`, `"validation"`, `"test"` or `"all"`.
        level (`str`, *optional*):
            Personalised databases only: `"rating"` (one row per user and image, with `user_id`; the default for
            them) or `"image"` (one row per image with the official mean score, or the mean of the ratings where
            no official mean is published). Other databases are always at `"image"` level.
        skip_invalid (`bool`, *optional*, defaults to `False`):
            Skip malformed rows and rows whose image file is missing (their count is logged) instead of raising.
        seed (`int`, *optional*, defaults to 0):
            Seed of the seeded splits (including a validation split held out of an official training split);
            official splits do not depend on it.
        user_id (`str` or sequence of `str`, *optional*):
            Keep only these users' ratings (rating level of personalised databases).
        **options:
            Reader-specific options, e.g. `resolution="512x384"` for KonIQ-10k or `image_folder=...` for AADB
            and SPAQ. An unknown option is a `TypeError` listing the accepted ones.

    Returns:
        `datasets.Dataset`: the selected rows, with `info.citation`, `info.homepage` and `info.license` set.

    Raises:
        [`DatabaseFormatError`] (a `ValueError`): the root does not look like the database (the message names
            the expected files), or rows are malformed or refer to missing images (all counted, the first few
            shown with file and line) and `skip_invalid` is `False`.
        `ValueError`: an unknown database, split, level or user id.
    """
    spec = get_database_spec(name)
    if split not in SPLITS:
        raise InputError(f"split must be one of {SPLITS}, got {split!r}.")
    level = _resolve_level(spec, level)
    reader = _READERS[spec.name]
    _check_options(spec, reader, options)

    log = IssueLog()
    # Absolute paths, so the dataset's images still decode after the working directory changes.
    records = reader(Path(root).expanduser().absolute(), level, log, **options)
    records = _in_range(records, spec, log)
    _assign_splits(records, seed)
    if split != "all":
        available = sorted({r.split for r in records if r.split is not None})
        if split not in available:
            log.resolve(spec.display_name, skip_invalid)  # a file of only invalid rows is reported as such
            raise InputError(f"{spec.display_name} has no {split!r} split; available: {[*available, 'all']}.")
        records = [r for r in records if r.split == split]
    if user_id is not None:
        records = _select_users(records, spec, user_id)
    records = drop_missing_images(records, log)
    log.resolve(spec.display_name, skip_invalid)
    if not records:
        raise DatabaseFormatError(f"{spec.display_name}: no valid rows left in split {split!r} under {str(root)!r}.")
    logger.info("Loaded %d rows of %s (%s split, %s level)", len(records), spec.display_name, split, level)
    info = DatasetInfo(
        description=f"{spec.display_name} ({spec.kind}), {split} split, {level} level.",
        citation=spec.citation,
        homepage=spec.homepage or "",
        license=spec.licence,
    )
    return build_dataset(records, info, split)


def build_dataset(records: Sequence[Record], info: DatasetInfo | None = None, split: str | None = None) -> Dataset:
    """Turn records into a `datasets.Dataset` with the standard columns (see the module docstring).

    `score_distribution` and `user_id` columns are added when the records carry them.
    """
    columns: dict[str, list] = {
        "image": [str(r.image) for r in records],
        "image_id": [r.image_id for r in records],
        "score": [r.score for r in records],
    }
    features = {"image": Image(), "image_id": Value("string"), "score": Value("float32")}
    if records and records[0].distribution is not None:
        columns["score_distribution"] = [r.distribution for r in records]
        features["score_distribution"] = List(Value("float32"))
    if records and records[0].user_id is not None:
        columns["user_id"] = [r.user_id for r in records]
        features["user_id"] = Value("string")
    features = Features(features)
    info = dataclasses.replace(info, features=features) if info is not None else DatasetInfo(features=features)
    return Dataset.from_dict(columns, features=features, info=info, split=NamedSplit(split) if split else None)


def _resolve_level(spec: DatabaseSpec, level: str | None) -> str:
    if level is None:
        return "rating" if spec.has_users else "image"
    if level not in LEVELS:
        raise InputError(f"level must be one of {LEVELS} or None, got {level!r}.")
    if level == "rating" and not spec.has_users:
        raise InputError(f"{spec.display_name} publishes no individual ratings; level must be 'image', got 'rating'.")
    return level


def _check_options(spec: DatabaseSpec, reader: Callable[..., list[Record]], options: dict[str, object]) -> None:
    accepted = [p for p in inspect.signature(reader).parameters.values() if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(options) - {p.name for p in accepted})
    if unknown:
        names = ", ".join(f"{p.name}={p.default!r}" for p in accepted) or "none"
        raise InputTypeError(f"Unknown option(s) {unknown} for {spec.display_name}; accepted options: {names}.")


def _in_range(records: list[Record], spec: DatabaseSpec, log: IssueLog) -> list[Record]:
    # A score off the database's scale means a wrong column or a corrupt row, never a usable label.
    low, high = spec.score_range
    kept = []
    for record in records:
        if math.isfinite(record.score) and low <= record.score <= high:
            kept.append(record)
        else:
            log.add(
                record.source, record.line, f"score {record.score:g} outside {spec.display_name}'s [{low:g}, {high:g}]"
            )
    return kept


def _carve(groups: Sequence[str], fraction: float, rng: np.random.Generator) -> set[str]:
    # Groups are sorted first so that the split depends only on the set of groups and the seed.
    unique = sorted(set(groups))
    if len(unique) < 2:
        return set()
    count = min(max(round(fraction * len(unique)), 1), len(unique) - 1)
    return {unique[i] for i in rng.permutation(len(unique))[:count]}


def _groups(records: Sequence[Record]) -> list[str]:
    # Never None: `Record.__post_init__` fills a missing group with the image id.
    return cast("list[str]", [r.group for r in records])


def _assign_splits(records: list[Record], seed: int) -> None:
    rng = np.random.default_rng(seed)
    if all(r.split is None for r in records):
        test = _carve(_groups(records), TEST_FRACTION, rng)
        for r in records:
            r.split = "test" if r.group in test else "train"
    elif any(r.split is None for r in records):
        raise RuntimeError("A database reader returned records with and without an official split.")
    present = {r.split for r in records}
    if "validation" not in present and "train" in present:
        validation = _carve(_groups([r for r in records if r.split == "train"]), VALIDATION_FRACTION, rng)
        for r in records:
            if r.split == "train" and r.group in validation:
                r.split = "validation"


def _select_users(records: list[Record], spec: DatabaseSpec, user_id: str | Sequence[str]) -> list[Record]:
    wanted = {user_id} if isinstance(user_id, str) else set(user_id)
    if records and records[0].user_id is None:
        raise InputError(f"user_id={user_id!r} needs rating-level data, but {spec.display_name} was loaded per image.")
    known = {r.user_id for r in records}
    unknown = sorted(wanted - known)
    if unknown:
        examples = ", ".join(sorted(u for u in known if u is not None)[:5])
        raise InputError(
            f"{spec.display_name}: no ratings by user(s) {unknown} in this split; known users include {examples}."
        )
    return [r for r in records if r.user_id in wanted]
