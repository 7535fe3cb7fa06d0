"""The only module that talks to the Hugging Face Hub: downloads, model cards and pushes.

Cards are rendered offline from the Jinja templates in `hub_cards/` with `huggingface_hub.ModelCard.from_template`.
A card this library generates carries [`GENERATED_CARD_MARKER`]; such a card is rewritten on every save and push,
while a `README.md` without it was written by a person and is kept unless `overwrite_card=True`.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .bank import BANK_CONFIG_FILE
from .errors import FolderNotFoundError
from .io import atomic_path, read_json

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo

    from .bank import TaskVectorBank
    from .coefficients import Coefficients
    from .modeling import AestheticModel

__all__ = [
    "CARD_FILE",
    "GENERATED_CARD_MARKER",
    "LIBRARY_NAME",
    "bank_card",
    "download",
    "is_generated_card",
    "is_local",
    "local_folder",
    "not_found_locally",
    "model_card",
    "push_bank",
    "push_model",
    "push_saved",
    "saved_kind",
    "write_card",
]

logger = logging.getLogger(__name__)

CARD_FILE = "README.md"
#: The first characters of the HTML comment that marks a card as generated (see the templates in `hub_cards/`).
GENERATED_CARD_MARKER = "<!-- taskvec-aesthetics: generated card."
LIBRARY_NAME = "taskvec-aesthetics"
DEFAULT_LICENSE = "other"
TEMPLATES = Path(__file__).parent / "hub_cards"
PAPER = (
    "Yun, J. and Choo, J. Scaling Up Personalized Image Aesthetic Assessment via Task Vector Customization. ECCV 2024."
)
METRIC_NAMES = {"srocc": "SROCC", "plcc": "PLCC", "plcc_logistic": "PLCC (logistic)", "krcc": "KRCC",
                "pairwise_accuracy": "Pairwise accuracy"}  # fmt: skip
# Files a push replaces: stale ones from an earlier push (e.g. a merged export before a coefficients one) go away.
MODEL_PUSH_FILES = [
    "model*.safetensors",
    "model.safetensors.index.json",
    "coefficients.safetensors",
    "personalization.json",
]
BANK_PUSH_FILES = ["task_vectors/*"]
_BAR_EIGHTHS = " ▏▎▍▌▋▊▉"


# -- downloads -----------------------------------------------------------------------------------------------------
def is_local(name_or_path: str | Path) -> bool:
    """True when ``name_or_path`` is an existing local folder (otherwise it is taken as a Hub repo id)."""
    return Path(name_or_path).is_dir()


def local_folder(name_or_path: str | Path, what: str) -> Path | None:
    """``name_or_path`` as a local folder; None when it names a Hub repository instead.

    Raises:
        [`FolderNotFoundError`]: it is written as a local path (absolute, starting with `.` or `~`, or with more than
            one `/`) or names a file, but no such folder exists.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    text = str(name_or_path)
    if path.exists() or path.is_absolute() or text.startswith((".", "~")) or text.count("/") > 1 or "\\" in text:
        raise FolderNotFoundError(f"{what} folder not found: {text!r} is not a folder")
    return None


def not_found_locally(name: str, what: str, error: Exception) -> FolderNotFoundError:
    """The error for a name that is neither a local folder nor a Hub repository that could be loaded."""
    return FolderNotFoundError(
        f"{what} folder not found: {name!r} is not a local folder, and as a Hub repo id it could not be loaded: {error}"
    )


def download(
    repo_id: str,
    filenames: Sequence[str],
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | Path | None = None,
) -> tuple[Path, str]:
    """Download only ``filenames`` of a model repository; return the snapshot folder and the commit it resolved to.

    Pinning the commit lets callers fetch further files of the very same revision. With `HF_HUB_OFFLINE=1` the
    cached snapshot of the revision is used.
    """
    from huggingface_hub import snapshot_download

    folder = Path(
        snapshot_download(repo_id, revision=revision, allow_patterns=list(filenames), token=token, cache_dir=cache_dir)
    )
    return folder, folder.name  # snapshots are cached under their commit id


