"""Names fixed by the saved formats: file names, the format version, export kinds. Defined here once.

Torch-free, so the command line can name them without importing the library's heavy modules.
"""

from __future__ import annotations

__all__ = [
    "LIBRARY_NAME",
    "FORMAT_VERSION",
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "WEIGHTS_INDEX_FILE",
    "GENERATION_CONFIG_FILE",
    "PREPROCESSOR_FILE",
    "PERSONALIZATION_FILE",
    "COEFFICIENTS_FILE",
    "ENSEMBLE_FILE",
    "BANK_CONFIG_FILE",
    "TASK_VECTORS_DIR",
    "CARD_FILE",
    "MANIFEST_FILE",
    "MERGED",
    "COEFFICIENTS",
    "ENSEMBLE",
    "EXPORTS",
    "STORAGE_DTYPE_NAMES",
]

#: The library's name on the Hub (`library_name` of its cards) and in commit messages.
LIBRARY_NAME = "taskvec-aesthetics"
#: Version of every on-disk format this library writes (config references, coefficients, banks, personalization).
FORMAT_VERSION = 1

# -- a model folder (base, merged or coefficients-only) -----------------------------------------------------------
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
GENERATION_CONFIG_FILE = "generation_config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
PERSONALIZATION_FILE = "personalization.json"
COEFFICIENTS_FILE = "coefficients.safetensors"
ENSEMBLE_FILE = "ensemble.safetensors"

# -- a bank folder -------------------------------------------------------------------------------------------------
BANK_CONFIG_FILE = "bank_config.json"
TASK_VECTORS_DIR = "task_vectors"
#: Dtypes a bank may store its task files in (arithmetic always runs in float32).
STORAGE_DTYPE_NAMES = ("float32", "bfloat16", "float16")

# -- both ----------------------------------------------------------------------------------------------------------
CARD_FILE = "README.md"
#: sha256 and size of each file a save wrote, checked when the files are read back (absent in earlier releases).
MANIFEST_FILE = "checksums.json"

# -- how a personalized model is saved ----------------------------------------------------------------------------
MERGED = "merged"
COEFFICIENTS = "coefficients"
ENSEMBLE = "ensemble"
#: `"merged"`: standalone weights; `"coefficients"`: kilobytes that point at the base model and the bank;
#: `"ensemble"`: kilobytes (an output ensemble's weights) that point at them too, for a model that scores as the
#: weighed outputs of its task models.
EXPORTS = (MERGED, COEFFICIENTS, ENSEMBLE)

# -- what a person gives -------------------------------------------------------------------------------------------
#: Columns of a preferences dataset or CSV: the two images, and which one was preferred.
PREFERENCE_COLUMNS = ("image_a", "image_b", "preferred")
#: Accepted values of `preferred` and the probability that image a is preferred that each means.
PREFERRED_VALUES = {"a": 1.0, "b": 0.0, "tie": 0.5}
#: How finely coefficients are shared: one per task, one per task and layer group, or one per task and tensor.
GRANULARITIES = ("task", "layer", "tensor")
