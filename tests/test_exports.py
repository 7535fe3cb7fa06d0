"""Coefficients-only and merged exports: sizes, round trips (also in a fresh process), and clear failures."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_models import perturbed_copy, pixels, tiny_model

from taskvec_aesthetics import AestheticModel, Coefficients, FingerprintMismatchError, TaskVectorBank
from taskvec_aesthetics.errors import IntegrityError, OverwriteError

TASKS = ["ava", "tad66k", "para", "flickr-aes", "koniq10k", "spaq"]


@pytest.fixture()
def saved(tmp_path):
    """A saved base, a saved 6-task bank, and a layer-wise personalized model built from them."""
    base = tiny_model("efficientnet_lite")
    base.save_pretrained(tmp_path / "base")
    base = AestheticModel.from_pretrained(tmp_path / "base").eval()
    tuned = {t: perturbed_copy(base, i, scale=0.2) for i, t in enumerate(TASKS)}
    bank = TaskVectorBank.from_finetuned(base, tuned)
    bank.save_pretrained(tmp_path / "bank")
    bank = TaskVectorBank.from_pretrained(tmp_path / "bank")
    groups = base.adapter.num_blocks + 3
    values = torch.rand(groups, len(TASKS), generator=torch.Generator().manual_seed(0))
    personalized = base.with_coefficients(bank, values, info={"num_ratings": 20})
    return tmp_path, base, bank, personalized


def test_personalization_changes_output(saved):
    _, base, _, personalized = saved
    x = pixels(4)
    assert (personalized(pixel_values=x).scores - base(pixel_values=x).scores).abs().max() > 1e-3


def test_coefficients_export_is_small_and_reloads_exactly(saved):
    root, base, _, personalized = saved
    x = pixels(4)
    expected = personalized(pixel_values=x).scores
    assert (expected - base(pixel_values=x).scores).abs().max() > 1e-3
    personalized.save_pretrained(root / "mine", export="coefficients")
    files = sorted(p.name for p in (root / "mine").iterdir())
    assert "model.safetensors" not in files and "coefficients.safetensors" in files
    total = sum(p.stat().st_size for p in (root / "mine").iterdir())
    assert total < 64 * 1024, f"coefficients export is {total} bytes"
    config = json.loads((root / "mine" / "config.json").read_text())
    assert config["base_model"]["path"] == str((root / "base").resolve())
    assert config["base_model"]["fingerprint"] == personalized.personalization.base_fingerprint
    assert config["bank"]["tasks"] == TASKS
    record = json.loads((root / "mine" / "personalization.json").read_text())
    assert record["coefficients"]["task_names"] == TASKS and record["info"] == {"num_ratings": 20}
    reloaded = AestheticModel.from_pretrained(root / "mine").eval()
    assert (reloaded(pixel_values=x).scores - expected).abs().max() <= 1e-5
    assert reloaded.personalization.coefficients.allclose(personalized.personalization.coefficients)


def test_coefficients_export_reloads_in_a_fresh_process(saved):
    root, _, _, personalized = saved
    personalized.save_pretrained(root / "mine", export="coefficients")
    x = pixels(4)
    torch.save(x, root / "x.pt")
    expected = personalized.eval()(pixel_values=x).scores
    script = (
        "import sys, torch; from taskvec_aesthetics import AestheticModel; from transformers import AutoModel;"
        "m = AutoModel.from_pretrained(sys.argv[1]).eval();"
        "x = torch.load(sys.argv[2], weights_only=True);"
        "print(repr(m(pixel_values=x).scores.tolist()))"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script, str(root / "mine"), str(root / "x.pt")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    fresh = torch.tensor(eval(result.stdout.strip().splitlines()[-1]))
    assert (fresh - expected).abs().max() <= 1e-5


def test_merged_export_reloads_exactly(saved):
    root, _, _, personalized = saved
    x = pixels(4)
    personalized.save_pretrained(root / "merged", export="merged")
    assert (root / "merged" / "model.safetensors").is_file()
    reloaded = AestheticModel.from_pretrained(root / "merged").eval()
    assert (reloaded(pixel_values=x).scores - personalized(pixel_values=x).scores).abs().max() <= 1e-5
    assert reloaded.personalization.coefficients.allclose(personalized.personalization.coefficients)
    assert reloaded.config.base_model is None


def test_missing_base_or_bank_is_a_clear_error(saved):
    root, _, _, personalized = saved
    personalized.save_pretrained(root / "mine", export="coefficients")
    (root / "bank" / "bank_config.json").rename(root / "bank_config.moved")
    with pytest.raises(ValueError, match="cannot load its bank"):
        AestheticModel.from_pretrained(root / "mine")
    (root / "bank_config.moved").rename(root / "bank" / "bank_config.json")
    (root / "base" / "model.safetensors").rename(root / "weights.moved")
    with pytest.raises((ValueError, OSError)):
        AestheticModel.from_pretrained(root / "mine")


def test_changed_base_is_refused(saved):
    root, base, _, personalized = saved
    personalized.save_pretrained(root / "mine", export="coefficients")
    perturbed_copy(base, 42, scale=0.01).save_pretrained(root / "base")
    with pytest.raises(FingerprintMismatchError, match="refusing"):
        AestheticModel.from_pretrained(root / "mine")


def test_coefficients_export_needs_saved_base_and_bank(saved, tmp_path):
    _, base, bank, _ = saved
    unsaved_bank = TaskVectorBank.from_finetuned(base, {"x": perturbed_copy(base, 5)})
    model = base.with_coefficients(unsaved_bank, {"x": 0.5})
    with pytest.raises(ValueError, match="the bank has no saved location"):
        model.save_pretrained(tmp_path / "out", export="coefficients")
    with pytest.raises(ValueError, match="needs a personalized model"):
        base.save_pretrained(tmp_path / "out2", export="coefficients")
    with pytest.raises(ValueError, match="export must be one of"):
        base.save_pretrained(tmp_path / "out3", export="pickle")


def test_coefficients_file_validation(tmp_path):
    (tmp_path / "coefficients.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        Coefficients.load(tmp_path)
    from safetensors.torch import save_file

    save_file({"other": torch.zeros(1)}, str(tmp_path / "coefficients.safetensors"))
    with pytest.raises(ValueError, match="not a coefficients file"):
        Coefficients.load(tmp_path)


# -- read-back checks ------------------------------------------------------------------------------------------------
def _flip_byte(path, offset=-5):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_flipped_byte_in_coefficients_is_an_error_naming_the_file(saved):
    # The last bytes of the file are coefficient values: 0.300 read back as 0.298 would load silently.
    root, _, _, personalized = saved
    personalized.save_pretrained(root / "mine", export="coefficients")
    assert "coefficients.safetensors" in json.loads((root / "mine" / "checksums.json").read_text())["files"]
    _flip_byte(root / "mine" / "coefficients.safetensors")
    with pytest.raises(IntegrityError, match=r"coefficients\.safetensors has sha256"):
        AestheticModel.from_pretrained(root / "mine")


def test_an_edited_weight_in_a_merged_export_is_an_error_naming_the_file(saved):
    root, _, _, personalized = saved
    personalized.save_pretrained(root / "merged")
    recorded = json.loads((root / "merged" / "checksums.json").read_text())["files"]
    assert {"config.json", "model.safetensors", "personalization.json", "preprocessor_config.json"} <= set(recorded)
    AestheticModel.from_pretrained(root / "merged")  # intact: loads
    _flip_byte(root / "merged" / "model.safetensors")
    with pytest.raises(IntegrityError, match=r"model\.safetensors has sha256"):
        AestheticModel.from_pretrained(root / "merged")


def test_a_folder_without_checksums_from_an_earlier_release_still_loads(saved):
    root, _, _, personalized = saved
    x = pixels(2)
    for export in ("coefficients", "merged"):
        personalized.save_pretrained(root / export, export=export)
        (root / export / "checksums.json").unlink()
        reloaded = AestheticModel.from_pretrained(root / export).eval()
        torch.testing.assert_close(reloaded(pixel_values=x).scores, personalized(pixel_values=x).scores)


def test_a_merged_export_missing_a_head_tensor_is_an_error_not_a_random_head(saved):
    root, _, _, personalized = saved
    personalized.save_pretrained(root / "merged")
    (root / "merged" / "checksums.json").unlink()  # as a folder of an earlier release, or one edited on purpose
    weights = load_file(root / "merged" / "model.safetensors")
    del weights["head.fc2.weight"]
    save_file(weights, root / "merged" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(IntegrityError, match=r"lack 1 tensors of the model: \['head\."):
        AestheticModel.from_pretrained(root / "merged")


def test_a_caller_asking_for_the_loading_info_gets_the_damage_reported_not_raised(saved):
    """transformers' contract for `output_loading_info=True`: the caller inspects missing tensors and damage."""
    root, _, _, personalized = saved
    personalized.save_pretrained(root / "merged")
    weights = load_file(root / "merged" / "model.safetensors")
    del weights["head.fc2.weight"]
    save_file(weights, root / "merged" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(IntegrityError, match="lack 1 tensors"):
        AestheticModel.from_pretrained(root / "merged")
    _, info = AestheticModel.from_pretrained(root / "merged", output_loading_info=True)
    assert "head.fc2.weight" in info["missing_keys"]
    assert any("model.safetensors" in message for message in info["error_msgs"])


@pytest.mark.parametrize("export", ["merged", "coefficients"])
def test_a_personalized_model_is_never_saved_over_its_base(saved, export):
    root, _, _, personalized = saved
    before = (root / "base" / "model.safetensors").read_bytes()
    with pytest.raises(OverwriteError, match="holds its base model"):
        personalized.save_pretrained(root / "base", export=export)
    assert (root / "base" / "model.safetensors").read_bytes() == before
    AestheticModel.from_pretrained(root / "base")
