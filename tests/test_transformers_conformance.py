"""transformers' own model and config test suites, run against `AestheticModel`.

The mixins (`ModelTesterMixin`, `ConfigTester`) come from the source distribution of the installed transformers
version, fetched with pip into a cache the first time (set `TASKVEC_AESTHETICS_TEST_CACHE` to move it). When the
package registry cannot be reached, or `parameterized` (which those tests import; in the `test` extra) is missing,
the module is skipped with that reason.

The source distribution ships `tests/*.py` but not the sub-packages `test_modeling_common.py` imports
(`exporters/`, `generation/`, `utils/`); the stand-ins written for them are inert: `GenerationTesterMixin` is only
used in `issubclass` checks (our model does not generate, so no class inherits it), `ExportTesterMixin` would add the
`torch.export` tests (not run here), and `config_common_kwargs` is only read for configs without sub-configs.

Tests that do not apply to an image scorer are skipped with the reason, below; every other test runs.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import unittest
from pathlib import Path

import pytest
import torch
import transformers
from transformers import CLIPVisionConfig

from taskvec_aesthetics import AestheticConfig, AestheticModel
from taskvec_aesthetics.demo.runner import default_cache_dir
from taskvec_aesthetics.efficientnet_lite import EfficientNetLiteConfig

PACKAGE = "transformers_sdist_tests"
_STAND_INS = {
    "exporters/test_export.py": "class ExportTesterMixin:\n    pass\n",
    "generation/test_utils.py": "class GenerationTesterMixin:\n    pass\n",
    "utils/test_configuration_utils.py": "config_common_kwargs = {}\n",
}


def _cache_dir() -> Path:
    default = default_cache_dir() / "transformers-tests"  # under XDG_CACHE_HOME when it is set
    return Path(os.environ.get("TASKVEC_AESTHETICS_TEST_CACHE", default)) / transformers.__version__


def _prepare_test_package() -> Path:
    """Fetch the sdist of the installed transformers once and unpack its `tests/` as an importable package."""
    root = _cache_dir()
    package = root / PACKAGE
    if (package / "test_modeling_common.py").is_file():
        return root
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as download:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:"]
        command += ["--retries", "1", "--timeout", "20"]  # offline: skip soon rather than retry for minutes
        command += [f"transformers=={transformers.__version__}", "--dest", download]
        fetched = subprocess.run(command, capture_output=True, text=True, timeout=600)
        archives = list(Path(download).glob("transformers-*.tar.gz"))
        if fetched.returncode != 0 or not archives:
            raise OSError(fetched.stderr.strip().splitlines()[-1] if fetched.stderr.strip() else "no sdist fetched")
        staging = Path(tempfile.mkdtemp(dir=root))
        with tarfile.open(archives[0]) as archive:
            members = []
            for member in archive.getmembers():
                _, _, inside = member.name.partition("/tests/")
                if inside and member.isfile():
                    member.name = inside
                    members.append(member)
            archive.extractall(staging, members=members, filter="data")
        for name, text in _STAND_INS.items():
            path = staging / name
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
        for folder in {staging, *(p.parent for p in staging.rglob("*.py"))}:
            (folder / "__init__.py").touch()
        try:
            staging.rename(package)  # atomic: a half-unpacked package is never seen
        except OSError:  # another test run unpacked it first
            shutil.rmtree(staging)
            if not package.is_dir():
                raise
    return root


try:
    sys.path.insert(0, str(_prepare_test_package()))
    modeling_common = importlib.import_module(f"{PACKAGE}.test_modeling_common")
    configuration_common = importlib.import_module(f"{PACKAGE}.test_configuration_common")
except (OSError, subprocess.TimeoutExpired, ImportError) as error:
    pytest.skip(
        f"transformers {transformers.__version__}'s test suite is unavailable (fetched from the package registry "
        f"with pip): {error}",
        allow_module_level=True,
    )

# About 30 s of CPU for both encoders (collecting transformers' test module included); CI runs slow tests too.
pytestmark = pytest.mark.slow

ModelTesterMixin = modeling_common.ModelTesterMixin
ConfigTester = configuration_common.ConfigTester
floats_tensor = modeling_common.floats_tensor


class AestheticModelTester:
    """Builds tiny configs and inputs the way transformers' per-model testers do."""

    def __init__(self, parent: unittest.TestCase, encoder: str, batch_size: int = 2) -> None:
        self.parent = parent
        self.encoder = encoder
        self.batch_size = batch_size
        self.image_size = 32
        self.num_channels = 3
        self.hidden_size = 32
        self.num_hidden_layers = 2
        self.num_attention_heads = 4
        self.patch_size = 8
        self.is_training = True
        # CLIP: one hidden state per patch plus the class token; EfficientNet-Lite: feature maps, not tokens.
        self.seq_length = (self.image_size // self.patch_size) ** 2 + 1

    def encoder_config(self):
        if self.encoder == "clip":
            return CLIPVisionConfig(
                hidden_size=self.hidden_size,
                intermediate_size=37,
                num_hidden_layers=self.num_hidden_layers,
                num_attention_heads=self.num_attention_heads,
                image_size=self.image_size,
                patch_size=self.patch_size,
            )
        return EfficientNetLiteConfig(
            image_size=self.image_size,
            stem_channels=8,
            hidden_size=self.hidden_size,
            kernel_sizes=[3, 5],
            strides=[1, 2],
            expand_ratios=[1, 2],
            out_channels=[8, 12],
            num_block_repeats=[1, 1],
        )

    def get_config(self) -> AestheticConfig:
        return AestheticConfig(encoder_config=self.encoder_config(), head_hidden_size=16)

    def prepare_config_and_inputs_for_common(self):
        pixel_values = floats_tensor([self.batch_size, self.num_channels, self.image_size, self.image_size])
        return self.get_config(), {"pixel_values": pixel_values}


# Mixin tests that do not apply to an image scorer, with the reason. Everything else runs.
_NOT_APPLICABLE = {
    "test_model_get_set_embeddings": "an image scorer has no input token embeddings to get or set",
    "test_inputs_embeds": "images have no input embeddings to pass instead of pixel values",
    "test_inputs_embeds_matches_input_ids": "images have no input ids",
    "test_resize_tokens_embeddings": "an image scorer has no token vocabulary",
    "test_resize_embeddings_untied": "an image scorer has no token vocabulary",
    "test_resize_embeddings_untied_no_reinit_on_post_init": "an image scorer has no token vocabulary",
    "test_model_rope_scaling_from_config": "the supported encoders use no rotary position embeddings",
    "test_model_rope_scaling_frequencies": "the supported encoders use no rotary position embeddings",
    "test_model_rope_with_partial_rotation": "the supported encoders use no rotary position embeddings",
    "test_feed_forward_chunking": "the encoders' feed-forward layers are not chunked",
    "test_problem_types": "scores are regression targets or vote histograms, not classification labels",
    "test_torch_compile_for_training": "torch.compile takes minutes on a CPU and compiles the encoder, not our code",
    "test_sdpa_can_compile_dynamic": "torch.compile takes minutes on a CPU and compiles the encoder, not our code",
}


def _skip_not_applicable(cls):
    for name, reason in _NOT_APPLICABLE.items():
        if hasattr(cls, name):
            setattr(cls, name, unittest.skip(reason)(getattr(cls, name)))
    return cls


@_skip_not_applicable
class AestheticModelClipTest(ModelTesterMixin, unittest.TestCase):
    """`AestheticModel` with a tiny CLIP vision encoder (attention, SDPA, hidden states, attentions)."""

    all_model_classes = (AestheticModel,)
    test_resize_embeddings = False
    has_attentions = True
    # The model is new: hold it to the init check transformers applies to models added since 2023.
    test_can_init_all_missing_weights_before_2023 = True
    encoder = "clip"

    def setUp(self) -> None:
        self.model_tester = AestheticModelTester(self, self.encoder)
        # Our own fields; the encoder config is the default one (a sub-config, which `to_json_string` writes as a diff).
        self.config_tester = ConfigTester(
            self, config_class=AestheticConfig, has_text_modality=False, head_hidden_size=16, num_bins=5
        )

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels)
        if return_labels:  # one rating per image, on the default 1..10 scale
            inputs_dict["labels"] = torch.linspace(1.0, 10.0, self.model_tester.batch_size)
        return inputs_dict

    def test_config(self) -> None:
        self.config_tester.run_common_tests()


