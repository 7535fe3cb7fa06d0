"""Fine-tuning with Accelerate (one CPU process), resuming, freezing, bank building and base initialisation."""

import json

import pytest
import torch
from database_fixtures import write_database_fixture
from tiny_models import encoder_configs, tiny_model
from transformers import AutoModel, CLIPConfig, CLIPModel, CLIPTextConfig

from taskvec_aesthetics import AestheticModel, FingerprintMismatchError, model_fingerprint
from taskvec_aesthetics.data import load_database
from taskvec_aesthetics.losses import pairwise_rank_loss
from taskvec_aesthetics.training import scored_images
from taskvec_aesthetics.training.bank_building import build_bank, init_base
from taskvec_aesthetics.training.fine_tuning import RESULT_FILE, FinetuneConfig, finetune, finetune_database
from taskvec_aesthetics.training.scored_images import resample_histogram


@pytest.fixture(scope="module")
def koniq(tmp_path_factory):
    # 21 images: 7 per official split, so evaluation sets have an odd size.
    return write_database_fixture("koniq10k", tmp_path_factory.mktemp("data"), num_images=21)


@pytest.fixture(scope="module")
def clip_base(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip_base")
    tiny_model("clip").save_pretrained(folder)
    return folder


def weights(model):
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def test_config_validation():
    config = FinetuneConfig("run")
    assert (config.lr_encoder, config.lr_head, config.mixed_precision, config.loss) == (1e-4, 1e-3, None, "auto")
    for kwargs, error, message in [
        ({"batch_size": 0}, ValueError, "batch_size must be > 0, received 0"),
        ({"batch_size": 2.5}, TypeError, "batch_size must be an int"),
        ({"lr_head": -1.0}, ValueError, "lr_head must be > 0"),
        ({"lr_encoder": float("nan")}, ValueError, "lr_encoder must be > 0"),
        ({"warmup_ratio": 1.0}, ValueError, r"warmup_ratio must be in \[0, 1\)"),
        ({"loss": "l1"}, ValueError, "loss must be one of"),
        ({"mixed_precision": "fp8"}, ValueError, "mixed_precision must be one of"),
        ({"freeze_prefix_blocks": -1}, ValueError, "freeze_prefix_blocks must be >= 0"),
        ({"eval_every_epoch": True, "seed": "0"}, TypeError, "seed must be an int"),
    ]:
        with pytest.raises(error, match=message):
            FinetuneConfig("run", **kwargs)
    assert FinetuneConfig("run", freeze_prefix_blocks=0, max_steps=None).freeze_prefix_blocks == 0


def test_resample_histogram_keeps_mass_and_mean():
    five = torch.tensor([[0.1, 0.2, 0.4, 0.2, 0.1], [0.0, 0.0, 0.0, 0.0, 1.0], [0.5, 0.0, 0.0, 0.2, 0.3]])
    ten = resample_histogram(five, 10)
    assert ten.shape == (3, 10) and torch.all(ten >= 0)
    assert torch.allclose(ten.sum(-1), torch.ones(3))
    mean_five = (five * torch.linspace(0, 1, 5)).sum(-1)
    assert torch.allclose((ten * torch.linspace(0, 1, 10)).sum(-1), mean_five, atol=1e-6)
    assert ten[1, -1] == 1.0  # the top bin stays the top bin
    assert torch.equal(resample_histogram(ten, 10), ten)


def test_pairwise_rank_loss_ignores_ties():
    targets = torch.tensor([3.0, 1.0, 2.0, 2.0])
    right, wrong = pairwise_rank_loss(targets * 2, targets), pairwise_rank_loss(-targets * 2, targets)
    assert right < wrong
    scores = torch.tensor([0.0, 5.0], requires_grad=True)
    tied = pairwise_rank_loss(scores, torch.tensor([1.0, 1.0]))
    tied.backward()
    assert tied.item() == 0.0 and torch.equal(scores.grad, torch.zeros(2))


def test_resumed_run_ends_with_the_same_weights(tmp_path, koniq, clip_base):
    # 7 images in batches of 2 with accumulation 2: 2 steps per epoch, so step 3 is in the middle of an epoch.
    settings = {"batch_size": 2, "gradient_accumulation_steps": 2, "max_steps": 5, "rank_loss_weight": 0.5}
    full = finetune_database(
        "koniq10k", koniq, clip_base, FinetuneConfig(tmp_path / "full", checkpoint_every=3, **settings)
    )
    checkpoint = tmp_path / "full" / "checkpoints" / "step-00000003"
    visible = sorted(p.name for p in checkpoint.parent.iterdir() if not p.name.startswith("."))
    assert visible == ["step-00000003", "step-00000005"]
    assert not list(checkpoint.parent.glob("*.pkl")) and not list(checkpoint.glob("*.pkl"))
    resumed = finetune_database(
        "koniq10k",
        koniq,
        clip_base,
        FinetuneConfig(tmp_path / "resumed", **settings),
        resume_from_checkpoint=checkpoint,
    )
    base, tuned, again = (
        weights(AestheticModel.from_pretrained(clip_base)),
        weights(full.model),
        weights(resumed.model),
    )
    assert sum(not torch.equal(tuned[n], base[n]) for n in base) > len(base) // 2
    assert all(torch.equal(tuned[n], again[n]) for n in tuned)
    assert resumed.history == full.history and resumed.metrics == full.metrics
    saved = AestheticModel.from_pretrained(tmp_path / "resumed" / "model")
    assert all(torch.equal(t, again[n]) for n, t in saved.state_dict().items())
    # The equality is not trivial: another seed (data order, dropout) ends elsewhere.
    other = finetune_database("koniq10k", koniq, clip_base, FinetuneConfig(tmp_path / "other", seed=1, **settings))
    assert not torch.equal(weights(other.model)["head.fc2.weight"], tuned["head.fc2.weight"])
    with pytest.raises(ValueError, match="batch_size"):
        finetune_database(
            "koniq10k",
            koniq,
            clip_base,
            FinetuneConfig(tmp_path / "bad", **{**settings, "batch_size": 3}),
            resume_from_checkpoint=checkpoint,
        )
    with pytest.raises(ValueError, match="base_fingerprint"):
        finetune_database(
            "koniq10k",
            koniq,
            tiny_model("clip", seed=1),
            FinetuneConfig(tmp_path / "bad", **settings),
            resume_from_checkpoint=checkpoint,
        )


def test_frozen_prefix_and_batchnorm_stay_exactly_base(tmp_path, koniq):
    base = tiny_model("efficientnet_lite")
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in base.modules())
    before = weights(base)
    config = FinetuneConfig(tmp_path / "run", batch_size=4, max_steps=3, freeze_prefix_blocks=1, lr_encoder=1e-2)
    result = finetune_database("koniq10k", koniq, base, config)
    after, groups = weights(result.model), base.parameter_groups()
    assert all(torch.equal(before[n], t) for n, t in weights(base).items())  # the base itself is untouched
    frozen = [n for n, g in groups.items() if g in ("embeddings", "block.0")]
    assert frozen and all(torch.equal(after[n], before[n]) for n in frozen)
    trained = [n for n in groups if n not in frozen]
    assert all(not torch.equal(after[n], before[n]) for n in trained if n.startswith("head.") or ".weight" in n)
    buffers = [n for n, _ in base.named_buffers()]
    assert any("running_mean" in n for n in buffers) and all(torch.equal(after[n], before[n]) for n in buffers)
    bank = build_bank([tmp_path / "run"], base)
    assert set(bank.parameter_names) == set(trained) and base.untouched_prefix_blocks(bank.parameter_names) == 1


