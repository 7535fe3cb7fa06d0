"""One error hierarchy: every error the library raises about its input derives from `TaskvecAestheticsError`, with the
built-in exception a caller expects as second base, and every error class lives in `errors.py`."""

from __future__ import annotations

import ast
import builtins
import inspect
from pathlib import Path

import pytest

import taskvec_aesthetics
from taskvec_aesthetics import errors

PACKAGE = Path(taskvec_aesthetics.__file__).parent

# Built-in exceptions that stay, each with its reason.
KEPT = {
    "NotImplementedError": "an abstract method",
    "AttributeError": "the attribute protocol (`__getattr__`)",
    "KeyError": "the Mapping protocol (`__getitem__`)",
    "ImportError": "an optional dependency that is not installed: an installation problem, not bad input",
    "RuntimeError": "a broken invariant of the library itself (a bug to report), not bad input",
    "OSError": "an operating-system call that failed (kept with its errno)",
}


def raised_builtins() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "evaluate_metrics" in path.parts:  # stand-alone `evaluate` scripts
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and isinstance(node.exc.func, ast.Name):
                name = node.exc.func.id
                builtin = getattr(builtins, name, None)
                if isinstance(builtin, type) and issubclass(builtin, Exception) and name not in KEPT:
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} raises {name}")
    return found


def test_the_library_raises_its_own_errors_not_bare_builtins() -> None:
    found = raised_builtins()
    assert not found, "raise an error of errors.py instead: " + "; ".join(found)


def test_every_error_class_lives_in_errors_and_derives_from_the_base() -> None:
    elsewhere = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "evaluate_metrics" in path.parts or path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and any(
                "Error" in ast.unparse(base) or "Exception" in ast.unparse(base) for base in node.bases
            ):
                elsewhere.append(f"{path.relative_to(PACKAGE)}: {node.name}")
    assert not elsewhere, f"error classes outside errors.py: {elsewhere}"
    classes = [
        value for _, value in inspect.getmembers(errors, inspect.isclass) if value.__module__ == errors.__name__
    ]
    assert sorted(c.__name__ for c in classes) == sorted(errors.__all__)
    for cls in classes:
        assert issubclass(cls, errors.TaskvecAestheticsError)
        if cls is not errors.TaskvecAestheticsError:  # callers' `except ValueError` (or OSError...) still works
            builtin = [base for base in cls.__mro__[1:] if base.__module__ == "builtins" and base is not Exception]
            assert builtin, f"{cls.__name__} has no built-in second base"


@pytest.mark.parametrize(
    "module, name",
    [
        ("taskvec_aesthetics", "FingerprintMismatchError"),
        ("taskvec_aesthetics.data", "DatabaseFormatError"),
        ("taskvec_aesthetics.app.photos", "PhotoError"),
        ("taskvec_aesthetics.processing", "ImageTooLargeError"),
    ],
)
def test_errors_stay_importable_where_they_were(module, name) -> None:
    assert getattr(__import__(module, fromlist=[name]), name) is getattr(errors, name)


def test_bad_input_is_a_library_error_and_still_a_value_error() -> None:
    from taskvec_aesthetics import PersonalizerConfig

    with pytest.raises(errors.InputError, match="steps") as caught:
        PersonalizerConfig(steps=-1)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, errors.TaskvecAestheticsError)
    with pytest.raises(errors.InputTypeError) as wrong_type:
        PersonalizerConfig(steps="many")
    assert isinstance(wrong_type.value, TypeError)
