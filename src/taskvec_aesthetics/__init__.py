"""taskvec-aesthetics: personalized image aesthetic assessment via task vector customization.

Implements Yun & Choo, "Scaling Up Personalized Image Aesthetic Assessment via Task Vector Customization"
(ECCV 2024) as a Hugging Face model package.
"""

from .bank import TaskInfo, TaskVector, TaskVectorBank
from .coefficients import Coefficients
from .configuration import AestheticConfig
from .errors import TaskvecAestheticsError
from .fingerprint import FingerprintMismatchError, model_fingerprint
from .metrics import correlation_report, krcc, load_metric, pairwise_accuracy, plcc, srocc
from .modeling import AestheticModel, AestheticModelOutput
from .personalization import PersonalizationReport, Personalizer, PersonalizerConfig, fit_many

__version__ = "0.1.0"

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
    "Personalizer",
    "PersonalizerConfig",
    "PersonalizationReport",
    "fit_many",
    "srocc",
    "plcc",
    "krcc",
    "pairwise_accuracy",
    "correlation_report",
    "load_metric",
    "__version__",
]
