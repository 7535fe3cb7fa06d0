"""Bounded memory: one resident copy of a bank in its storage dtype, exact micro-batched gradients, gradient
checkpointing, tensor-by-tensor merging, and a streamed bank build."""

import pytest
import torch
from tiny_models import perturbed_copy, pixels, tiny_model

from taskvec_aesthetics import Coefficients, TaskVectorBank
from taskvec_aesthetics.personalization.config import PersonalizerConfig
from taskvec_aesthetics.personalization.inputs import EncodedRatings
from taskvec_aesthetics.personalization.personalizer import Personalizer
from taskvec_aesthetics.task_vectors.merging import coefficient_layout, merge_parameters

TASKS = ["a", "b", "c"]


@pytest.fixture(scope="module")
def base():
    return tiny_model("clip")


@pytest.fixture(scope="module")
def tuned(base):
    return {t: perturbed_copy(base, i + 1) for i, t in enumerate(TASKS)}


@pytest.fixture()
def saved_bank(tmp_path, base, tuned):
    """A bank saved in float32 (every parameter) and the folder it lives in."""
    TaskVectorBank.from_finetuned(base, tuned).save_pretrained(tmp_path / "bank")
    return TaskVectorBank.from_pretrained(tmp_path / "bank", base=base)


def _batch(n=10, seed=0):
    ratings = torch.arange(n, dtype=torch.float64) % 4  # ties as well as ordered pairs
    return EncodedRatings(pixels(n, seed), ratings)


def _gradient(personalizer, granularity="layer", adapt=False, seed=0):
    """Gradient of one step at seeded coefficients (and head change) on a fixed batch."""
    layout = personalizer.layout_of(granularity)
    generator = torch.Generator().manual_seed(seed)
    values = (0.3 * torch.randn(layout.num_groups, len(TASKS), generator=generator)).requires_grad_(True)
    head = {
        n: (0.01 * torch.randn(t.shape, generator=generator)).requires_grad_(True)
        for n, t in personalizer._head.items()
    }
    batch = _batch()
    encoded = EncodedRatings(personalizer.encode(batch.prefix), batch.ratings)
    loss = personalizer._step_gradient(values, head, encoded, values.detach().clone())
    return loss, values.grad.clone(), {n: d.grad.clone() for n, d in head.items()}


@pytest.mark.parametrize("gradient", ["autograd", "streamed"])
@pytest.mark.parametrize("pairing", ["all", "half"])
def test_micro_batched_gradient_equals_the_full_batch_gradient(base, saved_bank, gradient, pairing):
    def run(**config):
        cfg = PersonalizerConfig(gradient=gradient, pairing=pairing, adapt_head=True, device="cpu", **config)
        return _gradient(Personalizer(base, saved_bank, cfg))

    loss, full, full_head = run()
    assert full.abs().sum() > 0 and all(g.abs().sum() > 0 for g in full_head.values())
    for config in (
        {"micro_batch_size": 3},
        {"micro_batch_size": 1},
        {"micro_batch_size": 4, "gradient_checkpointing": True},
    ):
        micro_loss, micro, micro_head = run(**config)
        assert micro_loss == pytest.approx(loss, rel=1e-6), config
        torch.testing.assert_close(micro, full, rtol=1e-4, atol=1e-6, msg=f"{config}")
        for name in full_head:
            torch.testing.assert_close(micro_head[name], full_head[name], rtol=1e-4, atol=1e-6)


def test_micro_batched_gradient_with_a_cached_prefix(tmp_path, base, tuned):
    """A bank over the last block and the head: the frozen prefix is encoded once, steps run on its output."""
    names = [n for n in base.parameter_groups() if base.parameter_groups()[n] in ("block.1", "neck", "head")]
    TaskVectorBank.from_finetuned(base, tuned, parameter_names=names).save_pretrained(tmp_path / "top")
    bank = TaskVectorBank.from_pretrained(tmp_path / "top")
    whole = Personalizer(base, bank, PersonalizerConfig(device="cpu"))
    assert whole.prefix_blocks == 1
    _, full, _ = _gradient(whole, "tensor")
    _, micro, _ = _gradient(Personalizer(base, bank, PersonalizerConfig(device="cpu", micro_batch_size=2)), "tensor")
    torch.testing.assert_close(micro, full, rtol=1e-4, atol=1e-6)


