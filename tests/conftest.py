"""Test set-up: everything offline, on the CPU, deterministic."""

import os

# Must be set before any Hugging Face library is imported.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Tests run in parallel workers: one thread each, or the workers' thread pools fight over the cores.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
from hub_server import local_hub  # noqa: E402,F401  (session-scoped LocalHub fixture)


@pytest.fixture(scope="session")
def planted_world():
    """A tiny encoder fine-tuned on three synthetic tasks, and its bank (see planted.py)."""
    from planted import build_world

    return build_world()


def pytest_collection_modifyitems(items):
    """The heaviest checks (marked slow) first: in parallel workers the longest file then starts at once instead of
    leaving one worker running it alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
