"""AestheticModel: adapters of every family, forward, scoring inputs, save/load and Auto classes."""

import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from hub_server import hub_env
from PIL import Image
from tiny_models import IMAGE_SIZE, encoder_configs, pixels, tiny_model
from transformers import AutoConfig, AutoModel

from taskvec_aesthetics import AestheticConfig, AestheticModel, TaskVectorBank
from taskvec_aesthetics.backbones import GenericAdapter
from taskvec_aesthetics.errors import FolderNotFoundError
from taskvec_aesthetics.hub.references import Reference

FAMILIES = list(encoder_configs())


@pytest.mark.parametrize("family", FAMILIES)
def test_adapter_reproduces_encoder_features(family):
    model = tiny_model(family)
    x = pixels(3)
    output = model.encoder(pixel_values=x)
    reference = output.pooler_output if output.pooler_output is not None else output.last_hidden_state.mean(1)
    assert torch.allclose(model.adapter.features(x), reference.flatten(1), atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_parameter_has_one_group_in_model_order(family):
    model = tiny_model(family)
    groups = model.parameter_groups()
    assert list(groups) == [name for name, _ in model.named_parameters()]
    names = list(dict.fromkeys(groups.values()))
    expected_blocks = [f"block.{i}" for i in range(model.adapter.num_blocks)]
    assert [g for g in names if g.startswith("block.")] == expected_blocks
    assert names[-1] == "head"
    if not isinstance(model.adapter, GenericAdapter):
        assert names[0] == "embeddings" and "neck" in names


@pytest.mark.parametrize("family", ["clip", "efficientnet_lite", "dinov2"])
def test_prefix_caching_matches_full_forward(family):
    model = tiny_model(family)
    x = pixels(2)
    full = model(pixel_values=x).scores
    for k in range(model.adapter.num_blocks + 1):
        cached = model(prefix_hidden=model.encode_prefix(x, k), prefix_blocks=k).scores
        assert torch.allclose(full, cached, atol=1e-6)


def test_forward_outputs_and_losses():
    model = tiny_model("clip")
    out = model(pixel_values=pixels(4), labels=torch.tensor([1.0, 4.0, 7.0, 10.0]))
    assert out.scores.shape == (4,) and out.distribution.shape == (4, 10) and out.features.shape == (4, 32)
    assert torch.allclose(out.distribution.sum(-1), torch.ones(4))
    assert ((out.scores >= 1) & (out.scores <= 10)).all()
    assert out.loss is not None and out.loss.item() > 0
    histograms = torch.rand(4, 10)
    emd = model(pixel_values=pixels(4), labels=histograms).loss
    assert emd.item() > 0
    with pytest.raises(ValueError, match="labels must be"):
        model(pixel_values=pixels(4), labels=torch.rand(4, 3))
    with pytest.raises(ValueError, match="pixel_values or prefix_hidden"):
        model()


def test_score_range_mapping():
    model = tiny_model("clip", score_range=[0.0, 1.0])
    scores = model.score(pixels(3))
    assert ((scores >= 0) & (scores <= 1)).all()
    with pytest.raises(ValueError, match="score_range"):
        AestheticConfig(score_range=[5.0, 1.0])


def _write_images(folder, n=3):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"img_{i}.png"
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_score_accepts_pil_paths_folder_tensor(tmp_path):
    model = tiny_model("clip")
    paths = _write_images(tmp_path)
    by_path = model.score([str(p) for p in paths], batch_size=2)
    by_folder = model.score(tmp_path)
    by_pil = model.score([Image.open(p) for p in paths])
    single = model.score(paths[1])
    assert by_path.shape == (3,)
    assert torch.equal(by_path, by_folder) and torch.equal(by_path, by_pil)
    assert torch.allclose(single, by_path[1:2])
    pixel_values = model.image_processor(images=[Image.open(p) for p in paths], return_tensors="pt")["pixel_values"]
    assert pixel_values.shape[-1] == IMAGE_SIZE
    assert torch.allclose(model.score(pixel_values), by_path)
    # deterministic: no random augmentation at inference, and training mode is restored
    model.train()
    assert torch.equal(model.score(tmp_path), by_folder) and model.training


def test_score_errors(tmp_path):
    model = tiny_model("clip")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot decode image"):
        model.score(tmp_path / "broken.jpg")
    with pytest.raises(FileNotFoundError, match="image file not found"):
        model.score(tmp_path / "missing.jpg")
    with pytest.raises(TypeError, match="expected PIL images"):
        model.score(42)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="found no images"):
        model.score(tmp_path / "empty")