def test_the_activation_budget_chooses_the_micro_batch(base, saved_bank):
    roomy = Personalizer(base, saved_bank, PersonalizerConfig(device="cpu"))
    tight = Personalizer(base, saved_bank, PersonalizerConfig(device="cpu", activation_budget_mb=1e-3))
    for personalizer in (roomy, tight):
        personalizer._estimate_activations(pixels(1))
    assert roomy.activation_budget_bytes == 1024 * 2**20  # the CPU's default
    assert roomy.micro_batch_size(32) == 32  # a tiny model: the whole batch
    assert tight.micro_batch_size(32) == 1 < tight.micro_batch_size(10**6) + 1
    assert (
        Personalizer(base, saved_bank, PersonalizerConfig(device="cpu", micro_batch_size=5)).micro_batch_size(32) == 5
    )
    with pytest.raises(ValueError, match="micro_batch_size"):
        PersonalizerConfig(micro_batch_size=0)


def _saved_bytes(model, x):
    """Bytes autograd keeps for the backward pass of one forward (what gradient checkpointing reduces)."""
    total = 0

    def pack(tensor):
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        scores = model(pixel_values=x).scores
    return total, scores


def test_gradient_checkpointing_keeps_less_and_the_same_gradients():
    model = tiny_model("clip", seed=3)
    x = pixels(8)
    plain, scores = _saved_bytes(model, x)
    scores.sum().backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    model.activation_checkpointing_enable()  # transformers 5's name of gradient_checkpointing_enable
    assert model.gradient_checkpointing
    checkpointed, scores = _saved_bytes(model, x)
    scores.sum().backward()
    assert checkpointed < 0.6 * plain, (checkpointed, plain)
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, expected[name], rtol=1e-5, atol=1e-7)
    model.activation_checkpointing_disable()
    assert not model.gradient_checkpointing and _saved_bytes(model, x)[0] == plain


def test_a_bfloat16_bank_stays_bfloat16(tmp_path, base, tuned):
    TaskVectorBank.from_finetuned(base, tuned).save_pretrained(tmp_path / "bf16", storage_dtype="bfloat16")
    bank = TaskVectorBank.from_pretrained(tmp_path / "bf16", base=base)
    stacked = bank.stacked()
    assert {t.dtype for t in stacked.values()} == {torch.bfloat16}
    personalizer = Personalizer(base, bank, PersonalizerConfig(device="cpu"))
    assert all(personalizer._stacked[n].data_ptr() == t.data_ptr() for n, t in stacked.items())
    assert {t.dtype for t in personalizer._stacked.values()} == {torch.bfloat16}
    # Merging upcasts one tensor at a time: the result is float32, and equals a float32 merge of the bf16 values.
    layout = coefficient_layout(base.parameter_groups(), bank.parameter_names, "layer")
    values = torch.randn(layout.num_groups, len(TASKS), generator=torch.Generator().manual_seed(0))
    params = dict(base.named_parameters())
    merged = merge_parameters(params, stacked, values, layout)
    upcast = merge_parameters(params, {n: t.float() for n, t in stacked.items()}, values, layout)
    assert all(merged[n].dtype == torch.float32 and torch.equal(merged[n], upcast[n]) for n in merged)
    # The gradient path is the same in either dtype: the bank is never converted as a whole.
    loss, grad, _ = _gradient(Personalizer(base, bank, PersonalizerConfig(device="cpu", micro_batch_size=3)))
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert {t.dtype for t in bank.stacked().values()} == {torch.bfloat16}


def test_repeated_calls_allocate_nothing_new(base, saved_bank):
    first = saved_bank.stacked()
    again = saved_bank.stacked()
    assert all(first[n] is again[n] for n in first)
    one = Personalizer(base, saved_bank, PersonalizerConfig(device="cpu"))
    two = Personalizer(base, saved_bank, PersonalizerConfig(device="cpu", granularity="tensor"))
    for personalizer in (one, two):
        assert personalizer.network is base  # the model itself, never deep-copied
        assert all(personalizer._stacked[n].data_ptr() == first[n].data_ptr() for n in first)
        assert all(personalizer.base_parameters[n].data_ptr() == p.data_ptr() for n, p in base.named_parameters())
    # Task vectors of the loaded bank are views of the stack, not copies.
    row = saved_bank["b"]["head.fc1.weight"]
    assert row.data_ptr() == first["head.fc1.weight"][1].data_ptr()


