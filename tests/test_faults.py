"""Hostile files, crashes and concurrent writers (fault injection).

Each test is named after what it guarantees; the comment above it says which failure it injects.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import signal
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from database_fixtures import write_database_fixture
from PIL import Image
from safetensors.torch import load_file, save_file
from tiny_models import perturbed_copy, pixels, tiny_model

from taskvec_aesthetics import AestheticModel, FingerprintMismatchError, TaskVector, TaskVectorBank, model_fingerprint
from taskvec_aesthetics.cli import main
from taskvec_aesthetics.constants import BANK_CONFIG_FILE
from taskvec_aesthetics.data import DatabaseFormatError, load_ratings
from taskvec_aesthetics.errors import ConfigError, FolderNotFoundError, IntegrityError, UnsafePathError
from taskvec_aesthetics.hub.references import Reference
from taskvec_aesthetics.processing import ImageTooLargeError, open_image
from taskvec_aesthetics.training.fine_tuning import FinetuneConfig, finetune_database

TASKS = ["a", "b", "c"]


def constant_bank(base: AestheticModel, value: float, names=TASKS) -> TaskVectorBank:
    """A bank over the head whose every task vector is ``value`` everywhere; ``num_images`` records the value."""
    shapes = {n: p.shape for n, p in base.named_parameters() if n.startswith("head.")}
    vectors = {t: TaskVector({n: torch.full(s, float(value)) for n, s in shapes.items()}) for t in names}
    metadata = {t: {"num_images": int(value)} for t in names}
    return TaskVectorBank.from_finetuned(base, vectors, metadata=metadata, parameter_names=list(shapes))


def assert_bank_consistent(folder: Path) -> int:
    """Load a bank completely; every task file must hold the value its config records. Returns that value."""
    bank = TaskVectorBank.from_pretrained(folder)
    values = {t.num_images for t in bank.tasks}
    assert len(values) == 1, f"the config mixes versions {values}"
    (value,) = values
    for name in bank.task_names:
        assert all(torch.all(t == value) for t in bank[name].values()), f"task {name} is not version {value}"
    return value


@pytest.fixture()
def saved(tmp_path):
    """A saved base and a saved 3-task bank, loaded back from their folders."""
    base = tiny_model("clip")
    base.save_pretrained(tmp_path / "base")
    base = AestheticModel.from_pretrained(tmp_path / "base").eval()
    TaskVectorBank.from_finetuned(base, {t: perturbed_copy(base, i) for i, t in enumerate(TASKS)}).save_pretrained(
        tmp_path / "bank"
    )
    return tmp_path, base, TaskVectorBank.from_pretrained(tmp_path / "bank")


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


# -- 1. path traversal ------------------------------------------------------------------------------------------------
# A bank_config.json whose task file points outside the folder (relative, absolute, or through a symlink).
@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_file_entries_outside_the_folder_are_refused_before_any_read_or_write(saved, kind):
    root, base, bank = saved
    victim = root / "victim.safetensors"
    victim.write_bytes((root / "bank" / "task_vectors" / "a.safetensors").read_bytes())
    before = victim.read_bytes()
    entry = {"dotdot": "../victim.safetensors", "absolute": str(victim), "symlink": "task_vectors/link.safetensors"}
    if kind == "symlink":
        (root / "bank" / "task_vectors" / "link.safetensors").symlink_to(victim)
    edit_json(
        root / "bank" / BANK_CONFIG_FILE, lambda c: c["tasks"][0].update(file=entry[kind], sha256=None, size=None)
    )
    with pytest.raises(UnsafePathError, match=r"bank_config.json: (field )?tasks\[0\]"):
        TaskVectorBank.from_pretrained(root / "bank")
    # A bank object carrying such an entry cannot write through it either.
    bank.tasks[0].file = entry[kind]
    with pytest.raises(UnsafePathError):
        bank.save_pretrained(root / "bank")
    assert victim.read_bytes() == before


# -- 2 and 8. checkpoints: no pickle, fallback past a damaged newest one ----------------------------------------------
class _Planted:
    """Unpickling this runs code: it creates the file named by ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def training_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults_training")
    koniq = write_database_fixture("koniq10k", root / "data", num_images=12)
    tiny_model("clip").save_pretrained(root / "base")
    settings = {"batch_size": 2, "max_steps": 4, "eval_every_epoch": False}
    full = finetune_database(
        "koniq10k",
        koniq,
        root / "base",
        FinetuneConfig(root / "full", checkpoint_every=2, **settings),
        eval_split=None,
    )
    return root, koniq, settings, {n: t.detach().clone() for n, t in full.model.state_dict().items()}


