"""Scores of image files as a printed table, a CSV file or a JSON file."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

from ..errors import InputError
from ..utils.io import atomic_path

__all__ = ["write_scores"]


def write_scores(files: Sequence[Path], scores: Sequence[float], output: str | Path | None = None) -> str:
    """Write ``(file, score)`` rows to a `.csv` or `.json` file, or format them as a table when ``output`` is None.

    Returns the table, or a line saying where the scores were written.
    """
    if len(files) != len(scores):
        raise InputError(f"received {len(scores)} scores for {len(files)} files")
    if output is None:
        width = max(len(str(f)) for f in files)
        return "\n".join(
            [f"{'image':<{width}}  score", *(f"{str(f):<{width}}  {s:.4f}" for f, s in zip(files, scores))]
        )
    output = Path(output)
    if output.suffix.lower() == ".json":
        text = json.dumps([{"image": str(f), "score": s} for f, s in zip(files, scores)], indent=2) + "\n"
    elif output.suffix.lower() == ".csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["image", "score"])
        writer.writerows([str(f), f"{s:.6f}"] for f, s in zip(files, scores))
        text = buffer.getvalue()
    else:
        raise InputError(f"--output must end in .csv or .json, received {output.name!r}")
    with atomic_path(output) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return f"wrote {len(files)} scores to {output}"
