"""The previous release's flat module paths still import, for one release, with a DeprecationWarning naming the new
path, and every public name of each old module resolves to the very object that now lives elsewhere."""

from __future__ import annotations

import json
import subprocess
import sys

from taskvec_aesthetics.utils.deprecation import MOVED_MODULES, RENAMED

# The `__all__` of each module of the previous release (0.1.0, before the purpose folders).
PREVIOUS_PUBLIC_NAMES = {
    "analysis": (
        "AnalysisError",
        "GainsResult",
        "SIMILARITY_GRANULARITIES",
        "Similarity",
        "ZeroShotPerUser",
        "benchmark_gains",
        "load_benchmark_result",
        "run_gains",
        "subset_orders",
        "task_vector_similarity",
        "zero_shot_per_user",
    ),
    "bank": (
        "BANK_CONFIG_FILE",
        "STORAGE_DTYPES",
        "TASK_VECTORS_DIR",
        "TaskInfo",
        "TaskVector",
        "TaskVectorBank",
    ),
    "bank_production": (
        "LITE0_IMAGENET",
        "build_bank",
        "init_base",
    ),
    "batched": ("BatchedPersonalizer",),
    "benchmark": (
        "BenchmarkConfig",
        "BenchmarkResult",
        "METHODS",
        "METHOD_LABELS",
        "TIE",
        "Trial",
        "bootstrap_interval",
        "draw_order",
        "run_benchmark",
    ),
    "cards": (
        "DEFAULT_LICENSE",
        "LIBRARY_NAME",
        "METRIC_NAMES",
        "PAPER",
        "bar_chart",
        "cell",
        "count",
        "number",
        "reference_row",
        "title",
    ),
    "coefficients": (
        "COEFFICIENTS_FILE",
        "Coefficients",
        "GRANULARITIES",
        "Granularity",
    ),
    "exports": (
        "PERSONALIZATION_FILE",
        "PersonalizationState",
        "SIDE_FILES",
        "check_calibration",
        "check_finite_weights",
        "load_coefficients_export",
        "read_personalization_file",
        "resolve_model_files",
        "save_coefficients_export",
        "save_model_export",
        "write_personalization_file",
    ),
    "feature_cache": (
        "FeatureCache",
        "feature_key",
    ),
    "fingerprint": (
        "FINGERPRINT_PREFIX",
        "FingerprintMismatchError",
        "fingerprint_matches",
        "is_legacy_fingerprint",
        "model_fingerprint",
        "state_fingerprint",
    ),
    "hub": (
        "GENERATED_CARD_MARKER",
        "HubMixin",
        "card_template",
        "download",
        "is_generated_card",
        "is_local",
        "local_folder",
        "locate",
        "not_found_locally",
        "push_folder",
        "render_card",
        "write_card",
    ),
    "io": (
        "atomic_path",
        "check_digest",
        "check_relative_path",
        "digest_record",
        "file_digest",
        "folder_identity",
        "folder_transaction",
        "link_file",
        "read_consistently",
        "read_json",
        "safe_join",
        "to_strict_json",
        "verify_manifest",
        "write_json",
        "write_manifest",
    ),
    "many": (
        "ManyUsersResult",
        "SUMMARY_COLUMNS",
        "fit_many",
        "load_table",
        "personalize_many",
        "user_folder_name",
    ),
    "merging": (
        "CoefficientLayout",
        "as_coefficients",
        "check_finite",
        "coefficient_layout",
        "functional_forward",
        "merge_parameters",
        "merge_tensor",
        "merged_copy",
        "streamed_coefficient_grad",
    ),
    "metrics": (
        "ConstantInputWarning",
        "METRIC_NAMES",
        "correlation_report",
        "krcc",
        "load_metric",
        "metric_path",
        "pairwise_accuracy",
        "plcc",
        "srocc",
    ),
    "personalization": (
        "CANDIDATES",
        "EncodedPreferences",
        "EncodedRatings",
        "PersonalizationReport",
        "PersonalizationResult",
        "PersonalizationState",
        "Personalizer",
        "PersonalizerConfig",
        "check_calibration",
        "pairwise_rank_loss",
        "resolve_device",
        "unlabeled_images",
    ),
    "plots": (
        "plot_benchmark",
        "plot_gains",
        "plot_similarity",
        "plot_zero_shot",
    ),
    "progress": ("transformers_bars_off",),
    "ratings_input": (
        "PREFERENCE_COLUMNS",
        "Preferences",
        "Ratings",
        "as_preferences",
        "as_ratings",
        "canonical",
        "canonical_preferences",
        "decode_images",
        "image_key",
        "is_preferences",
        "rows_by_user",
    ),
    "references": (
        "Reference",
        "publishing",
    ),
    "scores_output": ("write_scores",),
    "selection": (
        "STRATEGIES",
        "choose_next",
        "design_features",
    ),
    "settings": (
        "CANDIDATES",
        "FieldKind",
        "FinetuneConfig",
        "PersonalizerConfig",
        "check_fields",
        "field_kind",
        "option",
    ),
    "similarity": (
        "SIMILARITY_GRANULARITIES",
        "Similarity",
        "task_vector_similarity",
        "write_tables",
    ),
    "training": (
        "CHECKPOINTS_DIR",
        "FinetuneConfig",
        "FinetuneResult",
        "MODEL_DIR",
        "RESULT_FILE",
        "finetune",
        "finetune_database",
        "resample_histogram",
    ),
}


def test_every_old_module_has_a_new_home() -> None:
    assert set(PREVIOUS_PUBLIC_NAMES) == set(MOVED_MODULES)


# One fresh interpreter for all: each old path's first import (or, for a package that took an old module's name,
# each old name) must warn, naming the new path.
_PROBE = """
import importlib, json, sys, warnings
names = json.loads(sys.argv[1])
renamed = json.loads(sys.argv[2])
moved = json.loads(sys.argv[3])
warnings.simplefilter("always")
report = {}
for old, public in names.items():
    with warnings.catch_warnings(record=True) as caught:
        module = importlib.import_module(f"taskvec_aesthetics.{old}")
        values = {name: getattr(module, name) for name in public}
    homes = [importlib.import_module(f"taskvec_aesthetics.{target}") for target in moved[old]]
    report[old] = {
        "warnings": [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)],
        "elsewhere": [
            name for name, value in values.items()
            if not any(getattr(home, renamed.get(old, {}).get(name, name), None) is value for home in homes)
        ],
    }
print(json.dumps(report))
"""


def test_every_old_module_path_warns_and_gives_the_same_objects_as_the_new_paths() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *map(json.dumps, (PREVIOUS_PUBLIC_NAMES, RENAMED, MOVED_MODULES))],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for old, found in report.items():
        assert any(
            message.startswith(f"taskvec_aesthetics.{old}") and " moved to " in message
            for message in found["warnings"]
        ), (old, found)
        assert not found["elsewhere"], (old, found["elsewhere"])


def test_the_new_paths_import_without_any_deprecation_warning() -> None:
    probe = (
        "import warnings\nwarnings.simplefilter('error', DeprecationWarning)\n"
        "import taskvec_aesthetics\n"
        "from taskvec_aesthetics import AestheticModel, TaskVectorBank, Personalizer, PersonalizerConfig, srocc\n"
        "from taskvec_aesthetics.personalization.config import PersonalizerConfig\n"
        "from taskvec_aesthetics.task_vectors.bank import TaskVectorBank\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", probe], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
