"""The library's exceptions: one base class, so a caller (the command line) can catch every library error at once.

Each specific error also derives from the built-in exception a caller would expect (`ValueError`,
`FileNotFoundError`), so code written against those keeps working.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .data.records import Issue

__all__ = [
    "TaskvecAestheticsError",
    "AnalysisError",
    "ConfigError",
    "DatabaseFormatError",
    "DivergedError",
    "FingerprintMismatchError",
    "FolderNotFoundError",
    "ImageTooLargeError",
    "InputError",
    "InputTypeError",
    "IntegrityError",
    "MissingFileError",
    "NotAFolderError",
    "OverwriteError",
    "PhotoError",
    "UnsafePathError",
]

#: How many of a database's invalid rows a `DatabaseFormatError` lists.
_SHOWN_ISSUES = 5


class TaskvecAestheticsError(Exception):
    """Base class of every error this library raises about its input: files, folders, configs, ratings, images."""


class InputError(TaskvecAestheticsError, ValueError):
    """An argument or an input value is not one the function accepts: a setting out of its range, ratings that
    do not match their images, an unknown name. The message names what was received and what was expected."""


class InputTypeError(TaskvecAestheticsError, TypeError):
    """An argument has a type the function does not accept; the message names both."""


class MissingFileError(TaskvecAestheticsError, FileNotFoundError):
    """A file that should exist (a config, weights, a ratings file, an image) is not there."""


class DivergedError(TaskvecAestheticsError, FloatingPointError):
    """A fit produced a non-finite value (a gradient, a loss); a lower learning rate usually helps."""


class NotAFolderError(TaskvecAestheticsError, NotADirectoryError):
    """A path that should be a folder (to save into, or to read a model from) is a file."""


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


class FingerprintMismatchError(TaskvecAestheticsError, ValueError):
    """A bank or export was built on a different base model than the one it is applied to."""


class DatabaseFormatError(TaskvecAestheticsError, ValueError):
    """A database's files are missing, malformed, or refer to images that do not exist.

    Attributes:
        issues (`list[Issue]`): every invalid row or missing image found (empty when a whole file is missing).
    """

    def __init__(self, message: str, issues: Sequence[Issue] = ()) -> None:
        super().__init__(message)
        self.issues = list(issues)

    @classmethod
    def from_issues(cls, database: str, issues: Sequence[Issue]) -> DatabaseFormatError:
        shown = "\n".join(f"  - {issue}" for issue in issues[:_SHOWN_ISSUES])
        more = f"\n  ... and {len(issues) - _SHOWN_ISSUES} more" if len(issues) > _SHOWN_ISSUES else ""
        return cls(
            f"{database}: found {len(issues)} invalid row(s) or missing image(s):\n{shown}{more}\n"
            "Fix the files, or pass skip_invalid=True to skip these rows.",
            issues,
        )


class ImageTooLargeError(TaskvecAestheticsError, ValueError):
    """An image has more pixels than Pillow's decompression-bomb limit allows."""


class PhotoError(TaskvecAestheticsError, ValueError):
    """A file that cannot be used as a photo; the message names the file and the reason."""
