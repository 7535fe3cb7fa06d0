"""Personalize every user of a ratings table: batched, resumable, sharded over processes with Accelerate.

`personalize_many` writes one coefficients-only export per user (`OUTPUT/users/<user>/`, loadable with
`AestheticModel.from_pretrained`) and a summary table (`OUTPUT/summary.csv`, `OUTPUT/summary.json`).

- **Encode once.** Every distinct image (by content hash) goes through the frozen prefix once, for all users, and its
  features are kept in a feature cache (`OUTPUT/feature_cache` by default) that later runs reuse.
- **Batched.** Users are taken in fixed groups of `batch_users`; a group is fitted at once by `BatchedPersonalizer`.
- **Resumable.** A user's export is written as one folder transaction, so it is complete or absent; a rerun skips
  users that have an intact export (or a recorded error) and a run killed with `kill -9` loses only the group in
  flight. An export or error record that is damaged or incomplete is fitted again.
- **One user's bad rows stop only that user.** A user whose ratings are bad (a NaN score, a missing image) gets an
  error record (`OUTPUT/errors/<user>.json`) and the run goes on; with `skip_invalid` the bad rows are skipped and
  the summary's `notes` says which.
- **Sharded.** Under `accelerate launch --num_processes N` the groups are dealt out to the processes in turn, each
  writes its own users, and the main process writes the summary once all are done. Groups are fixed by the table, not
  by N, so the output is the same for any number of processes, and the same after a resumed run.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
import torch
from accelerate import PartialState
from accelerate.utils import parse_flag_from_env
from PIL import Image
from tqdm.auto import tqdm

from ..constants import COEFFICIENTS, COEFFICIENTS_FILE, CONFIG_FILE, ENSEMBLE_FILE, PERSONALIZATION_FILE
from ..data import DatabaseFormatError, Issue, load_ratings
from ..data.ratings import load_ratings_by_user
from ..errors import InputError, InputTypeError, MissingFileError
from ..processing import open_image
from ..utils.io import atomic_path, read_json, verify_manifest, write_json
from .batched import BatchedPersonalizer
from .config import PersonalizerConfig
from .feature_cache import FeatureCache, feature_key
from .inputs import EncodedRatings, decode_images, image_key, rows_by_user, unlabeled_images
from .report import PersonalizationReport

if TYPE_CHECKING:
    from ..modeling import AestheticModel
    from ..task_vectors.bank import TaskVectorBank

__all__ = ["ManyUsersResult", "fit_many", "personalize_many", "load_table", "user_folder_name", "SUMMARY_COLUMNS"]

logger = logging.getLogger(__name__)

USERS_FOLDER, ERRORS_FOLDER, CACHE_FOLDER = "users", "errors", "feature_cache"
#: cv_srocc is the estimate of the user's SROCC on new photos, selection included; cv_low, cv_high its 90 % interval.
SUMMARY_COLUMNS = (
    "user_id", "folder", "num_ratings", "chosen", "cv_srocc", "cv_low", "cv_high", "cv_srocc_se", "fit_time_s",
    "error", "notes",
)  # fmt: skip
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")


def user_folder_name(user: str) -> str:
    """A folder name for a user id: the id itself when it is a plain name, else a readable part plus a hash."""
    if _SAFE_NAME.match(user) and not user.endswith("."):
        return user
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", user).strip("._-")[:40] or "user"
    return f"{readable}-{hashlib.sha256(user.encode()).hexdigest()[:12]}"


def load_table(ratings: Any, user_column: str = "user_id", skip_invalid: bool = False) -> Any:
    """A `datasets.Dataset` of ratings with a user column, from a Dataset, a CSV / image-folder path or a parquet file.

    Args:
        ratings: a `datasets.Dataset`, a ratings CSV or image folder (see `data.load_ratings`), or a `.parquet` file.
        user_column: the column naming the user of each row.
        skip_invalid: CSV only: skip malformed rows and missing images instead of raising.
    """

    if isinstance(ratings, (str, Path)):
        path = Path(ratings)
        if path.suffix == ".parquet":
            if not path.is_file():
                raise MissingFileError(f"expected a parquet ratings table at {path}, but there is no such file")
            ratings = datasets.Dataset.from_parquet(str(path))
        else:
            ratings = load_ratings(path, skip_invalid=skip_invalid)
    return _checked_table(ratings, user_column)


def _checked_table(ratings: Any, user_column: str) -> Any:
    if not isinstance(ratings, datasets.Dataset):
        raise InputTypeError(
            "ratings must be a datasets.Dataset, a ratings CSV, an image folder or a .parquet file, received "
            f"{type(ratings).__name__}"
        )
    if user_column not in ratings.column_names:
        raise InputError(
            f"personalizing many users needs a {user_column!r} column naming each row's user; the table has columns "
            f"{ratings.column_names}"
        )
    return ratings


def _table_and_issues(ratings: Any, user_column: str) -> tuple[Any, dict[str | None, list[Issue]]]:
    """The table, and (CSV input) its invalid rows by user: one user's bad row must not stop the other users."""
    path = Path(ratings) if isinstance(ratings, (str, Path)) else None
    if path is None or path.suffix == ".parquet":
        return load_table(ratings, user_column), {}
    table, issues = load_ratings_by_user(path)
    if not len(table):  # every row invalid: no column to check, every user has only issues
        return table, issues
    return _checked_table(table, user_column), issues