# -- cards ---------------------------------------------------------------------------------------------------------
def is_generated_card(text: str) -> bool:
    """True when a `README.md` text is a card this library generated (and may therefore regenerate)."""
    return GENERATED_CARD_MARKER in text


def write_card(card: ModelCard | str, directory: str | Path, overwrite: bool = False) -> bool:
    """Write ``card`` as ``directory/README.md`` unless a user-written README is there (and ``overwrite`` is False).

    Returns:
        `bool`: whether the card was written.
    """
    target = Path(directory) / CARD_FILE
    if target.is_file() and not overwrite and not is_generated_card(target.read_text(encoding="utf-8")):
        logger.info("Keeping the user-written %s (pass overwrite_card=True to replace it)", target)
        return False
    text = str(card)
    with atomic_path(target) as tmp:
        tmp.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    return True


def model_card(
    model: AestheticModel, export: str = "merged", repo_id: str | None = None, license: str | None = None
) -> ModelCard:
    """The card of a base model, or of a personalized model saved as ``export`` (`"merged"` or `"coefficients"`).

    Args:
        model: the model the card describes.
        export: how a personalized model is saved; `base_model_relation` is `adapter` for coefficients, `merge`
            for merged weights.
        repo_id: where the card will live (used in the code examples); by default a placeholder folder name.
        license: the `license` metadata (default `other`: the weights derive from research databases).
    """
    if model.personalization is None:
        return _base_card(model, repo_id, license or DEFAULT_LICENSE)
    return _personalized_card(model, export, repo_id, license or DEFAULT_LICENSE)


def bank_card(bank: TaskVectorBank, repo_id: str | None = None, license: str | None = None) -> ModelCard:
    """The card of a task-vector bank: a table of its tasks and their evaluation metrics in `model-index`."""
    location, title = repo_id or "path/to/bank", _title(repo_id, "Task-vector bank")
    results, rows = [], []
    for task in bank.tasks:
        metrics = {k: float(v) for k, v in (task.metrics or {}).items() if isinstance(v, (int, float))}
        task_type = "image-quality-assessment" if task.kind == "iqa" else "image-aesthetic-assessment"
        results += [
            EvalResult(task_type=task_type, dataset_type=task.database or task.name,
                       dataset_name=f"{task.database or task.name} (task {task.name})", metric_type=key,
                       metric_name=METRIC_NAMES.get(key, key), metric_value=value)
            for key, value in metrics.items()
        ]  # fmt: skip
        rows.append({
            "name": task.name, "database": _cell(task.database), "kind": _cell(task.kind),
            "num_images": "–" if task.num_images is None else f"{task.num_images:,}",
            "srocc": _number(metrics.get("srocc")), "plcc": _number(metrics.get("plcc")),
            "licence": _cell(task.licence), "citation": _cell(task.citation),
        })  # fmt: skip
    kinds = {task.kind for task in bank.tasks}
    tags = ["task-vectors", "image-aesthetics", LIBRARY_NAME] + (
        ["image-quality-assessment"] if "iqa" in kinds else []
    )
    data = ModelCardData(
        library_name=LIBRARY_NAME,
        license=license or DEFAULT_LICENSE,
        tags=tags,
        base_model=bank.base.get("repo_id"),
        model_name=title,
        eval_results=results or None,
    )
    values = sum(math.prod(shape) for shape in bank.parameter_shapes.values())
    return ModelCard.from_template(
        data,
        template_path=str(TEMPLATES / "bank.md"),
        title=title,
        location=location,
        tasks=rows,
        task_names=bank.task_names,
        base_ref=_reference(bank.base),
        num_tensors=len(bank.parameter_shapes),
        num_values=_count(values),
        storage_dtype=bank.storage_dtype,
        paper=PAPER,
    )


