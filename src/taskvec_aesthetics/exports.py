"""Saved formats of personalized models: coefficients-only exports and the provenance file of both exports.

A coefficients-only export is `config.json` (with the base and bank references and their fingerprints),
`coefficients.safetensors` and `personalization.json`: a few kilobytes that reload into the exact merged model.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .bank import TaskVectorBank
from .coefficients import COEFFICIENTS_FILE, Coefficients
from .configuration import EXPORT_FORMAT_VERSION, AestheticConfig
from .fingerprint import FingerprintMismatchError, model_fingerprint
from .io import atomic_path, read_json, write_json
from .processing import load_image_processor

if TYPE_CHECKING:
    from .modeling import AestheticModel

__all__ = [
    "PersonalizationState",
    "PERSONALIZATION_FILE",
    "save_coefficients_export",
    "load_coefficients_export",
    "write_personalization_file",
    "read_personalization_file",
    "resolve_model_files",
]

logger = logging.getLogger(__name__)

PERSONALIZATION_FILE = "personalization.json"
# Small files beside a model that are fetched together from the Hub.
_SIDE_FILES = ("config.json", "preprocessor_config.json", PERSONALIZATION_FILE, COEFFICIENTS_FILE)


@dataclass
class PersonalizationState:
    """What makes a model personal: the bank and coefficients it was merged from, and facts about the fit.

    Attributes:
        bank: the task-vector bank (None for a merged export loaded from disk).
        coefficients: the coefficients (None for a merged export loaded from disk without them).
        base_fingerprint: fingerprint of the base model the coefficients apply to.
        base_source: where that base model lives (`path`, or `repo_id` + `revision`), if known.
        info: personalizer config, number of ratings, holdout metrics, calibration, ...
        bank_reference: where the bank lives, when the bank itself is not loaded (a merged export read back).
    """

    bank: TaskVectorBank | None
    coefficients: Coefficients | None
    base_fingerprint: str | None
    base_source: dict[str, Any] | None
    info: dict[str, Any] = field(default_factory=dict)
    bank_reference: dict[str, Any] | None = None

    @classmethod
    def standalone(cls, record: dict[str, Any]) -> PersonalizationState:
        """The state of a merged export read back from its `personalization.json`."""
        coefficients = Coefficients.from_dict(record["coefficients"]) if "coefficients" in record else None
        return cls(
            None,
            coefficients,
            record.get("base", {}).get("fingerprint"),
            record.get("base"),
            record.get("info", {}),
            bank_reference=record.get("bank"),
        )

    def bank_record(self) -> dict[str, Any] | None:
        """Where the bank lives (`path`, or `repo_id` + `revision`) and the fingerprint of the base it was built on."""
        if self.bank is None:
            return copy.deepcopy(self.bank_reference)
        return {**(self.bank.source or {}), "base_fingerprint": self.bank.base_fingerprint}


def _reference(source: dict[str, Any] | None, what: str, how: str) -> dict[str, Any]:
    if not source or not (source.get("path") or source.get("repo_id")):
        raise ValueError(f"cannot export coefficients: the {what} has no saved location (path or Hub repo id). {how}")
    return {k: source[k] for k in ("path", "repo_id", "revision") if source.get(k) is not None}


def _personalization_record(model: AestheticModel, export: str) -> dict[str, Any]:
    state = model.personalization
    record: dict[str, Any] = {
        "format_version": EXPORT_FORMAT_VERSION,
        "export": export,
        "base": {**(state.base_source or {}), "fingerprint": state.base_fingerprint},
        "info": state.info,
    }
    if state.coefficients is not None:
        record["coefficients"] = state.coefficients.to_dict()
    bank = state.bank_record()
    if bank is not None:
        record["bank"] = bank
    return record


def write_personalization_file(model: AestheticModel, directory: str | Path, export: str) -> Path:
    """Write `personalization.json`: task and group order, granularity, coefficients, fit facts, provenance."""
    if model.personalization is None:
        raise ValueError("this model is not personalized: there is nothing to write to personalization.json")
    return write_json(Path(directory) / PERSONALIZATION_FILE, _personalization_record(model, export))


def read_personalization_file(folder: str | Path) -> dict[str, Any] | None:
    path = Path(folder) / PERSONALIZATION_FILE
    return read_json(path, "a personalization record") if path.is_file() else None


def save_coefficients_export(model: AestheticModel, directory: str | Path) -> Path:
    """Write the coefficients-only format of a personalized model into ``directory``."""
    state = model.personalization
    if state is None or state.coefficients is None or state.bank is None:
        raise ValueError(
            "export='coefficients' needs a personalized model (from personalize() or with_coefficients()); "
            "this model has no coefficients. Use export='merged' to save plain weights"
        )
    base_ref = _reference(state.base_source, "base model", "Load it with from_pretrained, or save it first.")
    bank_ref = _reference(state.bank.source, "bank", "Save it with bank.save_pretrained(...) or push it first.")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = copy.deepcopy(model.config)
    config.base_model = {**base_ref, "fingerprint": state.base_fingerprint}
    config.bank = {**bank_ref, "base_fingerprint": state.bank.base_fingerprint, "tasks": state.coefficients.task_names}
    state.coefficients.save(directory / COEFFICIENTS_FILE)
    write_personalization_file(model, directory, export="coefficients")
    model.image_processor.save_pretrained(directory)
    with atomic_path(directory / "config.json") as tmp:
        tmp.write_text(config.to_json_string(use_diff=False), encoding="utf-8")
    return directory


def resolve_model_files(
    name_or_path: str | Path, revision: str | None = None, token: str | bool | None = None, cache_dir: Any = None
) -> tuple[Path, dict[str, Any]]:
    """The local folder holding a model's small side files, and where the model lives."""
    path = Path(name_or_path)
    if path.is_dir():
        return path, {"path": str(path.resolve())}
    from . import hub

    folder, commit = hub.download(
        str(name_or_path), list(_SIDE_FILES), revision=revision, token=token, cache_dir=cache_dir
    )
    return folder, {"repo_id": str(name_or_path), "revision": commit}


