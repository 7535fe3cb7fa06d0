"""Saved formats of personalized models: coefficients-only exports and the provenance file of both exports.

A coefficients-only export is `config.json` (with the base and bank references and their fingerprints),
`coefficients.safetensors` and `personalization.json`: a few kilobytes that reload into the exact merged model.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .bank import TaskVectorBank
from .coefficients import COEFFICIENTS_FILE, Coefficients
from .configuration import EXPORT_FORMAT_VERSION, AestheticConfig
from .errors import ConfigError, IntegrityError
from .fingerprint import FingerprintMismatchError, fingerprint_matches
from .io import atomic_path, folder_transaction, read_json, write_json
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
    "save_model_export",
    "check_calibration",
    "check_finite_weights",
]

logger = logging.getLogger(__name__)

PERSONALIZATION_FILE = "personalization.json"
# Small files beside a model that are fetched together from the Hub.
_SIDE_FILES = ("config.json", "preprocessor_config.json", PERSONALIZATION_FILE, COEFFICIENTS_FILE)
# Files a model save owns: a save replaces them all, so nothing of an earlier export of another kind stays behind.
_MODEL_FILES = {"config.json", "generation_config.json", "preprocessor_config.json", PERSONALIZATION_FILE,
                COEFFICIENTS_FILE, "model.safetensors.index.json"}  # fmt: skip


def _not_model_file(relative: str) -> bool:
    """Files of a model folder that a model save does not own (a user's notes; the card is checked separately)."""
    return relative not in _MODEL_FILES and not (relative.startswith("model") and relative.endswith(".safetensors"))


#: Largest accepted coefficient magnitude: far beyond any useful mix, far below float32 overflow of merged weights.
MAX_ABS_COEFFICIENT = 1e3
# Calibrated scores are float32: a larger slope or intercept overflows them to inf for ordinary scores.
_MAX_CALIBRATION = 1e30


def check_calibration(calibration: Any, where: str) -> None:
    """A stored calibration must map scores monotonically and finitely: finite slope > 0, finite intercept."""
    if calibration is None:
        return
    if not isinstance(calibration, Mapping):
        raise ConfigError(f"{where}: field 'calibration' must be an object with slope and intercept")
    for key in ("slope", "intercept"):
        value = calibration.get(key)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or abs(value) > _MAX_CALIBRATION
        ):
            raise ConfigError(
                f"{where}: field 'calibration.{key}' must be a finite number of magnitude <= {_MAX_CALIBRATION:g} "
                f"(calibrated scores are float32), received {value!r}. Such a calibration comes from ratings far "
                "outside any usable scale: check the ratings"
            )
    if calibration["slope"] <= 0:
        raise ConfigError(
            f"{where}: field 'calibration.slope' must be > 0 (a calibration keeps the ranking), received "
            f"{calibration['slope']!r}"
        )