@pytest.mark.parametrize("family, blocks", [("efficientnet_lite", 4), ("clip", 1)])
def test_training_on_the_cached_prefix_equals_training_through_it(tmp_path, koniq, monkeypatch, family, blocks):
    # All 4 tiny EfficientNet blocks frozen: the last one has stochastic depth, off in a frozen prefix either way.
    base = tiny_model(family)
    runs = {}
    for cache in ("always", "never", "auto", "over budget"):
        if cache == "over budget":
            monkeypatch.setattr(scored_images, "PREFIX_CACHE_BUDGET_BYTES", 1)
        config = FinetuneConfig(
            tmp_path / cache,
            batch_size=4,
            max_steps=3,
            freeze_prefix_blocks=blocks,
            lr_encoder=1e-2,
            cache_prefix="auto" if cache == "over budget" else cache,
        )
        result = finetune_database("koniq10k", koniq, base, config)
        record = json.loads((tmp_path / cache / RESULT_FILE).read_text())
        runs[cache] = weights(result.model), result.metrics, record["prefix_cached"]
    assert [runs[c][2] for c in runs] == [True, False, True, False]
    cached, through = runs["always"], runs["never"]
    assert not torch.equal(cached[0]["head.fc2.weight"], weights(base)["head.fc2.weight"])
    assert all(torch.allclose(t, through[0][n], atol=1e-6) for n, t in cached[0].items())
    assert cached[1] == pytest.approx(through[1], abs=1e-6)


