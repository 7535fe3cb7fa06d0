"""Bank production: base models from pretrained encoders, and banks from fine-tuning runs of one base."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from transformers import AutoConfig, AutoImageProcessor, AutoModel

from ..efficientnet_lite import EfficientNetLiteModel
from ..errors import InputError, MissingFileError
from ..modeling import AestheticModel
from ..processing import default_image_processor
from ..task_vectors.bank import TaskVectorBank
from ..task_vectors.bank_files import model_weights
from ..task_vectors.fingerprint import FingerprintMismatchError, model_fingerprint
from ..task_vectors.task_vector import TaskVector
from ..utils.io import read_json
from .fine_tuning import MODEL_DIR, RESULT_FILE, load_model_dir, save_model_dir

__all__ = ["build_bank", "init_base", "LITE0_IMAGENET"]

logger = logging.getLogger(__name__)

#: Name that `init_base` resolves to our converted ImageNet EfficientNet-Lite0.
LITE0_IMAGENET = "efficientnet-lite0-imagenet"


def build_bank(
    run_dirs: Sequence[str | Path],
    base_model: AestheticModel | str | Path,
    *,
    storage_dtype: str = "float32",
    save_directory: str | Path | None = None,
) -> TaskVectorBank:
    """Build a task-vector bank from fine-tuning runs (folders written by `finetune`) of one base model.

    Each task is named after its database (else its run folder) and carries the database, kind, score range,
    number of images, licence, citation and final evaluation metrics. Parameters no run changed (a frozen prefix)
    are left out. With `save_directory`, the bank is streamed there (see `TaskVectorBank.save_finetuned`): one run is
    read at a time, its task vector written and freed, so the peak is about the base plus two models whatever the
    number of runs; the bank returned reads its task files when used. Without it, the bank is built in memory.

    Raises:
        `FingerprintMismatchError`: a run was fine-tuned from another base model.
    """
    base = load_model_dir(base_model, "a base model")
    if not run_dirs:
        raise InputError("build_bank needs at least one run folder, received none")
    fingerprint = model_fingerprint(base)
    runs: dict[str, Path] = {}
    metadata: dict[str, dict[str, Any]] = {}
    for run in map(Path, run_dirs):  # every run is checked before any model is read
        result = read_json(run / RESULT_FILE, f"a fine-tuning result ({RESULT_FILE})")
        recorded = (result.get("base") or {}).get("fingerprint")
        if recorded != fingerprint:
            raise FingerprintMismatchError(
                f"run {run} was fine-tuned from a base with fingerprint {recorded}, but the given base has fingerprint "
                f"{fingerprint}; build the bank on the base model the runs started from"
            )
        spec = result.get("database") or {}
        name = spec.get("name") or run.name
        if name in runs:
            raise InputError(f"two runs give task {name!r} (the second is {run}); a bank holds one run per task")
        if not (run / MODEL_DIR / "config.json").is_file():
            raise MissingFileError(
                f"expected the fine-tuned model of run {run} (a folder with config.json) at {run / MODEL_DIR}"
            )
        runs[name] = run
        metadata[name] = {
            "database": spec.get("name"),
            "kind": spec.get("kind"),
            "score_range": result.get("score_range"),
            "num_images": result.get("num_images"),
            "licence": spec.get("licence"),
            "citation": spec.get("citation"),
            "metrics": result.get("metrics") or {},
        }
        logger.info("Task %s from %s: %s", name, run, metadata[name]["metrics"])

    def loader(run: Path) -> Callable[[], AestheticModel]:
        return lambda: load_model_dir(run / MODEL_DIR, f"the fine-tuned model of run {run}")

    trainable = {n: list(p.shape) for n, p in base.named_parameters() if p.requires_grad}

    def weights(run: Path) -> Callable[[], Any]:
        # The run's weights file read tensor by tensor (the model itself is never built), else the model.
        return lambda: model_weights(run / MODEL_DIR, trainable) or loader(run)()

    if save_directory is not None:
        return TaskVectorBank.save_finetuned(
            save_directory,
            base,
            {name: weights(run) for name, run in runs.items()},
            metadata=metadata,
            storage_dtype=storage_dtype,
        )
    # One fine-tuned model in memory at a time: only its task vector is kept.
    vectors = {name: TaskVector.from_models(base, loader(run)()) for name, run in runs.items()}
    return TaskVectorBank.from_finetuned(base, vectors, metadata=metadata, storage_dtype=storage_dtype)


def _load_encoder(encoder: str) -> tuple[Any, Any]:
    """A pretrained vision encoder (the vision tower of a composite checkpoint) and its image processor, if any."""
    if encoder == LITE0_IMAGENET:
        return EfficientNetLiteModel.from_lite0_imagenet(), None
    try:
        config = AutoConfig.from_pretrained(encoder)
    except OSError as error:
        raise MissingFileError(
            f"cannot load encoder {encoder!r}: expected a local encoder folder, a Hub id or {LITE0_IMAGENET!r} ({error})"
        ) from None
    vision_config = getattr(config, "vision_config", None) or config
    model = AutoModel.from_pretrained(encoder, config=vision_config)
    try:
        processor = AutoImageProcessor.from_pretrained(encoder)
    except (OSError, ValueError):
        logger.info("%s has no image processor; using the default one for %s", encoder, vision_config.model_type)
        processor = None
    return model.eval(), processor


def init_base(
    encoder: str | Path,
    *,
    seed: int = 0,
    image_size: int | None = None,
    save_directory: str | Path | None = None,
    **config_kwargs: Any,
) -> AestheticModel:
    """A base model: a pretrained encoder plus the paper's score head, initialised with `seed`.

    Args:
        encoder: a local encoder folder, a Hub id (the vision tower of a CLIP / SigLIP checkpoint is taken), or
            `"efficientnet-lite0-imagenet"` (our converted ImageNet weights).
        seed: seed of the head's initialisation.
        image_size: input resolution; only for encoders that accept any size (transformers with a fixed patch grid
            must keep their own).
        save_directory: when given, the model is saved there (`save_pretrained`).
        **config_kwargs: other `AestheticConfig` fields (`score_range`, `head_hidden_size`, ...).
    """
    model, processor = _load_encoder(str(encoder))
    native = getattr(model.config, "image_size", None)
    if image_size is not None and image_size != native:
        if getattr(model.config, "patch_size", None) is not None:
            raise InputError(
                f"{encoder} takes {native} px images (fixed patch grid), received image_size={image_size}"
            )
        processor = default_image_processor(model.config, image_size)
    base = AestheticModel.from_encoder(model, image_processor=processor, seed=seed, **config_kwargs)
    if save_directory is not None:
        save_model_dir(base, Path(save_directory))
    return base
