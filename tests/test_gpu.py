"""The GPU paths: personalization, scoring, micro-batched gradients, checkpointing and fine-tuning on a CUDA device.

Skipped where there is no GPU. `TASKVEC_AESTHETICS_TEST_DEVICE=cpu` runs the same checks on the CPU (to check the
tests themselves)."""

import os

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import perturbed_copy, pixels, tiny_model

from taskvec_aesthetics import AestheticModel, TaskVectorBank
from taskvec_aesthetics.personalization.config import PersonalizerConfig
from taskvec_aesthetics.personalization.inputs import EncodedRatings
from taskvec_aesthetics.personalization.optimisation import resolve_device
from taskvec_aesthetics.personalization.personalizer import Personalizer

DEVICE = os.environ.get("TASKVEC_AESTHETICS_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(
    DEVICE == "cuda" and not torch.cuda.is_available(),
    reason="needs a CUDA device (set TASKVEC_AESTHETICS_TEST_DEVICE)",
)
TASKS = ["a", "b", "c"]


@pytest.fixture(autouse=True)
def exact_float32():
    """TF32 convolutions would make float32 on the GPU differ from the CPU by more than rounding."""
    previous = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = previous


@pytest.fixture(scope="module")
def base():
    return tiny_model("clip")


@pytest.fixture(scope="module")
def bank(tmp_path_factory, base):
    folder = tmp_path_factory.mktemp("bank") / "bank"
    tuned = {t: perturbed_copy(base, i + 1) for i, t in enumerate(TASKS)}
    TaskVectorBank.from_finetuned(base, tuned).save_pretrained(folder)
    return TaskVectorBank.from_pretrained(folder, base=base)


def _ratings(n=16, seed=0):
    rng = np.random.default_rng(seed)
    images = [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(n)]
    return [(image, float(i % 5)) for i, image in enumerate(images)], images


def test_auto_resolves_to_the_gpu_and_bfloat16():
    if DEVICE != "cuda":
        pytest.skip("checks the CUDA default")
    from taskvec_aesthetics.personalization.optimisation import resolve_dtype

    device = resolve_device("auto")
    assert device.type == "cuda" and resolve_dtype("auto", device) == torch.bfloat16


def test_the_activation_budget_is_half_the_free_gpu_memory(base, bank):
    if DEVICE != "cuda":
        pytest.skip("checks the CUDA default")
    personalizer = Personalizer(base, bank, PersonalizerConfig(device="cuda"))
    free, total = torch.cuda.mem_get_info()
    assert 0.4 * free <= personalizer.activation_budget_bytes <= 0.5 * total


def test_personalization_on_the_device_matches_the_cpu(base, bank):
    ratings, images = _ratings()

    def fit(device):
        config = PersonalizerConfig(device=device, dtype="float32", selection="last", steps=10, batch_size=8)
        return base.personalize(ratings, bank=bank, config=config)

    on_device, on_cpu = fit(DEVICE), fit("cpu")
    assert on_device.personalization.coefficients.task_names == TASKS
    torch.testing.assert_close(
        on_device.personalization.coefficients.values,
        on_cpu.personalization.coefficients.values,
        rtol=1e-3,
        atol=1e-4,
    )
    torch.testing.assert_close(on_device.score(images, device=DEVICE), on_cpu.score(images), rtol=1e-3, atol=1e-4)


