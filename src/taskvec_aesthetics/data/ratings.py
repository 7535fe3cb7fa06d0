"""`load_ratings`: a person's own image ratings, from a CSV file or an image folder, as a `datasets.Dataset`.

Two layouts are accepted:

- a CSV file with a header naming the image column (`image`, `file_name` or `path`) and the score column
  (`score` or `rating`); image paths are absolute or relative to the CSV file's folder;
- an image folder in the Hugging Face `imagefolder` convention: `metadata.csv` with `file_name` and `score`
  columns next to the images.

An optional `user_id` column is kept, so one file can hold several people's ratings.

`load_preferences` reads pairwise preferences instead: a CSV with `image_a`, `image_b` and `preferred` (`a`, `b` or
`tie`) columns, image paths resolved the same way.
"""

from __future__ import annotations

import csv
import functools
import io
import logging
import os
from pathlib import Path

from datasets import Dataset, DatasetInfo, Features, Image, Value

from ..constants import PREFERENCE_COLUMNS, PREFERRED_VALUES
from ..errors import InputError
from ..utils.io import file_digest
from .loading import build_dataset
from .records import (
    DatabaseFormatError,
    Issue,
    IssueLog,
    Record,
    drop_missing_images,
    parse_score,
    read_csv_rows,
    read_text,
    separator_hint,
)

__all__ = [
    "IMAGE_COLUMNS",
    "PREFERENCE_COLUMNS",
    "SCORE_COLUMNS",
    "USER_COLUMN",
    "is_preferences_file",
    "load_preferences",
    "load_ratings",
    "load_ratings_by_user",
]

logger = logging.getLogger(__name__)

# Accepted column names, in order of preference when a file has several.
IMAGE_COLUMNS = ("image", "file_name", "path")
SCORE_COLUMNS = ("score", "rating")
USER_COLUMN = "user_id"
_METADATA = "metadata.csv"


def load_ratings(path: str | os.PathLike[str], *, skip_invalid: bool = False) -> Dataset:
    """Load one or several people's ratings of their own images.

    Args:
        path (`str` or `os.PathLike`):
            A CSV file, or a folder holding `metadata.csv` (Hugging Face `imagefolder` convention).
        skip_invalid (`bool`, *optional*, defaults to `False`):
            Skip rows with a non-numeric score, an empty image name or a missing image file (their count is
            logged) instead of raising.

    Returns:
        `datasets.Dataset`: columns `image` (`datasets.Image()`, the file path; decoded when accessed),
        `image_id` (the image path as written in the file), `score` (`float32`, on the rater's own scale)
        and `user_id` when the file has that column.

    Raises:
        `ValueError`: the path does not exist, the folder has no `metadata.csv`, or a column is missing.
        [`DatabaseFormatError`] (a `ValueError`): rows with a non-numeric score or a missing image, each
            named by line number, when `skip_invalid` is `False`.

    Example:

    ```python
    >>> from taskvec_aesthetics.data import load_ratings
    >>> ratings = load_ratings("my_photos/")  # my_photos/metadata.csv: file_name,score
    >>> ratings[0]["score"], ratings[0]["image"].size
    ```
    """
    dataset, issues = load_ratings_by_user(path)
    log = IssueLog()
    log.issues = sorted((i for user_issues in issues.values() for i in user_issues), key=lambda i: i.line or 0)
    where = str(_ratings_file(Path(path).expanduser().absolute()))
    log.resolve(f"ratings {where!r}", skip_invalid)
    if not len(dataset):
        raise InputError(f"{where!r} holds no ratings; expected one row per rated image.")
    return dataset


def load_ratings_by_user(path: str | os.PathLike[str]) -> tuple[Dataset, dict[str | None, list[Issue]]]:
    """The valid rows of a ratings CSV (as `load_ratings`), and its invalid rows grouped by the user they belong to.

    For many users' ratings, where one user's bad row must not stop the others. Invalid rows whose user cannot be read
    (a row with the wrong number of fields), and all of them in a file without a `user_id` column, are under `None`.

    Raises:
        `ValueError`: the file holds no valid rating at all (and no invalid row either).
    """
    csv_path = _ratings_file(Path(path).expanduser().absolute())
    image_column, score_column, user_column = _columns(csv_path)
    log = IssueLog()
    records: list[Record] = []
    user_of_line: dict[int | None, str | None] = {}  # looked up by an issue's line, None when it has none
    for line, row in read_csv_rows(csv_path, [image_column, score_column], log, "ratings"):
        user = row[user_column] if user_column else None
        user_of_line[line] = user
        written = row[image_column]
        if not written:
            log.add(csv_path, line, f"empty {image_column!r}")
            continue
        score = parse_score(row[score_column], log, csv_path, line, score_column)
        if score is None:
            continue
        image = Path(written).expanduser()
        image = image if image.is_absolute() else csv_path.parent / image
        records.append(Record(image, written.replace("\\", "/"), score, csv_path.name, line, user_id=user))
    records = drop_missing_images(records, log)
    issues: dict[str | None, list[Issue]] = {}
    for issue in log.issues:
        issues.setdefault(user_of_line.get(issue.line), []).append(issue)
    if not records and not issues:
        raise InputError(f"{str(csv_path)!r} holds no ratings; expected one row per rated image.")
    logger.info("Loaded %d ratings from %s", len(records), csv_path)
    return build_dataset(records, DatasetInfo(description=f"Ratings from {csv_path.name}.")), issues


