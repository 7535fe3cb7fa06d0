"""The local Hub against the real `huggingface_hub` and `transformers` clients, each run in a subprocess."""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from hub_server import TEST_TOKEN, TEST_USER, LocalHub, hub_env, run_client

BIG_SIZE = 10 * 1024 * 1024 + 4096  # above the Hub's 10 MB limit for regular git files
CARD = "---\nlicense: mit\ntags:\n- aesthetics\n---\n# A test model\n"


def client_json(script: str, env: dict[str, str]) -> Any:
    """Run a client script whose last line of output is JSON, and decode that line."""
    return json.loads(run_client(script, env).stdout.strip().splitlines()[-1])


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def env(local_hub: LocalHub, tmp_path: Path) -> dict[str, str]:
    """An authenticated client with an empty cache."""
    return hub_env(local_hub, tmp_path / "hf_home", token=TEST_TOKEN)


@pytest.fixture
def anonymous_env(local_hub: LocalHub, tmp_path: Path) -> dict[str, str]:
    return hub_env(local_hub, tmp_path / "anonymous_home")


@pytest.fixture(scope="module")
def pushed(local_hub: LocalHub, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A public repo pushed once with upload_folder (small, binary and nested files) and upload_file (a big file)."""
    root = tmp_path_factory.mktemp("pushed")
    folder = root / "folder"
    (folder / "notes").mkdir(parents=True)
    contents = {
        "config.json": json.dumps({"hidden_size": 8}).encode(),
        "README.md": CARD.encode(),
        "model.safetensors": bytes(range(256)) * 4,
        "notes/todo.txt": b"nothing left\n",
        "big.dat": os.urandom(BIG_SIZE),
    }
    for name, data in contents.items():
        if name != "big.dat":
            (folder / name).write_bytes(data)
    (root / "big.dat").write_bytes(contents["big.dat"])
    repo_id = f"{TEST_USER}/pushed"
    commit = client_json(
        f"""
        import json
        from huggingface_hub import HfApi
        api = HfApi()
        api.create_repo({repo_id!r})
        api.upload_folder(repo_id={repo_id!r}, folder_path={str(folder)!r})
        info = api.upload_file(repo_id={repo_id!r}, path_or_fileobj={str(root / "big.dat")!r}, path_in_repo="big.dat")
        print(json.dumps(info.oid))
        """,
        hub_env(local_hub, root / "hf_home", token=TEST_TOKEN),
    )
    return {"repo_id": repo_id, "commit": commit, "sha256": {name: sha256(data) for name, data in contents.items()}}


def test_whoami_create_and_delete_repos(env: dict[str, str]) -> None:
    result = client_json(
        f"""
        import json
        from huggingface_hub import HfApi
        from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
        api = HfApi()
        out = {{"user": api.whoami()["name"]}}
        out["url"] = api.create_repo("lifecycle-public")  # no namespace: the caller's
        api.create_repo("{TEST_USER}/lifecycle-private", private=True)
        out["private"] = [api.model_info(f"{TEST_USER}/lifecycle-{{v}}").private for v in ("public", "private")]
        try:
            api.create_repo("{TEST_USER}/lifecycle-public")
        except HfHubHTTPError as error:
            out["again"] = error.response.status_code
        api.create_repo("{TEST_USER}/lifecycle-public", exist_ok=True)
        out["files"] = api.list_repo_files("{TEST_USER}/lifecycle-public")
        api.delete_repo("{TEST_USER}/lifecycle-public")
        out["exists"] = api.repo_exists("{TEST_USER}/lifecycle-public")
        try:
            api.delete_repo("{TEST_USER}/lifecycle-public")
        except RepositoryNotFoundError:
            out["delete_missing"] = "RepositoryNotFoundError"
        api.delete_repo("{TEST_USER}/lifecycle-public", missing_ok=True)
        print(json.dumps(out))
        """,
        env,
    )
    assert result["user"] == TEST_USER
    assert result["url"].endswith(f"/{TEST_USER}/lifecycle-public")
    assert result["private"] == [False, True]
    assert result["again"] == 409
    assert result["files"] == [".gitattributes"]  # like the Hub, a new repo starts with an initial commit
    assert result["exists"] is False
    assert result["delete_missing"] == "RepositoryNotFoundError"


def test_upload_sends_big_and_binary_files_through_lfs(pushed: dict[str, Any], env: dict[str, str]) -> None:
    result = client_json(
        f"""
        import json
        from huggingface_hub import HfApi
        from huggingface_hub.hf_api import RepoFile
        api = HfApi()
        tree = api.list_repo_tree({pushed["repo_id"]!r}, recursive=True)
        entries = {{e.path: [type(e).__name__, e.lfs.sha256 if isinstance(e, RepoFile) and e.lfs else None] for e in tree}}
        top = sorted(e.path for e in api.list_repo_tree({pushed["repo_id"]!r}))
        paths = api.get_paths_info({pushed["repo_id"]!r}, ["config.json", "notes", "missing.txt"])
        info = api.model_info({pushed["repo_id"]!r})
        print(json.dumps({{"entries": entries, "top": top, "paths": [p.path for p in paths],
                          "files": api.list_repo_files({pushed["repo_id"]!r}), "sha": info.sha,
                          "siblings": sorted(s.rfilename for s in info.siblings)}}))
        """,
        env,
    )
    digests = pushed["sha256"]
    assert result["entries"]["big.dat"] == ["RepoFile", digests["big.dat"]]  # LFS by size
    assert result["entries"]["model.safetensors"] == ["RepoFile", digests["model.safetensors"]]  # by .gitattributes
    assert result["entries"]["config.json"] == ["RepoFile", None]
    assert result["entries"]["notes"] == ["RepoFolder", None]
    assert result["top"] == sorted(
        [".gitattributes", "README.md", "big.dat", "config.json", "model.safetensors", "notes"]
    )
    assert result["paths"] == ["config.json", "notes"]
    assert sorted(result["files"]) == sorted([".gitattributes", *digests])
    assert result["siblings"] == sorted(result["files"])
    assert result["sha"] == pushed["commit"]


def test_downloads_into_fresh_cache_return_uploaded_bytes(
    pushed: dict[str, Any], anonymous_env: dict[str, str]
) -> None:
    result = client_json(
        f"""
        import hashlib, json
        from pathlib import Path
        from huggingface_hub import hf_hub_download, snapshot_download
        digest = lambda path: hashlib.sha256(Path(path).read_bytes()).hexdigest()
        names = {sorted(pushed["sha256"])!r}
        single = {{name: digest(hf_hub_download({pushed["repo_id"]!r}, name)) for name in names}}
        folder = Path(snapshot_download({pushed["repo_id"]!r}))
        snapshot = {{p.relative_to(folder).as_posix(): digest(p) for p in folder.rglob("*") if p.is_file()}}
        print(json.dumps({{"single": single, "snapshot": snapshot, "commit": folder.name}}))
        """,
        anonymous_env,
    )
    assert result["single"] == pushed["sha256"]
    assert {name: digest for name, digest in result["snapshot"].items() if name != ".gitattributes"} == pushed[
        "sha256"
    ]
    assert result["commit"] == pushed["commit"]  # snapshots are cached under the commit id


def test_snapshot_allow_patterns_downloads_only_matches(pushed: dict[str, Any], anonymous_env: dict[str, str]) -> None:
    result = client_json(
        f"""
        import json
        from pathlib import Path
        from huggingface_hub import snapshot_download
        folder = Path(snapshot_download({pushed["repo_id"]!r}, allow_patterns=["*.json", "notes/*"]))
        blobs = Path(folder.parents[1], "blobs")
        print(json.dumps({{"files": sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()),
                          "blobs": len(list(blobs.iterdir()))}}))
        """,
        anonymous_env,
    )
    assert result["files"] == ["config.json", "notes/todo.txt"]
    assert result["blobs"] == 2  # nothing else was fetched


def test_resumed_download_uses_byte_ranges(local_hub: LocalHub, pushed: dict[str, Any], env: dict[str, str]) -> None:
    result = client_json(
        f"""
        import hashlib, io, json
        from huggingface_hub import hf_hub_url
        from huggingface_hub.file_download import http_get
        buffer = io.BytesIO()
        http_get(hf_hub_url({pushed["repo_id"]!r}, "model.safetensors"), buffer, resume_size=1000)
        print(json.dumps(buffer.getvalue().hex()))
        """,
        env,
    )
    assert bytes.fromhex(result) == (bytes(range(256)) * 4)[1000:]
    request = urllib.request.Request(
        f"{local_hub.url}/{pushed['repo_id']}/resolve/main/config.json", headers={"Range": "bytes=500-"}
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request)
    assert caught.value.code == 416
    assert caught.value.headers["Content-Range"].startswith("bytes */")


def test_pinned_revisions_keep_old_content(env: dict[str, str]) -> None:
    result = client_json(
        f"""
        import json
        from pathlib import Path
        from huggingface_hub import HfApi, hf_hub_download
        from huggingface_hub.errors import RevisionNotFoundError
        api, repo = HfApi(), "{TEST_USER}/pinned"
        api.create_repo(repo)
        first = api.upload_file(repo_id=repo, path_or_fileobj=b"version 1", path_in_repo="weights.txt").oid
        api.create_tag(repo, tag="v1", tag_message="first release")
        api.create_branch(repo, branch="stable")
        api.upload_file(repo_id=repo, path_or_fileobj=b"version 2", path_in_repo="weights.txt")
        api.upload_file(repo_id=repo, path_or_fileobj=b"gone soon", path_in_repo="extra/tmp.txt")
        api.delete_folder("extra", repo_id=repo)
        read = lambda rev: Path(hf_hub_download(repo, "weights.txt", revision=rev)).read_text()
        out = {{"read": {{rev: read(rev) for rev in (first, "v1", "stable", "main")}}}}
        refs = api.list_repo_refs(repo)
        out["branches"] = {{b.name: b.target_commit for b in refs.branches}}
        out["tags"] = {{t.name: t.target_commit for t in refs.tags}}
        out["titles"] = [c.title for c in api.list_repo_commits(repo)]
        out["stable_files"] = api.list_repo_files(repo, revision="stable")
        out["main_files"] = api.list_repo_files(repo)
        out["first"] = first
        api.delete_tag(repo, tag="v1")
        api.delete_branch(repo, branch="stable")
        try:
            hf_hub_download(repo, "weights.txt", revision="v1")
        except RevisionNotFoundError:
            out["deleted_tag"] = "RevisionNotFoundError"
        out["refs_after"] = [[b.name for b in api.list_repo_refs(repo).branches], api.list_repo_refs(repo).tags]
        print(json.dumps(out))
        """,
        env,
    )
    first = result["first"]
    assert result["read"] == {first: "version 1", "v1": "version 1", "stable": "version 1", "main": "version 2"}
    assert result["tags"] == {"v1": first}
    assert result["branches"]["stable"] == first and result["branches"]["main"] != first
    assert result["titles"] == [
        "Delete folder extra with huggingface_hub",
        "Upload extra/tmp.txt with huggingface_hub",
        "Upload weights.txt with huggingface_hub",
        "Upload weights.txt with huggingface_hub",
        "initial commit",
    ]
    assert sorted(result["stable_files"]) == sorted(result["main_files"]) == [".gitattributes", "weights.txt"]
    assert result["deleted_tag"] == "RevisionNotFoundError"
    assert result["refs_after"] == [["main"], []]


def test_private_repo_needs_the_token(env: dict[str, str], anonymous_env: dict[str, str]) -> None:
    repo = f"{TEST_USER}/secret"
    run_client(
        f"""
        from huggingface_hub import HfApi
        api = HfApi()
        api.create_repo({repo!r}, private=True)
        api.upload_file(repo_id={repo!r}, path_or_fileobj=b"hidden", path_in_repo="secret.txt")
        """,
        env,
    )
    attempts = f"""
        import json
        from pathlib import Path
        from huggingface_hub import hf_hub_download, model_info, snapshot_download, upload_file
        out = {{}}
        for name, call in [("download", lambda: Path(hf_hub_download({repo!r}, "secret.txt")).read_text()),
                           ("snapshot", lambda: sorted(p.name for p in Path(snapshot_download({repo!r})).iterdir())),
                           ("info", lambda: model_info({repo!r}).private),
                           ("upload", lambda: len(upload_file(repo_id={repo!r}, path_or_fileobj=b"x", path_in_repo="x.txt").oid))]:
            try:
                out[name] = call()
            except Exception as error:
                out[name] = type(error).__name__
        print(json.dumps(out))
        """
    anonymous = client_json(attempts, anonymous_env)
    assert anonymous == {
        **dict.fromkeys(["download", "snapshot", "info"], "RepositoryNotFoundError"),
        "upload": "HfHubHTTPError",
    }
    authorized = {"download": "hidden", "snapshot": [".gitattributes", "secret.txt"], "info": True, "upload": 40}
    assert client_json(attempts, env) == authorized
    wrong_token = client_json(attempts, {**anonymous_env, "HF_TOKEN": "hf_wrong"})
    assert wrong_token["download"] == wrong_token["upload"] == "HfHubHTTPError"  # 401 invalid credentials


def test_gated_repo_needs_authentication_to_download(env: dict[str, str], anonymous_env: dict[str, str]) -> None:
    repo = f"{TEST_USER}/gated"
    run_client(
        f"""
        from huggingface_hub import HfApi
        api = HfApi()
        api.create_repo({repo!r})
        api.upload_file(repo_id={repo!r}, path_or_fileobj=b"{{}}", path_in_repo="config.json")
        api.update_repo_settings({repo!r}, gated="auto")
        """,
        env,
    )
    attempt = f"""
        import json
        from huggingface_hub import hf_hub_download, model_info
        try:
            result = open(hf_hub_download({repo!r}, "config.json")).read()
        except Exception as error:
            result = type(error).__name__
        print(json.dumps([result, model_info({repo!r}).gated]))
        """
    assert client_json(attempt, anonymous_env) == ["GatedRepoError", "auto"]
    assert client_json(attempt, env) == ["{}", "auto"]


def test_missing_repo_revision_and_file_raise_client_errors(pushed: dict[str, Any], env: dict[str, str]) -> None:
    result = client_json(
        f"""
        import json
        from huggingface_hub import HfApi, hf_hub_download
        api, out = HfApi(), {{}}
        for name, repo, filename, revision in [("entry", {pushed["repo_id"]!r}, "nope.bin", None),
                                               ("revision", {pushed["repo_id"]!r}, "config.json", "no-such-branch"),
                                               ("repo", "{TEST_USER}/no-such-repo", "config.json", None)]:
            try:
                hf_hub_download(repo, filename, revision=revision)
            except Exception as error:
                out[name] = [cls.__name__ for cls in type(error).__mro__]  # the class, then its bases
        out["exists"] = [api.file_exists({pushed["repo_id"]!r}, n) for n in ("config.json", "nope.bin")]
        print(json.dumps(out))
        """,
        env,
    )
    assert result["entry"][0] == "RemoteEntryNotFoundError" and "EntryNotFoundError" in result["entry"]
    assert result["revision"][0] == "RevisionNotFoundError"
    assert result["repo"][0] == "RepositoryNotFoundError"
    assert result["exists"] == [True, False]


def test_model_card_metadata_is_validated(env: dict[str, str]) -> None:
    result = client_json(
        f"""
        import json
        from huggingface_hub import HfApi, ModelCard
        api, repo, out = HfApi(), "{TEST_USER}/carded", {{}}
        ModelCard({CARD!r}).validate()
        api.create_repo(repo)
        try:
            api.upload_file(repo_id=repo, path_or_fileobj=b"---\\nlicense: mit\\nnot yaml at all\\n---\\n", path_in_repo="README.md")
        except ValueError as error:
            out["error"] = str(error)
        api.upload_file(repo_id=repo, path_or_fileobj={CARD.encode()!r}, path_in_repo="README.md")
        out["card"] = ModelCard.load(repo).data.to_dict()
        out["commits"] = len(api.list_repo_commits(repo))
        print(json.dumps(out))
        """,
        env,
    )
    assert "Invalid metadata in README.md" in result["error"] and "not yaml at all" in result["error"]
    assert result["card"] == {"license": "mit", "tags": ["aesthetics"]}
    assert result["commits"] == 2  # initial commit + the valid card; the invalid one never landed


def test_transformers_loads_a_config_through_the_hub(env: dict[str, str], anonymous_env: dict[str, str]) -> None:
    repo = f"{TEST_USER}/tiny-bert"
    run_client(
        f"""
        from transformers import BertConfig
        BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4).push_to_hub({repo!r})
        """,
        env,
    )
    result = client_json(
        f"""
        import json
        from transformers import AutoConfig
        config = AutoConfig.from_pretrained({repo!r})
        print(json.dumps([type(config).__name__, config.hidden_size, config.num_hidden_layers]))
        """,
        anonymous_env,
    )
    assert result == ["BertConfig", 32, 2]
