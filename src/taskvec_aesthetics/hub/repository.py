"""The Hugging Face Hub, generically: find a folder or repository, download files, push a folder.

Like `huggingface_hub.ModelHubMixin`, this module knows nothing of what it moves: [`HubMixin`] gives every class
that can save itself into a folder and render its own card (`generate_model_card`) one `push_to_hub`. It imports
nothing of the library above it.

Cards are rendered and written by `hub.cards`.
"""

from __future__ import annotations

import difflib
import logging
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol

from huggingface_hub import CommitInfo, HfApi, ModelCard, snapshot_download
from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HFValidationError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import repo_folder_name
from huggingface_hub.utils import validate_repo_id

from ..constants import CARD_FILE, LIBRARY_NAME
from ..errors import FolderNotFoundError
from .cards import is_generated_card, write_card
from .references import Reference, publishing

__all__ = [
    "HubMixin",
    "download",
    "is_local",
    "local_folder",
    "locate",
    "not_found_locally",
    "push_folder",
]

logger = logging.getLogger(__name__)


# -- downloads -----------------------------------------------------------------------------------------------------
def is_local(name_or_path: str | Path) -> bool:
    """True when ``name_or_path`` is an existing local folder (otherwise it is taken as a Hub repo id)."""
    return Path(name_or_path).is_dir()


