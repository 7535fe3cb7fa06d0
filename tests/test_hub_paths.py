"""Nothing of the machine leaves it: what is pushed names Hub ids and fingerprints, never a local path.

Models and banks made from local folders are pushed to the local Hub and every file of the pushed repositories is
read back; a coefficients export on the Hub that points at local folders is refused when loaded.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hub_server import TEST_TOKEN, TEST_USER, LocalHub, hub_env, run_client

TESTS = str(Path(__file__).parent)
MERGED, BANK, SAVED, RAW = (f"{TEST_USER}/paths-{name}" for name in ("merged", "bank", "saved", "raw-coefficients"))


def client_json(script: str, env: dict[str, str]) -> Any:
    prelude = f"import json, sys\nsys.path.insert(0, {TESTS!r})\n"
    return json.loads(run_client(prelude + textwrap.dedent(script), env).stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def pushed(local_hub: LocalHub, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A base and a bank saved in local folders, a model personalized from them pushed merged (from memory and from
    its saved folder), the bank pushed, and a locally saved coefficients export uploaded as is; then every file of
    those repositories downloaded into a fresh folder."""
    root = tmp_path_factory.mktemp("local-folders")
    return client_json(
        f"""
        from pathlib import Path
        from huggingface_hub import HfApi, snapshot_download
        from tiny_models import perturbed_copy, tiny_model
        from taskvec_aesthetics import AestheticModel, TaskVectorBank
        from taskvec_aesthetics.cli import push_saved
        from taskvec_aesthetics.errors import TaskvecAestheticsError
        root = Path({str(root)!r})
        tiny_model("clip").save_pretrained(root / "base")
        base = AestheticModel.from_pretrained(root / "base")
        TaskVectorBank.from_finetuned(base, {{"ava": perturbed_copy(base, 1), "para": perturbed_copy(base, 2)}}
                                      ).save_pretrained(root / "bank")
        bank = TaskVectorBank.from_pretrained(root / "bank")
        mine = base.with_coefficients(bank, {{"ava": 0.6, "para": -0.2}}, info={{"num_ratings": 12}})
        mine.push_to_hub({MERGED!r}, export="merged")
        bank.push_to_hub({BANK!r})
        mine.save_pretrained(root / "saved")
        push_saved(root / "saved", {SAVED!r})
        mine.save_pretrained(root / "coefficients", export="coefficients")  # points at root/base and root/bank
        api = HfApi()
        api.create_repo({RAW!r})
        api.upload_folder(repo_id={RAW!r}, folder_path=str(root / "coefficients"))
        out = {{"root": str(root.resolve()), "files": {{}}}}
        for repo in ({MERGED!r}, {BANK!r}, {SAVED!r}):
            folder = Path(snapshot_download(repo, local_dir=root / "downloaded" / repo))
            out["files"][repo] = {{
                str(p.relative_to(folder)): p.read_bytes().decode("utf-8", "replace")
                for p in sorted(folder.rglob("*")) if p.is_file() and ".cache" not in p.parts
            }}
        try:
            AestheticModel.from_pretrained({RAW!r})
        except TaskvecAestheticsError as error:
            out["refused"] = [type(error).__name__, str(error)]
        print(json.dumps(out))
        """,
        hub_env(local_hub, root / "hf_home", token=TEST_TOKEN),
    )


def test_pushed_files_hold_no_local_path(pushed: dict[str, Any]) -> None:
    root = pushed["root"]
    for repo, files in pushed["files"].items():
        assert {"README.md"} < set(files), (repo, sorted(files))
        for name, text in files.items():
            assert root not in text and "local-folders" not in text, f"{repo}/{name} holds a local path"


def test_pushed_provenance_names_fingerprints_and_a_local_folder(pushed: dict[str, Any]) -> None:
    # MERGED was pushed while base and bank were local folders; SAVED after the bank itself was pushed.
    for repo, bank_fields in ((MERGED, {"base_fingerprint"}), (SAVED, {"repo_id", "revision", "base_fingerprint"})):
        files = pushed["files"][repo]
        record = json.loads(files["personalization.json"])
        assert set(record["base"]) == {"fingerprint"} and set(record["bank"]) == bank_fields, record
        assert record["base"]["fingerprint"].startswith("sha256")
        provenance = [line for line in files["README.md"].splitlines() if line.startswith(("| base", "| task-vector"))]
        assert len(provenance) == 2 and "`a local folder`" in provenance[0], provenance
        assert f"`{BANK}`" in provenance[1] if "repo_id" in bank_fields else "`a local folder`" in provenance[1]
    bank_files = pushed["files"][BANK]
    assert set(json.loads(bank_files["bank_config.json"])["base"]) == {"fingerprint"}
    assert "| `a local folder` |" in bank_files["README.md"]
    assert 'AestheticModel.from_pretrained("path/to/folder")' in bank_files["README.md"]


def test_coefficients_export_on_the_hub_pointing_at_local_folders_is_refused(pushed: dict[str, Any]) -> None:
    kind, message = pushed["refused"]
    assert kind == "ConfigError"
    assert "must reference its base model by Hub repo id" in message and "'base_model'" in message
    assert RAW in message