@dataclass
class ManyUsersResult:
    """What `personalize_many` wrote: one summary row per user (see `SUMMARY_COLUMNS`), and where.

    `fitted` counts the users personalized by this run, `skipped` those whose export an earlier run wrote; users with
    an error (recorded now or earlier) are in `failed` only.
    """

    output_dir: Path
    rows: list[dict[str, Any]]
    fitted: int = 0
    skipped: int = 0
    wall_time: float = 0.0
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [row for row in self.rows if row["error"]]

    def report(self) -> str:
        done = len(self.rows) - len(self.failed)
        noted = sum(1 for row in self.rows if row.get("notes"))
        notes = f", {noted} with skipped rows (see notes)" if noted else ""
        return (
            f"{done} of {len(self.rows)} users personalized ({self.fitted} fitted now, {self.skipped} already done, "
            f"{len(self.failed)} with errors{notes}) in {self.wall_time:.1f} s; summary: {self.paths.get('csv')}"
        )


class _ManyUsersPersonalizer(BatchedPersonalizer):
    """A `BatchedPersonalizer` whose `encode` takes each image's prefix features from a `FeatureCache`."""

    feature_cache: FeatureCache | None = None

    def encode(self, images: Sequence[Any] | torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        if self.feature_cache is None or isinstance(images, torch.Tensor) or not images:
            return super().encode(images, batch_size)

        opened = [open_image(item, f" in row {i}") for i, item in enumerate(images)]
        keys = [image_key(image) for image in opened]
        missing = self.feature_cache.missing(keys)
        if missing:  # not seen by the encoding pass (e.g. images given directly): encode them now
            where = {key: i for i, key in enumerate(keys)}
            self.feature_cache.add(missing, super().encode([opened[where[k]] for k in missing], batch_size))
        return self.feature_cache.get(keys).to(self.device, self.dtype)


def _cell_id(cell: Any) -> str:
    """Identity of an undecoded image cell: its bytes' hash, else its path (rows sharing it are decoded once)."""
    if isinstance(cell, Mapping):
        if cell.get("bytes"):
            return "b:" + hashlib.sha256(cell["bytes"]).hexdigest()
        return "p:" + str(cell.get("path"))
    return "v:" + str(cell)


def _encode_distinct_images(
    personalizer: _ManyUsersPersonalizer,
    table: Any,
    rows: list[int],
    state: Any,
    image_column: str,
    batch_size: int,
    progress: bool,
) -> None:
    """Encode every distinct image of ``rows`` that the cache lacks, the work dealt out to the processes.

    The missing images are sorted by key and cut into fixed batches, so an image's features never depend on which
    process encoded it or how many processes there are.
    """

    cache = personalizer.feature_cache
    assert cache is not None  # `personalize_many` sets it before encoding
    column = table.select(rows).cast_column(image_column, datasets.Image(decode=False))[image_column]
    first_row: dict[str, int] = {}
    for row, cell in zip(rows, column):
        first_row.setdefault(_cell_id(cell), row)
    keys: dict[str, int] = {}  # image key -> a row holding that image
    for row in first_row.values():
        try:
            image = decode_images(table.select([row]), image_column)[0]
        except (ValueError, OSError) as error:  # reported with the user whose ratings hold it
            logger.debug("Row %d: %s", row, error)
            continue
        keys.setdefault(image_key(image), row)
    missing = sorted(cache.missing(keys))
    batches = [missing[i : i + batch_size] for i in range(0, len(missing), batch_size)]
    mine = batches[state.process_index :: state.num_processes]
    for batch in tqdm(mine, desc="Encoding images", unit="batch", disable=not progress):
        images = [decode_images(table.select([keys[k]]), image_column)[0] for k in batch]
        with torch.no_grad():
            cache.add(batch, super(_ManyUsersPersonalizer, personalizer).encode(images, batch_size))
    cache.flush()
    state.wait_for_everyone()
    cache.load()
    logger.info("Encoded %d new images (%d cached in all)", len(missing), len(cache))


def _exported(output_dir: Path, name: str) -> bool:
    """Whether the user has an intact export: its files present, their checksums right, its record readable."""
    folder = output_dir / USERS_FOLDER / name
    if not folder.is_dir():
        return False
    try:
        small = ENSEMBLE_FILE if (folder / ENSEMBLE_FILE).is_file() else COEFFICIENTS_FILE  # an output ensemble's
        absent = [f for f in (CONFIG_FILE, small, PERSONALIZATION_FILE) if not (folder / f).is_file()]
        if absent:
            raise MissingFileError(f"{folder} lacks {absent}")
        verify_manifest(folder)
        read_json(folder / PERSONALIZATION_FILE, "a personalization record")
    except (OSError, ValueError) as error:
        logger.warning("The export of %s is damaged or incomplete; it is fitted again (%s)", name, error)
        return False
    return True


def _error_recorded(output_dir: Path, name: str) -> bool:
    """Whether an earlier run recorded an error for the user (a damaged record does not count: refitted)."""
    path = output_dir / ERRORS_FOLDER / f"{name}.json"
    if not path.is_file():
        return False
    try:
        return isinstance(read_json(path, "an error record").get("error"), str)
    except (OSError, ValueError) as error:
        logger.warning("The error record of %s is damaged; the user is fitted again (%s)", name, error)
        return False


def _summary_row(output_dir: Path, user: str, name: str, notes: str = "") -> dict[str, Any]:
    """One summary row, read back from what the user's fit wrote (so a resumed run's summary is complete)."""
    row: dict[str, Any] = dict.fromkeys(SUMMARY_COLUMNS)
    row.update(user_id=user, error="", notes=notes)
    record_path = output_dir / USERS_FOLDER / name / PERSONALIZATION_FILE
    error_path = output_dir / ERRORS_FOLDER / f"{name}.json"
    if _exported(output_dir, name):
        info = read_json(record_path, "a personalization record").get("info") or {}
        cv = info.get("cross_validation") or {}
        row.update(
            folder=f"{USERS_FOLDER}/{name}",
            num_ratings=info.get("num_ratings"),
            chosen=info.get("chosen"),
            cv_srocc=cv.get("srocc"),
            cv_low=(cv.get("interval") or [None, None])[0],
            cv_high=(cv.get("interval") or [None, None])[1],
            cv_srocc_se=cv.get("srocc_se"),
            fit_time_s=info.get("wall_time_s"),
        )
    elif _error_recorded(output_dir, name):
        record = read_json(error_path, "an error record")
        row.update(num_ratings=record.get("num_ratings"), error=record["error"])
    else:
        row.update(error="not personalized (the run did not reach this user)")
    return row


def _write_summary(output_dir: Path, rows: list[dict[str, Any]]) -> dict[str, Path]:

    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(SUMMARY_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    csv_path = output_dir / "summary.csv"
    with atomic_path(csv_path) as tmp:
        tmp.write_text(text.getvalue(), encoding="utf-8")
    json_path = write_json(output_dir / "summary.json", {"users": rows})
    return {"csv": csv_path, "json": json_path}


def _issues_note(found: list[Issue], skipped: bool) -> str:
    """What a user's invalid rows were: the note of the summary, or (not skipped) the error of the user."""
    shown = "; ".join(str(issue) for issue in found[:3]) + ("; ..." if len(found) > 3 else "")
    if skipped:
        return f"skipped {len(found)} invalid row(s): {shown}"
    return f"{len(found)} invalid row(s): {shown}. Fix them, or pass skip_invalid=True to skip them"


def _error_message(error: BaseException) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())


def personalize_many(
    model: AestheticModel,
    bank: TaskVectorBank,
    ratings: Any,
    output_dir: str | Path,
    config: PersonalizerConfig | None = None,
    *,
    user_column: str = "user_id",
    image_column: str = "image",
    score_column: str = "score",
    batch_users: int = 16,
    cache_dir: str | Path | None = None,
    retry_failed: bool = False,
    skip_invalid: bool = False,
    progress: bool = True,
    unlabeled: Any = None,
) -> ManyUsersResult:
    """Personalize every user of a ratings table; one coefficients export per user and a summary table.

    Runs as it is in one process, or under `accelerate launch --num_processes N` (each process fits its share of the
    users; the main process writes the summary). A rerun into the same ``output_dir`` skips users already written.

    Args:
        model: the base model, saved somewhere (its location is recorded in every export).
        bank: its task-vector bank, saved somewhere.
        ratings: a `datasets.Dataset`, a ratings CSV / image folder, or a `.parquet` file, with image, score and
            user columns.
        output_dir: where `users/<user>/`, `errors/<user>.json`, `summary.csv` and `summary.json` are written.
        config: the `PersonalizerConfig` of every fit (default: our recipe).
        user_column, image_column, score_column: the table's columns.
        batch_users: users fitted at once (1: one by one, as `Personalizer` does).
        cache_dir: the feature cache folder (default: `output_dir/feature_cache`).
        retry_failed: fit again users with an error record (e.g. after their ratings were fixed).
        skip_invalid: CSV input: skip a user's malformed rows and missing images (noted in the summary) instead of
            recording an error for that user.
        progress: show progress bars (main process only).
        unlabeled: photos without ratings (a folder or a list) that every user's fit may learn from (the distilled
            candidate, see `Personalizer.fit`); encoded and scored by each task model once for all users.

    Returns:
        `ManyUsersResult`: the summary rows (complete on the main process) and the paths written.
    """

    if int(batch_users) < 1:
        raise InputError(f"batch_users must be >= 1, received {batch_users}")
    began = time.perf_counter()
    # As Accelerator does: `accelerate launch --cpu` (ACCELERATE_USE_CPU) keeps every process on the CPU.
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    progress = progress and state.is_main_process
    output_dir = Path(output_dir)
    table, issues = _table_and_issues(ratings, user_column)
    unattributed = issues.pop(None, [])
    if unattributed and not skip_invalid:  # rows whose user cannot be read: no user to record them with
        raise DatabaseFormatError.from_issues(f"ratings {str(ratings)!r}", unattributed)
    if unattributed:
        logger.warning("Skipped %d rows that name no user; first: %s", len(unattributed), unattributed[0])
    for column in (image_column, score_column) if len(table) else ():
        if column not in table.column_names:
            raise InputError(f"the ratings table lacks a {column!r} column; it has {table.column_names}")
    users = rows_by_user(table, user_column) if len(table) else {}
    for user in issues:
        users.setdefault(str(user), [])
    notes = {str(u): _issues_note(found, skip_invalid) for u, found in issues.items()}
    names = {user: user_folder_name(user) for user in users}
    if len(set(names.values())) != len(names):
        raise InputError("two user ids map to the same folder name; rename them")
    config = config or PersonalizerConfig()
    if config.device == "cpu" and state.device.type != "cpu":  # one accelerator per process when launched on them
        config = dataclasses.replace(config, device=str(state.device))
    personalizer = _ManyUsersPersonalizer(model, bank, config)
    user_list = list(users)
    groups = [user_list[i : i + batch_users] for i in range(0, len(user_list), batch_users)]
    mine = groups[state.process_index :: state.num_processes]
    # What earlier runs left, read once (every process reads the same): an intact export, or a recorded error.
    exported = {u: _exported(output_dir, names[u]) for u in user_list}
    done = {u: exported[u] or (not retry_failed and _error_recorded(output_dir, names[u])) for u in user_list}
    pending = [group for group in mine if not all(done[u] for u in group)]

    # The features' shape, from one probe image: a cache shard holding another shape is damaged.
    probe = super(_ManyUsersPersonalizer, personalizer).encode([Image.new("RGB", (64, 64))])
    key = feature_key(personalizer)
    cache = FeatureCache(cache_dir or output_dir / CACHE_FOLDER, key, shape=tuple(probe.shape[1:])).load()
    personalizer.feature_cache = cache
    # Every process encodes its share of all pending images (of every process's users), then reads the others'.
    every_pending = [u for g in groups if not all(done[x] for x in g) for u in g]
    _encode_distinct_images(
        personalizer, table, [r for u in every_pending for r in users[u]], state, image_column, 32, progress
    )

    photos = unlabeled_images(unlabeled)
    pool: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)
    if photos and pending:
        encoded_photos = personalizer.encode(photos)
        pool = (encoded_photos, personalizer.model_scores(encoded_photos))
    bar = tqdm(total=sum(len(g) for g in pending), desc="Personalizing users", unit="user", disable=not progress)
    for group in pending:
        started = time.perf_counter()
        encoded: dict[str, EncodedRatings] = {}
        outcomes: dict[str, Any] = {}
        for user in group:
            if user in issues and (not skip_invalid or not users[user]):
                outcomes[user] = DatabaseFormatError(notes[user])
                continue
            rows = table.select(users[user])
            renames = {c: n for c, n in ((image_column, "image"), (score_column, "score")) if c != n}
            if renames:
                rows = rows.select_columns([image_column, score_column]).rename_columns(renames)
            try:
                encoded[user] = personalizer.encode_ratings(rows)
            except (ValueError, TypeError, OSError) as error:
                outcomes[user] = error
        if batch_users > 1:
            fits = personalizer.fit_encoded_many(list(encoded.values()), *pool)
        else:
            fits = []
            for item in encoded.values():
                try:
                    fits.append(personalizer.fit_encoded(item, *pool))
                except Exception as error:  # noqa: BLE001 - recorded with the user, the run goes on
                    fits.append(error)
        outcomes.update(zip(encoded, fits))
        share = (time.perf_counter() - started) / max(1, len(group))
        for user in group:
            name = names[user]
            if done[user]:
                continue  # written by an earlier run; the group was fitted again only for its other users
            outcome = outcomes[user]
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, Exception):
                    raise outcome
                write_json(
                    output_dir / ERRORS_FOLDER / f"{name}.json",
                    {"user_id": user, "num_ratings": len(users[user]), "error": _error_message(outcome)},
                )
                logger.warning("User %s: %s", user, _error_message(outcome))
            else:
                coefficients, report = outcome
                report.wall_time = share  # this user's share of the group's time: the sum over users is the total
                personalized = personalizer.personalized_model(coefficients, report)
                # The kilobyte export of either kind: an output ensemble that won writes its own (`resolve_export`).
                personalized.save_pretrained(output_dir / USERS_FOLDER / name, export=COEFFICIENTS)
                (output_dir / ERRORS_FOLDER / f"{name}.json").unlink(missing_ok=True)
        bar.update(len(group))
    bar.close()
    cache.flush()
    state.wait_for_everyone()
    rows = [_summary_row(output_dir, user, names[user], notes.get(user, "")) for user in user_list]
    paths = _write_summary(output_dir, rows) if state.is_main_process else {}
    state.wait_for_everyone()
    # Counted over all users from what is on disk now, so every process reports the same, accurate numbers.
    succeeded = [row["user_id"] for row in rows if not row["error"]]
    skipped = sum(1 for u in succeeded if exported[u])
    return ManyUsersResult(output_dir, rows, len(succeeded) - skipped, skipped, time.perf_counter() - began, paths)