def local_folder(name_or_path: str | Path, what: str) -> Path | None:
    """``name_or_path`` as a local folder; None when it names a Hub repository instead.

    Raises:
        [`FolderNotFoundError`]: it is written as a local path (absolute, starting with `.` or `~`, with more than
            one `/`, or not a valid repo id) or names a file, but no such folder exists.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    text = str(name_or_path)
    if path.exists() or path.is_absolute() or text.startswith((".", "~")) or "\\" in text or not _is_repo_id(text):
        raise FolderNotFoundError(f"{what} folder not found: {_no_folder(text)}, and it is not a Hub repo id")
    return None


#: How long `locate` waits for the Hub's answer: one request, no retries.
PROBE_TIMEOUT_S = 3.0


def locate(
    name_or_path: str | Path,
    what: str,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
) -> Path | None:
    """``name_or_path`` as a local folder, or None for a Hub repository that exists (or is cached, offline).

    A name that is neither fails at once, naming both what was tried: one quick request asks the Hub whether the
    repository exists (no retries, a few seconds at most when the Hub cannot be reached), and with `HF_HUB_OFFLINE=1`
    (or ``local_files_only``) only the local Hub cache is looked at.

    Raises:
        [`FolderNotFoundError`]: no such folder, and no such Hub repository (or revision), or the Hub could not be
            reached and the repository is not in the cache.
    """
    local = local_folder(name_or_path, what)
    if local is not None:
        return local
    name = str(name_or_path)
    cached = _in_cache(name, cache_dir)
    if local_files_only or hf_constants.is_offline_mode():
        if cached:
            return None
        why = "local_files_only=True" if local_files_only else "offline: HF_HUB_OFFLINE is set"
        raise FolderNotFoundError(
            f"{what} folder not found: {_no_folder(name)}, and no Hub repository of that name in the local Hub cache "
            f"({why})"
        )
    try:
        HfApi(token=token).repo_info(name, revision=revision, timeout=PROBE_TIMEOUT_S)
    except RepositoryNotFoundError:
        raise FolderNotFoundError(
            f"{what} folder not found: {_no_folder(name)}, and no Hub repository of that name"
        ) from None
    except RevisionNotFoundError:
        raise FolderNotFoundError(
            f"{what} not found: the Hub repository {name!r} has no revision {revision!r}"
        ) from None
    except GatedRepoError:
        return None  # it exists: the download says what access it needs
    except Exception as error:  # noqa: BLE001 (refused, DNS, timeout, proxy: any failure means no answer)
        if cached:
            logger.warning("The Hub could not be reached (%s); loading %s from the local Hub cache", error, name)
            return None
        raise FolderNotFoundError(
            f"{what} folder not found: {_no_folder(name)}, and the Hub could not be reached to look for a repository "
            f"of that name ({type(error).__name__}: {error})"
        ) from None
    return None


def _is_repo_id(text: str) -> bool:
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def _in_cache(repo_id: str, cache_dir: str | Path | None) -> bool:
    """Whether the Hub cache holds a snapshot of the model repository ``repo_id``."""
    snapshots = Path(cache_dir or hf_constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model")
    return (snapshots / "snapshots").is_dir() and any((snapshots / "snapshots").iterdir())


def _no_folder(text: str) -> str:
    """ "no folder 'x' here", with the closest existing folder when there is one (a typo is likelier than a repo)."""
    path = Path(text).expanduser()
    parent, missing = path.parent, path.name
    while not parent.is_dir() and parent != parent.parent:  # the deepest folder that exists
        parent, missing = parent.parent, parent.name
    try:
        siblings = [child.name for child in parent.iterdir() if child.is_dir()]
    except OSError:
        siblings = []
    close = difflib.get_close_matches(missing, siblings, n=1)
    if not close:
        return f"no folder {text!r} here"
    candidate = parent / close[0]
    whole = candidate / path.relative_to(parent / missing)  # the same path below the mistyped folder
    suggestion = whole if whole.is_dir() else candidate
    return f"no folder {text!r} here (did you mean {str(suggestion)!r}?)"


def not_found_locally(name: str, what: str, error: Exception) -> FolderNotFoundError:
    """The error for a name that is neither a local folder nor a Hub repository that could be loaded."""
    return FolderNotFoundError(
        f"{what} folder not found: {_no_folder(name)}, and as a Hub repo id it could not be loaded: {error}"
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
    folder = Path(
        snapshot_download(repo_id, revision=revision, allow_patterns=list(filenames), token=token, cache_dir=cache_dir)
    )
    return folder, folder.name  # snapshots are cached under their commit id


# -- pushes --------------------------------------------------------------------------------------------------------
def push_folder(
    write: Callable[[Path, str], None],
    repo_id: str,
    *,
    what: str,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    keep_remote_card: bool = True,
    delete_patterns: Sequence[str] = (),
) -> CommitInfo:
    """Upload a folder in one commit: create the repo (and branch) if needed, stage with ``write`` and commit.

    Args:
        write: `write(folder, repo_id)` fills an empty staging folder (``repo_id`` as the Hub resolved it); it runs
            inside [`references.publishing`], so the references it writes name no local path.
        repo_id: the repository, created if missing.
        what: what is pushed, for the default commit message and the log.
        private: create the repository as private (an existing one keeps its visibility).
        token: Hub token; by default the stored one.
        revision: branch to push to (created from `main` if missing).
        commit_message: message of the commit.
        keep_remote_card: keep a `README.md` on the Hub that a person wrote (a generated one is replaced).
        delete_patterns: files of the repository the push replaces (stale files of an earlier push go away).
    """
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    if revision not in (None, "main"):
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    ignore = [CARD_FILE] if keep_remote_card and _remote_card_is_users(api, repo_id, revision) else None
    if ignore:
        logger.info("Keeping the user-written %s of %s (pass overwrite_card=True to replace it)", CARD_FILE, repo_id)
    with tempfile.TemporaryDirectory(prefix="taskvec-push-") as staging:
        with publishing():  # nothing of this machine (a local path) goes into what is pushed
            write(Path(staging), repo_id)
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=staging, revision=revision, ignore_patterns=ignore,
            delete_patterns=list(delete_patterns), commit_message=commit_message or f"Upload {what} with {LIBRARY_NAME}",
        )  # fmt: skip
    logger.info("Pushed %s to %s", what, commit.commit_url)
    return commit


def _remote_card_is_users(api: HfApi, repo_id: str, revision: str | None) -> bool:
    try:
        path = api.hf_hub_download(repo_id, CARD_FILE, revision=revision)
    except EntryNotFoundError:
        return False
    return not is_generated_card(Path(path).read_text(encoding="utf-8"))


class _Pushable(Protocol):
    # What `HubMixin.push_to_hub` uses of the class it is mixed into; the two methods take each class's own options.
    source: Reference | None

    @property
    def hub_replaces(self) -> tuple[str, ...]: ...
    def hub_description(self, **options: Any) -> str: ...
    def save_pretrained(self, *args: Any, **kwargs: Any) -> object: ...
    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard | str: ...


class HubMixin:
    """`push_to_hub` for a class that saves itself into a folder and renders its own card.

    The class provides `save_pretrained(folder, **options)`, `generate_model_card(repo_id=..., license=...,
    **options)` and a `source` attribute (a [`Reference`]); it names what it is in `hub_name` (or
    `hub_description(**options)`) and the files a push replaces in `hub_replaces`. `push_to_hub(..., **options)`
    passes ``options`` to both.
    """

    hub_name: ClassVar[str] = "folder"
    hub_replaces: ClassVar[tuple[str, ...]] = ()
    source: Reference | None

    def hub_description(self, **options: Any) -> str:
        """What a push of this object with ``options`` uploads, in words (the default commit message names it)."""
        return self.hub_name

    def push_to_hub(
        self: _Pushable,
        repo_id: str,
        *,
        private: bool | None = None,
        token: str | bool | None = None,
        revision: str | None = None,
        commit_message: str | None = None,
        overwrite_card: bool = False,
        license: str | None = None,
        card: str | None = None,
        **options: Any,
    ) -> CommitInfo:
        """Save with the card and upload to a Hub repository (created if missing) in one commit.

        Afterwards `self.source` is a [`Reference`] to the repository at the new commit, so that what is built from
        this object (a personalized model, a bank) refers to it by repo id and pinned revision.

        Args:
            repo_id: `"user/name"` (or `"name"` in your namespace).
            private: create the repository as private (an existing repository keeps its visibility).
            token: Hub token; by default the stored one.
            revision: branch to push to (created from `main` if missing).
            commit_message: message of the commit.
            overwrite_card: replace a `README.md` on the Hub that a person wrote (a generated card is always updated).
            license: `license` of the card metadata (default `other`).
            card: markdown to upload as `README.md` instead of the generated card.

        Returns:
            `huggingface_hub.CommitInfo`: the commit (a `str` holding its url; `.oid` is the commit sha).
        """

        def write(folder: Path, resolved_repo_id: str) -> None:
            self.save_pretrained(folder, **options)
            text = card or self.generate_model_card(repo_id=resolved_repo_id, license=license, **options)
            write_card(text, folder, overwrite=True)

        commit = push_folder(
            write,
            repo_id,
            what=self.hub_description(**options),
            private=private,
            token=token,
            revision=revision,
            commit_message=commit_message,
            keep_remote_card=card is None and not overwrite_card,
            delete_patterns=self.hub_replaces,
        )
        self.source = Reference(repo_id=commit.repo_url.repo_id, revision=commit.oid)
        return commit
