"""Reading primitives shared by the database loaders: rows, issues and tolerant file look-up.

A loader turns a database's official files into a list of [`Record`]s. Problems with individual rows (a
malformed line, a score that is not a number, a missing image) are collected in an [`IssueLog`] rather than
raised one at a time, so that the user sees every problem at once in a single [`DatabaseFormatError`].
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import DatabaseFormatError

__all__ = [
    "DatabaseFormatError",
    "Issue",
    "IssueLog",
    "Record",
    "drop_missing_images",
    "separator_hint",
    "find_path",
    "mean_by_image",
    "parse_score",
    "read_csv_rows",
    "read_text",
    "read_whitespace_rows",
    "require_path",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Issue:
    """One invalid row or missing image: the file it came from, its line number (1-based) and why."""

    file: str
    line: int | None
    reason: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}, line {self.line}"
        return f"{where}: {self.reason}"


class IssueLog:
    """Collects [`Issue`]s while a database is read, then raises them together or skips them."""

    def __init__(self) -> None:
        self.issues: list[Issue] = []

    def add(self, file: str | Path, line: int | None, reason: str) -> None:
        """Record a problem; a `Path` is shown by its name, a `str` as given."""
        self.issues.append(Issue(file.name if isinstance(file, Path) else file, line, reason))

    def resolve(self, database: str, skip_invalid: bool) -> None:
        """Raise a [`DatabaseFormatError`] listing the issues, or log their count when `skip_invalid`."""
        if not self.issues:
            return
        if not skip_invalid:
            raise DatabaseFormatError.from_issues(database, self.issues)
        logger.warning(
            "%s: skipped %d invalid row(s) or missing image(s); first: %s", database, len(self.issues), self.issues[0]
        )


@dataclass(slots=True)
class Record:
    """One row of a loaded database, before it becomes a row of a `datasets.Dataset`.

    `split` is the official split (`None` where the database has none); `group` is the key that a seeded
    split keeps on one side (the image id unless images share content, as KADID-10k's references do).
    `source` and `line` say where the row came from, for error messages.
    """

    image: Path
    image_id: str
    score: float
    source: str
    line: int | None
    user_id: str | None = None
    distribution: list[float] | None = None
    split: str | None = None
    group: str | None = None

    def __post_init__(self) -> None:
        if self.group is None:
            self.group = self.image_id

    def rating(self, score: float, user_id: str, source: str, line: int | None) -> Record:
        """One user's rating of this record's image, in the image's split."""
        return Record(
            self.image, self.image_id, score, source, line, user_id=user_id, split=self.split, group=self.group
        )


def find_path(root: Path, candidates: Sequence[str]) -> Path | None:
    """First existing `root / candidate`; a stray space around a file or folder name is tolerated.

    Some distributed archives name their files `" FLICKR-AES_image_labeled_by_each_worker.csv"`, with a
    leading space, so names are also compared after stripping.
    """
    for candidate in candidates:
        path = root / candidate
        if path.exists():
            return path
    for candidate in candidates:
        path = root / candidate
        if path.parent.is_dir():
            for child in path.parent.iterdir():
                if child.name.strip() == path.name:
                    return child
    return None


def require_path(root: Path, candidates: Sequence[str], database: str, layout: str) -> Path:
    """Like [`find_path`] but raise a [`DatabaseFormatError`] naming the expected layout when nothing exists."""
    if not root.is_dir():
        raise DatabaseFormatError(f"{database}: root {str(root)!r} is not a directory. Expected layout:\n{layout}")
    found = find_path(root, candidates)
    if found is None:
        names = " or ".join(repr(c) for c in candidates)
        raise DatabaseFormatError(
            f"{database}: {str(root)!r} does not look like the {database} database: {names} not found. "
            f"Expected layout:\n{layout}"
        )
    return found


def read_text(path: Path) -> str:
    """Read a text file as UTF-8 (with or without BOM), falling back to Latin-1 as some releases need.

    Raises:
        [`DatabaseFormatError`]: the file is UTF-16 (as some spreadsheet programs save "Unicode text").
    """
    data = path.read_bytes()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in data[:4096]:
        raise DatabaseFormatError(
            f"{path.name} looks UTF-16 encoded (it has a UTF-16 byte-order mark or NUL bytes), as spreadsheet programs "
            "write 'Unicode text'; save it as 'CSV UTF-8' (comma-separated) instead."
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        logger.debug("%s is not UTF-8; reading it as Latin-1", path)
        return data.decode("latin-1")


def read_csv_rows(
    path: Path, required: Sequence[str], log: IssueLog, database: str
) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield `(line number, row)` for each data row of a CSV file with a header.

    Header names and values are stripped of surrounding spaces and quotes are handled by `csv`, so
    `"worker, imagePair, score"` and quoted AMT headers both work; CRLF and LF line endings are both read.
    Rows with the wrong number of fields are logged and skipped; blank lines are ignored.

    Raises:
        [`DatabaseFormatError`]: the header lacks one of the `required` columns.
    """
    reader = csv.reader(io.StringIO(read_text(path), newline=""), skipinitialspace=True)
    header = next(reader, None)
    if header is None:
        raise DatabaseFormatError(f"{database}: {path.name} is empty; expected a header with {list(required)}.")
    header = [name.strip() for name in header]
    missing = [name for name in required if name not in header]
    if missing:
        raise DatabaseFormatError(
            f"{database}: {path.name} has columns {header}, but {missing} are missing; expected at least "
            f"{list(required)}.{separator_hint(header)}"
        )
    for fields in reader:
        if not any(field.strip() for field in fields):
            continue
        if len(fields) != len(header):
            log.add(path, reader.line_num, f"expected {len(header)} comma-separated fields, got {len(fields)}")
            continue
        yield reader.line_num, {name: value.strip() for name, value in zip(header, fields)}


def separator_hint(header: Sequence[str]) -> str:
    """A sentence naming the likely cause when a CSV header did not split on commas, else an empty string."""
    if len(header) == 1:
        for separator, name in ((";", "semicolons"), ("\t", "tabs")):
            if separator in header[0]:
                return (
                    f" The file seems to be separated by {name}, not commas (spreadsheet programs do this in some "
                    "locales); save it as comma-separated CSV."
                )
    return ""


def read_whitespace_rows(path: Path, num_fields: int, log: IssueLog) -> Iterator[tuple[int, list[str]]]:
    """Yield `(line number, fields)` for a header-less file of whitespace-separated fields.

    Rows with a field count other than `num_fields` are logged and skipped; blank lines are ignored.
    """
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != num_fields:
            log.add(path, number, f"expected {num_fields} space-separated fields, got {len(fields)}: {line.strip()!r}")
            continue
        yield number, fields


def parse_score(value: object, log: IssueLog, file: str | Path, line: int | None, column: str) -> float | None:
    """Parse a finite number, or log why it is not one and return `None`."""
    shown = repr(value) if isinstance(value, str) else str(value)
    try:
        number = float(value)  # type: ignore[arg-type]  # any value: what float() refuses is logged below
    except (TypeError, ValueError):
        log.add(file, line, f"{column} {shown} is not a number")
        return None
    if not math.isfinite(number):
        log.add(file, line, f"{column} {shown} is not finite")
        return None
    return number


def mean_by_image(records: Sequence[Record]) -> list[Record]:
    """Average individual ratings into one record per image (no user id), in first-seen image order."""
    groups: dict[str, list[Record]] = {}
    for record in records:
        groups.setdefault(record.image_id, []).append(record)
    merged = []
    for ratings in groups.values():
        first = ratings[0]
        merged.append(
            Record(
                image=first.image,
                image_id=first.image_id,
                score=sum(r.score for r in ratings) / len(ratings),
                source=first.source,
                line=first.line,
                split=first.split,
                group=first.group,
            )
        )
    return merged


def drop_missing_images(records: Sequence[Record], log: IssueLog) -> list[Record]:
    """Keep the records whose image file exists; log the others."""
    # Rating-level databases list each image many times: look each file up once.
    exists: dict[Path, bool] = {}
    kept = []
    for record in records:
        if record.image not in exists:
            exists[record.image] = record.image.is_file()
        if exists[record.image]:
            kept.append(record)
        else:
            log.add(record.source, record.line, f"image {str(record.image)!r} not found")
    return kept
