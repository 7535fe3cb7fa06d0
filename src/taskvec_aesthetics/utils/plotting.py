"""Figures, shared: matplotlib imported only when a figure is drawn, and PNGs written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .io import atomic_path

__all__ = ["pyplot", "save_figure"]


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (matplotlib is the optional `demo` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError("figures need matplotlib: pip install 'taskvec-aesthetics[demo]'") from error
    return plt


def save_figure(fig: Any, path: str | Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` atomically, then free it."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    fig.clear()
    pyplot().close(fig)
    return path
