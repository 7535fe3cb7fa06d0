"""Push and pull through the local Hub: bases, banks and both exports of personalized models, each in a fresh cache.

Every scenario runs the real client in a subprocess (`run_client`), because `huggingface_hub` reads its endpoint and
offline flag at import while the rest of the suite runs offline.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from hub_server import TEST_TOKEN, TEST_USER, LocalHub, hub_env, run_client
from tiny_models import perturbed_copy, tiny_model

from taskvec_aesthetics import AestheticModel, TaskVectorBank
from taskvec_aesthetics.cli import saved_kind

TESTS = str(Path(__file__).parent)
BASE, BANK, MINE, MERGED, PRIVATE, CARDED, SAVED, SAVED_BASE, NESTED = (
    f"{TEST_USER}/hub-{name}"
    for name in ("base", "bank", "mine", "merged", "private", "carded", "saved", "saved-base", "nested")
)
USER_CARD = "---\nlicense: mit\n---\n# My own words\n"
TASKS = ["ava", "para", "koniq10k", "spaq"]
WEIGHTS = {"ava": 0.6, "para": -0.3, "koniq10k": 0.4}
# The prelude of every client script: the tiny models and fixed inputs of the tests folder.
PRELUDE = f"""
import json, sys, torch
sys.path.insert(0, {TESTS!r})
from tiny_models import perturbed_copy, pixels, tiny_model
from taskvec_aesthetics import AestheticModel, TaskVectorBank
x = pixels(4)
scores = lambda model: model.eval()(pixel_values=x).scores.tolist()
"""


def client_json(script: str, env: dict[str, str]) -> Any:
    """Run a client script (after the prelude) whose last line of output is JSON, and decode that line."""
    return json.loads(run_client(PRELUDE + textwrap.dedent(script), env).stdout.strip().splitlines()[-1])


def cache_name(repo_id: str) -> str:
    """The folder of a model repo in a Hub cache."""
    return "models--" + repo_id.replace("/", "--")


def assert_same(a: list[float], b: list[float]) -> None:
    assert torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-6, rtol=0), (a, b)


@pytest.fixture(scope="module")
def published(local_hub: LocalHub, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The push side, in one client: a base, a bank, and a model personalized from the pulled base and bank, pushed
    as both exports; a second push of the base, a branch of the bank with one task, a private copy of the base; the
    README rule on the Hub; saved folders pushed by kind."""
    root = tmp_path_factory.mktemp("publisher")
    return client_json(
        f"""
        from pathlib import Path
        from huggingface_hub import HfApi, ModelCard, hf_hub_download
        from taskvec_aesthetics.cli import push_saved
        api = HfApi()
        base = tiny_model("clip")
        out = {{"commits": {{"base": base.push_to_hub({BASE!r}).oid}}, "base_source": base.source.to_dict()}}
        meta = {{t: dict(database=t, kind="iqa" if t in ("koniq10k", "spaq") else "giaa", num_images=1000 + i,
                         metrics={{"srocc": 0.5 + i / 10, "plcc": 0.55 + i / 10}}) for i, t in enumerate({TASKS!r})}}
        bank = TaskVectorBank.from_finetuned(base, {{t: perturbed_copy(base, i, 0.2) for i, t in enumerate(meta)}},
                                             metadata=meta)
        out["commits"]["bank"] = bank.push_to_hub({BANK!r}).oid
        out["bank_base"] = bank.base.to_dict()
        pulled_base, pulled_bank = AestheticModel.from_pretrained({BASE!r}), TaskVectorBank.from_pretrained({BANK!r})
        mine = pulled_base.with_coefficients(pulled_bank, {WEIGHTS!r},
                                             info={{"num_ratings": 24, "num_holdout": 6, "holdout_srocc": 0.625}})
        out["commits"]["mine"] = mine.push_to_hub({MINE!r}, export="coefficients").oid
        out["mine_source"] = mine.source.to_dict()
        out["commits"]["merged"] = mine.push_to_hub({MERGED!r}, export="merged").oid
        base2 = perturbed_copy(base, 99, scale=0.1)
        out["commits"]["base2"] = base2.push_to_hub({BASE!r}, commit_message="Retrain the head").oid
        out["commits"]["ava_only"] = pulled_bank.select(["ava"]).push_to_hub({BANK!r}, revision="ava-only").oid
        out["commits"]["private"] = base.push_to_hub({PRIVATE!r}, private=True).oid
        base.save_pretrained(Path({str(root / "local")!r}), push_to_hub=True, repo_id={SAVED_BASE!r})
        out["files"] = {{{SAVED_BASE!r}: sorted(api.list_repo_files({SAVED_BASE!r}))}}
        out["scores"] = {{"base": scores(base), "base2": scores(base2), "mine": scores(mine)}}
        out["cards"] = {{}}
        for repo in ({BASE!r}, {BANK!r}, {MINE!r}, {MERGED!r}):
            card = ModelCard.load(repo)
            card.validate()  # the Hub's metadata check
            out["cards"][repo] = {{"data": card.data.to_dict(), "text": card.text}}
        out["files"].update({{repo: sorted(api.list_repo_files(repo)) for repo in ({MINE!r}, {MERGED!r})}})

        # A README a person wrote on the Hub stays, unless overwrite_card=True.
        readme = lambda name: Path(hf_hub_download(name, "README.md")).read_text()
        api.create_repo({CARDED!r})
        api.upload_file(repo_id={CARDED!r}, path_or_fileobj={USER_CARD.encode()!r}, path_in_repo="README.md")
        base.push_to_hub({CARDED!r})
        out["kept"] = readme({CARDED!r})
        base.push_to_hub({CARDED!r}, overwrite_card=True)
        out["replaced"] = readme({CARDED!r})

        # A saved coefficients export with its own README, pushed as saved, then merged to a new branch.
        folder = Path({str(root / "saved")!r})
        mine.save_pretrained(folder, export="coefficients")
        (folder / "README.md").write_text({USER_CARD!r})
        push_saved(folder, {SAVED!r})
        out["saved_files"], out["saved_card"] = api.list_repo_files({SAVED!r}), readme({SAVED!r})
        push_saved(folder, {SAVED!r}, export="merged", revision="merged")
        out["merged_files"] = api.list_repo_files({SAVED!r}, revision="merged")
        out["scores"]["saved_merged"] = scores(AestheticModel.from_pretrained({SAVED!r}, revision="merged"))

        # A base in a subfolder of a repository, personalized and exported as coefficients, then reloaded.
        base.save_pretrained(Path({str(root / "nested")!r}))
        api.create_repo({NESTED!r})
        api.upload_folder(repo_id={NESTED!r}, folder_path={str(root / "nested")!r}, path_in_repo="scorer")
        nested = AestheticModel.from_pretrained({NESTED!r}, subfolder="scorer")
        out["nested_source"] = nested.source.to_dict()
        nested_mine = nested.with_coefficients(pulled_bank, {WEIGHTS!r})
        export = Path({str(root / "nested-mine")!r})
        nested_mine.save_pretrained(export, export="coefficients")
        out["nested_reference"] = json.loads((export / "config.json").read_text())["base_model"]
        out["scores"]["nested_mine"] = scores(nested_mine)
        out["scores"]["nested_reloaded"] = scores(AestheticModel.from_pretrained(export))
        print(json.dumps(out))
        """,
        hub_env(local_hub, root / "hf_home", token=TEST_TOKEN),
    )


