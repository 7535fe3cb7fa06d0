"""taskvec-aesthetics: personalized image aesthetic assessment via task vector customization.

Implements Yun & Choo, "Scaling Up Personalized Image Aesthetic Assessment via Task Vector Customization"
(ECCV 2024) as a Hugging Face model package.
"""

from .bank import TaskInfo, TaskVector, TaskVectorBank
from .coefficients import Coefficients
from .configuration import AestheticConfig
from .fingerprint import FingerprintMismatchError, model_fingerprint
from .modeling import AestheticModel, AestheticModelOutput

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
    "model_fingerprint",
    "__version__",
]