def test_bfloat16_autocast_personalizes_and_scores(base, bank):
    ratings, images = _ratings()
    config = PersonalizerConfig(device=DEVICE, dtype="bfloat16", selection="last", steps=10, batch_size=8)
    personalizer = Personalizer(base, bank, config)
    result = personalizer.fit(ratings)
    assert personalizer.dtype == torch.bfloat16 and personalizer.device.type == torch.device(DEVICE).type
    assert torch.isfinite(result.coefficients.values).all()
    scores = result.model.score(images, device=DEVICE)
    # The fitted model scores in float32 unless asked: the half-precision network differs by its rounding only.
    assert torch.isfinite(scores).all()
    torch.testing.assert_close(result.model.score(images, device="cpu"), scores, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("gradient", ["autograd", "streamed"])
def test_micro_batched_and_checkpointed_gradients_equal_the_full_batch_on_the_device(base, bank, gradient):
    def step(**config):
        # In float64, so that summing the micro-batches in another order than the full batch changes nothing
        # visible (in float32 a GPU's kernels for 3 and for 10 images round differently).
        settings = PersonalizerConfig(device=DEVICE, dtype="float64", gradient=gradient, **config)
        personalizer = Personalizer(base, bank, settings)
        layout = personalizer.layout_of("layer")
        generator = torch.Generator().manual_seed(0)
        start = 0.3 * torch.randn(layout.num_groups, len(TASKS), generator=generator)
        values = start.to(personalizer.device, torch.float64).requires_grad_(True)
        batch = EncodedRatings(pixels(10), torch.arange(10, dtype=torch.float64) % 4)
        encoded = EncodedRatings(personalizer.encode(batch.prefix), batch.ratings)
        loss = personalizer._step_gradient(values, {}, encoded, values.detach().clone())
        return float(loss), values.grad.cpu()

    loss, full = step()
    assert full.abs().sum() > 0
    for config in ({"micro_batch_size": 3}, {"micro_batch_size": 2, "gradient_checkpointing": True}):
        micro_loss, micro = step(**config)
        assert micro_loss == pytest.approx(loss, rel=1e-9), config
        torch.testing.assert_close(micro, full, rtol=1e-7, atol=1e-12, msg=f"{config}")


def test_scoring_on_the_device_matches_the_cpu(base):
    images = pixels(6)
    on_cpu = base.score(images)
    on_device = base.score(images, device=DEVICE)
    assert next(base.parameters()).device.type == "cpu"  # scoring elsewhere leaves the model where it was
    torch.testing.assert_close(on_device, on_cpu, rtol=1e-4, atol=1e-5)


def test_fine_tuning_with_checkpointing_on_the_device_builds_a_bank_that_personalizes(tmp_path):
    from database_fixtures import write_database_fixture

    from taskvec_aesthetics.data import load_database
    from taskvec_aesthetics.training.bank_building import build_bank
    from taskvec_aesthetics.training.fine_tuning import FinetuneConfig, finetune

    root = write_database_fixture("koniq10k", tmp_path / "data", num_images=12)
    tiny_model("clip").save_pretrained(tmp_path / "base")
    base = AestheticModel.from_pretrained(tmp_path / "base")
    train = load_database("koniq10k", root, split="train", level="image")
    runs = []
    for name, frozen in (("all", None), ("top", 1)):
        config = FinetuneConfig(
            tmp_path / name,
            batch_size=4,
            max_steps=2,
            lr_encoder=1e-2,
            freeze_prefix_blocks=frozen,
            gradient_checkpointing=True,
        )
        finetune(base, train, None, config, score_range=(1.0, 5.0))
        runs.append(tmp_path / name)
    bank = build_bank(runs, tmp_path / "base", save_directory=tmp_path / "bank")
    assert bank.task_names == ["all", "top"]
    tuned = AestheticModel.from_pretrained(tmp_path / "all" / "model").state_dict()
    assert all(torch.isfinite(t).all() for t in tuned.values())
    assert not torch.equal(tuned["head.fc1.weight"], base.state_dict()["head.fc1.weight"])
    ratings, images = _ratings(12)
    model = base.personalize(ratings, bank=TaskVectorBank.from_pretrained(tmp_path / "bank"), device=DEVICE)
    assert torch.isfinite(model.score(images, device=DEVICE)).all()


def test_the_command_line_personalizes_scores_and_serves_many_users_on_the_device(tmp_path, base, bank, capsys):
    import csv
    import json

    from taskvec_aesthetics.cli import main

    base.save_pretrained(tmp_path / "base")
    bank.save_pretrained(tmp_path / "bank")
    rng = np.random.default_rng(0)
    with open(tmp_path / "ratings.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "score", "user_id"])
        for i in range(24):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / f"p{i}.png")
            writer.writerow([f"p{i}.png", (i * 7) % 5, f"u{i % 2}"])
    common = ["--model", str(tmp_path / "base"), "--bank", str(tmp_path / "bank")]
    common += ["--ratings", str(tmp_path / "ratings.csv"), "--steps", "5", "--device", DEVICE]
    assert main(["personalize", *common, "--output", str(tmp_path / "mine")]) == 0, capsys.readouterr().err
    record = json.loads((tmp_path / "mine" / "personalization.json").read_text())["info"]["personalizer"]
    assert torch.device(record["device"]).type == torch.device(DEVICE).type
    capsys.readouterr()
    assert main(["score", str(tmp_path / "p0.png"), "--model", str(tmp_path / "mine"), "--device", DEVICE]) == 0
    assert "p0.png" in capsys.readouterr().out
    assert main(["personalize-many", *common, "--output", str(tmp_path / "many")]) == 0, capsys.readouterr().err
    rows = json.loads((tmp_path / "many" / "summary.json").read_text())["users"]
    assert len(rows) == 2 and not any(row.get("error") for row in rows), rows
