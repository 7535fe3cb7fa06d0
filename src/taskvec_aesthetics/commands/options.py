"""What several subcommands share: flags derived from a config class, the compute options, help texts, and the checks
made before a slow load.

This module imports nothing heavy: `--help` does not import torch.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..constants import BANK_CONFIG_FILE
from ..errors import InputError
from ..utils.fields import field_kind

__all__ = [
    "RATINGS_HELP",
    "UNLABELED_HELP",
    "add_compute_options",
    "add_config_arguments",
    "add_reference_option",
    "check_is_model",
    "check_locations",
    "compute_settings",
    "config_values",
    "optional",
    "parse_references",
]

RATINGS_HELP = (
    "a ratings CSV, or an image folder with metadata.csv. Columns: the image (image, file_name or path; a relative "
    "path resolves against the CSV's folder), the score (score or rating)"
)
UNLABELED_HELP = (
    "a folder of the person's photos without ratings (for example those to be ranked): the distil candidate learns "
    "to reproduce the output ensemble of the task models on them"
)


def optional(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type that also reads ``none`` (any case) as None."""

    def parse(text: str) -> Any:
        return None if text.lower() == "none" else kind(text)

    parse.__name__ = kind.__name__  # argparse names the type in its error messages
    return parse


def _flag_name(prefix: str, name: str) -> str:
    return f"{prefix}_{name}" if prefix else name


def add_config_arguments(
    parser: argparse.ArgumentParser,
    config_class: type,
    skip: Sequence[str] = (),
    defaults: Mapping[str, Any] | None = None,
    prefix: str = "",
) -> None:
    """One `--field-name` option per field of a config dataclass (see `utils.fields.option`), typed and documented
    from the field itself: its annotation, its `help`, its `choices` (and its `metavar`, if it gives one).

    Options left out keep the dataclass default (or the preset's), so the command line and the library share one
    set of defaults, and a field added to the class is a flag without more code. Fields marked `cli=False`, fields in
    ``skip`` and fields of a type a flag cannot hold are left out.

    Args:
        parser: where to add the options (in a group named after the class).
        config_class: the config dataclass.
        skip: fields that get no flag.
        defaults: the command's own defaults for some fields, where they differ from the class's; those flags are
            always read.
        prefix: put before each flag and its destination, for the fields of a nested config (e.g. ``world``:
            ``--world-seed``); read them back with the same prefix in [`config_values`].
    """
    defaults = defaults or {}
    group = parser.add_argument_group(f"{config_class.__name__} options")
    for item in dataclasses.fields(config_class):
        kind = field_kind(item)
        if item.name in skip or not item.metadata.get("cli", True) or kind.scalar is None:
            continue
        default = defaults.get(item.name, item.default if item.default is not dataclasses.MISSING else None)
        shown = " ".join(map(str, default)) if kind.sequence and default is not None else default
        help_text = item.metadata.get("help", "")
        help_text += "" if "default:" in help_text else f" (default: {shown})"  # unless the help says it
        dest = _flag_name(prefix, item.name)
        flag = "--" + dest.replace("_", "-")
        given = defaults[item.name] if item.name in defaults else argparse.SUPPRESS
        if kind.scalar is bool:
            group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=given, help=help_text)
            continue
        choices = item.metadata.get("choices")
        group.add_argument(
            flag,
            dest=dest,
            type=optional(kind.scalar) if kind.optional and not kind.sequence else kind.scalar,
            nargs="+" if kind.sequence else None,
            choices=choices,
            default=given,
            metavar=item.metadata.get("metavar") or (None if choices else item.name.upper()),
            help=help_text,
        )


def config_values(args: argparse.Namespace, config_class: type, prefix: str = "") -> dict[str, Any]:
    """The fields of ``config_class`` given on the command line (fields without a flag are not read), a sequence as a
    tuple (the configs' sequence fields are tuples)."""
    values = {}
    for item in dataclasses.fields(config_class):
        dest = _flag_name(prefix, item.name)
        if item.metadata.get("cli", True) and dest in vars(args):
            value = getattr(args, dest)
            values[item.name] = tuple(value) if isinstance(value, list) else value
    return values


def add_compute_options(parser: argparse.ArgumentParser, gradients: bool = True) -> None:
    """--device and --dtype (and, where gradients are computed, --micro-batch-size and --gradient-checkpointing)."""
    parser.add_argument("--device", default="auto", help="auto (a GPU when there is one, default), cpu, cuda, cuda:N")
    parser.add_argument(
        "--dtype",
        choices=("auto", "float32", "bfloat16", "float16"),
        default="auto",
        help="precision of the network (autocast; weights stay float32). auto (default): bfloat16 on a GPU, "
        "float32 on the CPU",
    )
    if gradients:
        parser.add_argument(
            "--micro-batch-size",
            type=int,
            help="images whose activations are held at once; the gradient stays exactly the batch's (default: the "
            "whole batch when it fits the activation budget)",
        )
        parser.add_argument(
            "--gradient-checkpointing",
            action="store_true",
            help="recompute each encoder block in the backward pass: less memory, about a third more compute",
        )


def compute_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The PersonalizerConfig fields of the compute options, with auto resolved."""
    from ..personalization.optimisation import resolve_device, resolve_dtype

    device = resolve_device(args.device)
    dtype = str(resolve_dtype(args.dtype, device)).removeprefix("torch.")
    settings: dict[str, Any] = {"device": str(device), "dtype": dtype}
    for name in ("batch_size", "micro_batch_size"):
        if getattr(args, name, None) is not None:
            settings[name] = getattr(args, name)
    if getattr(args, "gradient_checkpointing", False):
        settings["gradient_checkpointing"] = True
    return settings


def check_locations(model: str | None, bank: str | None = None, revision: str | None = None) -> None:
    """A model or bank that is neither a folder nor a Hub repository fails now, before the slow imports and loads."""
    from ..hub.repository import locate

    if model is not None:
        check_is_model(model)
        locate(model, "model", revision=revision)
    if bank is not None:
        locate(bank, "bank")


def check_is_model(location: str) -> None:
    """A saved bank passed where a model is expected gets an error that says so."""
    if (Path(location) / BANK_CONFIG_FILE).is_file():
        raise InputError(
            f"{location} is a task-vector bank ({BANK_CONFIG_FILE}), not a model: pass it as --bank, and its base "
            "model (the folder or Hub id its card names) as --model"
        )


def add_reference_option(parser: Any) -> None:
    """--reference LABEL=SROCC, repeatable: reference lines on the gains figure."""
    parser.add_argument(
        "--reference",
        action="append",
        default=[],
        metavar="LABEL=SROCC",
        help="a reference line on the gains figure, e.g. 'previous best=0.71' (every k) or 'previous best@10=0.66' "
        "(one k); repeatable",
    )


def parse_references(items: Sequence[str]) -> dict[str, Any]:
    """``LABEL=SROCC`` / ``LABEL@K=SROCC`` items as `GainsResult.references`."""
    references: dict[str, Any] = {}
    for item in items:
        label, _, value = item.rpartition("=")
        label, at, k = label.rpartition("@") if "@" in label else (label, "", "")
        try:
            number = float(value)
            if at:
                references.setdefault(label, {})[int(k)] = number
            else:
                references[label] = number
        except ValueError:
            raise InputError(f"--reference expects LABEL=SROCC or LABEL@K=SROCC, received {item!r}") from None
        if not label:
            raise InputError(f"--reference expects LABEL=SROCC or LABEL@K=SROCC, received {item!r}")
    return references
