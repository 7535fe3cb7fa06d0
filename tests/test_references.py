"""`Reference`, the one pointer type to a base model or a bank; saving leaves the object saved as it was."""

from __future__ import annotations

import copy
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_models import perturbed_copy, pixels, tiny_model

from taskvec_aesthetics import AestheticModel, Coefficients, TaskVectorBank
from taskvec_aesthetics.errors import ConfigError
from taskvec_aesthetics.hub.references import Reference, publishing

SHA = "a" * 40


def test_a_local_path_takes_precedence_over_a_repo_id() -> None:
    both = Reference(path="/models/base", repo_id="me/base", revision=SHA, subfolder="sub", fingerprint="f")
    assert both.location == "/models/base" and both.is_local and not both.on_hub
    assert both.load_kwargs() == {}  # the local folder is opened as it is
    hub = Reference(repo_id="me/base", revision=SHA, subfolder="sub")
    assert hub.location == "me/base" and hub.on_hub and hub.load_kwargs() == {"revision": SHA, "subfolder": "sub"}
    assert str(hub) == f"me/base/sub@{SHA}"
    unsaved = Reference(fingerprint="sha256-all:0")
    assert unsaved.location is None and not unsaved.on_hub and "unsaved" in str(unsaved)


def test_references_are_frozen_and_only_dicts_on_disk() -> None:
    reference = Reference(repo_id="me/bank", revision=SHA, fingerprint="sha256-all:1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        reference.revision = "main"  # type: ignore[misc]
    assert reference.to_dict() == {"repo_id": "me/bank", "revision": SHA, "fingerprint": "sha256-all:1"}
    on_disk = reference.to_dict(fingerprint_key="base_fingerprint")
    assert on_disk == {"repo_id": "me/bank", "revision": SHA, "base_fingerprint": "sha256-all:1"}
    assert Reference.from_dict({**on_disk, "tasks": ["a"]}, fingerprint_key="base_fingerprint") == reference
    assert Reference.from_dict(None) is None
    assert reference.with_fingerprint("x") == dataclasses.replace(reference, fingerprint="x")
    with pytest.raises(ConfigError, match=r"config.json: field 'bank.revision' must be a string, received 3"):
        Reference.from_dict({"repo_id": "me/bank", "revision": 3}, "config.json", "bank")
    with pytest.raises(ConfigError, match="field 'base' must be an object, received list"):
        Reference.from_dict(["me/base"], "bank_config.json", "base")
    with pytest.raises(TypeError, match="Reference.path must be a string"):
        Reference(path=Path("/x"))  # type: ignore[arg-type]


def snapshot(obj: object) -> dict:
    """Everything a save could change about a model or bank, as plain values."""
    if isinstance(obj, TaskVectorBank):
        return {
            "source": obj.source,
            "root": obj.root,
            "storage_dtype": obj.storage_dtype,
            "base": obj.base,
            "tasks": [dataclasses.asdict(t) for t in obj.tasks],
            "in_memory": sorted(obj._vectors),
        }
    state = obj.personalization
    return {
        "source": obj.source,
        "config": obj.config.to_dict(),
        "weights": {k: v.clone() for k, v in obj.state_dict().items()},
        "personalization": None
        if state is None
        else (state.base, state.bank_ref, copy.deepcopy(state.info), state.coefficients.values.clone()),
        "training": obj.training,
    }


def same(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, dict) and x and isinstance(next(iter(x.values())), torch.Tensor):
            if x.keys() != y.keys() or not all(torch.equal(x[k], y[k]) for k in x):
                return False
        elif isinstance(x, tuple) and x and isinstance(x[-1], torch.Tensor):
            if x[:-1] != y[:-1] or not torch.equal(x[-1], y[-1]):
                return False
        elif x != y:
            return False
    return True


def test_save_pretrained_never_changes_the_object_saved(tmp_path: Path) -> None:
    tiny_model("clip").save_pretrained(tmp_path / "base")
    base = AestheticModel.from_pretrained(tmp_path / "base")
    TaskVectorBank.from_finetuned(base, {"a": perturbed_copy(base, 1), "b": perturbed_copy(base, 2)}).save_pretrained(
        tmp_path / "bank"
    )
    bank = TaskVectorBank.from_pretrained(tmp_path / "bank", base=base)
    mine = base.with_coefficients(bank, {"a": 0.6, "b": -0.2}, info={"num_ratings": 12})
    assert not torch.equal(mine(pixel_values=pixels(2)).scores, base(pixel_values=pixels(2)).scores)
    in_memory = TaskVectorBank.from_finetuned(base, {"c": perturbed_copy(base, 3)})
    for obj, saves in (
        (base, [dict(save_directory=tmp_path / "base-copy")]),
        (mine, [dict(save_directory=tmp_path / "c", export="coefficients"), dict(save_directory=tmp_path / "m")]),
        (bank, [dict(save_directory=tmp_path / "bf16", storage_dtype="bfloat16"), dict(save_directory=tmp_path / "bank")]),
        (in_memory, [dict(save_directory=tmp_path / "new-bank", storage_dtype="float16")]),
    ):  # fmt: skip
        before = snapshot(obj)
        for save in saves:
            obj.save_pretrained(**save)
            assert same(snapshot(obj), before), (type(obj).__name__, save)
    assert TaskVectorBank.from_pretrained(tmp_path / "bf16").storage_dtype == "bfloat16"
    assert AestheticModel.from_pretrained(tmp_path / "c").source == Reference.local(tmp_path / "c")


def test_coefficients_say_what_their_printed_numbers_are() -> None:
    layered = Coefficients(torch.tensor([[0.2, 0.4], [0.6, 0.0]]), ["block.0", "head"], ["a", "b"], "layer")
    assert repr(layered) == (
        "Coefficients(layer, 2 groups x 2 tasks; mean over the 2 groups per task: a=+0.400, b=+0.200)"
    )
    per_task = Coefficients.from_task_weights({"a": 0.5}, ["a", "b"])
    assert "coefficient per task: a=+0.500, b=+0.000" in repr(per_task)


@pytest.mark.slow  # a fresh process that imports torch
def test_internal_loads_show_no_transformers_bars(tmp_path: Path) -> None:
    """A user's own load shows transformers' bar (its default); the base a coefficients export loads shows none."""
    tiny_model("clip").save_pretrained(tmp_path / "base")
    base = AestheticModel.from_pretrained(tmp_path / "base")
    bank = TaskVectorBank.from_finetuned(base, {"a": perturbed_copy(base, 1)})
    bank.save_pretrained(tmp_path / "bank")
    bank = TaskVectorBank.from_pretrained(tmp_path / "bank")
    base.with_coefficients(bank, {"a": 0.5}).save_pretrained(tmp_path / "mine", export="coefficients")
    # tqdm reads TQDM_DISABLE (set for the tests) when imported: the bars are observed in a fresh process.
    script = (
        "import sys\nfrom transformers.utils import logging\nfrom taskvec_aesthetics import AestheticModel\n"
        f"print('BASE', file=sys.stderr)\nAestheticModel.from_pretrained({str(tmp_path / 'base')!r})\n"
        f"print('EXPORT', file=sys.stderr)\nAestheticModel.from_pretrained({str(tmp_path / 'mine')!r})\n"
        "print('ENABLED', logging.is_progress_bar_enabled(), file=sys.stderr)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    err = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True).stderr
    own, export = err.split("BASE", 1)[1].split("EXPORT", 1)
    assert "Loading weights" in own  # transformers' own behaviour for the user's own call
    assert "Loading weights" not in export  # the base loaded on the user's behalf
    assert "ENABLED True" in export  # and the bars are back on afterwards


def test_publishing_writes_references_without_local_paths() -> None:
    local = Reference(path="/somewhere/base", fingerprint="sha256:abc")
    both = Reference(path="/somewhere/bank", repo_id="me/bank", revision="c0ffee", fingerprint="sha256:def")
    assert local.to_dict()["path"] == "/somewhere/base"  # a local save keeps what this machine needs
    with publishing():
        assert local.to_dict() == {"fingerprint": "sha256:abc"}
        assert both.to_dict("base_fingerprint") == {"repo_id": "me/bank", "revision": "c0ffee",
                                                     "base_fingerprint": "sha256:def"}  # fmt: skip
    assert local.to_dict()["path"] == "/somewhere/base"  # only while publishing
    assert (local.description, both.published().description, Reference().description) == (
        "a local folder",
        "me/bank",
        "not on the Hub",
    )
