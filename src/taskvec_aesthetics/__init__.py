"""taskvec-aesthetics: personalized image aesthetic assessment via task vector customization.

Implements Yun & Choo, "Scaling Up Personalized Image Aesthetic Assessment via Task Vector Customization"
(ECCV 2024) as a Hugging Face model package.

The public names below are imported on first use, so that `import taskvec_aesthetics` (and the command line's
`--help`) does not load torch and transformers. Using `AestheticModel` or `AestheticConfig` registers them with
transformers' `AutoConfig` / `AutoModel`; the `"image-aesthetics"` pipeline task is registered the moment
`transformers.pipelines` is imported (at once if it already is).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from importlib import import_module
from typing import TYPE_CHECKING, Any

from .utils import deprecation

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "AestheticConfig": "configuration",
    "AestheticModel": "modeling",
    "AestheticModelOutput": "modeling",
    "Coefficients": "task_vectors.coefficients",
    "FingerprintMismatchError": "errors",
    "TaskInfo": "task_vectors.bank_files",
    "TaskVector": "task_vectors.task_vector",
    "TaskVectorBank": "task_vectors.bank",
    "TaskvecAestheticsError": "errors",
    "model_fingerprint": "task_vectors.fingerprint",
    "FinetuneConfig": "training.config",
    "Personalizer": "personalization.personalizer",
    "PersonalizerConfig": "personalization.config",
    "Reference": "hub.references",
    "PersonalizationReport": "personalization.report",
    "fit_many": "personalization.many",
    "personalize_many": "personalization.many",
    "srocc": "evaluation.metrics",
    "plcc": "evaluation.metrics",
    "krcc": "evaluation.metrics",
    "pairwise_accuracy": "evaluation.metrics",
    "correlation_report": "evaluation.metrics",
    "load_metric": "evaluation.metrics",
}

__all__ = [
    "AestheticConfig",
    "AestheticModel",
    "AestheticModelOutput",
    "Coefficients",
    "FingerprintMismatchError",
    "TaskInfo",
    "TaskVector",
    "TaskVectorBank",
    "TaskvecAestheticsError",
    "model_fingerprint",
    "FinetuneConfig",
    "Personalizer",
    "PersonalizerConfig",
    "PersonalizationReport",
    "Reference",
    "fit_many",
    "personalize_many",
    "srocc",
    "plcc",
    "krcc",
    "pairwise_accuracy",
    "correlation_report",
    "load_metric",
    "__version__",
]

if TYPE_CHECKING:
    from .configuration import AestheticConfig
    from .errors import FingerprintMismatchError, TaskvecAestheticsError
    from .evaluation.metrics import correlation_report, krcc, load_metric, pairwise_accuracy, plcc, srocc
    from .hub.references import Reference
    from .modeling import AestheticModel, AestheticModelOutput
    from .personalization.config import PersonalizerConfig
    from .personalization.many import fit_many, personalize_many
    from .personalization.personalizer import Personalizer
    from .personalization.report import PersonalizationReport
    from .task_vectors.bank import TaskVectorBank
    from .task_vectors.bank_files import TaskInfo
    from .task_vectors.coefficients import Coefficients
    from .task_vectors.fingerprint import model_fingerprint
    from .task_vectors.task_vector import TaskVector
    from .training.config import FinetuneConfig


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name in ("AestheticConfig", "AestheticModel"):
        import_module(".modeling", __name__)  # the Auto classes learn both together
    value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


class _RegisterPipeline(importlib.abc.MetaPathFinder):
    """Registers the pipeline task right after `transformers.pipelines` is imported, wherever that happens (`from
    transformers import pipeline` included), so that importing this package stays light."""

    target = "transformers.pipelines"

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != self.target:
            return None
        sys.meta_path.remove(self)  # once: find the real module with the other finders
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            execute(module)
            import_module(".pipeline", __name__)  # registers the task (or will, when it is being imported now)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]  # on this one loader, on purpose
        return spec


deprecation.install()  # the previous release's flat module paths, for one release

if _RegisterPipeline.target in sys.modules:
    import_module(".pipeline", __name__)
elif not any(isinstance(finder, _RegisterPipeline) for finder in sys.meta_path):
    sys.meta_path.insert(0, _RegisterPipeline())
