"""Safe files and folders: atomic file writes, folders written as transactions, strict JSON, checked paths.

- A file is written to a uniquely named temporary file beside it, then renamed into place; it follows the umask.
- A folder (a model, a bank, a checkpoint) is written as a whole or not at all: into a uniquely named sibling
  staging folder, then swapped in, so a reader sees the old folder or the new one, never a mix. A lock file beside
  the folder serialises writers; leftovers of a killed save are ignored by readers and removed by the next save.
- JSON is strict: non-finite numbers are written as `null`, never as `NaN` or `Infinity`.
- A file entry of a config is a plain relative path inside its folder, checked before anything is read or written.
- Files read back are checked against what wrote them: a record `{"sha256", "size"}` per file, kept in the file that
  refers to it (`bank_config.json`, `trainer_state.json`) or in the folder's manifest (`checksums.json`).
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import logging
import math
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, TypeVar

from filelock import FileLock

from ..constants import FORMAT_VERSION, MANIFEST_FILE
from ..errors import ConfigError, IntegrityError, MissingFileError, NotAFolderError, UnsafePathError

__all__ = [
    "atomic_path",
    "check_digest",
    "check_relative_path",
    "digest_record",
    "file_digest",
    "folder_identity",
    "folder_transaction",
    "link_file",
    "read_consistently",
    "read_json",
    "safe_join",
    "to_strict_json",
    "verify_manifest",
    "write_json",
    "write_manifest",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")
_STAGING = "staging"
_RETIRED = "old"
_UNIQUE = re.compile(r"[0-9a-f]{12}")
# A file entry may become a Hub download pattern: a glob character would fetch other files than the one named.
_GLOB_CHARACTERS = frozenset("*?[]")


# -- files ---------------------------------------------------------------------------------------------------------
def _umask() -> int:
    """The process's umask, read without changing it where the system allows."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _follow_umask(path: Path, directory: bool = False) -> None:
    # Writers such as safetensors create files with mode 0o600; give them the mode any new file would get.
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def _unique_sibling(target: Path, kind: str) -> Path:
    return target.with_name(f".{target.name}.{kind}-{uuid.uuid4().hex[:12]}")


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a new empty temporary file beside ``target``; on success it replaces ``target``, on error it is removed.

    The temporary file is created with mode 0o666 filtered by the umask (like any file a program creates), not
    0o600, so a saved model stays readable by the accounts the user's umask allows.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        _follow_umask(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def file_digest(path: str | Path) -> tuple[str, int]:
    """The sha256 (hex) and size in bytes of a file, read in 8 MiB blocks."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while block := handle.read(8 << 20):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def digest_record(path: str | Path) -> dict[str, Any]:
    """`{"sha256", "size"}` of a file: what a folder records of each file so it can be checked when read back."""
    sha256, size = file_digest(path)
    return {"sha256": sha256, "size": size}


def check_digest(path: str | Path, record: Any, recorded_in: str | Path, data: bytes | None = None) -> None:
    """Check the file ``path`` (or its bytes ``data``, already read) against ``record`` = `{"sha256", "size"}`.

    Raises:
        [`IntegrityError`]: naming the file and ``recorded_in`` (where the record came from), when the size or the
            sha256 differs, or the record is malformed.
    """
    if (
        not isinstance(record, dict)
        or not isinstance(record.get("sha256"), str)
        or not (record.get("size") is None or (isinstance(record["size"], int) and record["size"] >= 0))
    ):
        raise IntegrityError(f"{recorded_in}: the record of {path} must be {{sha256, size}}, received {record!r}")
    if data is None:
        sha256, size = file_digest(path)
    else:
        sha256, size = hashlib.sha256(data).hexdigest(), len(data)
    if record.get("size") is not None and size != record["size"]:
        raise IntegrityError(
            f"{path} has {size} bytes, but {recorded_in} records {record['size']}: the file is truncated, damaged or "
            "was changed after it was saved"
        )
    if sha256 != record["sha256"]:
        raise IntegrityError(
            f"{path} has sha256 {sha256}, but {recorded_in} records {record['sha256']}: the file is damaged or was "
            "changed after it was saved"
        )


def write_manifest(folder: str | Path, names: Iterable[str]) -> Path:
    """Record the sha256 and size of the files ``names`` (relative paths) of ``folder`` in its `checksums.json`."""
    folder = Path(folder)
    files = {name: digest_record(safe_join(folder, name, MANIFEST_FILE)) for name in sorted(names)}
    return write_json(folder / MANIFEST_FILE, {"format_version": FORMAT_VERSION, "files": files})


def verify_manifest(folder: str | Path, names: Iterable[str] | None = None) -> bool:
    """Check files of ``folder`` against its `checksums.json`: ``names`` (those recorded), or every recorded file.

    Returns False when the folder has no manifest (folders saved by earlier releases load unchecked).

    Raises:
        [`IntegrityError`]: a file differs from its record, or a recorded file is missing; the error names the file.
        [`ConfigError`]: the manifest itself is malformed.
    """
    folder = Path(folder)
    manifest = folder / MANIFEST_FILE
    if not manifest.is_file():
        return False
    files = read_json(manifest, "the checksums of a saved folder").get("files")
    if not isinstance(files, dict):
        raise ConfigError(f"{manifest}: field 'files' must be an object of file -> {{sha256, size}}")
    wanted = files if names is None else [name for name in names if name in files]
    for name in wanted:
        path = safe_join(folder, name, f"{manifest}: field files")
        if not path.is_file():
            raise IntegrityError(f"{path} is missing, but {manifest} records it: the folder is incomplete")
        check_digest(path, files[name], manifest)
    return True


# -- JSON ----------------------------------------------------------------------------------------------------------
def to_strict_json(data: Any) -> Any:
    """``data`` with every non-finite float (NaN, inf) replaced by None, so it serialises as strict JSON."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: to_strict_json(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [to_strict_json(value) for value in data]
    return data


