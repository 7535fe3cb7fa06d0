"""Saved formats of personalized models: coefficients-only and output-ensemble exports, and the provenance file of
every export.

A coefficients-only export is `config.json` (with the base and bank references and their fingerprints),
`coefficients.safetensors` and `personalization.json`: a few kilobytes that reload into the exact merged model. An
output-ensemble export is the same with `ensemble.safetensors` in place of the coefficients: it reloads into the base
and the bank scoring as the weighed outputs of the task models (`OutputEnsemble`).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..configuration import AestheticConfig
from ..constants import (
    COEFFICIENTS,
    COEFFICIENTS_FILE,
    CONFIG_FILE,
    ENSEMBLE,
    ENSEMBLE_FILE,
    EXPORTS,
    FORMAT_VERSION,
    GENERATION_CONFIG_FILE,
    MANIFEST_FILE,
    MERGED,
    PERSONALIZATION_FILE,
    PREPROCESSOR_FILE,
    WEIGHTS_INDEX_FILE,
)
from ..errors import ConfigError, InputError, IntegrityError, OverwriteError
from ..hub.cards import write_card
from ..hub.references import Reference
from ..hub.repository import download, local_folder, not_found_locally
from ..processing import load_image_processor
from ..task_vectors.bank import TaskVectorBank
from ..task_vectors.coefficients import Coefficients
from ..task_vectors.fingerprint import FingerprintMismatchError, fingerprint_matches
from ..utils.io import atomic_path, folder_transaction, read_json, verify_manifest, write_json, write_manifest
from ..utils.progress import transformers_bars_off
from .output_ensemble import OutputEnsemble
from .report import PersonalizationState, check_calibration

if TYPE_CHECKING:
    from ..modeling import AestheticModel

__all__ = [
    "PersonalizationState",
    "PERSONALIZATION_FILE",
    "SIDE_FILES",
    "save_coefficients_export",
    "load_coefficients_export",
    "write_personalization_file",
    "read_personalization_file",
    "resolve_model_files",
    "save_model_export",
    "resolve_export",
    "check_calibration",
    "check_finite_weights",
]

logger = logging.getLogger(__name__)

# Small files beside a model that are fetched together from the Hub.
SIDE_FILES = (CONFIG_FILE, PREPROCESSOR_FILE, PERSONALIZATION_FILE, COEFFICIENTS_FILE, ENSEMBLE_FILE, MANIFEST_FILE)
# Files a model save owns: a save replaces them all, so nothing of an earlier export of another kind stays behind.
_MODEL_FILES = {CONFIG_FILE, GENERATION_CONFIG_FILE, PREPROCESSOR_FILE, PERSONALIZATION_FILE,
                COEFFICIENTS_FILE, ENSEMBLE_FILE, WEIGHTS_INDEX_FILE, MANIFEST_FILE}  # fmt: skip


def _not_model_file(relative: str) -> bool:
    """Files of a model folder that a model save does not own (a user's notes; the card is checked separately)."""
    return relative not in _MODEL_FILES and not (relative.startswith("model") and relative.endswith(".safetensors"))


#: Largest accepted coefficient magnitude: far beyond any useful mix, far below float32 overflow of merged weights.
MAX_ABS_COEFFICIENT = 1e3


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


def _saved_location(reference: Reference | None, what: str, how: str, export: str = COEFFICIENTS) -> Reference:
    if reference is None or reference.location is None:
        kind = "coefficients" if export == COEFFICIENTS else "an output ensemble"
        raise InputError(f"cannot export {kind}: the {what} has no saved location (path or Hub repo id). {how}")
    return reference


def write_personalization_file(model: AestheticModel, directory: str | Path, export: str) -> Path:
    """Write `personalization.json`: task and group order, granularity, coefficients, fit facts, provenance."""
    if model.personalization is None:
        raise InputError("this model is not personalized: there is nothing to write to personalization.json")
    record = {"format_version": FORMAT_VERSION, **model.personalization.to_record(export)}
    return write_json(Path(directory) / PERSONALIZATION_FILE, record)


def read_personalization_file(folder: str | Path) -> dict[str, Any] | None:
    """The checked content of `personalization.json` in ``folder``, or None when there is none."""
    path = Path(folder) / PERSONALIZATION_FILE
    if not path.is_file():
        return None
    record = read_json(path, "a personalization record")
    for key in ("info", "base", "bank", "coefficients", "ensemble"):
        if record.get(key) is not None and not isinstance(record[key], dict):
            raise ConfigError(f"{path}: field '{key}' must be an object, received {type(record[key]).__name__}")
    check_calibration((record.get("info") or {}).get("calibration"), f"{path}: field 'info'")
    if "coefficients" in record:
        try:
            Coefficients.from_dict(record["coefficients"])
        except (ValueError, TypeError, RuntimeError) as error:
            raise ConfigError(f"{path}: field 'coefficients': {error}") from None
    if "ensemble" in record:
        OutputEnsemble.from_dict(record["ensemble"], f"{path}: field 'ensemble'")
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
    state = model.personalization
    base_path = None if state is None else state.base.path
    if base_path is not None and Path(base_path).resolve() == Path(directory).resolve():
        raise OverwriteError(
            f"cannot save the personalized model into {directory}: that folder holds its base model, which this "
            "save would replace (and every export of it would then refer to another model). Choose another folder"
        )
    check_export_kind(model, export)
    if export == MERGED:
        check_finite_weights(model, "the model to save")
    if state is not None and state.coefficients is not None:
        _check_coefficients(state.coefficients, "the model to save")
    if state is not None and state.ensemble is not None:
        state.ensemble.check("the output ensemble to save")
    with folder_transaction(directory, keep=_not_model_file) as staging:
        if export in (COEFFICIENTS, ENSEMBLE):
            _write_reference_export(model, staging, export)
        else:
            save_weights(staging)
            model.image_processor.save_pretrained(staging)
            if state is not None:
                write_personalization_file(model, staging, export=MERGED)
        written = [path.relative_to(staging).as_posix() for path in staging.rglob("*") if path.is_file()]
        write_manifest(staging, [name for name in written if not _not_model_file(name) and name != MANIFEST_FILE])
        write_card(model.generate_model_card(export=export), staging, overwrite=overwrite_card)
    return Path(directory)


def resolve_export(model: AestheticModel, export: str | None) -> str:
    """The export kind a save or push of ``model`` writes, checked against the model (`check_export_kind`).

    Nothing asked for means `"merged"`, except for a model that scores as an output ensemble: it has no merged
    weights, and its kilobyte export is `"ensemble"`, which it also writes when asked for `"coefficients"` (its
    weights are the coefficients of its task models' scores; it reloads to the same scores either way)."""
    if export is not None and export not in EXPORTS:
        raise InputError(f"export must be one of {EXPORTS}, received {export!r}")
    state = model.personalization
    if state is not None and state.ensemble is not None and export in (None, COEFFICIENTS):
        return ENSEMBLE
    export = export or MERGED
    check_export_kind(model, export)
    return export


def check_export_kind(model: AestheticModel, export: str) -> None:
    """``export`` must fit the model: an output ensemble has no merged weights, and only an output ensemble saves
    as `"ensemble"`."""
    state = model.personalization
    ensemble = state is not None and state.ensemble is not None
    if ensemble and export != ENSEMBLE:
        raise InputError(
            "this model scores as an output ensemble of its task models (the bank's blocks run once per task model): "
            f"it has no merged weights or coefficients to save as export={export!r}. Save it with export='ensemble' "
            "(kilobytes that refer to its base and bank), or personalize with max_scoring_cost=0 for a one-pass model"
        )
    if export == ENSEMBLE and not ensemble:
        kinds = "'coefficients' or 'merged'" if state is not None and state.coefficients is not None else "'merged'"
        raise InputError(
            "export='ensemble' saves a model that scores as an output ensemble (when the 'outputs' candidate wins, "
            f"e.g. with preset='ensemble'); this model is not one. Save it with export={kinds}"
        )


def save_coefficients_export(model: AestheticModel, directory: str | Path) -> Path:
    """Write the coefficients-only format of a personalized model into ``directory`` (as one transaction)."""
    return save_model_export(model, directory, COEFFICIENTS, save_weights=lambda folder: None)


def _write_reference_export(model: AestheticModel, directory: Path, export: str) -> Path:
    """A coefficients or output-ensemble export: the references to the base and the bank, and the small file."""
    state = model.personalization
    small: OutputEnsemble | Coefficients | None = None
    if state is not None:
        small = state.ensemble if export == ENSEMBLE else state.coefficients
    if state is None or state.bank is None or small is None:
        raise InputError(
            "export='coefficients' needs a personalized model (from personalize() or with_coefficients()); "
            "this model has no coefficients. Use export='merged' to save plain weights"
        )
    base_ref = _saved_location(
        state.base,
        "base model",
        "Save it with save_pretrained and load it with from_pretrained, or push it.",
        export,
    )
    bank_ref = _saved_location(
        state.bank_ref,
        "bank",
        "Save it with bank.save_pretrained(...) and load it from there, or push it first.",
        export,
    )
    config = copy.deepcopy(model.config)
    config.base_model = base_ref.to_dict()
    config.bank = {**bank_ref.to_dict(fingerprint_key="base_fingerprint"), "tasks": small.task_names}
    small.save(directory / (ENSEMBLE_FILE if export == ENSEMBLE else COEFFICIENTS_FILE))
    write_personalization_file(model, directory, export=export)
    model.image_processor.save_pretrained(directory)
    with atomic_path(directory / CONFIG_FILE) as tmp:
        tmp.write_text(config.to_json_string(use_diff=False), encoding="utf-8")
    return directory


def resolve_model_files(
    name_or_path: str | Path,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: Any = None,
    subfolder: str | None = None,
) -> tuple[Path, Reference]:
    """The local folder holding a model's small side files (of ``subfolder``), and where the model lives."""
    path = local_folder(name_or_path, "model")
    if path is not None:
        folder = path / subfolder if subfolder else path
        return folder, Reference.local(folder)
    names = [f"{subfolder}/{name}" if subfolder else name for name in SIDE_FILES]
    try:
        snapshot, commit = download(str(name_or_path), names, revision=revision, token=token, cache_dir=cache_dir)
    except (OSError, ValueError) as error:
        raise not_found_locally(str(name_or_path), "model", error) from error
    folder = snapshot / subfolder if subfolder else snapshot
    return folder, Reference(repo_id=str(name_or_path), revision=commit, subfolder=subfolder)


def load_coefficients_export(
    model_class: type[AestheticModel], name_or_path: str | Path, config: AestheticConfig, **hub_kwargs: Any
) -> AestheticModel:
    """Resolve a coefficients-only export (load its base and bank, check fingerprints, merge) or an output-ensemble
    export (the same, with the base scoring as the ensemble of the bank's task models)."""
    folder, source = resolve_model_files(name_or_path, **hub_kwargs)
    verify_manifest(folder)  # every file of the export, before any is used
    where = f"{folder / CONFIG_FILE}"
    base_ref = Reference.from_dict(config.base_model, where, "base_model")
    bank_ref = Reference.from_dict(config.bank, where, "bank", fingerprint_key="base_fingerprint")
    tasks = (config.bank or {}).get("tasks")
    if tasks is not None and not (isinstance(tasks, list) and all(isinstance(t, str) for t in tasks)):
        raise ConfigError(f"{where}: field 'bank.tasks' must be a list of task names, received {tasks!r}")
    base_location = base_ref.location if base_ref else None
    bank_location = bank_ref.location if bank_ref else None
    if base_ref is None or bank_ref is None or not base_location or not bank_location:
        raise ConfigError(
            f"{where} must reference a base model and a bank (fields base_model and bank, each with a path or a "
            f"repo_id); found base_model {config.base_model}, bank {config.bank}"
        )
    if not source.is_local:  # a path in a downloaded file names a folder of the machine that wrote it, not this one
        for what, field, reference in (("base model", "base_model", base_ref), ("bank", "bank", bank_ref)):
            if reference is not None and reference.is_local:
                raise ConfigError(
                    f"{source}: a coefficients export on the Hub must reference its {what} by Hub repo id, but its "
                    f"config.json field '{field}' holds the local path {reference.path!r}; refusing to load it"
                )
    token, cache_dir = hub_kwargs.get("token"), hub_kwargs.get("cache_dir")
    try:
        with transformers_bars_off():  # a load on the user's behalf: their own load shows the progress
            base = model_class.from_pretrained(
                base_location, **base_ref.load_kwargs(), token=token, cache_dir=cache_dir
            )
    except (OSError, ValueError) as error:
        raise InputError(f"{name_or_path}: cannot load its base model {base_location!r}: {error}") from error
    if not fingerprint_matches(base, base_ref.fingerprint, where):
        raise FingerprintMismatchError(
            f"{name_or_path} was personalized from a base with fingerprint {base_ref.fingerprint}, but "
            f"{base_location!r} now has another fingerprint: refusing to build a different model"
        )
    try:
        bank = TaskVectorBank.from_pretrained(
            bank_location,
            revision=None if bank_ref.is_local else bank_ref.revision,
            tasks=tasks,
            token=token,
            cache_dir=cache_dir,
        )
    except (OSError, ValueError) as error:
        raise InputError(f"{name_or_path}: cannot load its bank {bank_location!r}: {error}") from error
    bank.check_base(base)
    if (folder / ENSEMBLE_FILE).is_file():
        ensemble = OutputEnsemble.load(folder / ENSEMBLE_FILE)
        record = read_personalization_file(folder) or {}
        # Nothing to merge: the base scores as the ensemble of the bank's task models (its cost restated).
        model = base.with_output_ensemble(bank, ensemble, record.get("info"), in_place=True)
    else:
        coefficients = Coefficients.load(folder / COEFFICIENTS_FILE)
        _check_coefficients(coefficients, str(folder / COEFFICIENTS_FILE))
        record = read_personalization_file(folder) or {}
        # The base was loaded for this merge alone: merged into in place, tensor by tensor (one model in memory).
        model = base.with_coefficients(bank, coefficients, record.get("info"), in_place=True)
        check_finite_weights(model, f"{folder / COEFFICIENTS_FILE} merged into its base")
    processor = load_image_processor(folder)
    if processor is not None:
        model.image_processor = processor
    model.source = source
    return model
