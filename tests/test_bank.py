"""TaskVector arithmetic and TaskVectorBank building, saving, lazy loading and integrity checks."""

import json

import pytest
import torch
from tiny_models import perturbed_copy, pixels, tiny_model

from taskvec_aesthetics import FingerprintMismatchError, TaskVector, TaskVectorBank, model_fingerprint
from taskvec_aesthetics.constants import BANK_CONFIG_FILE
from taskvec_aesthetics.errors import IntegrityError


@pytest.fixture(scope="module")
def base():
    return tiny_model("clip")


@pytest.fixture(scope="module")
def bank(base):
    tuned = {f"db{i}": perturbed_copy(base, seed=i) for i in range(3)}
    metadata = {"db0": {"database": "koniq10k", "kind": "iqa", "num_images": 10, "metrics": {"srocc": 0.8}}}
    return TaskVectorBank.from_finetuned(base, tuned, metadata=metadata)


def test_task_vector_arithmetic(base):
    a = TaskVector.from_models(base, perturbed_copy(base, 1))
    b = TaskVector.from_models(base, perturbed_copy(base, 2))
    zero = a + (-a)
    assert all(torch.count_nonzero(t) == 0 for t in zero.values())
    assert (a - a).norm() == 0.0
    assert torch.allclose((2 * a)["head.fc2.weight"], a["head.fc2.weight"] * 2)
    assert torch.allclose((a * 0.5 + b)["head.fc1.bias"], 0.5 * a["head.fc1.bias"] + b["head.fc1.bias"])
    with pytest.raises(TypeError, match="real number"):
        a * "2"
    with pytest.raises(ValueError, match="different parameters"):
        a + TaskVector({"head.fc2.bias": torch.zeros(10)})


def test_apply_to_adds_vector_without_mutating(base):
    tuned = perturbed_copy(base, 3)
    vector = TaskVector.from_models(base, tuned)
    before = {n: p.clone() for n, p in base.named_parameters()}
    rebuilt = vector.apply_to(base)
    assert all(torch.equal(p, before[n]) for n, p in base.named_parameters())
    x = pixels(2)
    assert torch.allclose(rebuilt(pixel_values=x).scores, tuned(pixel_values=x).scores, atol=1e-6)


def test_bank_covers_only_changed_parameters():
    base = tiny_model("efficientnet_lite")
    tuned = {t: perturbed_copy(base, i, skip_prefix="encoder.stem") for i, t in enumerate(["a", "b"])}
    bank = TaskVectorBank.from_finetuned(base, tuned)
    assert bank.parameter_names and not any(n.startswith("encoder.stem") for n in bank.parameter_names)
    assert base.untouched_prefix_blocks(bank.parameter_names) == 0  # block.0 moved
    explicit = TaskVectorBank.from_finetuned(base, tuned, parameter_names=["head.fc2.weight", "head.fc2.bias"])
    assert explicit.parameter_names == ["head.fc2.weight", "head.fc2.bias"]
    assert base.untouched_prefix_blocks(explicit.parameter_names) == base.adapter.num_blocks


