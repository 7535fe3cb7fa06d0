"""A bank of task vectors: one task vector per source database over one base model.

A bank is saved as one safetensors file per task plus ``bank_config.json`` (see DESIGN.md and `bank_files`). Task
files are read lazily, only when a task is used.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import ModelCard
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm

from ..constants import BANK_CONFIG_FILE, FORMAT_VERSION, TASK_VECTORS_DIR
from ..errors import ConfigError, InputError, IntegrityError
from ..hub.cards import write_card
from ..hub.references import Reference
from ..hub.repository import HubMixin, download, locate, not_found_locally
from ..utils.io import (
    atomic_path,
    file_digest,
    folder_identity,
    folder_transaction,
    link_file,
    read_consistently,
    read_json,
    safe_join,
    write_json,
)
from .bank_card import bank_card
from .bank_files import STORAGE_DTYPES, TaskFile, TaskInfo, read_bank_config
from .fingerprint import FingerprintMismatchError, fingerprint_matches, is_legacy_fingerprint, model_fingerprint
from .similarity import Similarity, task_vector_similarity
from .task_vector import StackedRow, TaskVector, changed_values

__all__ = ["TaskVectorBank"]

logger = logging.getLogger(__name__)


def _not_bank_file(relative: str) -> bool:
    """Files of a bank folder that a bank save does not own (its config, task files and card are its own)."""
    return relative != BANK_CONFIG_FILE and not relative.startswith(f"{TASK_VECTORS_DIR}/")


class TaskVectorBank(HubMixin):
    """Named task vectors over one base model.

    Build one with [`TaskVectorBank.from_finetuned`], load one with [`TaskVectorBank.from_pretrained`] (a folder or
    a Hub repository, optionally only some tasks), and save it with [`TaskVectorBank.save_pretrained`].

    Attributes:
        base: the base model: its fingerprint, and where it lives when known (a [`Reference`]).
        parameter_shapes: the covered parameter names (in model order) and their shapes.
        tasks: per-task metadata, in bank order.
        storage_dtype: dtype of the task files on disk; arithmetic always runs in float32.
        source: where this bank was loaded from or pushed to (a [`Reference`]), else None.
    """

    hub_name = "task-vector bank"
    hub_replaces = (f"{TASK_VECTORS_DIR}/*",)

    def __init__(
        self,
        base: Reference | Mapping[str, Any],
        parameter_shapes: Mapping[str, Sequence[int]],
        tasks: Sequence[TaskInfo],
        vectors: Mapping[str, TaskVector] | None = None,
        *,
        storage_dtype: str = "float32",
        root: str | Path | None = None,
        source: Reference | None = None,
    ) -> None:
        reference = (
            base if isinstance(base, Reference) else Reference.from_dict(base, "the bank's base reference", "base")
        )
        if reference is None or reference.fingerprint is None:
            raise InputError(f"the bank's base reference needs a 'fingerprint', received {reference!r}")
        if storage_dtype not in STORAGE_DTYPES:
            raise InputError(f"storage_dtype must be one of {list(STORAGE_DTYPES)}, received {storage_dtype!r}")
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise InputError(f"task names must be unique, received {names}")
        self.base: Reference = reference
        self.parameter_shapes = {n: list(s) for n, s in parameter_shapes.items()}
        self.tasks = list(tasks)
        self.storage_dtype = storage_dtype
        self.root = Path(root) if root is not None else None
        self.source: Reference | None = source
        self._vectors: dict[str, TaskVector] = dict(vectors or {})  # tasks held in memory, not read from files
        self._stacked: dict[str, torch.Tensor] | None = None  # see `stacked`
        # Task files whose checksum was verified, and the folder version they were read from.
        self._verified: set[str] = set()
        self._root_identity = folder_identity(self.root) if self.root is not None else None
        for name, vector in self._vectors.items():
            self._check_vector(name, vector)

    # -- building ----------------------------------------------------------------------------------------------
    @classmethod
    def from_finetuned(
        cls,
        base: nn.Module,
        finetuned: Mapping[str, nn.Module | TaskVector],
        *,
        metadata: Mapping[str, Mapping[str, Any]] | None = None,
        parameter_names: Iterable[str] | None = None,
        storage_dtype: str = "float32",
    ) -> TaskVectorBank:
        """Build a bank from fine-tuned copies of ``base`` (or ready task vectors), one per task.

        Args:
            base: the base model every task was fine-tuned from.
            finetuned: task name -> fine-tuned model or `TaskVector`.
            metadata: task name -> `TaskInfo` fields (database, kind, num_images, licence, metrics, ...).
            parameter_names: parameters the bank covers. By default, every trainable parameter that at least one
                task changed, so a frozen prefix is left out and can be cached during personalization.
            storage_dtype: `"float32"`, `"bfloat16"` or `"float16"`.
        """
        if not finetuned:
            raise InputError("from_finetuned needs at least one fine-tuned model, received none")
        metadata = metadata or {}
        unknown = sorted(set(metadata) - set(finetuned))
        if unknown:
            raise InputError(f"metadata names tasks {unknown} that are not among the fine-tuned models")
        vectors = {
            name: item if isinstance(item, TaskVector) else TaskVector.from_models(base, item)
            for name, item in finetuned.items()
        }
        params = dict(base.named_parameters())
        if parameter_names is None:
            changed = {n for v in vectors.values() for n, t in v.items() if bool(torch.any(t != 0))}
            covered = [n for n in params if n in changed]
        else:
            covered = list(parameter_names)
        if not covered:
            raise InputError("the fine-tuned models do not differ from the base: no parameter changed")
        missing = [n for n in covered if n not in params]
        if missing:
            raise InputError(f"the base model has no parameters {missing[:5]}")
        restricted = {}
        for name, vector in vectors.items():
            absent = [n for n in covered if n not in vector]
            if absent:
                raise InputError(f"task '{name}' has no values for covered parameters {absent[:5]} ({len(absent)})")
            restricted[name] = TaskVector({n: vector[n] for n in covered})
        tasks = [TaskInfo(name=name, **dict(metadata.get(name, {}))) for name in finetuned]
        base_ref = (getattr(base, "source", None) or Reference()).with_fingerprint(model_fingerprint(base))
        shapes = {n: list(params[n].shape) for n in covered}
        return cls(base_ref, shapes, tasks, restricted, storage_dtype=storage_dtype)

    @classmethod
    def save_finetuned(
        cls,
        save_directory: str | Path,
        base: nn.Module,
        finetuned: Mapping[str, Callable[[], nn.Module | Mapping[str, torch.Tensor]]],
        *,
        metadata: Mapping[str, Mapping[str, Any]] | None = None,
        storage_dtype: str = "float32",
        overwrite_card: bool = False,
    ) -> TaskVectorBank:
        """Build a bank from fine-tuned copies of ``base`` loaded one at a time, and save it in ``save_directory``.

        Like `from_finetuned` followed by `save_pretrained`, but streamed: each fine-tuned model is loaded, turned
        into its task vector tensor by tensor (each fine-tuned tensor is freed as soon as it is used), written and
        freed before the next one is loaded, so the peak is about the base plus two models whatever the number of
        tasks. Parameters no task changed are left out (a file written before that was known is completed with zeros
        for the parameters another task changed). The folder is written as one transaction.

        Args:
            save_directory: the bank folder.
            base: the base model every task was fine-tuned from.
            finetuned: task name -> a function that loads its fine-tuned model, or that gives its parameters as a
                mapping read one tensor at a time (see `model_weights`): then not even one whole fine-tuned model is
                held, and the peak is about the base plus one task vector.
            metadata: task name -> `TaskInfo` fields.
            storage_dtype: `"float32"`, `"bfloat16"` or `"float16"`.

        Returns:
            The saved bank, read from ``save_directory`` (its task files are read when used).
        """
        if not finetuned:
            raise InputError("save_finetuned needs at least one fine-tuned model, received none")
        if storage_dtype not in STORAGE_DTYPES:
            raise InputError(f"storage_dtype must be one of {list(STORAGE_DTYPES)}, received {storage_dtype!r}")
        metadata = metadata or {}
        unknown = sorted(set(metadata) - set(finetuned))
        if unknown:
            raise InputError(f"metadata names tasks {unknown} that are not among the fine-tuned models")
        tasks = [TaskInfo(name=name, **dict(metadata.get(name, {}))) for name in finetuned]
        dtype = STORAGE_DTYPES[storage_dtype]
        params = dict(base.named_parameters())
        trainable = [n for n, p in params.items() if p.requires_grad]
        directory = Path(save_directory)
        with folder_transaction(directory, keep=_not_bank_file) as staging:
            changed: dict[str, list[str]] = {}
            for task in tqdm(tasks, desc="Task vectors", unit="task", disable=len(tasks) < 2, leave=False):
                delta = changed_values(finetuned[task.name], params, trainable, dtype, task.name)
                target = safe_join(staging, task.file, f"the file of task {task.name!r}")
                with atomic_path(target) as tmp:
                    save_file(delta, str(tmp), metadata={"format": "pt", "task": task.name})
                changed[task.name] = list(delta)
                del delta
            union = {n for names in changed.values() for n in names}
            covered = [n for n in params if n in union]
            if not covered:
                raise InputError("the fine-tuned models do not differ from the base: no parameter changed")
            saved_tasks = []
            for task in tasks:
                target = safe_join(staging, task.file, f"the file of task {task.name!r}")
                if len(changed[task.name]) != len(covered):  # add the zeros of what only other tasks changed
                    with safe_open(str(target), framework="pt") as handle:
                        tensors = {
                            n: handle.get_tensor(n)
                            if n in handle.keys()
                            else torch.zeros(params[n].shape, dtype=dtype)
                            for n in covered
                        }
                    with atomic_path(target) as tmp:
                        save_file(tensors, str(tmp), metadata={"format": "pt", "task": task.name})
                    del tensors
                sha256, size = file_digest(target)
                saved_tasks.append(dataclasses.replace(task, sha256=sha256, size=size))
            base_ref = (getattr(base, "source", None) or Reference()).with_fingerprint(model_fingerprint(base))
            shapes = {n: list(params[n].shape) for n in covered}
            saved = cls(base_ref, shapes, saved_tasks, storage_dtype=storage_dtype)
            write_json(staging / BANK_CONFIG_FILE, saved.to_config())
            write_card(saved.generate_model_card(), staging, overwrite=overwrite_card)
        return cls.from_pretrained(directory)

    def _check_vector(self, name: str, vector: TaskVector) -> None:
        if set(vector) != set(self.parameter_shapes):
            diff = sorted(set(vector) ^ set(self.parameter_shapes))
            raise InputError(f"task '{name}' does not cover the bank's parameters; differing names {diff[:5]}")
        for pname, tensor in vector.items():
            if list(tensor.shape) != self.parameter_shapes[pname]:
                raise InputError(
                    f"task '{name}': '{pname}' has shape {list(tensor.shape)}, the bank has {self.parameter_shapes[pname]}"
                )

    # -- access ------------------------------------------------------------------------------------------------
    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    @property
    def parameter_names(self) -> list[str]:
        return list(self.parameter_shapes)

    @property
    def base_fingerprint(self) -> str:
        return str(self.base.fingerprint)

    def __len__(self) -> int:
        return len(self.tasks)

    def __contains__(self, name: object) -> bool:
        return name in self.task_names

    def info(self, name: str) -> TaskInfo:
        for task in self.tasks:
            if task.name == name:
                return task
        raise KeyError(f"no task {name!r} in this bank; it has {self.task_names}")

    def __getitem__(self, name: str) -> TaskVector:
        """The task vector of ``name`` (float32 values). A task of a bank folder is read tensor by tensor when its
        values are used (memory-mapped), and not kept: the only copy a bank keeps is `stacked`'s."""
        return self._read(name)

    def _read(self, name: str) -> TaskVector:
        """The task vector of ``name``: in memory, a view of the stacked tensors, or lazily read from its file.

        The first read of a task file verifies its size and sha256 against `bank_config.json`.
        """
        if name in self._vectors:
            return self._vectors[name]
        if self._stacked is not None:
            return TaskVector.lazy(StackedRow(self._stacked, self.task_names.index(name)))
        return TaskVector.lazy(self._task_file(name))

    def _task_file(self, name: str) -> TaskFile:
        """The opened (checked) task file of ``name``."""
        info = self.info(name)
        if self.root is None:
            raise InputError(f"task {name!r} is neither in memory nor backed by a bank folder")
        path = safe_join(self.root, info.file, f"{self.root / BANK_CONFIG_FILE}: field tasks[{name!r}].file")
        logger.debug("Opening task vector %s at %s", name, path)
        try:
            task_file = TaskFile(path, self.parameter_shapes, info, verify=name not in self._verified)
        except (IntegrityError, FileNotFoundError) as error:
            if folder_identity(self.root) != self._root_identity:
                raise IntegrityError(
                    f"{error}. The bank folder {self.root} was replaced by a save after this bank was loaded: load it "
                    "again with TaskVectorBank.from_pretrained"
                ) from None
            raise
        self._verified.add(name)
        return task_file

    @property
    def stacked_dtype(self) -> torch.dtype:
        """The dtype `stacked` holds: the storage dtype for a bank read from files, float32 once a task is in memory."""
        if any(name in self._vectors for name in self.task_names):
            return torch.float32
        return STORAGE_DTYPES[self.storage_dtype]

    def iter_stacked(self, parameter_names: Iterable[str] | None = None) -> Iterator[tuple[str, torch.Tensor]]:
        """(name, `[T, *shape]` tensor) pairs, one parameter at a time, in `stacked_dtype`.

        Reads the task files tensor by tensor (or slices what `stacked` already holds), so only one tensor's T slices
        are in memory at once: this is how a model is merged without holding the bank.
        """
        names = list(parameter_names) if parameter_names is not None else self.parameter_names
        if self._stacked is not None:
            for name in names:
                yield name, self._stacked[name]
            return
        sources = [
            self._vectors[task].__getitem__ if task in self._vectors else self._task_file(task).tensor
            for task in self.task_names
        ]  # every task file opened (and verified) before anything is read
        dtype = self.stacked_dtype
        for name in names:
            yield name, torch.stack([read(name).to(dtype) for read in sources])

    def stacked(self, parameter_names: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        """Parameter name -> `[T, *shape]` tensor of all tasks' values, in task order, in `stacked_dtype`.

        Built once and kept: this is the bank's one resident copy (a bfloat16 bank stays bfloat16; merging upcasts one
        tensor at a time). Later calls return the same tensors, and tasks held in memory become views of it.
        """
        if self._stacked is None:
            stacked, dtype = {}, self.stacked_dtype
            for name, values in tqdm(
                self.iter_stacked(),
                desc="Reading the bank",
                unit="tensor",
                total=len(self.parameter_shapes),
                disable=len(self) * len(self.parameter_shapes) < 10_000,
                leave=False,
            ):
                stacked[name] = values.to(dtype)
            self._stacked = stacked
            for index, task in enumerate(self.task_names):
                if task in self._vectors and dtype == torch.float32:  # one copy: the task's values live in the stack
                    self._vectors[task] = TaskVector.lazy(StackedRow(stacked, index))
        names = list(parameter_names) if parameter_names is not None else self.parameter_names
        return {n: self._stacked[n] for n in names}

    def similarity(self, granularity: str = "task", groups: Any = None, progress: bool = True) -> Similarity:
        """Cosine similarities between the task vectors, over all covered parameters (and per layer group with
        granularity `"layer"` and ``groups``, the base model), computed tensor by tensor from the files (see
        `similarity.task_vector_similarity`)."""
        return task_vector_similarity(self, granularity, groups, progress)

    def select(self, names: Sequence[str]) -> TaskVectorBank:
        """A bank with only the tasks ``names``, in that order (task files stay lazy)."""
        tasks = [self.info(n) for n in names]
        vectors = {n: self._vectors[n] for n in names if n in self._vectors}
        selected = TaskVectorBank(
            self.base,
            self.parameter_shapes,
            tasks,
            vectors,
            storage_dtype=self.storage_dtype,
            root=self.root,
            source=self.source,
        )
        selected._verified = self._verified & set(names)
        selected._root_identity = self._root_identity
        return selected

    def add_task(
        self, name: str, vector: TaskVector | nn.Module, base: nn.Module | None = None, **metadata: Any
    ) -> None:
        """Add a task to this bank: a `TaskVector`, or a fine-tuned model together with its ``base``."""
        if name in self:
            raise InputError(f"the bank already has a task {name!r}; choose another name")
        if not isinstance(vector, TaskVector):
            if base is None:
                raise InputError("adding a fine-tuned model needs its base model: add_task(name, model, base=base)")
            self.check_base(base)
            vector = TaskVector.from_models(base, vector, self.parameter_names)
        if set(vector) > set(self.parameter_shapes):  # e.g. a vector over all parameters: keep the bank's
            vector = TaskVector({n: vector[n] for n in self.parameter_names})
        self._check_vector(name, vector)
        self.tasks.append(TaskInfo(name=name, **metadata))
        self._vectors[name] = vector
        self._stacked = None  # one task more: restacked when next asked for

    def _where(self) -> str:
        return str(self.root / BANK_CONFIG_FILE) if self.root is not None else "this bank"

    def check_base(self, model_or_fingerprint: nn.Module | str) -> str:
        """Raise `FingerprintMismatchError` unless the model is the base this bank was built on.

        Given a model, also checks that it has every parameter the bank covers, with the recorded shape.

        Returns:
            `str`: the fingerprint of the model (or the fingerprint given).
        """
        if isinstance(model_or_fingerprint, str):
            found = model_or_fingerprint
            same = found == self.base_fingerprint
        else:
            params = dict(model_or_fingerprint.named_parameters())
            for name, shape in self.parameter_shapes.items():
                if name not in params:
                    raise ConfigError(
                        f"{self._where()}: field 'parameters' names {name!r}, which the base model does not have"
                    )
                if list(params[name].shape) != shape:
                    raise ConfigError(
                        f"{self._where()}: field 'parameters[{name!r}]' gives shape {shape}, but the base model's "
                        f"parameter has shape {list(params[name].shape)}"
                    )
            found = model_fingerprint(model_or_fingerprint)
            same = found == self.base_fingerprint
            if not same and is_legacy_fingerprint(self.base_fingerprint):
                same = fingerprint_matches(model_or_fingerprint, self.base_fingerprint, self._where())
                if same:  # verified the old way: from now on (and in the next save) the full fingerprint
                    self.base = self.base.with_fingerprint(found)
        if not same:
            raise FingerprintMismatchError(
                f"this bank was built on a base model with fingerprint {self.base_fingerprint}, but it is applied to a "
                f"model with fingerprint {found}. Load the bank's base model"
                + (f" ({self.base})" if self.base.location else "")
            )
        return found

    # -- files -------------------------------------------------------------------------------------------------
    def to_config(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "base": self.base.to_dict(),
            "storage_dtype": self.storage_dtype,
            "parameters": copy.deepcopy(self.parameter_shapes),
            "tasks": [asdict(t) for t in self.tasks],
        }

    def save_pretrained(
        self, save_directory: str | Path, storage_dtype: str | None = None, overwrite_card: bool = False
    ) -> Path:
        """Write ``bank_config.json``, one ``task_vectors/<task>.safetensors`` per task, and a card (``README.md``).

        The folder is written as a whole or not at all (see `io.folder_transaction`): a reader sees the old bank or
        the new one, and the task files of the old bank that this one does not list are gone. `bank_config.json`
        records each task file's sha256 and size. Task files of this bank's own folder that are unchanged (same dtype,
        not in memory) are hard-linked, not rewritten, so adding a task to a saved bank writes only the new file. A
        ``README.md`` a person wrote is kept unless ``overwrite_card``; a generated card is regenerated. The bank
        itself is not modified (its dtype, folder and source stay what they were).
        """
        dtype_name = storage_dtype or self.storage_dtype
        if dtype_name not in STORAGE_DTYPES:
            raise InputError(f"storage_dtype must be one of {list(STORAGE_DTYPES)}, received {dtype_name!r}")
        directory = Path(save_directory)
        same_place = self.root is not None and directory.exists() and self.root.resolve() == directory.resolve()
        root = self.root if same_place else None  # task files that may be shared with the new folder
        saved_tasks = []
        with folder_transaction(directory, keep=_not_bank_file) as staging:
            for task in self.tasks:
                target = safe_join(staging, task.file, f"the file of task {task.name!r}")
                if root is not None and dtype_name == self.storage_dtype and task.name not in self._vectors:
                    # Unchanged on disk: share the file, keep (or compute, for an older bank) its checksum.
                    source = safe_join(root, task.file, f"{self._where()}: field tasks[{task.name!r}].file")
                    link_file(source, target)
                    if task.sha256 is None or task.size is None:
                        sha256, size = file_digest(target)
                    else:
                        sha256, size = task.sha256, task.size
                else:
                    vector = self._read(task.name)  # one task in memory at a time
                    tensors = {n: vector[n].to(STORAGE_DTYPES[dtype_name]).contiguous() for n in self.parameter_names}
                    with atomic_path(target) as tmp:
                        save_file(tensors, str(tmp), metadata={"format": "pt", "task": task.name})
                    sha256, size = file_digest(target)
                saved_tasks.append(dataclasses.replace(task, sha256=sha256, size=size))
            saved = TaskVectorBank(self.base, self.parameter_shapes, saved_tasks, storage_dtype=dtype_name)
            write_json(staging / BANK_CONFIG_FILE, saved.to_config())
            write_card(saved.generate_model_card(), staging, overwrite=overwrite_card)
        return directory

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        *,
        tasks: Sequence[str] | None = None,
        revision: str | None = None,
        token: str | bool | None = None,
        cache_dir: str | Path | None = None,
        base: nn.Module | None = None,
    ) -> TaskVectorBank:
        """Load a bank from a folder or a Hub repository. Task files are read only when a task is used.

        Args:
            name_or_path: a local folder holding ``bank_config.json``, or a Hub repo id.
            tasks: load only these tasks (from the Hub, only their files are downloaded).
            revision: Hub branch, tag or commit.
            token: Hub token for private repositories.
            cache_dir: Hub cache folder.
            base: when given, check that this bank was built on it (fingerprint) and fail clearly otherwise.
        """
        local = locate(name_or_path, "bank", revision=revision, token=token, cache_dir=cache_dir)
        if local is not None:

            def read_local() -> TaskVectorBank:
                identity = folder_identity(local)  # before the config is read: a later swap is then noticed
                config_path = local / BANK_CONFIG_FILE
                config = read_json(config_path, "a task-vector bank config (bank_config.json)")
                bank = cls._from_config(config, local, Reference.local(local), config_path)
                bank._root_identity = identity
                return bank

            bank = read_consistently(local, read_local)
        else:
            name = str(name_or_path)
            try:
                root, commit = download(name, [BANK_CONFIG_FILE], revision=revision, token=token, cache_dir=cache_dir)
            except (OSError, ValueError) as error:
                raise not_found_locally(name, "bank", error) from error
            config_path = root / BANK_CONFIG_FILE
            config = read_json(config_path, "a task-vector bank config (bank_config.json)")
            bank = cls._from_config(config, root, Reference(repo_id=name, revision=commit), config_path)
            wanted = [t for t in bank.tasks if tasks is None or t.name in tasks]
            # Every file entry was checked by _from_config before anything is downloaded.
            root, _ = download(name, [t.file for t in wanted], revision=commit, token=token, cache_dir=cache_dir)
            bank.root, bank._root_identity = root, folder_identity(root)
        if tasks is not None:
            bank = bank.select(list(tasks))
        if base is not None:
            bank.check_base(base)
        return bank

    @classmethod
    def _from_config(
        cls, config: Mapping[str, Any], root: Path, source: Reference, where: Path | None = None
    ) -> TaskVectorBank:
        """Build a bank from a parsed `bank_config.json`, checking its structure field by field."""
        where = where or root / BANK_CONFIG_FILE
        base, parameters, infos, storage_dtype = read_bank_config(config, root, where)
        try:
            return cls(base, parameters, infos, storage_dtype=storage_dtype, root=root, source=source)
        except ValueError as error:
            raise ConfigError(f"{where}: {error}") from None

    def generate_model_card(self, repo_id: str | None = None, license: str | None = None) -> ModelCard:
        """The card of this bank: a table of its tasks, its base, and the tasks' metrics in `model-index`.

        Args:
            repo_id: where the card will live (used in the code examples); by default a placeholder folder name.
            license: the `license` metadata (default `other`: task vectors inherit their databases' terms).
        """
        return bank_card(self, repo_id, license)

    def __repr__(self) -> str:
        values = sum(torch.Size(s).numel() for s in self.parameter_shapes.values())
        return (
            f"TaskVectorBank({len(self)} tasks {self.task_names}, {len(self.parameter_shapes)} tensors / "
            f"{values:,} values each, storage {self.storage_dtype})"
        )