def load_coefficients_export(
    model_class: type[AestheticModel], name_or_path: str | Path, config: AestheticConfig, **hub_kwargs: Any
) -> AestheticModel:
    """Resolve a coefficients-only export: load its base and bank, check fingerprints, merge."""
    folder, source = resolve_model_files(name_or_path, **hub_kwargs)
    base_ref, bank_ref = dict(config.base_model or {}), dict(config.bank or {})
    base_location = base_ref.get("path") or base_ref.get("repo_id")
    bank_location = bank_ref.get("path") or bank_ref.get("repo_id")
    if not base_location or not bank_location:
        raise ValueError(
            f"{name_or_path}: config.json must reference a base model and a bank; found base {base_ref}, bank {bank_ref}"
        )
    token, cache_dir = hub_kwargs.get("token"), hub_kwargs.get("cache_dir")
    try:
        base = model_class.from_pretrained(
            base_location, revision=base_ref.get("revision"), token=token, cache_dir=cache_dir
        )
    except (OSError, ValueError) as error:
        raise ValueError(f"{name_or_path}: cannot load its base model {base_location!r}: {error}") from error
    found = model_fingerprint(base)
    if found != base_ref.get("fingerprint"):
        raise FingerprintMismatchError(
            f"{name_or_path} was personalized from a base with fingerprint {base_ref.get('fingerprint')}, but "
            f"{base_location!r} now has fingerprint {found}: refusing to build a different model"
        )
    try:
        bank = TaskVectorBank.from_pretrained(
            bank_location,
            revision=bank_ref.get("revision"),
            tasks=bank_ref.get("tasks"),
            token=token,
            cache_dir=cache_dir,
        )
    except (OSError, ValueError) as error:
        raise ValueError(f"{name_or_path}: cannot load its bank {bank_location!r}: {error}") from error
    if bank.base_fingerprint != bank_ref.get("base_fingerprint", bank.base_fingerprint):
        raise FingerprintMismatchError(
            f"{name_or_path} expects a bank built on base {bank_ref.get('base_fingerprint')}, but {bank_location!r} "
            f"was built on {bank.base_fingerprint}"
        )
    coefficients = Coefficients.load(folder / COEFFICIENTS_FILE)
    record = read_personalization_file(folder) or {}
    model = base.with_coefficients(bank, coefficients, info=record.get("info"))
    processor = load_image_processor(folder)
    if processor is not None:
        model.image_processor = processor
    model.source = source
    return model