def _base_card(model: AestheticModel, repo_id: str | None, license: str) -> ModelCard:
    from .fingerprint import model_fingerprint

    location = repo_id or "path/to/model"
    config = model.config
    encoder_type = config.encoder_config.model_type
    tags = ["image-aesthetics", "image-quality-assessment", LIBRARY_NAME, encoder_type]
    data = ModelCardData(library_name=LIBRARY_NAME, license=license, tags=tags)
    return ModelCard.from_template(
        data,
        template_path=str(TEMPLATES / "base_model.md"),
        title=_title(repo_id, "Aesthetic scorer"),
        location=location,
        encoder_type=encoder_type,
        encoder_params=_count(model.encoder.num_parameters()),
        head_params=_count(sum(p.numel() for p in model.head.parameters())),
        feature_dim=model.adapter.feature_dim,
        num_blocks=model.adapter.num_blocks,
        hidden_size=config.head_hidden_size,
        dropout=config.head_dropout,
        num_bins=config.num_bins,
        score_range=config.score_range,
        fingerprint=model_fingerprint(model),
        bank_location=_where(config.bank) if config.bank else None,
        paper=PAPER,
    )


def _personalized_card(model: AestheticModel, export: str, repo_id: str | None, license: str) -> ModelCard:
    location, title = repo_id or "path/to/model", _title(repo_id, "Personalized aesthetic scorer")
    state = model.personalization
    info = dict(state.info or {})
    base_ref = _reference({**(state.base_source or {}), "fingerprint": state.base_fingerprint})
    bank_ref = _reference(state.bank_record() or {})
    holdout = info.get("holdout_srocc")
    results = None
    if isinstance(holdout, (int, float)):
        results = [EvalResult(
            task_type="image-aesthetic-assessment", dataset_type="personal-ratings", dataset_split="cross-validation",
            dataset_name="Own ratings (cross-validated)", metric_type="srocc", metric_name="Cross-validated SROCC",
            metric_value=float(holdout),
        )]  # fmt: skip
    base_repo = (state.base_source or {}).get("repo_id")
    # The Hub links base_model to its page, so a base that is only a local folder is not named in the metadata.
    relation = ("adapter" if export == "coefficients" else "merge") if base_repo else None
    tags = ["image-aesthetics", "personalized", "task-vectors", LIBRARY_NAME]
    data = ModelCardData(
        library_name=LIBRARY_NAME,
        license=license,
        tags=tags,
        base_model=base_repo,
        base_model_relation=relation,
        model_name=title,
        eval_results=results,
    )
    coefficients = state.coefficients
    return ModelCard.from_template(
        data,
        template_path=str(TEMPLATES / "personalized_model.md"),
        title=title,
        location=location,
        export=export,
        base_ref=base_ref,
        bank_ref=bank_ref,
        num_ratings=info.get("num_ratings"),
        num_pairs=info.get("num_pairs"),
        num_holdout=info.get("num_holdout"),
        holdout_srocc=_number(holdout),
        cross_validation=info.get("cross_validation"),
        chosen_step=info.get("chosen_step"),
        calibrated=bool(info.get("calibration")),
        score_range=model.config.score_range,
        granularity=coefficients.granularity if coefficients else None,
        num_groups=len(coefficients.group_names) if coefficients else None,
        coefficient_rows=_coefficient_rows(coefficients) if coefficients else [],
        chart=_chart(coefficients.task_weights()) if coefficients else "",
        paper=PAPER,
    )


def _coefficient_rows(coefficients: Coefficients) -> list[dict[str, str]]:
    values = coefficients.values
    columns = {"mean": values.mean(dim=0), "min": values.min(dim=0).values, "max": values.max(dim=0).values}
    return [
        {"task": name, **{key: f"{float(column[i]):+.3f}" for key, column in columns.items()}}
        for i, name in enumerate(coefficients.task_names)
    ]