@pytest.fixture(scope="module")
def pulled(published: dict[str, Any], local_hub: LocalHub, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The pull side, in one anonymous client with a fresh cache (the partial bank pull in a cache of its own)."""
    root = tmp_path_factory.mktemp("puller")
    commits = published["commits"]
    result = client_json(
        f"""
        out = {{}}
        pinned = AestheticModel.from_pretrained({BASE!r}, revision={commits["base"]!r})
        out["pinned"], out["main"] = scores(pinned), scores(AestheticModel.from_pretrained({BASE!r}))
        out["merged"] = scores(AestheticModel.from_pretrained({MERGED!r}))
        bank = TaskVectorBank.from_pretrained({BANK!r}, revision={commits["bank"]!r})
        out["rebuilt"] = scores(pinned.with_coefficients(bank, {WEIGHTS!r}))
        out["branch_tasks"] = TaskVectorBank.from_pretrained({BANK!r}, revision="ava-only").task_names
        try:
            AestheticModel.from_pretrained({PRIVATE!r})
        except Exception as error:
            out["private_anonymous"] = type(error).__name__
        out["private_token"] = scores(AestheticModel.from_pretrained({PRIVATE!r}, token={TEST_TOKEN!r}))
        part = TaskVectorBank.from_pretrained({BANK!r}, tasks=["koniq10k", "ava"], cache_dir={str(root / "partial")!r})
        out["partial"] = {{"tasks": part.task_names, "root": str(part.root),
                          "norms": [part[t].norm() for t in part.task_names]}}
        print(json.dumps(out))
        """,
        hub_env(local_hub, root / "hf_home"),
    )
    return {**result, "partial_cache": root / "partial"}


def test_push_records_the_commit_and_writes_validated_cards(published: dict[str, Any]) -> None:
    commits = published["commits"]
    assert published["base_source"] == {"repo_id": BASE, "revision": commits["base"]}
    assert published["mine_source"] == {"repo_id": MINE, "revision": commits["mine"]}
    assert published["bank_base"]["repo_id"] == BASE and published["bank_base"]["revision"] == commits["base"]
    assert (torch.tensor(published["scores"]["mine"]) - torch.tensor(published["scores"]["base"])).abs().max() > 1e-3
    files = published["files"]
    assert "coefficients.safetensors" in files[MINE] and "model.safetensors" not in files[MINE]
    assert "model.safetensors" in files[MERGED] and "coefficients.safetensors" not in files[MERGED]
    assert files[SAVED_BASE] == [
        ".gitattributes",
        "README.md",
        "checksums.json",
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    ]  # save_pretrained(push_to_hub=True) pushes it all
    cards = published["cards"]
    mine, merged = cards[MINE]["data"], cards[MERGED]["data"]
    assert (mine["base_model"], mine["base_model_relation"]) == (BASE, "adapter")
    assert (merged["base_model"], merged["base_model_relation"]) == (BASE, "merge")
    [holdout] = mine["model-index"][0]["results"][0]["metrics"]
    assert holdout == {"type": "srocc", "value": 0.625, "name": "Cross-validated SROCC"}
    assert f'AestheticModel.from_pretrained("{MINE}")' in cards[MINE]["text"]
    assert commits["base"] in cards[MINE]["text"] and commits["bank"] in cards[MINE]["text"]
    bank = cards[BANK]["data"]
    assert {"task-vectors", "image-aesthetics"} <= set(bank["tags"]) and bank["base_model"] == BASE
    results = bank["model-index"][0]["results"]
    assert [r["dataset"]["type"] for r in results] == TASKS
    assert all(cards[repo]["data"]["library_name"] == "taskvec-aesthetics" for repo in cards)


def test_pulls_into_a_fresh_cache_give_identical_scores(published: dict[str, Any], pulled: dict[str, Any]) -> None:
    expected = published["scores"]
    assert_same(pulled["pinned"], expected["base"])
    assert_same(pulled["main"], expected["base2"])  # the second push moved main on; the pinned commit did not move
    assert_same(pulled["merged"], expected["mine"])
    assert_same(pulled["rebuilt"], expected["mine"])
    assert pulled["branch_tasks"] == ["ava"]


def test_private_repo_needs_the_token(published: dict[str, Any], pulled: dict[str, Any]) -> None:
    assert "private_anonymous" in pulled  # refused without the token
    assert_same(pulled["private_token"], published["scores"]["base"])


def test_partial_bank_pull_downloads_only_the_named_tasks(published: dict[str, Any], pulled: dict[str, Any]) -> None:
    partial = pulled["partial"]
    assert partial["tasks"] == ["koniq10k", "ava"] and all(norm > 0 for norm in partial["norms"])
    repo_cache = pulled["partial_cache"] / cache_name(BANK)
    snapshot = Path(partial["root"])
    assert snapshot.parent.parent == repo_cache and snapshot.name == published["commits"]["bank"]
    files = sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file())
    assert files == ["bank_config.json", "task_vectors/ava.safetensors", "task_vectors/koniq10k.safetensors"]
    assert len(list((repo_cache / "blobs").iterdir())) == 3  # nothing else was fetched


def test_coefficients_only_model_resolves_pinned_base_and_bank_then_loads_offline(
    published: dict[str, Any], local_hub: LocalHub, tmp_path: Path
) -> None:
    hf_home = tmp_path / "hf_home"
    script = f"""
        model = AestheticModel.from_pretrained({MINE!r})
        state = model.personalization
        print(json.dumps({{"scores": scores(model), "source": model.source.to_dict(), "base": state.base.to_dict(),
                          "weights": state.coefficients.task_weights()}}))
        """
    result = client_json(script, hub_env(local_hub, hf_home))
    offline = client_json(script, {**hub_env(local_hub, hf_home), "HF_HUB_OFFLINE": "1"})  # later, from the cache
    assert offline == result
    commits = published["commits"]
    assert_same(result["scores"], published["scores"]["mine"])
    assert result["source"] == {"repo_id": MINE, "revision": commits["mine"]}
    assert result["base"]["repo_id"] == BASE and result["base"]["revision"] == commits["base"]  # pinned: main moved on
    assert result["weights"] == pytest.approx({t: WEIGHTS.get(t, 0.0) for t in TASKS})
    snapshots = {repo: sorted(p.name for p in (hf_home / "hub" / cache_name(repo) / "snapshots").iterdir())
                 for repo in (BASE, BANK)}  # fmt: skip
    assert snapshots == {BASE: [commits["base"]], BANK: [commits["bank"]]}


def test_coefficients_export_of_a_base_in_a_subfolder_points_at_the_subfolder(published: dict[str, Any]) -> None:
    source = published["nested_source"]
    assert (source["repo_id"], source["subfolder"]) == (NESTED, "scorer") and len(source["revision"]) == 40
    reference = published["nested_reference"]
    assert {k: reference[k] for k in ("repo_id", "revision", "subfolder")} == source
    scores = published["scores"]
    assert (torch.tensor(scores["nested_mine"]) - torch.tensor(scores["base"])).abs().max() > 1e-3
    assert_same(scores["nested_reloaded"], scores["nested_mine"])


def test_user_cards_on_the_hub_are_kept(published: dict[str, Any]) -> None:
    assert published["kept"] == USER_CARD
    assert published["replaced"] != USER_CARD and "generated card" in published["replaced"]


def test_saved_folders_push_by_kind(published: dict[str, Any]) -> None:
    files = published["saved_files"]
    assert "coefficients.safetensors" in files and "model.safetensors" not in files
    assert published["saved_card"] == USER_CARD  # the README written in the folder
    # The branch started from the coefficients commit: its coefficients file was replaced by merged weights.
    files = published["merged_files"]
    assert "model.safetensors" in files and "coefficients.safetensors" not in files
    assert_same(published["scores"]["saved_merged"], published["scores"]["mine"])


def test_coefficients_push_needs_hub_references_and_fails_before_any_upload(tmp_path: Path) -> None:
    base = tiny_model("clip")
    base.save_pretrained(tmp_path / "base")
    bank = TaskVectorBank.from_finetuned(base, {"ava": perturbed_copy(base, 1)})
    bank.save_pretrained(tmp_path / "bank")
    mine = base.with_coefficients(bank, {"ava": 0.5})
    # The suite runs offline: reaching the Hub would raise a connection error, not this one.
    with pytest.raises(ValueError, match="must reference its base model by Hub repo id"):
        mine.push_to_hub("someone/mine", export="coefficients")
    with pytest.raises(ValueError, match="needs a personalized model with its bank"):
        base.push_to_hub("someone/base", export="coefficients")
    with pytest.raises(ValueError, match="export must be"):
        base.push_to_hub("someone/base", export="pickle")


def test_saved_kind_detects_each_format(tmp_path: Path) -> None:
    tiny_model("clip").save_pretrained(tmp_path / "base")
    base = AestheticModel.from_pretrained(tmp_path / "base")  # saving does not change a model; loading records where
    TaskVectorBank.from_finetuned(base, {"ava": perturbed_copy(base, 1)}).save_pretrained(tmp_path / "bank")
    bank = TaskVectorBank.from_pretrained(tmp_path / "bank")
    base.with_coefficients(bank, {"ava": 0.5}).save_pretrained(tmp_path / "mine", export="coefficients")
    assert [saved_kind(tmp_path / name) for name in ("base", "bank", "mine")] == ["model", "bank", "coefficients"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="is not a saved model or bank"):
        saved_kind(tmp_path / "empty")
