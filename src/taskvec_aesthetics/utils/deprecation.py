"""The module paths of the previous release, kept importable for one release with a `DeprecationWarning`.

The package was flat; its modules now live in purpose folders. `import taskvec_aesthetics.bank` (and
`from taskvec_aesthetics.bank import TaskVectorBank`) still work: a stand-in module answers each name from the
module(s) that hold it now, and the import warns once with the new path.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
import warnings
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["MOVED_MODULES", "RENAMED", "install", "moved_names"]

_PACKAGE = "taskvec_aesthetics"
_REMOVAL = "It will be removed in the next release."

#: Each module of the previous release -> the modules that hold its names now (searched in order).
MOVED_MODULES: dict[str, tuple[str, ...]] = {
    "analysis": ("experiments.analysis",),
    "bank": ("task_vectors.bank", "task_vectors.task_vector", "task_vectors.bank_files"),
    "bank_production": ("training.bank_building",),
    "batched": ("personalization.batched",),
    "benchmark": ("experiments.benchmark", "experiments.results", "experiments.methods", "experiments.config"),
    "cards": ("hub.cards",),
    "coefficients": ("task_vectors.coefficients",),
    "exports": ("personalization.exports",),
    "feature_cache": ("personalization.feature_cache",),
    "fingerprint": ("task_vectors.fingerprint",),
    "hub": ("hub.repository", "hub.cards"),
    "io": ("utils.io",),
    "many": ("personalization.many",),
    "merging": ("task_vectors.merging",),
    "metrics": ("evaluation.metrics",),
    "personalization": (
        "personalization.personalizer",
        "personalization.report",
        "personalization.inputs",
        "personalization.optimisation",
        "personalization.config",
        "personalization.model_selection",
        "losses",
    ),
    "plots": ("experiments.plots", "task_vectors.similarity"),
    "progress": ("utils.progress",),
    "ratings_input": ("personalization.inputs", "constants"),
    "references": ("hub.references",),
    "scores_output": ("evaluation.scores_output",),
    "selection": ("personalization.photo_choice",),
    "settings": ("personalization.config", "training.config", "utils.fields", "constants"),
    "similarity": ("task_vectors.similarity",),
    "training": ("training.fine_tuning", "training.config", "training.scored_images", "training.checkpoints"),
}


#: Names that were renamed when they moved: old module -> {old name: new name}.
RENAMED: dict[str, dict[str, str]] = {"cards": {"title": "card_title"}}


def _warn(old: str, targets: Sequence[str], stacklevel: int) -> None:
    where = " and ".join(f"{_PACKAGE}.{target}" for target in targets)
    warnings.warn(f"{_PACKAGE}.{old} moved to {where}. {_REMOVAL}", DeprecationWarning, stacklevel=stacklevel)


def _find(old: str, name: str) -> tuple[str, Any]:
    """Where a name of the old module ``old`` lives now (`module.name`, relative to the package), and its value."""
    name = RENAMED.get(old, {}).get(name, name)
    for target in MOVED_MODULES[old]:
        module = importlib.import_module(f"{_PACKAGE}.{target}")
        if hasattr(module, name):
            return f"{target}.{name}", getattr(module, name)
    raise AttributeError(
        f"module {_PACKAGE}.{old!r} (moved to {', '.join(MOVED_MODULES[old])}) has no attribute {name!r}"
    )


class _MovedModule(types.ModuleType):
    """A previous release's module path: every name is looked up where it lives now."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _find(self.__name__.rpartition(".")[2], name)[1]


class _Loader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return _MovedModule(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        old = module.__name__.rpartition(".")[2]
        module.__doc__ = f"Moved to {', '.join(MOVED_MODULES[old])}: kept importable for one release."
        _warn(old, MOVED_MODULES[old], stacklevel=4)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds the flat module paths of the previous release that are no module or package now."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        package, _, old = fullname.rpartition(".")
        if package != _PACKAGE or old not in MOVED_MODULES:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Loader())


def install() -> None:
    """Make the previous release's flat module paths importable (once per process)."""
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.append(_Finder())  # last: a real module or package of that name always wins


def moved_names(package: str) -> Callable[[str], Any]:
    """A module `__getattr__` for a package that took the name of a previous release's module (`hub`,
    `personalization`, `training`): the old module's names still resolve, with a `DeprecationWarning`."""
    old = package.rpartition(".")[2]

    def __getattr__(name: str) -> Any:
        if name.startswith("__") or importlib.util.find_spec(f"{package}.{name}") is not None:
            raise AttributeError(name)  # a submodule not imported yet: the import system imports it
        where, value = _find(old, name)
        _warn(f"{old}.{name}", [where], 3)
        return value

    return __getattr__
