"""The only module that talks to the Hugging Face Hub: downloads (and, later, cards and pushes)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

__all__ = ["download", "is_local"]

logger = logging.getLogger(__name__)


def is_local(name_or_path: str | Path) -> bool:
    """True when ``name_or_path`` is an existing local folder (otherwise it is taken as a Hub repo id)."""
    return Path(name_or_path).is_dir()


def download(
    repo_id: str,
    filenames: Sequence[str],
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | Path | None = None,
) -> tuple[Path, str]:
    """Download only ``filenames`` of a model repository; return the snapshot folder and the commit it resolved to.

    Pinning the commit lets callers fetch further files of the very same revision.
    """
    from huggingface_hub import HfApi, snapshot_download

    commit = revision
    if commit is None or len(commit) != 40:
        commit = HfApi().model_info(repo_id, revision=revision, token=token).sha or revision
    folder = snapshot_download(
        repo_id, revision=commit, allow_patterns=list(filenames), token=token, cache_dir=cache_dir
    )
    return Path(folder), str(commit)
