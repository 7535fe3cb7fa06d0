"""The library's exceptions: one base class, so a caller (the command line) can catch every library error at once.

Each specific error also derives from the built-in exception a caller would expect (`ValueError`,
`FileNotFoundError`), so code written against those keeps working.
"""

from __future__ import annotations

__all__ = [
    "TaskvecAestheticsError",
    "AnalysisError",
    "ConfigError",
    "FolderNotFoundError",
    "IntegrityError",
    "OverwriteError",
    "UnsafePathError",
]


class TaskvecAestheticsError(Exception):
    """Base class of every error this library raises about its input: files, folders, configs, ratings, images."""


class ConfigError(TaskvecAestheticsError, ValueError):
    """A saved config (`bank_config.json`, `config.json`, `personalization.json`, ...) is malformed.

    The message names the file and the field.
    """


class FolderNotFoundError(TaskvecAestheticsError, FileNotFoundError):
    """A local folder that should hold a model or a bank does not exist."""


class IntegrityError(TaskvecAestheticsError, ValueError):
    """A file's content differs from what its folder recorded (checksum or size), or it is damaged."""


class UnsafePathError(TaskvecAestheticsError, ValueError):
    """A file entry of a config is not a plain relative path inside its folder (`..`, absolute, or a symlink out)."""


class OverwriteError(TaskvecAestheticsError, FileExistsError):
    """A save would replace something it must not: e.g. a personalized model saved over the base it refers to."""


class AnalysisError(TaskvecAestheticsError, ValueError):
    """An analysis got input it cannot analyse (a granularity, an order of tasks, a result without the numbers)."""
