"""`Reference`: where a base model or a bank lives, and the fingerprint that identifies the weights meant.

Every pointer to a base model or a bank (where a model or bank was loaded from, the base a bank was built on, the
base and bank of a personalized model) is one frozen `Reference`. Files hold it as a JSON object; in memory it is
never a dict.

A local path means something on this machine only: files written for the Hub (inside [`publishing`]) record
references without it, by Hub id and fingerprint alone.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, InputTypeError

__all__ = ["Reference", "publishing"]

_FIELDS = ("path", "repo_id", "revision", "subfolder")
_PUBLISHING = contextvars.ContextVar("taskvec_aesthetics_publishing", default=False)


@contextlib.contextmanager
def publishing() -> Iterator[None]:
    """While active, every reference written to a file leaves out its local path (what is pushed leaves the machine).

    A reference to a local folder is then recorded by its fingerprint alone, one to a Hub repository by repo id,
    revision and fingerprint.
    """
    token = _PUBLISHING.set(True)
    try:
        yield
    finally:
        _PUBLISHING.reset(token)


@dataclass(frozen=True)
class Reference:
    """A local folder, or a Hub repository at a revision, optionally a subfolder of it, plus a fingerprint.

    Precedence, the one rule every loader follows: a local `path`, when recorded, is where the object is loaded
    from; otherwise `repo_id` at `revision`. A reference may have no location at all (an object that was never saved
    or loaded): it then only identifies weights by `fingerprint`.

    Args:
        path: an absolute local folder.
        repo_id: a Hub repository id.
        revision: the Hub revision (a commit sha once resolved); only with `repo_id`.
        subfolder: a folder inside the repository (Hub references; a local path already names its folder).
        fingerprint: the fingerprint of the weights meant (for a bank's reference: of the base it was built on).
    """

    path: str | None = None
    repo_id: str | None = None
    revision: str | None = None
    subfolder: str | None = None
    fingerprint: str | None = None

    def __post_init__(self) -> None:
        for name in (*_FIELDS, "fingerprint"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise InputTypeError(f"Reference.{name} must be a string or None, received {value!r}")
            if value == "":
                object.__setattr__(self, name, None)

    # -- where -----------------------------------------------------------------------------------------------------
    @classmethod
    def local(cls, folder: str | Path, fingerprint: str | None = None) -> Reference:
        """A reference to a local folder, recorded as its absolute path."""
        return cls(path=str(Path(folder).resolve()), fingerprint=fingerprint)

    @property
    def location(self) -> str | None:
        """What a loader opens: the local path if recorded, else the repo id (see the precedence rule above)."""
        return self.path or self.repo_id

    @property
    def is_local(self) -> bool:
        return self.path is not None

    @property
    def on_hub(self) -> bool:
        """True when others can resolve it: it names a Hub repository (and no local folder takes precedence)."""
        return self.path is None and self.repo_id is not None

    def with_fingerprint(self, fingerprint: str | None) -> Reference:
        return dataclasses.replace(self, fingerprint=fingerprint)

    def published(self) -> Reference:
        """This reference as others can read it: without the local path (a Hub repo id, if any, stays)."""
        return dataclasses.replace(self, path=None) if self.path is not None else self

    @property
    def description(self) -> str:
        """Where it lives, in words fit to publish: the Hub id (and subfolder), "a local folder" (never its path), or
        "not on the Hub"."""
        if self.on_hub:
            return f"{self.repo_id}/{self.subfolder}" if self.subfolder else f"{self.repo_id}"
        return "a local folder" if self.is_local else "not on the Hub"

    def load_kwargs(self) -> dict[str, str]:
        """The `revision` and `subfolder` to pass to a `from_pretrained` of ``location`` (only those recorded)."""
        if self.is_local:
            return {}
        return {k: v for k, v in (("revision", self.revision), ("subfolder", self.subfolder)) if v is not None}

    def __str__(self) -> str:
        if self.path is not None:
            return self.path
        if self.repo_id is None:
            return f"<unsaved, fingerprint {self.fingerprint}>"
        where = self.repo_id + (f"/{self.subfolder}" if self.subfolder else "")
        return where + (f"@{self.revision}" if self.revision else "")

    # -- on disk -----------------------------------------------------------------------------------------------------
    def to_dict(self, fingerprint_key: str = "fingerprint") -> dict[str, str]:
        """The JSON object of this reference (only the fields recorded); ``fingerprint_key`` names the fingerprint.

        Inside [`publishing`] the local path is left out.
        """
        reference = self.published() if _PUBLISHING.get() else self
        data = {name: getattr(reference, name) for name in _FIELDS if getattr(reference, name) is not None}
        if self.fingerprint is not None:
            data[fingerprint_key] = self.fingerprint
        return data

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any] | None,
        where: str = "a saved file",
        field: str = "reference",
        fingerprint_key: str = "fingerprint",
    ) -> Reference | None:
        """A reference from its JSON object (None stays None); other keys of the object are ignored.

        Raises:
            [`ConfigError`]: the object or one of its fields has the wrong type (``where`` and ``field`` name it).
        """
        if data is None:
            return None
        if isinstance(data, Reference):
            return data
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: field '{field}' must be an object, received {type(data).__name__}")
        values = {}
        for key, name in (*((k, k) for k in _FIELDS), (fingerprint_key, "fingerprint")):
            value = data.get(key)
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{where}: field '{field}.{key}' must be a string, received {value!r}")
            values[name] = value
        return cls(**values)