def test_save_load_lazy_round_trip(tmp_path, base, bank):
    bank.save_pretrained(tmp_path)
    config = json.loads((tmp_path / BANK_CONFIG_FILE).read_text())
    assert config["format_version"] == 1 and config["base"]["fingerprint"] == model_fingerprint(base)
    assert [t["name"] for t in config["tasks"]] == ["db0", "db1", "db2"]
    assert config["tasks"][0]["metrics"] == {"srocc": 0.8} and config["tasks"][0]["database"] == "koniq10k"
    assert sorted(p.name for p in (tmp_path / "task_vectors").iterdir()) == [f"db{i}.safetensors" for i in range(3)]
    loaded = TaskVectorBank.from_pretrained(tmp_path, base=base)
    assert loaded._vectors == {}  # lazy: nothing read yet
    assert torch.equal(loaded["db1"]["head.fc1.weight"], bank["db1"]["head.fc1.weight"])
    assert loaded._vectors == {} and loaded._stacked is None  # read when used, not kept
    subset = TaskVectorBank.from_pretrained(tmp_path, tasks=["db2", "db0"])
    assert subset.task_names == ["db2", "db0"]
    with pytest.raises(KeyError, match="no task 'db1'"):
        subset["db1"]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_storage_dtype(tmp_path, bank, dtype):
    bank.save_pretrained(tmp_path, storage_dtype=dtype)
    loaded = TaskVectorBank.from_pretrained(tmp_path)
    assert loaded.storage_dtype == dtype
    original, restored = bank["db0"]["head.fc1.weight"], loaded["db0"]["head.fc1.weight"]
    assert restored.dtype == torch.float32
    assert torch.allclose(restored, original, rtol=1e-2, atol=1e-3) and not torch.equal(restored, original)
    # Saving never changes the bank saved: later saves still default to its own dtype.
    assert (bank.storage_dtype, bank.root, bank.source) == ("float32", None, None)
    bank.save_pretrained(tmp_path / "again")
    assert TaskVectorBank.from_pretrained(tmp_path / "again").storage_dtype == "float32"


def test_add_task_writes_only_new_file(tmp_path, base, bank):
    bank.save_pretrained(tmp_path)
    loaded = TaskVectorBank.from_pretrained(tmp_path)
    first = (tmp_path / "task_vectors" / "db0.safetensors").stat().st_mtime_ns
    loaded.add_task("db3", perturbed_copy(base, 9), base=base, database="spaq", num_images=5)
    loaded.save_pretrained(tmp_path)
    assert (tmp_path / "task_vectors" / "db0.safetensors").stat().st_mtime_ns == first
    again = TaskVectorBank.from_pretrained(tmp_path)
    assert again.task_names == ["db0", "db1", "db2", "db3"] and again.info("db3").database == "spaq"
    with pytest.raises(ValueError, match="already has a task"):
        again.add_task("db3", again["db3"])


def test_wrong_base_is_a_clear_error(tmp_path, bank):
    other = tiny_model("clip", seed=1)
    with pytest.raises(FingerprintMismatchError, match=bank.base_fingerprint):
        bank.check_base(other)
    bank.save_pretrained(tmp_path)
    with pytest.raises(FingerprintMismatchError, match=model_fingerprint(other)):
        TaskVectorBank.from_pretrained(tmp_path, base=other)


def test_bad_files(tmp_path, bank):
    bank.save_pretrained(tmp_path)
    (tmp_path / "task_vectors" / "db0.safetensors").write_bytes(b"pickle? no thanks")
    with pytest.raises(IntegrityError, match="db0.safetensors has 17 bytes, but bank_config.json records"):
        TaskVectorBank.from_pretrained(tmp_path)["db0"]
    # A bank saved by an earlier version records no checksums: its files' content is still checked.
    config = json.loads((tmp_path / BANK_CONFIG_FILE).read_text())
    for task in config["tasks"]:
        del task["sha256"], task["size"]
    (tmp_path / BANK_CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        TaskVectorBank.from_pretrained(tmp_path)["db0"]
    from safetensors.torch import save_file

    save_file({"head.fc2.bias": torch.zeros(10)}, str(tmp_path / "task_vectors" / "db1.safetensors"))
    with pytest.raises(ValueError, match="missing keys"):
        TaskVectorBank.from_pretrained(tmp_path)["db1"]
    with pytest.raises(FileNotFoundError, match="bank_config.json"):
        TaskVectorBank.from_pretrained(tmp_path / "task_vectors")


def test_fingerprint_is_stable_and_sensitive(base):
    assert model_fingerprint(base) == model_fingerprint(tiny_model("clip"))
    nudged = perturbed_copy(base, 0, scale=1e-3)
    assert model_fingerprint(nudged) != model_fingerprint(base)
