"""Model cards, offline: what each card says, its metadata and model-index, and the rule about user-written READMEs."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from tiny_models import perturbed_copy, tiny_model

from taskvec_aesthetics import AestheticModel, TaskVectorBank
from taskvec_aesthetics.hub.cards import is_generated_card
from taskvec_aesthetics.hub.references import Reference

BASE_REPO, BANK_REPO = "someone/aesthetic-base", "someone/aesthetic-bank"
BASE_SHA, BANK_SHA = "a" * 40, "b" * 40
META = {
    "ava": dict(database="ava", kind="giaa", num_images=255_530, metrics={"srocc": 0.712, "plcc": 0.708},
                licence="Research only | images from dpchallenge.com", citation="Murray et al. AVA. CVPR 2012."),
    "koniq10k": dict(database="koniq10k", kind="iqa", num_images=10_073,
                     metrics={"srocc": 0.9, "plcc": 0.91, "krcc": 0.72}),
    "para": dict(database="para", kind="piaa"),
}  # fmt: skip


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rendering and saving cards must not open a connection."""

    def refuse(sock: socket.socket, address: object) -> None:
        raise AssertionError(f"a card tried to connect to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture()
def models(tmp_path: Path) -> dict:
    """A base and bank that claim Hub locations, and a layer-wise personalized model built from them."""
    base = tiny_model("clip")
    base.source = Reference(repo_id=BASE_REPO, revision=BASE_SHA)  # as after a push or a pull
    tuned = {t: perturbed_copy(base, i, 0.2) for i, t in enumerate(META)}
    bank = TaskVectorBank.from_finetuned(base, tuned, metadata=META)
    bank.source = Reference(repo_id=BANK_REPO, revision=BANK_SHA)
    groups = base.adapter.num_blocks + 3
    values = torch.tensor([[0.5, -0.25, 0.1]] * (groups - 1) + [[0.9, -0.25, 0.1]])
    info = {"num_ratings": 30, "num_holdout": 8, "chosen_step": 120, "holdout_srocc": 0.6125}
    return {"base": base, "bank": bank, "mine": base.with_coefficients(bank, values, info=info), "values": values}


def table_rows(text: str, header: str) -> list[list[str]]:
    """The cells of the markdown table whose header row starts with ``header`` (escaped pipes kept in cells)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


def test_base_card_describes_encoder_head_and_use(models: dict, tmp_path: Path) -> None:
    base = models["base"]
    base.save_pretrained(tmp_path / "base")
    card = ModelCard.load(tmp_path / "base" / "README.md")
    assert is_generated_card(str(card))
    assert card.data.library_name == "taskvec-aesthetics" and card.data.license == "other"
    assert {"image-aesthetics", "clip_vision_model"} <= set(card.data.tags)
    assert card.data.get("base_model") is None and card.data.eval_results is None
    encoder_params = sum(p.numel() for p in base.encoder.parameters())
    assert f"`clip_vision_model`, {encoder_params / 1e3:.2f}K parameters, 2 blocks, 32-d features" in card.text
    assert "Linear(32, 16) - GELU - Dropout(0.5) - Linear(16, 10) - Sigmoid" in card.text
    assert "mapped onto [1.0, 10.0]" in card.text and "## How to personalize" in card.text
    assert "## Intended use and limitations" in card.text
    named = base.generate_model_card(repo_id="me/scorer", license="apache-2.0")
    assert named.data.license == "apache-2.0" and 'AestheticModel.from_pretrained("me/scorer")' in named.text


def test_bank_card_tables_tags_and_model_index(models: dict) -> None:
    card = ModelCard(str(models["bank"].generate_model_card(repo_id=BANK_REPO)))  # parsed back from its text
    assert {"task-vectors", "image-aesthetics", "image-quality-assessment"} <= set(card.data.tags)
    assert card.data.base_model == BASE_REPO
    rows = table_rows(card.text, "| task |")
    assert rows == [
        ["`ava`", "ava", "giaa", "255,530", "0.712", "0.708", "Research only \\| images from dpchallenge.com",
         "Murray et al. AVA. CVPR 2012."],
        ["`koniq10k`", "koniq10k", "iqa", "10,073", "0.900", "0.910", "–", "–"],
        ["`para`", "para", "piaa", "–", "–", "–", "–", "–"],
    ]  # fmt: skip
    results = {(r.dataset_type, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert results == {("ava", "srocc"): 0.712, ("ava", "plcc"): 0.708, ("koniq10k", "srocc"): 0.9,
                       ("koniq10k", "plcc"): 0.91, ("koniq10k", "krcc"): 0.72}  # fmt: skip
    task_types = {r.dataset_type: r.task_type for r in card.data.eval_results}
    assert task_types == {"ava": "image-aesthetic-assessment", "koniq10k": "image-quality-assessment"}
    assert card.data.model_name == "aesthetic-bank"
    assert f"`{BASE_SHA}`" in card.text and models["bank"].base_fingerprint in card.text


@pytest.mark.parametrize(("export", "relation"), [("coefficients", "adapter"), ("merged", "merge")])
def test_personalized_card_provenance_coefficients_and_metrics(models: dict, export: str, relation: str) -> None:
    mine, bank = models["mine"], models["bank"]
    card = ModelCard(str(mine.generate_model_card(repo_id="me/my-taste", export=export)))
    assert card.data.base_model == BASE_REPO and card.data.base_model_relation == relation
    assert {"personalized", "task-vectors"} <= set(card.data.tags)
    [result] = card.data.eval_results
    assert (result.metric_type, result.metric_value, result.dataset_split) == ("srocc", 0.6125, "cross-validation")
    assert 'AestheticModel.from_pretrained("me/my-taste")' in card.text
    provenance = table_rows(card.text, "| | location |")
    fingerprint = mine.personalization.base_fingerprint
    assert provenance[0] == ["base model", f"`{BASE_REPO}`", f"`{BASE_SHA}`", f"`{fingerprint}`"]
    built_on = f"built on `{bank.base_fingerprint}`"
    assert provenance[1] == ["task-vector bank", f"`{BANK_REPO}`", f"`{BANK_SHA}`", built_on]
    assert "- ratings: 30, each held out once in cross-validation (the refit took 120 steps)" in card.text
    assert "- expected SROCC on the rater's photos (cross-validated on their ratings): 0.613" in card.text
    groups = models["values"].shape[0]
    assert f"- granularity: layer ({groups} groups x 3 tasks)" in card.text
    coefficients = table_rows(card.text, "| task | mean |")
    means = models["values"].mean(dim=0).tolist()
    assert coefficients == [
        ["`ava`", f"{means[0]:+.3f}", "+0.500", "+0.900"],
        ["`koniq10k`", "-0.250", "-0.250", "-0.250"],
        ["`para`", "+0.100", "+0.100", "+0.100"],
    ]
    chart = card.text.split("```text\n", 1)[1].split("\n```", 1)[0].splitlines()
    bars = {line.split()[0]: line.split()[-1] for line in chart}
    assert bars["ava"] == "█" * 24  # the largest weight spans the full width
    assert set(bars["koniq10k"]) == {"░"}  # negative weights are shaded
    assert len(bars["koniq10k"]) == round(0.25 / means[0] * 24)
    expected = "only the mixing coefficients" if export == "coefficients" else "holds the merged weights"
    assert expected in card.text


def test_personalized_card_of_local_references_has_no_hub_base(models: dict, tmp_path: Path) -> None:
    models["base"].save_pretrained(tmp_path / "base")  # loaded back, it refers to a local folder
    base = AestheticModel.from_pretrained(tmp_path / "base")
    models["bank"].save_pretrained(tmp_path / "bank")
    bank = TaskVectorBank.from_pretrained(tmp_path / "bank")
    mine = base.with_coefficients(bank, {"ava": 1.0})
    mine.save_pretrained(tmp_path / "mine", export="coefficients")
    card = ModelCard.load(tmp_path / "mine" / "README.md")
    assert card.data.get("base_model") is None and card.data.get("base_model_relation") is None
    assert card.data.eval_results is None  # no holdout metrics were recorded
    assert str(tmp_path) not in card.text  # a card is for sharing: it names a local folder, never its path
    assert "| base model | `a local folder` | `–` |" in card.text
    assert card.data.to_dict() == ModelCard(str(card)).data.to_dict()  # metadata round-trips


def test_merged_model_read_back_keeps_its_bank_reference(models: dict, tmp_path: Path) -> None:
    models["mine"].save_pretrained(tmp_path / "merged")
    reloaded = AestheticModel.from_pretrained(tmp_path / "merged")
    reloaded.save_pretrained(tmp_path / "again")
    card = ModelCard.load(tmp_path / "again" / "README.md")
    assert f"`{BANK_REPO}` | `{BANK_SHA}`" in card.text
    assert card.data.base_model == BASE_REPO and card.data.base_model_relation == "merge"


def test_user_written_readme_is_kept_unless_overwrite(models: dict, tmp_path: Path) -> None:
    own = "# Notes I wrote myself\n"
    for name, obj in (("model", models["base"]), ("bank", models["bank"])):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "README.md").write_text(own)
        obj.save_pretrained(folder)
        assert (folder / "README.md").read_text() == own
        obj.save_pretrained(folder, overwrite_card=True)
        assert is_generated_card((folder / "README.md").read_text())


def test_generated_card_is_regenerated(models: dict, tmp_path: Path) -> None:
    bank = models["bank"]
    bank.save_pretrained(tmp_path / "bank")
    assert "`spaq`" not in (tmp_path / "bank" / "README.md").read_text()
    bank.add_task("spaq", perturbed_copy(models["base"], 7, 0.2), base=models["base"], database="spaq", kind="iqa")
    bank.save_pretrained(tmp_path / "bank")
    assert "| `spaq` | spaq | iqa |" in (tmp_path / "bank" / "README.md").read_text()
