"""The files of a bank folder: `bank_config.json` with one `TaskInfo` per task, and the task files it lists.

`read_bank_config` checks a parsed `bank_config.json` field by field; `TaskFile` opens one task's safetensors file,
checks it against its record and the bank's parameters, and reads it one tensor at a time (see DESIGN.md).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from ..constants import FORMAT_VERSION, STORAGE_DTYPE_NAMES, TASK_VECTORS_DIR
from ..errors import ConfigError, InputError, IntegrityError, MissingFileError
from ..hub.references import Reference
from ..utils.io import check_relative_path, safe_join

__all__ = ["STORAGE_DTYPES", "TaskFile", "TaskInfo", "model_weights", "read_bank_config"]

logger = logging.getLogger(__name__)

STORAGE_DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in STORAGE_DTYPE_NAMES}


@dataclass
class TaskInfo:
    """Metadata of one task of a bank: where its task vector came from and how good that model was.

    `file` is the task file's path inside the bank folder (a plain relative path); `sha256` and `size` record its
    content when it was saved, and are verified the first time the file is read.
    """

    name: str
    file: str = ""
    database: str | None = None
    kind: str | None = None
    score_range: list[float] | None = None
    num_images: int | None = None
    licence: str | None = None
    citation: str | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)
    sha256: str | None = None
    size: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _TASK_NAME.fullmatch(self.name):
            raise InputError(
                f"a task name must be a non-empty file-safe string (no '/' or '\\', not starting with '.'), "
                f"received {self.name!r}"
            )
        self.file = self.file or f"{TASK_VECTORS_DIR}/{self.name}.safetensors"
        check_relative_path(self.file, f"the file of task {self.name!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "task metadata") -> TaskInfo:
        """A `TaskInfo` from a `tasks[i]` entry of `bank_config.json`; ``where`` names it in errors."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where} must be a JSON object, received {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            logger.warning("Ignoring unknown fields %s of %s", unknown, where)
        for name, check, expected in _TASK_FIELDS:
            value = data.get(name)
            if (value is not None or name == "name") and not check(value):
                raise ConfigError(f"{where}: field '{name}' must be {expected}, received {value!r}")
        if data.get("file"):
            check_relative_path(data["file"], f"{where}: field 'file'")
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except ValueError as error:
            raise ConfigError(f"{where}: {error}") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_TASK_NAME = re.compile(r"[^./\\\x00][^/\\\x00]*")
# (field, check, what is expected) of each `tasks[i]` entry; None is accepted for all but `name`.
_TASK_FIELDS: tuple[tuple[str, Any, str], ...] = (
    ("name", lambda v: isinstance(v, str) and v != "", "a non-empty string"),
    ("file", lambda v: isinstance(v, str), "a relative path (a string)"),
    ("database", lambda v: isinstance(v, str), "a string"),
    ("kind", lambda v: isinstance(v, str), "a string"),
    ("licence", lambda v: isinstance(v, str), "a string"),
    ("citation", lambda v: isinstance(v, str), "a string"),
    ("score_range", lambda v: isinstance(v, list) and len(v) == 2 and all(map(_is_number, v)), "[low, high]"),
    ("num_images", lambda v: _is_int(v) and v >= 0, "a non-negative integer"),
    ("size", lambda v: _is_int(v) and v >= 0, "a non-negative integer (bytes)"),
    ("sha256", lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) is not None, "64 hex digits"),
    (
        "metrics",
        lambda v: isinstance(v, dict) and all(isinstance(x, (int, float, type(None))) for x in v.values()),
        "an object of numbers",
    ),
)


#: safetensors dtype names of the dtypes a task file may hold.
_FILE_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64}