@pytest.mark.parametrize("family", FAMILIES)
def test_save_and_auto_load_round_trip(tmp_path, family):
    model = tiny_model(family)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "preprocessor_config.json").is_file()
    assert model.source is None  # saving never changes the model saved; the loaded copy knows its folder
    assert AutoConfig.from_pretrained(tmp_path).model_type == "taskvec_aesthetic"
    loaded = AutoModel.from_pretrained(tmp_path)
    assert isinstance(loaded, AestheticModel) and loaded.source == Reference(path=str(tmp_path.resolve()))
    x = pixels(2)
    assert torch.equal(loaded.eval()(pixel_values=x).scores, model(pixel_values=x).scores)


def test_encoder_config_accepts_dict():
    config = AestheticConfig(encoder_config=encoder_configs()["clip"].to_dict())
    assert config.encoder_config.model_type == "clip_vision_model"
    with pytest.raises(ValueError, match="model_type"):
        AestheticConfig(encoder_config={"hidden_size": 32})


def test_subfolder_reads_its_own_image_processor_and_is_the_recorded_source(tmp_path):
    from transformers import CLIPImageProcessor

    parent = tiny_model("clip", seed=1)
    parent.image_processor = CLIPImageProcessor(size={"shortest_edge": 48}, crop_size=48)
    parent.save_pretrained(tmp_path)
    model = tiny_model("clip", seed=2)
    model.image_processor = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size=IMAGE_SIZE)
    model.save_pretrained(tmp_path / "sub")

    loaded = AestheticModel.from_pretrained(tmp_path, subfolder="sub")
    assert loaded.image_processor.crop_size == {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    assert loaded.source == Reference(path=str((tmp_path / "sub").resolve()))
    torch.testing.assert_close(loaded(pixel_values=pixels(2)).scores, model(pixel_values=pixels(2)).scores)


def test_missing_weights_get_the_encoders_own_init():
    # CLIP scales its attention and MLP weights by width and depth; the wrapper must not replace that by N(0, 0.02).
    config = AestheticConfig(encoder_config=encoder_configs()["clip"], head_hidden_size=16)
    width, depth = config.encoder_config.hidden_size, config.encoder_config.num_hidden_layers
    loaded = AestheticModel.from_pretrained(None, config=config, state_dict={})
    layer = loaded.encoder.encoder.layers[0]
    expected = {
        layer.self_attn.q_proj: width**-0.5 * (2 * depth) ** -0.5,  # 0.088
        layer.self_attn.out_proj: width**-0.5,  # 0.177
        layer.mlp.fc1: (2 * width) ** -0.5,  # 0.125
    }
    for module, std in expected.items():
        assert module.weight.std().item() == pytest.approx(std, rel=0.2)


def test_forward_honours_return_dict_and_output_flags():
    model = tiny_model("clip")
    full = model(pixel_values=pixels(2), output_hidden_states=True, output_attentions=True)
    assert len(full.hidden_states) == model.adapter.num_blocks + 1
    assert len(full.attentions) == (0 if model.config.encoder_config._attn_implementation == "sdpa" else 2)
    as_tuple = model(pixel_values=pixels(2), return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], full.scores)
    with pytest.raises(TypeError):
        model(pixel_values=pixels(2), output_everything=True)


def test_a_name_that_is_no_folder_and_no_hub_repository_is_a_library_error_at_once(tmp_path, monkeypatch, local_hub):
    (tmp_path / "my-models" / "base").mkdir(parents=True)
    (tmp_path / "my-models" / "bank").mkdir()
    monkeypatch.chdir(tmp_path)
    for load, name, suggestion in (
        (AestheticModel.from_pretrained, "my-models/base-typo", "my-models/base"),
        (TaskVectorBank.from_pretrained, "my-models/bank-typo", "my-models/bank"),
    ):
        start = time.perf_counter()
        with pytest.raises(FolderNotFoundError) as caught:  # a TaskvecAestheticsError, not transformers' OSError
            load(name)
        assert time.perf_counter() - start < 5
        message = str(caught.value)
        assert f"no folder '{name}' here (did you mean '{suggestion}'?)" in message
        assert "no Hub repository of that name" in message and "huggingface.co" not in message
    # Online (a fresh process: the Hub client reads its endpoint at import), against a Hub without the repository.
    script = (
        "from taskvec_aesthetics import AestheticModel\nfrom taskvec_aesthetics.errors import FolderNotFoundError\n"
        "try:\n    AestheticModel.from_pretrained('my-models/base-typo')\n"
        "except FolderNotFoundError as error:\n    print(error)\n"
    )
    env = hub_env(local_hub, tmp_path / "hf_home")
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert "(did you mean 'my-models/base'?), and no Hub repository of that name" in out.stdout, out.stderr