def write_json(target: str | Path, data: Any) -> Path:
    """Write ``data`` as indented, key-sorted, strict JSON (non-finite numbers become `null`), atomically."""
    text = json.dumps(to_strict_json(data), indent=2, sort_keys=True, allow_nan=False)
    with atomic_path(target) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    return Path(target)


def read_json(path: str | Path, what: str) -> dict:
    """Read a JSON object, with an error naming ``what`` was expected when the file is missing or invalid."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"expected {what} at {path}, but there is no such file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path} is not valid JSON ({what}): {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object ({what}), received {type(data).__name__}")
    return data


# -- paths ---------------------------------------------------------------------------------------------------------
def check_relative_path(entry: Any, where: str) -> list[str]:
    """The components of ``entry`` once it is known to be a plain relative POSIX path (see [`safe_join`])."""
    text = entry if isinstance(entry, str) else None
    parts = text.split("/") if text else []
    if (
        not text
        or "\\" in text
        or "\x00" in text
        or PurePosixPath(text).is_absolute()
        or PureWindowsPath(text).drive
        or any(part in ("", ".", "..") for part in parts)
        or not _GLOB_CHARACTERS.isdisjoint(text)
    ):
        raise UnsafePathError(
            f"{where} must be a plain relative path inside its folder (no '..', no absolute path, no glob characters "
            f"{''.join(sorted(_GLOB_CHARACTERS))}), received {entry!r}"
        )
    return parts


def safe_join(root: str | Path, entry: Any, where: str) -> Path:
    """``root / entry``, once ``entry`` is known to be a plain relative path that stays inside ``root``.

    Rejected, with an [`UnsafePathError`] naming ``where`` (the file and field the entry came from): anything but a
    non-empty string, absolute paths, drive letters, backslashes, `.` or `..` components, and a path that resolves
    outside ``root`` through a symlink. In a Hugging Face Hub cache snapshot, files are symlinks into the repository's
    own `blobs/` folder; those are allowed.
    """
    root = Path(root)
    path = root.joinpath(*check_relative_path(entry, where))
    if path.exists() or path.is_symlink():
        real_root = root.resolve()
        allowed = [real_root]
        # huggingface_hub's cache: files of a snapshot (or of a folder inside it) link to the repository's blobs/
        snapshot = next((folder for folder in (root, *root.parents) if folder.parent.name == "snapshots"), None)
        if snapshot is not None:
            allowed.append((snapshot.parent.parent / "blobs").resolve())
        real = path.resolve()
        if not any(real == base or real.is_relative_to(base) for base in allowed):
            raise UnsafePathError(f"{where}: {entry!r} is a symlink that leaves its folder {root} (to {real})")
    return path


# -- folders -------------------------------------------------------------------------------------------------------
def folder_identity(folder: str | Path) -> tuple[int, int] | None:
    """(device, inode) of a folder: it changes when a save swaps in a new version. None when there is no folder."""
    try:
        stat = os.stat(folder)
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino


def read_consistently(folder: str | Path, read: Callable[[], T], attempts: int = 5) -> T:
    """Run ``read()`` (which reads files of ``folder``) until no save swapped the folder while it ran.

    A save replaces a folder as a whole (see [`folder_transaction`]); a reader that opens its files one by one could
    otherwise take `config.json` from one version and the weights from the next.
    """
    for attempt in range(attempts):
        before = folder_identity(folder)
        try:
            result = read()
        except (OSError, ValueError):
            # A read that failed because the folder was being replaced (or removed and put back) is retried.
            now = folder_identity(folder)
            if attempt + 1 == attempts or (now == before and now is not None):
                raise
            time.sleep(0.05 * (attempt + 1))
            continue
        if folder_identity(folder) == before:
            return result
        logger.info("%s was replaced by a save while it was read; reading it again", folder)
    raise IntegrityError(f"{folder} was replaced by other saves {attempts} times while it was read; try again later")


def _link_or_copy(source: Path, target: Path) -> None:
    """Hard-link ``source`` as ``target`` (files are never modified in place, so sharing is safe), else copy it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_symlink():
        os.symlink(os.readlink(source), target)
        return
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def link_file(source: str | Path, target: str | Path) -> None:
    """Put the file ``source`` at ``target`` (a hard link when possible, else a copy)."""
    _link_or_copy(Path(source), Path(target))


