"""Model cards: rendering the templates, writing a card without losing a person's own, and the shared pieces.

Each class renders its own card (`AestheticModel.generate_model_card`, `TaskVectorBank.generate_model_card`) from a
template of the top-level `hub_cards/` folder (shipped in the wheel as the `taskvec_aesthetics.hub_cards` package
data) with [`render_card`]. A card this library generates carries [`GENERATED_CARD_MARKER`]; such a card is rewritten
on every save and push, while a `README.md` without it was written by a person and is kept unless
`overwrite_card=True`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from ..constants import CARD_FILE, LIBRARY_NAME
from ..errors import MissingFileError
from ..utils.io import atomic_path
from .references import Reference

__all__ = [
    "DEFAULT_LICENSE",
    "GENERATED_CARD_MARKER",
    "LIBRARY_NAME",
    "METRIC_NAMES",
    "PAPER",
    "bar_chart",
    "card_template",
    "cell",
    "count",
    "is_generated_card",
    "number",
    "reference_row",
    "render_card",
    "card_title",
    "write_card",
]

logger = logging.getLogger(__name__)

#: The first characters of the HTML comment that marks a card as generated (see the templates in `hub_cards/`).
GENERATED_CARD_MARKER = "<!-- taskvec-aesthetics: generated card."
_TEMPLATES_PACKAGE = "taskvec_aesthetics.hub_cards"


#: The `license` of a card unless one is given: the weights derive from research databases with their own terms.
DEFAULT_LICENSE = "other"
PAPER = (
    "Yun, J. and Choo, J. Scaling Up Personalized Image Aesthetic Assessment via Task Vector Customization. ECCV 2024."
)
METRIC_NAMES = {"srocc": "SROCC", "plcc": "PLCC", "plcc_logistic": "PLCC (logistic)", "krcc": "KRCC",
                "pairwise_accuracy": "Pairwise accuracy"}  # fmt: skip
_BAR_EIGHTHS = " ▏▎▍▌▋▊▉"


def card_title(repo_id: str | None, default: str) -> str:
    """The card's title: the repository's name, or ``default`` for a card not (yet) on the Hub."""
    return repo_id.rstrip("/").rsplit("/", 1)[-1] if repo_id else default


def reference_row(reference: Reference | None) -> dict[str, str]:
    """Location, revision and fingerprint of a base model or bank reference, formatted for a card table.

    A card is written to be shared, so a local folder is named as such, never by its path. ``load_id`` is what a
    code example passes to `from_pretrained`: the repo id, or a placeholder for a folder only this machine has.
    """
    reference = reference or Reference()
    return {
        "location": reference.description,
        "load_id": (reference.repo_id if reference.on_hub else None) or "path/to/folder",
        "revision": (reference.revision if reference.on_hub else None) or "–",
        "fingerprint": reference.fingerprint or "–",
    }


def cell(text: Any) -> str:
    """Markdown-table-safe text: no pipes or line breaks; a dash when empty."""
    return " ".join(str(text).replace("|", "\\|").split()) if text not in (None, "") else "–"


def number(value: Any) -> str:
    """A metric with three decimals; a dash when there is none."""
    return f"{float(value):.3f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "–"


def count(n: int) -> str:
    """A parameter count, e.g. `4.01M`."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def bar_chart(weights: Mapping[str, float], width: int = 24) -> str:
    """A Unicode bar chart of ``weights``: solid bars for positive values, shaded ones for negative values."""
    if not weights:
        return ""
    scale = max(abs(v) for v in weights.values()) or 1.0
    name_width = max(len(name) for name in weights)
    lines = []
    for name, value in weights.items():
        eighths = round(abs(value) / scale * width * 8)
        bar = ("█" * (eighths // 8) + _BAR_EIGHTHS[eighths % 8].strip()) if value >= 0 else "░" * round(eighths / 8)
        lines.append(f"{name:<{name_width}}  {value:+.3f}  {bar}".rstrip())
    return "\n".join(lines)


# -- templates -----------------------------------------------------------------------------------------------------
def card_template(name: str) -> str:
    """The text of the card template ``name`` (e.g. `"bank.md"`) of `hub_cards/`."""
    try:
        folder: Any = resources.files(_TEMPLATES_PACKAGE)
    except ModuleNotFoundError:
        # Run from a source checkout (`src/` on the path): the templates are the repository's top-level folder.
        folder = Path(__file__).resolve().parents[3] / "hub_cards"
    template = folder / name
    if not template.is_file():
        raise MissingFileError(f"no card template {name!r} in {folder}")
    return template.read_text(encoding="utf-8")


def render_card(template: str, data: ModelCardData, **values: Any) -> ModelCard:
    """Render the card template ``template`` (a file name in `hub_cards/`) with metadata ``data`` and ``values``."""
    return ModelCard.from_template(data, template_str=card_template(template), **values)


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
