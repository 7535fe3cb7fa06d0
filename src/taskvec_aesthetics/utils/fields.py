"""Settings in one style: each is a dataclass field made with [`option`], carrying its default, a help text, and what
it accepts (`choices`, a numeric `bound`).

[`check_fields`] validates every field from that metadata and its annotation, and the command line derives one flag
per field from the same metadata, so a new field is validated and offered as a flag without more code. This module
imports nothing heavy: `--help` does not import torch.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from collections.abc import Callable
from dataclasses import field
from typing import Any, NamedTuple

from ..errors import InputError, InputTypeError

__all__ = ["FieldKind", "check_fields", "field_kind", "option"]

# -- fields --------------------------------------------------------------------------------------------------------
_BOUNDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    ">0": (lambda v: v > 0, "> 0"),
    "[0,1)": (lambda v: 0 <= v < 1, "in [0, 1)"),
}
_AT_LEAST = re.compile(r">=(\d+)")


def _bound(spec: str | None) -> tuple[Callable[[Any], bool], str] | None:
    """The test and its wording of a bound: one of `_BOUNDS`, or `">=N"` for a whole number N."""
    if spec in _BOUNDS:
        return _BOUNDS[spec]
    at_least = _AT_LEAST.fullmatch(spec or "")
    if at_least is None:
        return None
    minimum = int(at_least.group(1))
    return (lambda v: v >= minimum), f">= {minimum}"


_SCALARS = {"str": str, "int": int, "float": float, "bool": bool}


def option(default: Any, help: str, bound: str | None = None, choices: Any = None, **extra: Any) -> Any:
    """A setting: a dataclass field with its ``help``, the numeric ``bound`` it must meet and its ``choices``."""
    if bound is not None and _bound(bound) is None:
        raise InputError(f"bound must be one of {list(_BOUNDS)} or '>=N', received {bound!r}")
    metadata = {"help": help, "bound": bound, "choices": list(choices) if choices is not None else None, **extra}
    return field(default=default, metadata=metadata)


class FieldKind(NamedTuple):
    """What a field's annotation accepts, read from its text: the first scalar type of its union (None when it
    has none), whether None is accepted, and whether it is a sequence of that type."""

    scalar: type | None
    optional: bool
    sequence: bool


def field_kind(item: dataclasses.Field) -> FieldKind:
    """The [`FieldKind`] of a dataclass field (annotations are read as text: nothing is imported to resolve them)."""
    annotation = item.type if isinstance(item.type, str) else getattr(item.type, "__name__", str(item.type))
    parts, depth, start = [], 0, 0
    for i, char in enumerate(annotation):  # split the union at top-level `|`
        depth += char == "["
        depth -= char == "]"
        if char == "|" and depth == 0:
            parts.append(annotation[start:i].strip())
            start = i + 1
    parts.append(annotation[start:].strip())
    optional = "None" in parts
    for part in (p for p in parts if p != "None"):
        if part in _SCALARS:
            return FieldKind(_SCALARS[part], optional, False)
        for prefix in ("tuple[", "list["):
            inner = part[len(prefix) : -1].split(",")[0].strip() if part.startswith(prefix) else None
            if inner in _SCALARS:
                return FieldKind(_SCALARS[inner], optional, True)
    return FieldKind(None, optional, False)


def check_fields(config: Any) -> None:
    """Validate every field of a settings dataclass from its annotation and [`option`] metadata.

    Raises:
        `TypeError`: a number setting holds something else.
        `ValueError`: a value outside its `choices` or its `bound`.
    """
    name_of = type(config).__name__
    for item in dataclasses.fields(config):
        value, meta = getattr(config, item.name), item.metadata
        kind = field_kind(item)
        if value is None and kind.optional:
            continue
        where = f"{name_of}.{item.name}"
        choices = meta.get("choices")
        if kind.sequence and isinstance(value, (str, bytes)):  # a string is a sequence of characters, not of choices
            raise InputTypeError(f"{where} must be a list or tuple, received the string {value!r}")
        if choices and kind.sequence and isinstance(value, (list, tuple)):
            unknown = [v for v in value if v not in choices]
            if unknown or not value:
                raise InputError(f"{where} must be some of {choices}, received {list(value)}")
        elif choices and isinstance(value, str) and value not in choices:
            raise InputError(f"{where} must be one of {choices}, received {value!r}")
        if kind.scalar in (int, float):
            allowed = numbers.Real if kind.scalar is float else numbers.Integral
            test, text = _bound(meta.get("bound")) or (math.isfinite, "finite")

            def fits(number: Any) -> bool:
                return not isinstance(number, bool) and isinstance(number, allowed) and math.isfinite(number)

            if kind.sequence:  # every item is a number within the bound, and there is at least one
                if not isinstance(value, (list, tuple)) or not value or not all(fits(v) and test(v) for v in value):
                    expected = "numbers" if kind.scalar is float else "ints"
                    raise InputError(f"{where} must be {expected} {text}, received {value!r}")
                continue
            if isinstance(value, bool) or not isinstance(value, allowed):
                expected = "a number" if kind.scalar is float else "an int"
                raise InputTypeError(f"{where} must be {expected}, received {value!r}")
            if not (fits(value) and test(value)):
                raise InputError(f"{where} must be {text}, received {value}")