def fit_many(
    model: AestheticModel,
    bank: TaskVectorBank,
    dataset: Any,
    config: PersonalizerConfig | None = None,
    user_column: str = "user_id",
    batch_users: int = 16,
) -> dict[str, PersonalizationReport]:
    """Personalize every user of a dataset with a `user_id` column, in memory; returns each user's report (with
    coefficients). Users are fitted ``batch_users`` at a time (`batched.BatchedPersonalizer`); a user whose fit fails
    raises. For many users, with exports on disk, resuming and several processes, use `many.personalize_many`."""
    column_names = getattr(dataset, "column_names", None)
    if column_names is None or user_column not in column_names:
        raise InputError(
            f"fit_many needs a datasets.Dataset with a {user_column!r} column; received columns {column_names}"
        )
    personalizer = BatchedPersonalizer(model, bank, config)
    reports: dict[str, PersonalizationReport] = {}
    users = list(rows_by_user(dataset, user_column).items())
    bar = tqdm(total=len(users), desc="Users", unit="user", disable=not personalizer.config.progress)
    for start in range(0, len(users), batch_users):
        group = users[start : start + batch_users]
        encoded = [personalizer.encode_ratings(dataset.select(rows)) for _, rows in group]
        for (user, _), outcome in zip(group, personalizer.fit_encoded_many(encoded)):
            if isinstance(outcome, BaseException):
                raise InputError(f"personalizing user {user!r} failed: {outcome}") from outcome
            reports[user] = outcome[1]
        bar.update(len(group))
    bar.close()
    return reports