def _ratings_file(path: Path) -> Path:
    if path.is_dir():
        metadata = path / _METADATA
        if not metadata.is_file():
            raise InputError(
                f"Folder {str(path)!r} has no {_METADATA}; an image folder needs {_METADATA} with columns "
                "'file_name' and 'score' (Hugging Face imagefolder convention)."
            )
        return metadata
    if not path.is_file():
        raise InputError(f"Ratings path {str(path)!r} does not exist; expected a CSV file or an image folder.")
    return path


def _columns(path: Path) -> tuple[str, str, str | None]:
    reader = csv.reader(io.StringIO(read_text(path), newline=""), skipinitialspace=True)
    header = [name.strip() for name in next(reader, [])]
    image = next((name for name in IMAGE_COLUMNS if name in header), None)
    score = next((name for name in SCORE_COLUMNS if name in header), None)
    if image is None or score is None:
        raise DatabaseFormatError(
            f"{path.name} has columns {header}; expected an image column (one of {list(IMAGE_COLUMNS)}) and a "
            f"score column (one of {list(SCORE_COLUMNS)}).{separator_hint(header)}"
        )
    return image, score, USER_COLUMN if USER_COLUMN in header else None


def _header(path: Path) -> list[str]:
    reader = csv.reader(io.StringIO(read_text(path), newline=""), skipinitialspace=True)
    return [name.strip() for name in next(reader, [])]


def is_preferences_file(path: str | os.PathLike[str]) -> bool:
    """Whether a CSV file (or an image folder's `metadata.csv`) holds pairwise preferences rather than ratings."""
    return any(name in PREFERENCE_COLUMNS for name in _header(_ratings_file(Path(path).expanduser().absolute())))


def load_preferences(path: str | os.PathLike[str], *, skip_invalid: bool = False) -> Dataset:
    """Load one or several people's pairwise preferences between their own images.

    Args:
        path (`str` or `os.PathLike`):
            A CSV file, or a folder holding `metadata.csv`, with columns `image_a`, `image_b` (paths, absolute or
            relative to the CSV file's folder), `preferred` (`a`, `b` or `tie`) and optionally `user_id`.
        skip_invalid (`bool`, *optional*, defaults to `False`):
            Skip rows with an unknown preference or a missing image (their count is logged) instead of raising.

    Returns:
        `datasets.Dataset`: columns `image_a`, `image_b` (`datasets.Image()`), `preferred` (`a`, `b` or `tie`) and
        `user_id` when the file has that column.

    Raises:
        [`DatabaseFormatError`] (a `ValueError`): a column is missing, or rows are invalid (each named by line
            number) when `skip_invalid` is `False`.
    """
    csv_path = _ratings_file(Path(path).expanduser().absolute())
    header = _header(csv_path)
    missing = [name for name in PREFERENCE_COLUMNS if name not in header]
    if missing:
        raise DatabaseFormatError(
            f"{csv_path.name} has columns {header}; preferences need columns {list(PREFERENCE_COLUMNS)} "
            f"(missing {missing}).{separator_hint(header)}"
        )
    user = USER_COLUMN if USER_COLUMN in header else None
    log = IssueLog()
    columns: dict[str, list[str]] = {"image_a": [], "image_b": [], "preferred": [], **({user: []} if user else {})}
    digest = functools.cache(lambda image: file_digest(image)[0])  # each file read once
    for line, row in read_csv_rows(csv_path, list(PREFERENCE_COLUMNS), log, "preferences"):
        preferred = row["preferred"].strip().lower()
        if preferred not in PREFERRED_VALUES:
            log.add(csv_path, line, f"preferred is {row['preferred']!r}, expected one of {list(PREFERRED_VALUES)}")
            continue
        images: list[Path] = []
        for column in ("image_a", "image_b"):
            image = Path(row[column]).expanduser() if row[column] else None
            image = image if image is None or image.is_absolute() else csv_path.parent / image
            if image is None or not image.is_file():
                log.add(csv_path, line, f"{column} {str(image) if image else 'is empty'!r} not found")
            else:
                images.append(image)
        if len(images) < 2:
            continue
        if len({digest(image) for image in images}) == 1:  # named here by the file's line, not a row index later
            names = f"{row['image_a']!r}, {row['image_b']!r}"
            log.add(csv_path, line, f"image_a and image_b are the same picture ({names})")
            continue
        columns["image_a"].append(str(images[0]))
        columns["image_b"].append(str(images[1]))
        columns["preferred"].append(preferred)
        if user:
            columns[user].append(row[user])
    log.resolve(f"preferences {str(csv_path)!r}", skip_invalid)
    if not columns["preferred"]:
        raise InputError(f"{str(csv_path)!r} holds no preferences; expected one row per compared pair.")
    logger.info("Loaded %d preferences from %s", len(columns["preferred"]), csv_path)
    features = Features(
        {
            "image_a": Image(),
            "image_b": Image(),
            "preferred": Value("string"),
            **({user: Value("string")} if user else {}),
        }
    )
    return Dataset.from_dict(
        columns,
        features=features,
        info=DatasetInfo(description=f"Preferences from {csv_path.name}.", features=features),
    )