def _resume(root, koniq, settings, run, resume):
    config = FinetuneConfig(root / run, **settings)
    return finetune_database("koniq10k", koniq, root / "base", config, eval_split=None, resume_from_checkpoint=resume)


def test_resume_reads_no_pickle(training_run, tmp_path):
    # Pickles planted in every checkpoint under the names Accelerate uses must never be loaded.
    root, koniq, settings, expected = training_run
    marker = tmp_path / "pwned"
    checkpoints = root / "full" / "checkpoints"
    for folder in checkpoints.iterdir():
        if folder.is_dir():
            for name in ("custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin", "scheduler.bin"):
                (folder / name).write_bytes(pickle.dumps(_Planted(str(marker))))
    resumed = _resume(root, koniq, settings, "full", checkpoints / "step-00000002")
    assert not marker.exists()
    assert all(torch.equal(resumed.model.state_dict()[n], t) for n, t in expected.items())
    # A checkpoint in the old, pickled format is refused with a clear error.
    old = tmp_path / "old" / "step-00000002"
    old.mkdir(parents=True)
    (old / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
    (old / "custom_checkpoint_0.pkl").write_bytes(pickle.dumps(_Planted(str(marker))))
    with pytest.raises(ConfigError, match="never loaded"):
        _resume(root, koniq, settings, "full", old)
    assert not marker.exists()


@pytest.mark.parametrize("damaged", ["model.safetensors", "optimizer.safetensors"])
def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(training_run, tmp_path, caplog, damaged):
    root, koniq, settings, expected = training_run
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    for folder in (root / "full" / "checkpoints").iterdir():
        if folder.is_dir():
            (run / "checkpoints" / folder.name).mkdir()
            for file in folder.iterdir():
                if file.suffix in (".json", ".safetensors"):
                    (run / "checkpoints" / folder.name / file.name).write_bytes(file.read_bytes())
    newest = run / "checkpoints" / "step-00000004" / damaged
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # truncated, as by a full disk
    with caplog.at_level(logging.WARNING, logger="taskvec_aesthetics.training.checkpoints"):
        config = FinetuneConfig(run, **settings)
        resumed = finetune_database(
            "koniq10k", koniq, root / "base", config, eval_split=None, resume_from_checkpoint="latest"
        )
    assert any("step-00000004" in r.message and "previous" in r.message for r in caplog.records)
    assert resumed.history[-1]["step"] == 4
    assert all(torch.equal(resumed.model.state_dict()[n], t) for n, t in expected.items())


# -- 3. integrity -----------------------------------------------------------------------------------------------------
# One flipped byte in the tensor data of a task file.
def test_a_flipped_byte_in_a_task_file_is_detected(saved):
    root, base, _ = saved
    path = root / "bank" / "task_vectors" / "b.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01  # a value in the tensor data, not the header: the file still parses
    path.write_bytes(bytes(data))
    bank = TaskVectorBank.from_pretrained(root / "bank", base=base)
    assert torch.isfinite(bank["a"]["head.fc2.bias"]).all()
    with pytest.raises(IntegrityError, match=r"b.safetensors has sha256 .* records .* task 'b'"):
        bank["b"]


# A base edited in one value that the old fingerprint did not sample.
def test_an_edited_base_is_refused_by_its_exports(saved):
    root, base, bank = saved
    mine = base.with_coefficients(bank, {"a": 0.5})
    mine.save_pretrained(root / "mine", export="coefficients")
    edited = AestheticModel.from_pretrained(root / "base")
    largest = max(edited.parameters(), key=lambda p: p.numel())
    with torch.no_grad():
        largest.view(-1)[1] += 0.5  # between the 64 values per tensor that the old fingerprint sampled
    edited.save_pretrained(root / "base")
    with pytest.raises(ValueError, match="fingerprint"):
        AestheticModel.from_pretrained(root / "mine")


def test_legacy_fingerprints_still_load_with_a_warning(saved, caplog):
    # A bank from an earlier version: sampled fingerprint, no checksums. It loads, and says how to upgrade.
    from taskvec_aesthetics.task_vectors.fingerprint import _legacy_fingerprint

    root, base, _ = saved
    legacy = _legacy_fingerprint(base.state_dict())
    edit_json(root / "bank" / BANK_CONFIG_FILE, lambda c: c["base"].update(fingerprint=legacy))
    with caplog.at_level(logging.WARNING):
        bank = TaskVectorBank.from_pretrained(root / "bank", base=base)
    assert any("save it again" in r.message for r in caplog.records)
    bank.save_pretrained(root / "upgraded")
    upgraded = json.loads((root / "upgraded" / BANK_CONFIG_FILE).read_text())
    assert upgraded["base"]["fingerprint"] == model_fingerprint(base) != legacy
    assert all(t["sha256"] and t["size"] for t in upgraded["tasks"])
    with pytest.raises(FingerprintMismatchError):
        TaskVectorBank.from_pretrained(root / "bank", base=tiny_model("clip", seed=1))


# -- 4. umask ---------------------------------------------------------------------------------------------------------
def test_saved_files_follow_the_umask(saved):
    root, base, bank = saved
    mine = base.with_coefficients(bank, {"a": 0.5})
    previous = os.umask(0o022)
    try:
        bank.save_pretrained(root / "bank2")
        mine.save_pretrained(root / "merged")
        mine.save_pretrained(root / "coefficients", export="coefficients")
    finally:
        os.umask(previous)
    for folder in ("bank2", "merged", "coefficients"):
        for path in [root / folder, *(root / folder).rglob("*")]:
            expected = 0o755 if path.is_dir() else 0o644
            assert stat.S_IMODE(path.stat().st_mode) == expected, f"{path} has mode {oct(path.stat().st_mode)}"


# -- 5. kill -9 mid-save ----------------------------------------------------------------------------------------------
_CHILD = textwrap.dedent(
    """
    import os, sys, time
    import torch
    from tiny_models import tiny_model
    from test_faults import constant_bank, versioned_model
    from taskvec_aesthetics import AestheticModel, TaskVectorBank

    kind, root = sys.argv[1], sys.argv[2]
    base = AestheticModel.from_pretrained(os.path.join(root, "base"))
    bank = TaskVectorBank.from_pretrained(os.path.join(root, "bank"))

    def save(version):
        if kind == "bank":
            constant_bank(base, version).save_pretrained(os.path.join(root, "target"))
        else:
            export = "merged" if kind == "merged" else "coefficients"
            versioned_model(base, bank, version).save_pretrained(os.path.join(root, "target"), export=export)

    save(1)
    replace = os.replace

    def stalled_replace(*args, **kwargs):  # the first file of version 2 is written: stop here and wait for kill -9
        replace(*args, **kwargs)
        print("mid-save", flush=True)
        time.sleep(600)

    os.replace = stalled_replace
    save(2)
    """
)


def versioned_model(base, bank, version):
    """A personalized model whose coefficients, head bias and recorded facts all say ``version``."""
    model = base.with_coefficients(bank, {t: version / 10 for t in bank.task_names}, info={"num_ratings": version})
    with torch.no_grad():
        model.head.fc2.bias.fill_(float(version))
    return model


def _check_model(folder: Path, kind: str) -> int:
    model = AestheticModel.from_pretrained(folder)
    version = model.personalization.info["num_ratings"]
    values = model.personalization.coefficients.values
    assert torch.allclose(values, torch.full_like(values, version / 10)), "coefficients and facts differ in version"
    if kind == "merged":
        assert torch.all(model.head.fc2.bias == version), "weights and facts differ in version"
    return version


@pytest.mark.slow
def test_kill_9_mid_save_leaves_the_old_folder_and_the_next_save_cleans_up(tmp_path):
    base = tiny_model("clip")
    base.save_pretrained(tmp_path / "base")
    base = AestheticModel.from_pretrained(tmp_path / "base")
    constant_bank(base, 7).save_pretrained(tmp_path / "bank")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    kinds = ("bank", "merged", "coefficients")
    children = {}
    for kind in kinds:  # run side by side, each in its own copy of the fixture
        folder = tmp_path / kind
        for name in ("base", "bank"):
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(tmp_path / name, folder / name)
        children[kind] = subprocess.Popen(
            [sys.executable, "-c", _CHILD, kind, str(folder)], stdout=subprocess.PIPE, text=True, env=env
        )
    try:
        for kind, child in children.items():
            assert child.stdout.readline().strip() == "mid-save", f"the {kind} child did not reach the save"
            os.kill(child.pid, signal.SIGKILL)
            assert child.wait(timeout=60) == -signal.SIGKILL
    finally:
        for child in children.values():
            child.kill()
    bank = TaskVectorBank.from_pretrained(tmp_path / "bank")
    for kind in kinds:
        target = tmp_path / kind / "target"
        version = assert_bank_consistent(target) if kind == "bank" else _check_model(target, kind)
        assert version == 1, f"{kind}: a reader sees version {version} of a save that never completed"
        leftovers = [p.name for p in target.parent.iterdir() if p.name.startswith(".target.") and "lock" not in p.name]
        assert leftovers, "the killed save left no staging folder: it did not write into one"
        # The next save completes and removes what the killed one left.
        if kind == "bank":
            constant_bank(base, 3).save_pretrained(target)
            assert assert_bank_consistent(target) == 3
        else:
            export = "merged" if kind == "merged" else "coefficients"
            versioned_model(base, bank, 3).save_pretrained(target, export=export)
            assert _check_model(target, kind) == 3
        assert not [p for p in target.parent.iterdir() if p.name.startswith(".target.") and "lock" not in p.name]


# -- 6. stale files ---------------------------------------------------------------------------------------------------
def test_a_save_replaces_every_file_of_its_kind(saved):
    root, base, bank = saved
    mine = base.with_coefficients(bank, {"a": 0.5}, info={"calibration": {"slope": 2.0, "intercept": 1.0}})
    folder = root / "model"
    mine.save_pretrained(folder, export="coefficients")
    (folder / "notes.txt").write_text("mine")
    mine.save_pretrained(folder)  # merged over coefficients
    assert not (folder / "coefficients.safetensors").exists()
    base.save_pretrained(folder)  # a base over a personalized model
    assert not (folder / "personalization.json").exists() and (folder / "notes.txt").read_text() == "mine"
    reloaded = AestheticModel.from_pretrained(folder)
    assert reloaded.personalization is None
    x = pixels(2)
    assert torch.equal(reloaded.calibrate(reloaded(pixel_values=x).scores), base(pixel_values=x).scores)
    constant_bank(base, 2, names=["only"]).save_pretrained(root / "bank")
    assert sorted(p.name for p in (root / "bank" / "task_vectors").iterdir()) == ["only.safetensors"]


# -- 7. two writers ---------------------------------------------------------------------------------------------------
def test_two_writers_and_a_reader_of_one_folder(tmp_path):
    base = tiny_model("clip")
    banks = {v: constant_bank(base, v) for v in (1, 2)}
    models = {v: versioned_model(base, banks[1], v) for v in (1, 2)}
    target, model_target = tmp_path / "bank", tmp_path / "model"
    banks[1].save_pretrained(target)
    errors, seen = [], []

    def write(version):
        try:
            for _ in range(6):
                banks[version].save_pretrained(target)
                models[version].save_pretrained(model_target)
        except Exception as error:  # noqa: BLE001 - any failure of a writer is what this test looks for
            errors.append(error)

    writers = [threading.Thread(target=write, args=(v,)) for v in (1, 2)]
    for thread in writers:
        thread.start()
    while any(t.is_alive() for t in writers):
        try:
            seen.append(assert_bank_consistent(target))
        except IntegrityError as error:  # read lazily after a swap: the one allowed failure, and it says why
            assert "replaced by a save after this bank was loaded" in str(error)
    for thread in writers:
        thread.join()
    assert not errors, errors
    assert seen and set(seen) <= {1, 2}
    assert assert_bank_consistent(target) in (1, 2) and _check_model(model_target, "merged") in (1, 2)


@pytest.mark.slow
def test_two_processes_saving_one_model_folder_both_succeed(tmp_path):
    # Two processes build the same model folder at once: both succeed, the folder holds one whole model.
    script = textwrap.dedent(
        """
        import sys
        from tiny_models import tiny_model
        from taskvec_aesthetics.training.fine_tuning import save_model_dir
        from pathlib import Path
        for _ in range(3):
            save_model_dir(tiny_model("clip"), Path(sys.argv[1]))
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    runs = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "base")], env=env, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    assert [run.wait(timeout=300) for run in runs] == [0, 0], [run.stderr.read()[-2000:] for run in runs]
    assert torch.equal(AestheticModel.from_pretrained(tmp_path / "base")(pixel_values=pixels(1)).scores,
                       tiny_model("clip")(pixel_values=pixels(1)).scores)  # fmt: skip


# -- 9. images --------------------------------------------------------------------------------------------------------
def test_exif_orientation_is_applied(tmp_path):
    array = np.zeros((10, 20, 3), dtype=np.uint8)
    array[:, 10:] = 255  # right half white
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to view
    image.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    opened = open_image(tmp_path / "phone.jpg")
    assert opened.size == (10, 20)
    pixels_ = np.asarray(opened).mean(axis=(1, 2))
    assert pixels_[:8].mean() < 30 and pixels_[-8:].mean() > 220  # white now at the bottom


@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_high_bit_depth_images_are_scaled_by_range(tmp_path, mode):
    ramp = np.tile(np.linspace(0, 65535, 64), (8, 1))
    if mode == "F":
        ramp = ramp / 65535.0
    image = Image.fromarray(ramp.astype({"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]))
    assert image.mode == mode
    if mode == "I;16":
        image.save(tmp_path / "deep.png")
        image = tmp_path / "deep.png"
    rgb = np.asarray(open_image(image))[..., 0]
    assert (rgb == 255).mean() < 0.05 and abs(float(rgb.mean()) - 127.5) < 3
    assert np.all(np.diff(rgb[0].astype(int)) >= 0)


def test_decompression_bomb_names_the_image_and_how_to_allow_it(tmp_path, monkeypatch, capsys):
    Image.new("RGB", (100, 100)).save(tmp_path / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageTooLargeError, match=r"huge.png .*MAX_IMAGE_PIXELS"):
        open_image(tmp_path / "huge.png")
    tiny_model("clip").save_pretrained(tmp_path / "model")
    assert main(["score", str(tmp_path / "huge.png"), "--model", str(tmp_path / "model")]) == 2
    err = capsys.readouterr().err
    last = err.replace("\r", "\n").strip().splitlines()[-1]  # after any progress bar: one line
    assert last.startswith("error: ") and "huge.png" in last and "MAX_IMAGE_PIXELS" in last
    assert "Traceback" not in err


# -- 10. exports validated --------------------------------------------------------------------------------------------
def test_exports_are_validated_on_load(saved):
    root, base, bank = saved
    mine = base.with_coefficients(bank, {"a": 0.5, "b": -0.2})
    mine.save_pretrained(root / "coefficients", export="coefficients")
    mine.save_pretrained(root / "merged")
    for folder in ("coefficients", "merged"):  # values checked even where no checksums catch the edit
        (root / folder / "checksums.json").unlink()
    path = root / "coefficients" / "coefficients.safetensors"
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    save_file({"coefficients": torch.full((1, 3), 3e38)}, str(path), metadata=metadata)
    with pytest.raises(IntegrityError, match="coefficients.safetensors: a coefficient has magnitude 3e"):
        AestheticModel.from_pretrained(root / "coefficients")
    weights = load_file(str(root / "merged" / "model.safetensors"))
    weights["head.fc2.weight"][0, 0] = float("nan")
    save_file(weights, str(root / "merged" / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(IntegrityError, match="head.fc2.weight"):
        AestheticModel.from_pretrained(root / "merged")
    for slope in ("NaN", -1.0, "steep", 1e-300):  # 1e-300 maps every image to 0.0
        mine.save_pretrained(root / "calibrated")
        (root / "calibrated" / "checksums.json").unlink()
        edit_json(root / "calibrated" / "personalization.json",
                  lambda r: r["info"].update(calibration={"slope": slope, "intercept": 0.0}))  # fmt: skip
        with pytest.raises(ConfigError, match=r"personalization.json: field 'info': field 'calibration.slope'"):
            AestheticModel.from_pretrained(root / "calibrated")


def test_exports_are_validated_on_save_and_calibration_stays_finite(saved):
    root, base, bank = saved
    mine = base.with_coefficients(bank, {"a": 0.5})
    with torch.no_grad():
        mine.head.fc1.bias[0] = float("inf")
    with pytest.raises(IntegrityError, match="head.fc1.bias"):
        mine.save_pretrained(root / "broken")
    assert not (root / "broken").exists()
    images = [
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8)) for i in range(8)
    ]
    ratings = list(zip(images, [1.0, 2, 3, 4, 5, 6, 7, 1e200]))
    with pytest.raises(ConfigError, match="calibration.slope"):
        base.personalize(ratings, bank=bank, calibrate=True, steps=2)


def test_json_is_strict(tmp_path):
    from taskvec_aesthetics.utils.io import write_json

    write_json(tmp_path / "x.json", {"srocc": float("nan"), "nested": [float("inf"), 1.0]})
    text = (tmp_path / "x.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"nested": [None, 1.0], "srocc": None}


# -- 11. saving never changes the object saved ------------------------------------------------------------------------
def test_saving_a_bank_in_another_dtype_leaves_it_as_it_was(saved):
    root, base, bank = saved
    before = (bank.storage_dtype, bank.root, bank.source)
    bank.save_pretrained(root / "bf16", storage_dtype="bfloat16")
    assert (bank.storage_dtype, bank.root, bank.source) == before
    mine = base.with_coefficients(bank, {"a": 0.7, "c": -0.3})
    mine.save_pretrained(root / "mine", export="coefficients")
    x = pixels(3)
    reloaded = AestheticModel.from_pretrained(root / "mine")
    assert torch.equal(reloaded(pixel_values=x).scores, mine(pixel_values=x).scores)
    base.save_pretrained(root / "base-copy")
    assert base.source == Reference.local(root / "base")


# -- 12. clear errors -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "change, field",
    [
        (lambda c: c.update(tasks={"a": {}}), "field 'tasks'"),
        (lambda c: c["tasks"][1].pop("name"), r"tasks\[1\]: field 'name'"),
        (lambda c: c["parameters"].update({"head.fc2.bias": "10"}), r"field 'parameters\['head.fc2.bias'\]'"),
        (lambda c: c["tasks"][0].update(sha256=12), r"tasks\[0\]: field 'sha256'"),
        (lambda c: c.update(base="x"), "field 'base'"),
    ],
)
def test_malformed_bank_config_names_the_file_and_field(saved, change, field):
    root, _, _ = saved
    edit_json(root / "bank" / BANK_CONFIG_FILE, change)
    with pytest.raises(ConfigError, match=rf"bank_config.json: {field}"):
        TaskVectorBank.from_pretrained(root / "bank")


def test_forged_shape_and_bad_metadata_name_the_file_and_field(saved):
    root, base, bank = saved
    mine = base.with_coefficients(bank, {"a": 0.5})
    mine.save_pretrained(root / "mine", export="coefficients")
    (root / "mine" / "checksums.json").unlink()  # the content is checked too, where no checksum catches the edit
    path = root / "mine" / "coefficients.safetensors"
    tensors = load_file(str(path))
    save_file(tensors, str(path), metadata={"format": "pt", "granularity": "task", "group_names": "[all",
                                            "task_names": '["a", "b", "c"]'})  # fmt: skip
    with pytest.raises(ConfigError, match="coefficients.safetensors: metadata field 'group_names'"):
        AestheticModel.from_pretrained(root / "mine")
    edit_json(root / "bank" / BANK_CONFIG_FILE, lambda c: c["parameters"].update({"head.fc2.bias": [5, 2]}))
    with pytest.raises(ConfigError, match=r"bank_config.json: field 'parameters\['head.fc2.bias'\]' gives shape"):
        TaskVectorBank.from_pretrained(root / "bank", base=base)


def test_missing_folders_say_folder_not_found(tmp_path):
    for name in (tmp_path / "nowhere", "./nowhere", "a/b/nowhere"):
        with pytest.raises(FolderNotFoundError, match="folder not found"):
            TaskVectorBank.from_pretrained(name)
        with pytest.raises(FolderNotFoundError, match="folder not found"):
            AestheticModel.from_pretrained(name)


def test_utf16_and_semicolon_csv_name_the_likely_cause(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    (tmp_path / "utf16.csv").write_text("image,score\nx.png,3\n", encoding="utf-16")
    with pytest.raises(DatabaseFormatError, match="UTF-16"):
        load_ratings(tmp_path / "utf16.csv")
    (tmp_path / "semicolon.csv").write_text("image;score\nx.png;3\n")
    with pytest.raises(DatabaseFormatError, match="separated by semicolons"):
        load_ratings(tmp_path / "semicolon.csv")


def test_cli_prints_one_line_with_its_own_flags(saved, capsys):
    root, _, _ = saved
    Image.new("RGB", (8, 8)).save(root / "x.png")
    (root / "ratings.csv").write_text("image,score\nx.png,3\nx.png,oops\nmissing.png,2\n")
    code = main(["personalize", "--ratings", str(root / "ratings.csv"), "--model", str(root / "base"),
                 "--bank", str(root / "bank"), "--output", str(root / "out")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ")
    assert "--skip-invalid" in err and "skip_invalid=True" not in err
    edit_json(root / "bank" / BANK_CONFIG_FILE, lambda c: c.update(tasks="nope"))
    code = main(["personalize", "--ratings", str(root / "ratings.csv"), "--model", str(root / "base"),
                 "--bank", str(root / "bank"), "--output", str(root / "out"), "--skip-invalid"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "bank_config.json: field 'tasks'" in err


# -- config values, a user's own folders, glob entries ----------------------------------------------------------------
# A config.json whose score_range overflows float32 (scores inf) or is out of order or too narrow to tell images apart.
@pytest.mark.parametrize(
    "score_range", [[-3e38, 3e38], [-1e308, 1e308], [float("nan"), 10], [5, 1], [1.0, 1.0 + 1e-9], ["a", 2]]
)
def test_score_range_must_be_finite_ordered_and_sane(saved, score_range):
    root, _, _ = saved
    config = json.loads((root / "base" / "config.json").read_text())
    config["score_range"] = score_range
    (root / "base" / "config.json").write_text(json.dumps(config))
    (root / "base" / "checksums.json").unlink(missing_ok=True)  # else the checksums catch the edit first
    with pytest.raises(ConfigError, match="score_range must be"):
        AestheticModel.from_pretrained(root / "base")


# A folder of the user's that looks like a save's leftover (`.model.old-<anything>`) is theirs: a save keeps it.
def test_a_save_keeps_a_users_folder_named_like_a_leftover(saved, monkeypatch):
    root, base, _ = saved
    monkeypatch.chdir(root)
    mine = [root / ".model.old-mybackup", root / ".model.staging-notes"]
    for folder in mine:
        folder.mkdir()
        (folder / "weights.bin").write_bytes(b"precious")
    base.save_pretrained("model")
    base.save_pretrained("model")
    assert all((folder / "weights.bin").read_bytes() == b"precious" for folder in mine)


# A bank_config.json entry `*` (or any glob) would make the Hub download fetch the whole repository.
@pytest.mark.parametrize("entry", ["*", "task_vectors/*.safetensors", "task_vectors/a?.safetensors", "[ab]"])
def test_a_glob_file_entry_fails_before_any_download(saved, monkeypatch, entry):
    from taskvec_aesthetics.task_vectors import bank as bank_module

    root, _, _ = saved
    edit_json(root / "bank" / BANK_CONFIG_FILE, lambda c: c["tasks"][0].update(file=entry, sha256=None, size=None))
    with pytest.raises(UnsafePathError, match="glob"):
        TaskVectorBank.from_pretrained(root / "bank")
    downloads = []

    def snapshot(repo_id, filenames, **kwargs):  # the Hub's answer: the snapshot holding the requested files
        downloads.append(list(filenames))
        return root / "bank", "0" * 40

    monkeypatch.setattr(bank_module, "locate", lambda *args, **kwargs: None)  # the Hub has the repository
    monkeypatch.setattr(bank_module, "download", snapshot)
    with pytest.raises(UnsafePathError, match=r"tasks\[0\].*glob"):
        TaskVectorBank.from_pretrained("someone/bank")
    assert downloads == [[BANK_CONFIG_FILE]], "task files were requested before the entries were checked"


# Ratings whose differences vanish beside their magnitude: a float32 calibration would give every image one score.
@pytest.mark.parametrize("ratings", [[1e15 + i for i in range(8)], [1 + 1e-9 * i for i in range(8)]])
def test_calibration_never_collapses_different_images_to_one_score(saved, ratings):
    _, base, bank = saved
    images = [
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8)) for i in range(8)
    ]
    assert len(set(base.score(images).tolist())) == 8
    with pytest.raises(ConfigError, match="calibrated scores of different images would be equal|calibration.slope"):
        base.personalize(list(zip(images, ratings)), bank=bank, calibrate=True, steps=2)
    # Rescaled, the same ratings calibrate and keep the images apart.
    low = min(ratings)
    rescaled = [(r - low) / (max(ratings) - low) for r in ratings]
    mine = base.personalize(list(zip(images, rescaled)), bank=bank, calibrate=True, steps=2)
    assert len(set(mine.score(images).tolist())) == 8


# -- checkpoints that are symlinks, an edited trainer state -----------------------------------------------------------
# `checkpoints/step-N` (or `checkpoints` itself) is a symlink to a folder of the user's outside the run.
@pytest.mark.parametrize("link", ["step", "checkpoints"])
def test_a_symlinked_checkpoint_folder_is_refused_and_nothing_outside_the_run_is_touched(training_run, tmp_path, link):
    root, koniq, settings, _ = training_run
    outside = tmp_path / "my-results"
    outside.mkdir()
    (outside / "thesis.txt").write_text("three years of work")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    if link == "step":
        (run / "checkpoints" / "step-00000002").symlink_to(outside, target_is_directory=True)
    else:
        (run / "checkpoints").rmdir()
        (run / "checkpoints").symlink_to(outside, target_is_directory=True)
        (outside / "step-00000002").mkdir()
    config = FinetuneConfig(run, checkpoint_every=2, **settings)
    with pytest.raises(UnsafePathError, match="checkpoint"):
        finetune_database("koniq10k", koniq, root / "base", config, eval_split=None)
    assert (outside / "thesis.txt").read_text() == "three years of work"
    expected = ["thesis.txt"] + (["step-00000002"] if link == "checkpoints" else [])
    assert sorted(p.name for p in outside.iterdir()) == sorted(expected)


# An edited learning rate in trainer_state.json must not resume silently.
def test_an_edited_trainer_state_is_refused_naming_the_file(training_run, tmp_path):
    root, koniq, settings, _ = training_run
    checkpoint = tmp_path / "step-00000002"
    checkpoint.mkdir()
    for file in (root / "full" / "checkpoints" / "step-00000002").iterdir():
        if file.suffix in (".json", ".safetensors"):
            (checkpoint / file.name).write_bytes(file.read_bytes())
    assert "trainer_state.json" in json.loads((checkpoint / "checksums.json").read_text())["files"]
    edit_json(checkpoint / "trainer_state.json", lambda s: s["optimizer"]["param_groups"][0].update(lr=10.0))
    with pytest.raises(IntegrityError, match=r"trainer_state\.json has \d+ bytes, but .*checksums\.json records"):
        _resume(root, koniq, settings, "edited", checkpoint)


# A preferences CSV whose row compares a picture with itself (the same file, or two files of the same picture).
@pytest.mark.parametrize("same", ["file", "copy"])
def test_a_self_pair_in_a_preferences_csv_names_the_files_line(tmp_path, same):
    from taskvec_aesthetics.data import load_preferences
    from taskvec_aesthetics.personalization.inputs import as_preferences, canonical_preferences

    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), 40 * i, dtype=np.uint8)).save(tmp_path / f"{i}.png")
    (tmp_path / "copy.png").write_bytes((tmp_path / "2.png").read_bytes())
    second = "2.png" if same == "file" else "copy.png"
    (tmp_path / "prefs.csv").write_text(f"image_a,image_b,preferred\n0.png,1.png,a\n1.png,2.png,b\n2.png,{second},a\n")
    with pytest.raises(DatabaseFormatError, match=r"prefs.csv, line 4: image_a and image_b are the same picture"):
        load_preferences(tmp_path / "prefs.csv")
    assert len(load_preferences(tmp_path / "prefs.csv", skip_invalid=True)) == 2
    # Given in memory, the error names the row of the data as given (0-based), not an internal image index.
    images = [Image.open(tmp_path / f"{i}.png") for i in range(3)]
    triples = [(images[0], images[1], "a"), (images[1], images[2], "b"), (images[2], images[2].copy(), "a")]
    with pytest.raises(ValueError, match="the preference in row 2 compares an image with itself"):
        canonical_preferences(as_preferences(triples))


# `personalize --output <the base model's folder> --export merged` would replace the base every export points at.
def test_personalize_refuses_to_write_over_its_base_model(saved, capsys):
    root, _, _ = saved
    lines = ["image,score"]
    for i in range(8):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / f"{i}.png")
        lines.append(f"{i}.png,{i % 5 + 1}")
    (root / "ratings.csv").write_text("\n".join(lines) + "\n")
    before = {p.name: p.read_bytes() for p in (root / "base").iterdir()}
    paths = ["--ratings", str(root / "ratings.csv"), "--model", str(root / "base"), "--bank", str(root / "bank")]
    code = main(["personalize", *paths, "--output", str(root / "base"), "--export", "merged", "--steps", "2"])
    err = capsys.readouterr().err
    assert code == 2 and "holds its base model" in err
    assert {p.name: p.read_bytes() for p in (root / "base").iterdir()} == before