def _carry_over(source: Path, staging: Path, keep: Callable[[str], bool]) -> set[str]:
    carried = set()
    for folder, dirs, files in os.walk(source, followlinks=False):
        for name in files + [d for d in dirs if (Path(folder) / d).is_symlink()]:
            path = Path(folder) / name
            relative = path.relative_to(source).as_posix()
            if keep(relative):
                _link_or_copy(path, staging / relative)
                carried.add(relative)
    return carried


def _apply_umask(staging: Path, carried: set[str]) -> None:
    """Give what this save wrote (not the user's carried-over files) the modes the umask asks for."""
    for folder, dirs, files in os.walk(staging, followlinks=False):
        for name in dirs + files:
            path = Path(folder) / name
            if not path.is_symlink() and path.relative_to(staging).as_posix() not in carried:
                _follow_umask(path, directory=path.is_dir())


_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux `renameat2(RENAME_EXCHANGE)`); False where the system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EPERM, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _swap_in(staging: Path, target: Path) -> Path | None:
    """Make ``staging`` the content of ``target``; returns the folder now holding the old content, if any."""
    if not target.exists():
        os.rename(staging, target)
        return None
    if _exchange(staging, target):
        return staging
    retired = _unique_sibling(target, _RETIRED)  # two renames: a reader may briefly find no folder, never a mix
    os.rename(target, retired)
    os.rename(staging, target)
    return retired


def _remove_leftovers(target: Path) -> None:
    # Only names this module makes (prefix + 12 hex digits): a user's own `.model.old-mybackup` is not ours to remove.
    prefixes = tuple(f".{target.name}.{kind}-" for kind in (_STAGING, _RETIRED))
    for path in target.parent.iterdir():
        prefix = next((p for p in prefixes if path.name.startswith(p)), None)
        if prefix is not None and _UNIQUE.fullmatch(path.name[len(prefix) :]):
            logger.info("Removing %s, left over by an interrupted save", path)
            shutil.rmtree(path, ignore_errors=True)


@contextmanager
def folder_transaction(target: str | Path, keep: Callable[[str], bool] = lambda relative: False) -> Iterator[Path]:
    """Write the folder ``target`` as a whole or not at all.

    Yields a new staging folder beside ``target`` (a hidden sibling with a unique name). Files of the current
    ``target`` for which ``keep(relative_posix_path)`` is true (files this save does not own, e.g. a user's notes)
    are hard-linked into it first. When the block ends without error the staging folder replaces ``target`` in one
    rename, so readers see the old folder or the new one, never a mix; on error it is removed and ``target`` is
    untouched. A lock file beside ``target`` (`.NAME.lock`) serialises writers of one folder across processes, and
    staging folders left by a killed save are removed by the next save.
    """
    target = Path(target).absolute()
    if target.is_symlink():
        target = target.resolve()
    if target.exists() and not target.is_dir():
        raise NotAFolderError(f"cannot save into {target}: it exists and is not a folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.with_name(f".{target.name}.lock"))):
        _remove_leftovers(target)
        staging = _unique_sibling(target, _STAGING)
        staging.mkdir()  # mode 0o777 filtered by the umask, like the folder it replaces
        try:
            carried = _carry_over(target, staging, keep) if target.is_dir() else set()
            yield staging
            _apply_umask(staging, carried)
            retired = _swap_in(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)