class TaskFile(Mapping[str, torch.Tensor]):
    """One task's safetensors file, read one tensor at a time from a file kept open.

    Opening checks, through one open file, that its size and sha256 are those ``info`` records (with ``verify``), that
    `safetensors.safe_open` accepts it, and that it holds exactly the bank's parameters and shapes. Every tensor is
    later read from that same open file, so what was checked is what is read, even after a save swaps the folder.
    Tensors are read with `os.preadv` into their own buffer, not through a memory map: a map would keep every page
    read resident in this process until it is closed, and reading a bank tensor by tensor is meant to hold one tensor.
    Indexing gives float32 (a `TaskVector`'s values); `tensor` gives the stored dtype.
    """

    def __init__(
        self,
        path: Path,
        expected: Mapping[str, list[int]],
        info: TaskInfo | None = None,
        verify: bool = False,
        exact: bool = True,
    ) -> None:
        if not path.is_file():
            raise MissingFileError(f"task vector file {path} is missing")
        self.path, self._names = path, list(expected)
        self._file = open(path, "rb")  # noqa: SIM115 - kept open for the lifetime of this reader
        fd = self._file.fileno()
        size = os.fstat(fd).st_size
        if verify and info is not None and info.size is not None and size != info.size:
            raise IntegrityError(
                f"{path} has {size} bytes, but bank_config.json records {info.size} for task {info.name!r}: "
                "the file is damaged or was replaced"
            )
        if verify and info is not None and info.sha256 is not None:
            digest, offset = hashlib.sha256(), 0
            while block := os.pread(fd, 8 << 20, offset):
                digest.update(block)
                offset += len(block)
            if digest.hexdigest() != info.sha256:
                raise IntegrityError(
                    f"{path} has sha256 {digest.hexdigest()}, but bank_config.json records {info.sha256} for task "
                    f"{info.name!r}: the file is damaged or was replaced"
                )
        try:
            with safe_open(str(path), framework="pt") as handle:  # the library's own check of the format
                handle.keys()
            length = int.from_bytes(os.pread(fd, 8, 0), "little")
            header = json.loads(os.pread(fd, length, 8)) if 0 < length <= size - 8 else None
        except (SafetensorError, ValueError, RuntimeError, OSError) as error:
            raise IntegrityError(f"{path} is not a valid safetensors file: {error}") from None
        if not isinstance(header, dict) or os.stat(path).st_ino != os.fstat(fd).st_ino:
            raise IntegrityError(f"{path} is not a valid safetensors file, or was replaced while it was opened")
        header.pop("__metadata__", None)
        missing, extra = sorted(set(expected) - set(header)), sorted(set(header) - set(expected))
        if missing or (extra and exact):  # not exact: a model's weights file, of which ``expected`` are read
            raise InputError(
                f"{path} does not match the bank: missing keys {missing[:5]} ({len(missing)}), "
                f"unexpected keys {extra[:5]} ({len(extra)})"
            )
        self._entries: dict[str, tuple[torch.dtype, list[int], int, int]] = {}
        for name in expected:
            entry = header[name]
            shape, dtype = list(entry.get("shape", [])), _FILE_DTYPES.get(entry.get("dtype"))
            if shape != list(expected[name]):
                raise InputError(f"'{name}' in {path} has shape {shape}, the bank expects {expected[name]}")
            if dtype is None:
                raise IntegrityError(f"'{name}' in {path} has dtype {entry.get('dtype')!r}; expected a float dtype")
            begin, end = (8 + length + int(o) for o in entry["data_offsets"])
            if end - begin != torch.Size(shape).numel() * dtype.itemsize or end > size:
                raise IntegrityError(f"'{name}' in {path} has data offsets that do not fit its shape and dtype")
            self._entries[name] = (dtype, shape, begin, end)

    def tensor(self, name: str) -> torch.Tensor:
        """Tensor ``name`` in its stored dtype; NaN or inf is an error."""
        if name not in self._entries:
            raise KeyError(name)
        dtype, shape, begin, end = self._entries[name]
        buffer = bytearray(end - begin)
        view, done = memoryview(buffer), 0
        while done < len(buffer):
            read = os.preadv(self._file.fileno(), [view[done:]], begin + done)
            if read <= 0:
                raise IntegrityError(f"{self.path} ended while '{name}' was read: the file was truncated")
            done += read
        tensor = torch.frombuffer(buffer, dtype=dtype).reshape(shape) if buffer else torch.empty(shape, dtype=dtype)
        if not bool(torch.isfinite(tensor).all()):
            raise InputError(f"{self.path} holds NaN or inf values (in '{name}')")
        return tensor

    def __del__(self) -> None:
        file = getattr(self, "_file", None)
        if file is not None:
            file.close()

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.tensor(name).to(torch.float32)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def model_weights(folder: str | Path, shapes: Mapping[str, Sequence[int]]) -> Mapping[str, torch.Tensor] | None:
    """The parameters ``shapes`` of a model saved in ``folder`` (`save_pretrained`), read one tensor at a time from
    its `model.safetensors`; None when it has no single weights file (sharded weights: load the model instead)."""
    path = Path(folder) / "model.safetensors"
    if not path.is_file():
        return None
    return TaskFile(path, {n: list(s) for n, s in shapes.items()}, exact=False)


def read_bank_config(
    config: Mapping[str, Any], root: Path, where: Path
) -> tuple[Reference, dict[str, list[int]], list[TaskInfo], str]:
    """The fields of a parsed `bank_config.json` of the bank folder ``root``, checked field by field.

    Returns:
        `(base, parameters, tasks, storage_dtype)`: the arguments of a `TaskVectorBank` over ``root``.
    """
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise ConfigError(f"{where} has format_version {version!r}; this library reads version {FORMAT_VERSION}")
    missing = [k for k in ("base", "parameters", "tasks") if k not in config]
    if missing:
        raise ConfigError(f"{where} is missing the fields {missing}")
    base = config["base"]
    if not isinstance(base, dict) or not isinstance(base.get("fingerprint"), str):
        raise ConfigError(f"{where}: field 'base' must be an object with a string 'fingerprint', received {base!r}")
    reference = Reference.from_dict(base, str(where), "base")
    assert reference is not None  # from an object, never None
    parameters = config["parameters"]
    if not isinstance(parameters, dict) or not parameters:
        raise ConfigError(f"{where}: field 'parameters' must be a non-empty object of name -> shape")
    for name, shape in parameters.items():
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise ConfigError(
                f"{where}: field 'parameters[{name!r}]' must be a shape (a list of non-negative integers), "
                f"received {shape!r}"
            )
    tasks = config["tasks"]
    if not isinstance(tasks, list) or not tasks:
        raise ConfigError(f"{where}: field 'tasks' must be a non-empty list, received {type(tasks).__name__}")
    infos = [TaskInfo.from_dict(t, f"{where}: tasks[{i}]") for i, t in enumerate(tasks)]
    for i, info in enumerate(infos):
        safe_join(root, info.file, f"{where}: field tasks[{i}].file")
    storage_dtype = config.get("storage_dtype", "float32")
    if storage_dtype not in STORAGE_DTYPES:
        raise ConfigError(
            f"{where}: field 'storage_dtype' must be one of {list(STORAGE_DTYPES)}, received {storage_dtype!r}"
        )
    if any(info.sha256 is None or info.size is None for info in infos):
        logger.warning(
            "%s records no checksum for some task files (it was saved by an earlier version), so they are not "
            "verified. Load the bank and save it again (save_pretrained) to record them",
            where,
        )
    return reference, parameters, infos, storage_dtype