def test_regression_loss_and_score_mapping(tmp_path, clip_base):
    root = write_database_fixture("spaq", tmp_path / "data", num_images=20)
    train, test = (load_database("spaq", root, split=s) for s in ("train", "test"))
    base = AestheticModel.from_pretrained(clip_base)
    result = finetune(base, train, test, FinetuneConfig(tmp_path / "run", batch_size=8, max_steps=2), database="spaq")
    record = json.loads((tmp_path / "run" / RESULT_FILE).read_text())
    assert record["loss"] == "mse" and record["score_range"] == [0.0, 100.0]
    assert record["database"]["name"] == "spaq" and record["database"]["kind"] == "iqa"
    assert record["num_eval_images"] == len(test) == result.num_eval_images and record["num_images"] == len(train)
    assert record["base"]["fingerprint"] == model_fingerprint(base) and set(result.metrics) == {"srocc", "plcc"}
    from taskvec_aesthetics.training.scored_images import ScoredImages

    item = ScoredImages(train, base.image_processor, (0.0, 100.0), (1.0, 10.0), None)[0]
    assert item["score"].item() == pytest.approx(1.0 + train[0]["score"] * 9.0 / 100.0)
    assert item["pixel_values"].shape == (3, 32, 32)
    with pytest.raises(ValueError, match="score_distribution"):
        finetune(base, train, None, FinetuneConfig(tmp_path / "emd", loss="emd"))


def test_bad_inputs_are_clear_errors(tmp_path, koniq, clip_base):
    base = AestheticModel.from_pretrained(clip_base)
    train = load_database("koniq10k", koniq, split="train")
    with pytest.raises(ValueError, match="'image' and 'score' columns"):
        finetune(base, train.remove_columns("score"), None, FinetuneConfig(tmp_path / "a"))
    with pytest.raises(ValueError, match="freeze_prefix_blocks=5, but the encoder has 2 blocks"):
        finetune(base, train, None, FinetuneConfig(tmp_path / "b", freeze_prefix_blocks=5))
    with pytest.raises(FileNotFoundError, match="not a checkpoint"):
        finetune(base, train, None, FinetuneConfig(tmp_path / "c"), resume_from_checkpoint=tmp_path)
    with pytest.raises(FileNotFoundError, match="finetune_result.json"):
        build_bank([tmp_path], base)


def test_build_bank_refuses_runs_of_another_base(tmp_path, koniq, clip_base):
    other = tiny_model("clip", seed=1)
    finetune_database(
        "koniq10k", koniq, other, FinetuneConfig(tmp_path / "run", batch_size=4, max_steps=1, eval_every_epoch=False)
    )
    with pytest.raises(FingerprintMismatchError, match=f"run {tmp_path / 'run'} was fine-tuned from a base"):
        build_bank([tmp_path / "run"], clip_base)
    bank = build_bank([tmp_path / "run"], other)
    assert bank.task_names == ["koniq10k"] and bank.info("koniq10k").num_images == 7


def test_init_base_from_local_encoders(tmp_path):
    torch.manual_seed(0)
    encoder = AutoModel.from_config(encoder_configs()["clip"])
    encoder.save_pretrained(tmp_path / "encoder")
    base = init_base(tmp_path / "encoder", seed=3, save_directory=tmp_path / "base", score_range=[0, 100])
    assert torch.equal(base.encoder.embeddings.patch_embedding.weight, encoder.embeddings.patch_embedding.weight)
    loaded = AestheticModel.from_pretrained(tmp_path / "base")
    assert loaded.config.score_range == [0.0, 100.0] and model_fingerprint(loaded) == model_fingerprint(base)
    assert torch.equal(init_base(tmp_path / "encoder", seed=3).head.fc1.weight, base.head.fc1.weight)
    assert not torch.equal(init_base(tmp_path / "encoder", seed=4).head.fc1.weight, base.head.fc1.weight)
    with pytest.raises(ValueError, match="takes 32 px images"):
        init_base(tmp_path / "encoder", image_size=64)

    text = CLIPTextConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4, vocab_size=99
    )
    composite = CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=encoder_configs()["clip"].to_dict()))
    composite.save_pretrained(tmp_path / "clip")
    processor = {
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": 40},
        "do_center_crop": True,
        "crop_size": {"height": 32, "width": 32},
        "do_normalize": True,
    }
    (tmp_path / "clip" / "preprocessor_config.json").write_text(json.dumps(processor))
    tower = init_base(tmp_path / "clip")
    assert tower.config.encoder_config.model_type == "clip_vision_model"
    assert tower.image_processor.do_center_crop  # the checkpoint's own processor, not the default resize
    reference = composite.vision_model.state_dict()
    assert all(torch.equal(tower.encoder.state_dict()[n], t) for n, t in reference.items())

    AutoModel.from_config(encoder_configs()["efficientnet_lite"]).save_pretrained(tmp_path / "convnet")
    assert init_base(tmp_path / "convnet", image_size=48).image_processor.size["height"] == 48
    with pytest.raises(FileNotFoundError, match="cannot load encoder"):
        init_base(tmp_path / "missing")
