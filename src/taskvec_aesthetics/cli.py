"""The `taskvec-aesthetics` command: its parser, its global options and `main`.

Each subcommand is one `add_<name>(subparsers)` function in `commands/` (grouped by job: `banks`, `scoring`,
`experiments`, `sharing`) that declares its arguments and sets `run` to a small function calling the library. To add
a subcommand, write both and list `add_<name>` in `SUBCOMMANDS`. Options that configure the library are derived from
its config classes' fields (`commands.options.add_config_arguments`), so a new field is a new flag.

The command starts fast: the parser imports nothing heavy (the config classes whose fields become flags are
torch-free), and each command's `run` imports what it needs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from .commands.banks import add_build_bank, add_finetune, add_init_base
from .commands.experiments import add_analyze, add_benchmark, add_demo
from .commands.scoring import add_personalize, add_personalize_many, add_score
from .commands.sharing import add_app, add_push, push_saved, saved_kind
from .errors import TaskvecAestheticsError

__all__ = ["main", "build_parser", "push_saved", "saved_kind", "SUBCOMMANDS"]

logger = logging.getLogger(__name__)


SUBCOMMANDS: tuple[Callable[[Any], None], ...] = (
    add_demo,
    add_score,
    add_personalize,
    add_personalize_many,
    add_benchmark,
    add_analyze,
    add_init_base,
    add_finetune,
    add_build_bank,
    add_push,
    add_app,
)


def build_parser() -> argparse.ArgumentParser:
    """The parser of the command line (built without importing torch, transformers or datasets)."""
    parser = argparse.ArgumentParser(
        prog="taskvec-aesthetics",
        description="Personalized image aesthetics with task vectors: score, personalize, benchmark, and produce "
        "banks (init-base, finetune, build-bank). Progress bars follow --quiet and TQDM_DISABLE=1.",
    )
    _add_global_options(parser, default=False)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(subparsers)
    for subparser in subparsers.choices.values():  # accepted after the subcommand too
        _add_global_options(subparser, default=argparse.SUPPRESS)
    return parser


def _add_global_options(parser: argparse.ArgumentParser, default: Any) -> None:
    """--verbose and --quiet; a subcommand's copy has no default, so it keeps what was given before the subcommand."""
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default,
        help="log debugging details and show transformers' loading bars",
    )
    verbosity.add_argument(
        "-q", "--quiet", action="store_true", default=default, help="print warnings, errors and results only"
    )


@contextmanager
def _output(args: argparse.Namespace) -> Iterator[None]:
    """Log through tqdm (a log line never breaks a progress bar); quiet transformers' own bars unless --verbose.

    Sets `args.progress` for the command's own bars (off with --quiet or TQDM_DISABLE=1). What it changes in the
    logging set-up is undone afterwards.
    """
    from tqdm.auto import tqdm
    from transformers.utils import logging as transformers_logging

    class TqdmHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                tqdm.write(self.format(record), file=sys.stderr)
            except Exception:  # logging must never raise
                self.handleError(record)

    root, ours = logging.getLogger(), logging.getLogger("taskvec_aesthetics")
    handler = TqdmHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    added = not root.handlers  # like logging.basicConfig: keep a set-up the caller made
    if added:
        root.addHandler(handler)
    level, bars = ours.level, transformers_logging.is_progress_bar_enabled()
    ours.setLevel(logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO)
    transformers_logging.disable_default_handler()  # transformers' messages go through the root's handlers
    transformers_logging.enable_propagation()
    if not args.verbose:  # the loads and saves a command makes on the user's behalf show no bars of their own
        transformers_logging.disable_progress_bar()
    args.progress = not args.quiet and os.environ.get("TQDM_DISABLE", "").lower() not in ("1", "true", "yes")
    try:
        yield
    finally:
        if added:
            root.removeHandler(handler)
        ours.setLevel(level)
        transformers_logging.disable_propagation()
        transformers_logging.enable_default_handler()
        if bars:
            transformers_logging.enable_progress_bar()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 success, 2 usage or input error)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, or a usage error argparse already reported
        return int(exit_.code or 0)
    if args.verbose and args.quiet:  # one before the subcommand, the other after it
        print(f"{parser.prog}: error: argument -q/--quiet: not allowed with argument -v/--verbose", file=sys.stderr)
        return 2
    with _output(args):
        try:
            args.run(args)
        # The library's errors (bad input, missing or corrupt files) and the system's (a full disk; Hub errors, as
        # HfHubHTTPError is an OSError): one line, no traceback. Anything else is a bug and keeps its traceback.
        except (TaskvecAestheticsError, OSError) as error:
            logger.debug("Details of the error", exc_info=True)
            message = " ".join(str(error).split())
            if "skip_invalid" in vars(args):  # advice in the command's own terms
                message = message.replace("pass skip_invalid=True", "pass --skip-invalid")
            print(f"error: {message}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
