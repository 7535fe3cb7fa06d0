"""Progress output of loads and saves the library makes on its own account.

transformers shows a "Loading weights" bar for every `from_pretrained` and a "Writing model shards" bar for every
`save_pretrained`. A user's own call keeps that behaviour (it is transformers' default, and they can turn it off with
`transformers.utils.logging.disable_progress_bar()` or `HF_HUB_DISABLE_PROGRESS_BARS=1`). Loads and saves the
library makes on its own account (the base model of a coefficients export, the demo's models, fine-tuning runs)
run inside [`transformers_bars_off`], so that one user call shows one bar, not a dozen.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from transformers.utils import logging as transformers_logging

__all__ = ["transformers_bars_off"]

_lock = threading.Lock()
_depth = 0
_was_enabled = False


@contextmanager
def transformers_bars_off() -> Iterator[None]:
    """Turn transformers' progress bars off inside the block; restore them after the outermost block."""
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = transformers_logging.is_progress_bar_enabled()
            transformers_logging.disable_progress_bar()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                transformers_logging.enable_progress_bar()