def check_finite_weights(model: nn.Module, where: str) -> None:
    """Every parameter and buffer of ``model`` must be finite: NaN or inf weights give NaN scores."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise IntegrityError(f"{where}: '{name}' holds NaN or inf values")


def _check_coefficients(coefficients: Coefficients, where: str) -> None:
    """Coefficients are finite by construction; they must also be mixing weights of a sane size, and their extra
    tensors (e.g. an adapted head) finite."""
    largest = float(coefficients.values.abs().max()) if coefficients.values.numel() else 0.0
    if largest > MAX_ABS_COEFFICIENT:
        raise IntegrityError(
            f"{where}: a coefficient has magnitude {largest:g}; coefficients weight task vectors (typically within "
            f"[-2, 2]) and must stay within +-{MAX_ABS_COEFFICIENT:g}"
        )
    for name, tensor in coefficients.extra.items():
        if not bool(torch.isfinite(tensor).all()):
            raise IntegrityError(f"{where}: the stored tensor 'extra.{name}' holds NaN or inf values")


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

    def __post_init__(self) -> None:
        # Checked here, where every personalized model gets its state, so a broken calibration is never used.
        check_calibration((self.info or {}).get("calibration"), "the personalization info")

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
    """The checked content of `personalization.json` in ``folder``, or None when there is none."""
    path = Path(folder) / PERSONALIZATION_FILE
    if not path.is_file():
        return None
    record = read_json(path, "a personalization record")
    for key in ("info", "base", "bank", "coefficients"):
        if record.get(key) is not None and not isinstance(record[key], dict):
            raise ConfigError(f"{path}: field '{key}' must be an object, received {type(record[key]).__name__}")
    check_calibration((record.get("info") or {}).get("calibration"), f"{path}: field 'info'")
    if "coefficients" in record:
        try:
            Coefficients.from_dict(record["coefficients"])
        except (ValueError, TypeError, RuntimeError) as error:
            raise ConfigError(f"{path}: field 'coefficients': {error}") from None
    return record


def save_model_export(
    model: AestheticModel,
    directory: str | Path,
    export: str,
    save_weights: Callable[[Path], None],
    overwrite_card: bool = False,
) -> Path:
    """Save ``model`` as ``export`` into ``directory`` as a whole or not at all (see `io.folder_transaction`).

    The save replaces every model file of the folder (weights, configs, `personalization.json`, coefficients), so
    nothing of an earlier export stays behind; other files, and a `README.md` a person wrote, are kept. The model is
    validated first (finite weights, coefficients and calibration) and is not modified.
    """
    from . import hub

    state = model.personalization
    if export == "merged":
        check_finite_weights(model, "the model to save")
    if state is not None and state.coefficients is not None:
        _check_coefficients(state.coefficients, "the model to save")
    with folder_transaction(directory, keep=_not_model_file) as staging:
        if export == "coefficients":
            _write_coefficients_export(model, staging)
        else:
            save_weights(staging)
            model.image_processor.save_pretrained(staging)
            if state is not None:
                write_personalization_file(model, staging, export="merged")
        hub.write_card(hub.model_card(model, export), staging, overwrite=overwrite_card)
    return Path(directory)


def save_coefficients_export(model: AestheticModel, directory: str | Path) -> Path:
    """Write the coefficients-only format of a personalized model into ``directory`` (as one transaction)."""
    return save_model_export(model, directory, "coefficients", save_weights=lambda folder: None)


def _write_coefficients_export(model: AestheticModel, directory: Path) -> Path:
    state = model.personalization
    if state is None or state.coefficients is None or state.bank is None:
        raise ValueError(
            "export='coefficients' needs a personalized model (from personalize() or with_coefficients()); "
            "this model has no coefficients. Use export='merged' to save plain weights"
        )
    base_ref = _reference(
        state.base_source, "base model", "Save it with save_pretrained and load it with from_pretrained, or push it."
    )
    bank_ref = _reference(
        state.bank.source, "bank", "Save it with bank.save_pretrained(...) and load it from there, or push it first."
    )
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
    from . import hub

    path = hub.local_folder(name_or_path, "model")
    if path is not None:
        return path, {"path": str(path.resolve())}
    try:
        folder, commit = hub.download(
            str(name_or_path), list(_SIDE_FILES), revision=revision, token=token, cache_dir=cache_dir
        )
    except (OSError, ValueError) as error:
        raise hub.not_found_locally(str(name_or_path), "model", error) from error
    return folder, {"repo_id": str(name_or_path), "revision": commit}


def _check_reference(reference: Any, field_name: str, where: str) -> dict[str, Any]:
    if reference is None:
        return {}
    if not isinstance(reference, Mapping):
        raise ConfigError(f"{where}: field '{field_name}' must be an object, received {type(reference).__name__}")
    for key in ("path", "repo_id", "revision", "fingerprint", "base_fingerprint"):
        if reference.get(key) is not None and not isinstance(reference[key], str):
            raise ConfigError(f"{where}: field '{field_name}.{key}' must be a string, received {reference[key]!r}")
    tasks = reference.get("tasks")
    if tasks is not None and not (isinstance(tasks, list) and all(isinstance(t, str) for t in tasks)):
        raise ConfigError(f"{where}: field '{field_name}.tasks' must be a list of task names, received {tasks!r}")
    return dict(reference)


def load_coefficients_export(
    model_class: type[AestheticModel], name_or_path: str | Path, config: AestheticConfig, **hub_kwargs: Any
) -> AestheticModel:
    """Resolve a coefficients-only export: load its base and bank, check fingerprints, merge."""
    folder, source = resolve_model_files(name_or_path, **hub_kwargs)
    where = f"{folder / 'config.json'}"
    base_ref = _check_reference(config.base_model, "base_model", where)
    bank_ref = _check_reference(config.bank, "bank", where)
    base_location = base_ref.get("path") or base_ref.get("repo_id")
    bank_location = bank_ref.get("path") or bank_ref.get("repo_id")
    if not base_location or not bank_location:
        raise ConfigError(
            f"{where} must reference a base model and a bank (fields base_model and bank, each with a path or a "
            f"repo_id); found base_model {base_ref}, bank {bank_ref}"
        )
    token, cache_dir = hub_kwargs.get("token"), hub_kwargs.get("cache_dir")
    try:
        base = model_class.from_pretrained(
            base_location, revision=base_ref.get("revision"), token=token, cache_dir=cache_dir
        )
    except (OSError, ValueError) as error:
        raise ValueError(f"{name_or_path}: cannot load its base model {base_location!r}: {error}") from error
    if not fingerprint_matches(base, base_ref.get("fingerprint"), where):
        raise FingerprintMismatchError(
            f"{name_or_path} was personalized from a base with fingerprint {base_ref.get('fingerprint')}, but "
            f"{base_location!r} now has another fingerprint: refusing to build a different model"
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
    bank.check_base(base)
    coefficients = Coefficients.load(folder / COEFFICIENTS_FILE)
    _check_coefficients(coefficients, str(folder / COEFFICIENTS_FILE))
    record = read_personalization_file(folder) or {}
    # The base was loaded for this merge alone: merged into in place, tensor by tensor (one model in memory).
    model = base._personalized(bank, coefficients, record.get("info"), in_place=True)
    check_finite_weights(model, f"{folder / COEFFICIENTS_FILE} merged into its base")
    processor = load_image_processor(folder)
    if processor is not None:
        model.image_processor = processor
    model.source = source
    return model