def test_an_in_memory_bank_keeps_one_copy(base, tuned):
    bank = TaskVectorBank.from_finetuned(base, tuned)
    before = bank["a"]["head.fc1.weight"]
    stacked = bank.stacked()
    after = bank["a"]["head.fc1.weight"]
    assert torch.equal(before, after) and after.data_ptr() == stacked["head.fc1.weight"][0].data_ptr()


def test_with_coefficients_streams_without_keeping_the_bank(base, tuned, saved_bank):
    coefficients = {"a": 0.5, "b": -0.25, "c": 1.0}
    merged = base.with_coefficients(saved_bank, coefficients)
    assert saved_bank._stacked is None and saved_bank._vectors == {}  # nothing of the bank stays in memory
    reference = base.with_coefficients(TaskVectorBank.from_finetuned(base, tuned), coefficients)
    x = pixels(3)
    assert not torch.allclose(merged(pixel_values=x).scores, base(pixel_values=x).scores)
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(merged.state_dict()[name], value, rtol=0, atol=1e-6)
    assert isinstance(merged.personalization.coefficients, Coefficients)


def test_a_damaged_task_file_is_caught_when_streamed(tmp_path, base, tuned):
    TaskVectorBank.from_finetuned(base, tuned).save_pretrained(tmp_path / "bank")
    path = tmp_path / "bank" / "task_vectors" / "b.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # same size, other bytes
    path.write_bytes(bytes(data))
    bank = TaskVectorBank.from_pretrained(tmp_path / "bank")
    from taskvec_aesthetics.errors import IntegrityError

    with pytest.raises(IntegrityError, match="sha256"):
        base.with_coefficients(bank, {"a": 1.0})


# -- fine-tuning and bank production ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def koniq(tmp_path_factory):
    from database_fixtures import write_database_fixture

    return write_database_fixture("koniq10k", tmp_path_factory.mktemp("data"), num_images=12)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, koniq):
    """Two fine-tuning runs of one saved base: one trains everything, one freezes the embeddings and block 0."""
    from taskvec_aesthetics import AestheticModel
    from taskvec_aesthetics.data import load_database
    from taskvec_aesthetics.training.fine_tuning import FinetuneConfig, finetune

    root = tmp_path_factory.mktemp("runs")
    tiny_model("clip").save_pretrained(root / "base")
    base = AestheticModel.from_pretrained(root / "base")
    train = load_database("koniq10k", koniq, split="train", level="image")
    for name, frozen in (("all", None), ("top", 1)):  # no database given: each task is named after its run folder
        config = FinetuneConfig(root / name, batch_size=4, max_steps=2, lr_encoder=1e-2, freeze_prefix_blocks=frozen)
        finetune(base, train, None, config, score_range=(1.0, 5.0))
    return root, base, train


