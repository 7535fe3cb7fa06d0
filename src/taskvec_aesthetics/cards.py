"""What the library's model cards share: the paper, metadata defaults, and how numbers and references are shown.

Each class renders its own card (`AestheticModel.generate_model_card`, `TaskVectorBank.generate_model_card`) from a
template of `hub_cards/` with [`hub.render_card`]; this module holds the pieces they have in common.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .constants import LIBRARY_NAME
from .references import Reference

__all__ = [
    "DEFAULT_LICENSE",
    "LIBRARY_NAME",
    "METRIC_NAMES",
    "PAPER",
    "bar_chart",
    "cell",
    "count",
    "number",
    "reference_row",
    "title",
]

#: The `license` of a card unless one is given: the weights derive from research databases with their own terms.
DEFAULT_LICENSE = "other"
PAPER = (
    "Yun, J. and Choo, J. Scaling Up Personalized Image Aesthetic Assessment via Task Vector Customization. ECCV 2024."
)
METRIC_NAMES = {"srocc": "SROCC", "plcc": "PLCC", "plcc_logistic": "PLCC (logistic)", "krcc": "KRCC",
                "pairwise_accuracy": "Pairwise accuracy"}  # fmt: skip
_BAR_EIGHTHS = " ▏▎▍▌▋▊▉"


def title(repo_id: str | None, default: str) -> str:
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
        "load_id": reference.repo_id if reference.on_hub else "path/to/folder",
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