def _chart(weights: Mapping[str, float], width: int = 24) -> str:
    """A Unicode bar chart of ``weights``: solid bars for positive values, shaded ones for negative values."""
    scale = max((abs(v) for v in weights.values()), default=0.0) or 1.0
    name_width = max(len(name) for name in weights)
    lines = []
    for name, value in weights.items():
        eighths = round(abs(value) / scale * width * 8)
        bar = ("█" * (eighths // 8) + _BAR_EIGHTHS[eighths % 8].strip()) if value >= 0 else "░" * round(eighths / 8)
        lines.append(f"{name:<{name_width}}  {value:+.3f}  {bar}".rstrip())
    return "\n".join(lines)


def _reference(ref: Mapping[str, Any]) -> dict[str, str]:
    """Location, revision and fingerprint of a base model or bank reference, formatted for a card."""
    fingerprint = ref.get("fingerprint") or ref.get("base_fingerprint")
    revision = ref.get("revision") or "–"
    return {"location": _where(ref), "revision": str(revision), "fingerprint": str(fingerprint or "–")}


def _where(ref: Mapping[str, Any] | None) -> str:
    ref = ref or {}
    return str(ref.get("repo_id") or ref.get("path") or "unknown")


def _title(repo_id: str | None, default: str) -> str:
    return repo_id.rstrip("/").rsplit("/", 1)[-1] if repo_id else default


def _cell(text: Any) -> str:
    """Markdown-table-safe text: no pipes or line breaks; a dash when empty."""
    return " ".join(str(text).replace("|", "\\|").split()) if text not in (None, "") else "–"


def _number(value: Any) -> str:
    return f"{float(value):.3f}" if isinstance(value, (int, float)) else "–"


def _count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


# -- pushes --------------------------------------------------------------------------------------------------------
def push_model(
    model: AestheticModel,
    repo_id: str,
    *,
    export: str = "merged",
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    overwrite_card: bool = False,
    license: str | None = None,
    card: str | None = None,
) -> CommitInfo:
    """Save ``model`` as ``export`` with its card and upload it; afterwards `model.source` names the new commit.

    A coefficients export must reference a base model and a bank on the Hub, so that others can resolve it.
    See [`AestheticModel.push_to_hub`] for the arguments.
    """
    if export not in ("merged", "coefficients"):
        raise ValueError(f"export must be 'merged' or 'coefficients', received {export!r}")
    if export == "coefficients":
        _check_shareable(model)  # before anything is created on the Hub

    def write(folder: Path, repo: str) -> None:
        model.save_pretrained(folder, export=export)
        write_card(card or model_card(model, export, repo, license), folder, overwrite=True)

    what = "model" if model.personalization is None else f"personalized model ({export})"
    previous = model.source
    try:
        commit = _upload(write, repo_id, what=what, private=private, token=token, revision=revision,
                         commit_message=commit_message, keep_remote_card=card is None and not overwrite_card,
                         delete_patterns=MODEL_PUSH_FILES)  # fmt: skip
    finally:
        model.source = previous
    model.source = {"repo_id": commit.repo_url.repo_id, "revision": commit.oid}
    return commit


def push_bank(
    bank: TaskVectorBank,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    overwrite_card: bool = False,
    license: str | None = None,
    card: str | None = None,
) -> CommitInfo:
    """Save ``bank`` with its card and upload it; afterwards `bank.source` names the new commit.

    See [`TaskVectorBank.push_to_hub`] for the arguments.
    """

    def write(folder: Path, repo: str) -> None:
        bank.save_pretrained(folder)
        write_card(card or bank_card(bank, repo, license), folder, overwrite=True)

    previous = bank.source, bank.root
    try:
        commit = _upload(write, repo_id, what="task-vector bank", private=private, token=token, revision=revision,
                         commit_message=commit_message, keep_remote_card=card is None and not overwrite_card,
                         delete_patterns=BANK_PUSH_FILES)  # fmt: skip
    finally:
        # Tasks not read yet stay readable from where they were, not from the deleted staging folder.
        bank.source, bank.root = previous
    bank.source = {"repo_id": commit.repo_url.repo_id, "revision": commit.oid}
    return commit


def saved_kind(path: str | Path) -> str:
    """What a saved folder holds: `"bank"`, `"coefficients"` (a coefficients-only export) or `"model"`."""
    folder = Path(path)
    if (folder / BANK_CONFIG_FILE).is_file():
        return "bank"
    if (folder / "config.json").is_file():
        config = read_json(folder / "config.json", "a model config")
        if config.get("base_model"):
            return "coefficients"
        if any(folder.glob("model*.safetensors")):
            return "model"
    found = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else "no such folder"
    raise ValueError(
        f"{path} is not a saved model or bank: expected bank_config.json, or config.json with model.safetensors or "
        f"coefficients.safetensors; found {found}"
    )


def push_saved(
    path: str | Path,
    repo_id: str,
    *,
    export: str | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    overwrite_card: bool = False,
    license: str | None = None,
) -> CommitInfo:
    """Push a folder written by `save_pretrained`: a base or merged model, a coefficients export or a bank.

    The folder is loaded first (a coefficients export resolves its base and bank, so a broken export is never
    published). A `README.md` the user wrote in the folder is pushed as the card, unless ``overwrite_card``.

    Args:
        path: the saved folder.
        repo_id: the Hub repository (created if missing).
        export: for personalized models, `"merged"` or `"coefficients"`; by default as saved.
        private, token, revision, commit_message, overwrite_card, license: as in [`push_model`].
    """
    kind = saved_kind(path)
    readme = Path(path) / CARD_FILE
    text = readme.read_text(encoding="utf-8") if readme.is_file() else None
    card = text if text is not None and not overwrite_card and not is_generated_card(text) else None
    options = dict(private=private, token=token, revision=revision, commit_message=commit_message,
                   overwrite_card=overwrite_card, license=license, card=card)  # fmt: skip
    if kind == "bank":
        if export is not None:
            raise ValueError(f"{path} is a task-vector bank: export={export!r} applies to personalized models only")
        from .bank import TaskVectorBank

        return push_bank(TaskVectorBank.from_pretrained(path), repo_id, **options)
    from .modeling import AestheticModel

    model = AestheticModel.from_pretrained(path)
    export = export or ("coefficients" if kind == "coefficients" else "merged")
    return push_model(model, repo_id, export=export, **options)


def _check_shareable(model: AestheticModel) -> None:
    state = model.personalization
    if state is None or state.coefficients is None or state.bank is None:
        raise ValueError(
            "export='coefficients' needs a personalized model with its bank (from personalize(), with_coefficients() "
            "or a coefficients export loaded with from_pretrained); this model has none. Push it with export='merged'"
        )
    for what, ref in (("base model", state.base_source), ("bank", state.bank_record())):
        if not (ref or {}).get("repo_id"):
            raise ValueError(
                f"a coefficients export on the Hub must reference its {what} by Hub repo id, but this model's {what} "
                f"is {_where(ref)!r}. Push the base and the bank first (push_to_hub), personalize the pushed or "
                "pulled objects, or push with export='merged'"
            )


def _upload(
    write: Callable[[Path, str], None],
    repo_id: str,
    *,
    what: str,
    private: bool | None,
    token: str | bool | None,
    revision: str | None,
    commit_message: str | None,
    keep_remote_card: bool,
    delete_patterns: list[str],
) -> CommitInfo:
    """Create the repo (and branch) if needed, stage the files with ``write(folder, repo_id)`` and commit them."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    if revision not in (None, "main"):
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    ignore = [CARD_FILE] if keep_remote_card and _remote_card_is_users(api, repo_id, revision) else None
    if ignore:
        logger.info("Keeping the user-written %s of %s (pass overwrite_card=True to replace it)", CARD_FILE, repo_id)
    with tempfile.TemporaryDirectory(prefix="taskvec-push-") as staging:
        write(Path(staging), repo_id)
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=staging, revision=revision, ignore_patterns=ignore,
            delete_patterns=delete_patterns, commit_message=commit_message or f"Upload {what} with {LIBRARY_NAME}",
        )  # fmt: skip
    logger.info("Pushed %s to %s", what, commit.commit_url)
    return commit


def _remote_card_is_users(api: Any, repo_id: str, revision: str | None) -> bool:
    from huggingface_hub.errors import EntryNotFoundError

    try:
        path = api.hf_hub_download(repo_id, CARD_FILE, revision=revision)
    except EntryNotFoundError:
        return False
    return not is_generated_card(Path(path).read_text(encoding="utf-8"))