def test_gradient_checkpointing_fine_tunes_to_the_same_weights(tmp_path, runs):
    from taskvec_aesthetics import AestheticModel
    from taskvec_aesthetics.training.fine_tuning import FinetuneConfig, finetune

    runs, base, train = runs
    config = FinetuneConfig(tmp_path / "gc", batch_size=4, max_steps=2, lr_encoder=1e-2, gradient_checkpointing=True)
    result = finetune(base, train, None, config, score_range=(1.0, 5.0))
    assert not result.model.gradient_checkpointing  # the saved model is a plain one
    plain = AestheticModel.from_pretrained(runs / "all" / "model").state_dict()
    checkpointed = AestheticModel.from_pretrained(tmp_path / "gc" / "model").state_dict()
    assert not torch.equal(plain["head.fc1.weight"], tiny_model("clip").state_dict()["head.fc1.weight"])
    for name, value in plain.items():
        torch.testing.assert_close(checkpointed[name], value, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("storage_dtype", ["float32", "bfloat16"])
def test_streamed_build_bank_equals_the_in_memory_build(tmp_path, runs, storage_dtype):
    from taskvec_aesthetics.training.bank_building import build_bank

    runs, _, _ = runs
    in_memory = build_bank([runs / "all", runs / "top"], runs / "base", storage_dtype=storage_dtype)
    streamed = build_bank(
        [runs / "all", runs / "top"], runs / "base", storage_dtype=storage_dtype, save_directory=tmp_path / "bank"
    )
    assert in_memory._vectors and streamed._vectors == {}  # the streamed bank is read from its files
    assert sorted(streamed.parameter_names) == sorted(in_memory.parameter_names)  # a saved bank lists them sorted
    assert streamed.task_names == in_memory.task_names == ["all", "top"] and streamed.storage_dtype == storage_dtype
    assert "encoder.embeddings.patch_embedding.weight" in streamed.parameter_names  # the "all" run
    reloaded = TaskVectorBank.from_pretrained(tmp_path / "bank")
    for task in in_memory.task_names:
        for name in in_memory.parameter_names:
            expected = in_memory[task][name].to(getattr(torch, storage_dtype)).float()
            assert torch.equal(reloaded[task][name], expected), (task, name)
    # The frozen run's file holds zeros where only the other run changed parameters.
    frozen = [
        t for t in in_memory.task_names if torch.all(in_memory[t]["encoder.embeddings.patch_embedding.weight"] == 0)
    ]
    assert len(frozen) == 1


# -- command line ----------------------------------------------------------------------------------------------------
def test_personalize_and_score_take_device_precision_and_batch_options(tmp_path, base, tuned, capsys):
    import csv
    import json

    import numpy as np
    from PIL import Image

    from taskvec_aesthetics.cli import main

    base.save_pretrained(tmp_path / "base")
    TaskVectorBank.from_finetuned(base, tuned).save_pretrained(tmp_path / "bank")
    rng = np.random.default_rng(0)
    with open(tmp_path / "ratings.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "score"])
        for i in range(12):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / f"p{i}.png")
            writer.writerow([f"p{i}.png", i % 5])
    common = [
        "--model",
        str(tmp_path / "base"),
        "--bank",
        str(tmp_path / "bank"),
        "--ratings",
        str(tmp_path / "ratings.csv"),
    ]
    options = ["--device", "cpu", "--dtype", "bfloat16", "--batch-size", "6", "--micro-batch-size", "2"]
    code = main(["personalize", *common, "--output", str(tmp_path / "mine"), "--preset", "paper", "--steps", "2",
                 *options, "--gradient-checkpointing"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    record = json.loads((tmp_path / "mine" / "personalization.json").read_text())["info"]["personalizer"]
    assert (record["device"], record["dtype"], record["batch_size"], record["micro_batch_size"]) == (
        "cpu",
        "bfloat16",
        6,
        2,
    )
    assert record["gradient_checkpointing"] is True
    capsys.readouterr()
    assert (
        main(
            [
                "score",
                str(tmp_path / "p0.png"),
                "--model",
                str(tmp_path / "mine"),
                "--device",
                "cpu",
                "--dtype",
                "bfloat16",
            ]
        )
        == 0
    )
    assert "p0.png" in capsys.readouterr().out
    assert main(["score", str(tmp_path / "p0.png"), "--model", str(tmp_path / "base"), "--device", "tpu9"]) == 2
    assert "tpu9" in capsys.readouterr().err


def test_save_finetuned_takes_models_or_weight_files(tmp_path, base, tuned):
    from taskvec_aesthetics.task_vectors.bank_files import model_weights

    tuned["b"].save_pretrained(tmp_path / "b")
    shapes = {n: list(p.shape) for n, p in base.named_parameters()}
    sources = {"a": lambda: tuned["a"], "b": lambda: model_weights(tmp_path / "b", shapes)}
    bank = TaskVectorBank.save_finetuned(tmp_path / "bank", base, sources, storage_dtype="float32")
    reference = TaskVectorBank.from_finetuned(base, {"a": tuned["a"], "b": tuned["b"]})
    for task in ("a", "b"):
        for name in reference.parameter_names:
            assert torch.equal(bank[task][name], reference[task][name]), (task, name)
    assert model_weights(tmp_path / "nothing-here", shapes) is None