@_skip_not_applicable
class AestheticModelEfficientNetLiteTest(AestheticModelClipTest):
    """`AestheticModel` with the default encoder, EfficientNet-Lite (a convnet: no attention weights to return)."""

    has_attentions = False
    encoder = "efficientnet_lite"

    def test_hidden_states_output(self) -> None:
        # The convnet version of the mixin's check (as transformers' convnet tests do): feature maps, not tokens.
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = AestheticModel(config).eval()
        num_blocks = len(model.adapter.blocks)
        for flag_on_config in (False, True):
            config.output_hidden_states = flag_on_config
            model = AestheticModel(config).eval()
            with torch.no_grad():
                outputs = model(**inputs, output_hidden_states=None if flag_on_config else True)
            hidden_states = outputs.hidden_states
            self.assertEqual(len(hidden_states), num_blocks + 1)
            # The stem halves the resolution; each hidden state is [B, C, H, W].
            self.assertEqual(list(hidden_states[0].shape[-2:]), [self.model_tester.image_size // 2] * 2)
            self.assertEqual(hidden_states[0].shape[1], config.encoder_config.stem_channels)


def test_the_mixins_come_from_the_installed_transformers_version() -> None:
    assert Path(modeling_common.__file__).resolve().parent.parent.name == transformers.__version__
