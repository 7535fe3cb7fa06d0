"""A local Hugging Face Hub for tests: the Hub's HTTP protocol served from a temporary folder.

The real `huggingface_hub` and `transformers` clients talk to [`LocalHub`] over HTTP: repo creation and deletion,
commits with inline and LFS files, branches, tags, tree listings, private and gated repos, and `resolve` downloads
with the headers the clients check. Every commit is an immutable snapshot of content-addressed blobs, so pinned
revisions keep serving old bytes after later pushes. The Xet storage protocol is not emulated: clients must run with
`HF_HUB_DISABLE_XET=1`.

`huggingface_hub` reads its endpoint, token and offline flag when it is imported, so clients run in a fresh
interpreter: [`hub_env`] builds its environment and [`run_client`] runs a script in it.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import logging
import os
import re
import secrets
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

__all__ = ["TEST_TOKEN", "TEST_USER", "LocalHub", "hub_env", "local_hub", "run_client"]

logger = logging.getLogger(__name__)

TEST_USER = "tester"
TEST_TOKEN = "hf_local_hub_test_token"

# The Hub refuses regular git files above 10 MB; binary files and files matched by `.gitattributes` go through LFS.
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.7z", "*.bin", "*.ckpt", "*.gz", "*.h5", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.parquet",
        "*.pickle", "*.pkl", "*.pt", "*.pth", "*.safetensors", "*.tar", "*.tflite", "*.zip", "*tfevents*",
    )
)  # fmt: skip

_YAML_BLOCK = re.compile(r"^\s*---\r?\n([\s\S]*?)\r?\n---[ \t]*(?:\r?\n|$)")
# A metadata line must be blank, a comment, a `key:` at top level, or part of a nested value (indented or a list item).
_YAML_LINE = re.compile(r"[ ]*(?:#.*)?|[^\s#:-][^:]*:(?:[ ].*)?|[ -].*")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubError(Exception):
    """An error answered to the client, with the `X-Error-Code` that `huggingface_hub` maps to its error types."""

    def __init__(
        self, status: int, code: str | None, message: str, headers: dict[str, str] | None = None, **fields: Any
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers, self.fields = status, code, message, headers or {}, fields

    def response(self) -> _Response:
        # Header values must be latin-1: escape what a file name may bring.
        headers = {**self.headers, "X-Error-Message": self.message.encode("ascii", "backslashreplace").decode()}
        if self.code is not None:
            headers["X-Error-Code"] = self.code
        return _json({"error": self.message, **self.fields}, self.status, headers)


@dataclass(frozen=True)
class FileEntry:
    """One file of a snapshot: a blob named by its sha256, stored in git either inline or as an LFS pointer."""

    sha256: str
    size: int
    lfs: bool
    oid: str  # git blob id: of the content, or of the LFS pointer

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.oid

    @property
    def pointer_size(self) -> int:
        return len(_lfs_pointer(self.sha256, self.size))

    def info(self, path: str) -> dict[str, Any]:
        """The entry as the tree and paths-info endpoints list it."""
        info: dict[str, Any] = {"type": "file", "oid": self.oid, "size": self.size, "path": path}
        if self.lfs:
            info["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": self.pointer_size}
        return info


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True)
class Commit:
    id: str
    parent: str | None
    title: str
    message: str
    author: str
    date: str
    files: dict[str, FileEntry]


@dataclass
class Repo:
    private: bool
    created_at: str
    gated: str | bool = False
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit:
        """The commit a branch, tag or full commit id points at."""
        commit_id = self.branches.get(revision) or self.tags.get(revision)
        commit_id = commit_id or (revision if revision in self.commits else None)
        if commit_id is None:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return self.commits[commit_id]

    def add_commit(self, branch: str, files: dict[str, FileEntry], title: str, message: str, author: str) -> Commit:
        commit = Commit(secrets.token_hex(20), self.branches.get(branch), title, message, author, _now(), files)
        self.commits[commit.id] = commit
        self.branches[branch] = commit.id
        return commit


@dataclass(frozen=True)
class _Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> _Response:
    return _Response(status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})})


def _byte_range(header: str, size: int) -> tuple[int, int] | None:
    """First and last byte of a single `Range: bytes=...` request, or None when it cannot be served."""
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    if match is None or not any(match.groups()):
        return None
    first, last = match.groups()
    if not first:  # suffix range: the last N bytes
        start, end = max(size - int(last), 0), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    return (start, end) if start <= end else None


def _folder_info(files: dict[str, FileEntry], path: str) -> dict[str, Any]:
    content = sorted((name, entry.oid) for name, entry in files.items() if name.startswith(f"{path}/"))
    return {"type": "directory", "oid": hashlib.sha1(json.dumps(content).encode()).hexdigest(), "path": path}


class LocalHub:
    """A Hub server on 127.0.0.1 and a free port, storing blobs in a temporary folder until it stops.

    One user, [`TEST_USER`], authenticated by `Authorization: Bearer <token>`, may write to every repo.

    Example:
    ```py
    >>> with LocalHub() as hub:
    ...     env = hub_env(hub, hf_home=tmp_path, token=hub.token)
    ...     run_client("from huggingface_hub import create_repo; create_repo('tester/demo')", env)
    ```
    """

    def __init__(self, user: str = TEST_USER, token: str = TEST_TOKEN) -> None:
        self.user, self.token = user, token
        self.repos: dict[str, Repo] = {}
        self.lock = threading.RLock()
        self.upload_tickets: dict[str, tuple[str, int]] = {}  # pre-signed LFS upload -> (sha256, size)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._storage: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("LocalHub is not running: call `start()` or use it as a context manager.")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> LocalHub:
        if self._server is not None:
            raise RuntimeError(f"LocalHub is already running at {self.url}.")
        self._storage = tempfile.TemporaryDirectory(prefix="local-hub-")
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _HubHandler)
        self._server.daemon_threads = True
        self._server.hub = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-hub", daemon=True)
        self._thread.start()
        logger.debug("Local Hub serving at %s", self.url)
        return self

    def stop(self) -> None:
        if self._server is None or self._thread is None or self._storage is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self._storage.cleanup()
        self._server = self._thread = self._storage = None

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def blob_path(self, sha256: str) -> Path:
        if self._storage is None:
            raise RuntimeError("LocalHub is not running: it stores no blobs.")
        return Path(self._storage.name) / sha256

    def blob_size(self, sha256: str) -> int | None:
        path = self.blob_path(sha256)
        return path.stat().st_size if re.fullmatch(r"[0-9a-f]{64}", sha256) and path.is_file() else None

    def store_blob(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        path = self.blob_path(sha256)
        if not path.exists():
            partial = path.with_name(f"{sha256}.{secrets.token_hex(4)}.partial")
            partial.write_bytes(data)
            os.replace(partial, path)  # concurrent writers of one blob write the same bytes
        return sha256

    def store_file(self, data: bytes) -> FileEntry:
        return FileEntry(self.store_blob(data), len(data), lfs=False, oid=_git_sha1(data))

    def lfs_entry(self, sha256: str, path: str) -> FileEntry:
        size = self.blob_size(sha256)
        if size is None:
            raise HubError(400, None, f"LFS object {sha256} of {path} was never uploaded")
        return FileEntry(sha256, size, lfs=True, oid=_git_sha1(_lfs_pointer(sha256, size)))

    def uses_lfs(self, commit: Commit, path: str, size: int, sample: bytes) -> bool:
        """The Hub's preupload rule: large files, binary files and `.gitattributes` LFS patterns go through LFS."""
        attributes = commit.files.get(".gitattributes")
        lines = self.blob_path(attributes.sha256).read_text().splitlines() if attributes else []
        patterns = [line.split()[0] for line in lines if "filter=lfs" in line.split()[1:]]
        matched = any(fnmatch.fnmatch(path if "/" in p else path.rsplit("/", 1)[-1], p) for p in patterns)
        return size > LFS_SIZE_THRESHOLD or b"\0" in sample or matched


_REPO = r"(?P<repo>[\w.-]+/[\w.-]+)"
_API = rf"/api/models/{_REPO}"
_RESOLVE = rf"/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)"
_ROUTES = [
    (method, re.compile(pattern), endpoint)
    for method, pattern, endpoint in (
        ("GET", r"/api/whoami-v2", "whoami"),
        ("POST", r"/api/validate-yaml", "validate_yaml"),
        ("POST", r"/api/repos/create", "create_repo"),
        ("DELETE", r"/api/repos/delete", "delete_repo"),
        ("PUT", rf"{_API}/settings", "update_settings"),
        ("GET", rf"{_API}(?:/revision/(?P<rev>[^/]+))?", "repo_info"),
        ("POST", rf"{_API}/preupload/(?P<rev>[^/]+)", "preupload"),
        ("POST", rf"{_API}/commit/(?P<rev>[^/]+)", "commit"),
        ("GET", rf"{_API}/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?", "tree"),
        ("POST", rf"{_API}/paths-info/(?P<rev>[^/]+)", "paths_info"),
        ("GET", rf"{_API}/refs", "refs"),
        ("GET", rf"{_API}/commits/(?P<rev>[^/]+)", "commits"),
        ("POST", rf"{_API}/branch/(?P<name>[^/]+)", "create_branch"),
        ("DELETE", rf"{_API}/branch/(?P<name>[^/]+)", "delete_branch"),
        ("POST", rf"{_API}/tag/(?P<rev>[^/]+)", "create_tag"),
        ("DELETE", rf"{_API}/tag/(?P<name>[^/]+)", "delete_tag"),
        ("POST", rf"/{_REPO}\.git/info/lfs/objects/batch", "lfs_batch"),
        ("POST", rf"/{_REPO}\.git/info/lfs/objects/verify", "lfs_verify"),
        ("PUT", r"/lfs-upload/(?P<ticket>\w+)", "lfs_upload"),
        ("GET", _RESOLVE, "resolve"),
        ("HEAD", _RESOLVE, "resolve"),
    )
]


class _HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the clients' connection pools expect
    server: ThreadingHTTPServer
    query: dict[str, list[str]]
    body: bytes

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    # --- plumbing -----------------------------------------------------------------------------------------------

    @property
    def hub(self) -> LocalHub:
        return self.server.hub  # type: ignore[attr-defined]

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        self.query = parse_qs(url.query)
        self.body = self._read_body()  # always drained, so the kept-alive connection stays in sync
        try:
            response = self._route(self.command, url.path)
        except HubError as error:
            response = error.response()
        except Exception:
            logger.exception("Local Hub failed on %s %s", self.command, self.path)
            response = _json({"error": "internal server error"}, 500)
        self.send_response(response.status)
        for name, value in {**response.headers, "Content-Length": str(len(response.body))}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch

    def _route(self, method: str, path: str) -> _Response:
        for route_method, pattern, endpoint in _ROUTES:
            match = pattern.fullmatch(path)
            if match is not None and route_method == method:
                arguments = {name: unquote(value) for name, value in match.groupdict().items() if value is not None}
                return getattr(self, endpoint)(**arguments)
        raise HubError(404, None, f"No route for {method} {path}")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        chunks = []
        while (size := int(self.rfile.readline().split(b";")[0], 16)) > 0:
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass  # trailers
        return b"".join(chunks)

    def _json_body(self) -> dict[str, Any]:
        return json.loads(self.body or b"{}")

    def _user(self) -> str | None:
        authorization = self.headers.get("Authorization")
        if authorization is None:
            return None
        if authorization != f"Bearer {self.hub.token}":
            raise HubError(401, None, "Invalid credentials in Authorization header")
        return self.hub.user

    def _require_user(self) -> str:
        user = self._user()
        if user is None:
            raise HubError(401, None, "Authentication required: send `Authorization: Bearer <token>`")
        return user

    def _repo(self, repo_id: str, *, write: bool = False, content: bool = False) -> Repo:
        """The repo if the caller may see it (and write to it, or download from it)."""
        user = self._require_user() if write else self._user()
        repo = self.hub.repos.get(repo_id)
        if repo is None or (repo.private and user is None):
            # Like the Hub, an anonymous caller cannot tell a private repo from a missing one.
            raise HubError(404 if user else 401, "RepoNotFound", f"Repository not found: {repo_id}")
        if content and repo.gated and user is None:
            raise HubError(401, "GatedRepo", f"Access to model {repo_id} is restricted: you must be authenticated")
        return repo

    def _branch_head(self, repo: Repo, branch: str) -> Commit:
        if branch not in repo.branches:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {branch} is not a branch")
        return repo.commits[repo.branches[branch]]

    def _repo_url(self, repo_id: str) -> str:
        return f"{self.hub.url}/{repo_id}"

    # --- account and repos --------------------------------------------------------------------------------------

    def whoami(self) -> _Response:
        user = self._require_user()
        access_token = {"displayName": "local-hub", "role": "write"}
        return _json({"type": "user", "name": user, "fullname": user, "orgs": [],
                      "auth": {"type": "access_token", "accessToken": access_token}})  # fmt: skip

    def validate_yaml(self) -> _Response:
        match = _YAML_BLOCK.match(self._json_body().get("content", ""))
        if match is None:
            return _json({"errors": [], "warnings": [{"message": "Empty or missing yaml metadata in repo card"}]})
        errors = [
            {"message": f"Invalid YAML metadata, line {number}: {line!r} is not `key: value` nor a nested value"}
            for number, line in enumerate(match.group(1).splitlines(), start=2)
            if not _YAML_LINE.fullmatch(line)
        ]
        return _json({"errors": errors, "warnings": []}, 400 if errors else 200)

    def create_repo(self) -> _Response:
        user = self._require_user()
        payload = self._json_body()
        if payload.get("type", "model") != "model":
            raise HubError(400, None, f"Only model repos are served here, got type {payload['type']!r}")
        repo_id = f"{payload.get('organization') or user}/{payload['name']}"
        if not re.fullmatch(_REPO, repo_id):
            raise HubError(400, None, f"Invalid repo name {repo_id!r}: expected letters, digits, '-', '_' or '.'")
        with self.hub.lock:
            if repo_id in self.hub.repos:
                raise HubError(
                    409, None, f"You already created this model repo: {repo_id}", url=self._repo_url(repo_id)
                )
            repo = Repo(private=payload.get("visibility") == "private", created_at=_now())
            attributes = self.hub.store_file(DEFAULT_GITATTRIBUTES.encode())
            repo.add_commit("main", {".gitattributes": attributes}, "initial commit", "", "system")
            self.hub.repos[repo_id] = repo
        return _json({"url": self._repo_url(repo_id), "name": repo_id})

    def delete_repo(self) -> _Response:
        payload = self._json_body()
        repo_id = f"{payload.get('organization') or self._require_user()}/{payload['name']}"
        self._repo(repo_id, write=True)
        with self.hub.lock:
            del self.hub.repos[repo_id]
        return _json({})

    def update_settings(self, repo: str) -> _Response:
        target, payload = self._repo(repo, write=True), self._json_body()
        if "visibility" in payload:
            target.private = payload["visibility"] == "private"
        target.gated = payload.get("gated", target.gated)
        return _json({})

    def repo_info(self, repo: str, rev: str = "main") -> _Response:
        target = self._repo(repo)
        commit = target.resolve(rev)
        siblings = [
            {"rfilename": path, "size": entry.size, "blobId": entry.oid,
             "lfs": {"sha256": entry.sha256, "size": entry.size, "pointerSize": entry.pointer_size} if entry.lfs else None}
            for path, entry in sorted(commit.files.items())
        ]  # fmt: skip
        return _json({
            "id": repo, "modelId": repo, "author": repo.split("/")[0], "sha": commit.id,
            "lastModified": commit.date, "createdAt": target.created_at, "private": target.private,
            "gated": target.gated, "disabled": False, "downloads": 0, "likes": 0, "tags": [], "siblings": siblings,
        })  # fmt: skip

    # --- uploads ------------------------------------------------------------------------------------------------

    def preupload(self, repo: str, rev: str) -> _Response:
        head = self._branch_head(self._repo(repo, write=True), rev)
        files = []
        for item in self._json_body()["files"]:
            path, existing = item["path"], head.files.get(item["path"])
            lfs = self.hub.uses_lfs(head, path, item["size"], base64.b64decode(item["sample"]))
            files.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                          "oid": existing.etag if existing else None})  # fmt: skip
        return _json({"files": files})

    def commit(self, repo: str, rev: str) -> _Response:
        target = self._repo(repo, write=True)
        if self.query.get("create_pr") == ["1"]:
            raise HubError(400, None, "Pull requests are not supported by the local Hub")
        lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        if not lines or lines[0]["key"] != "header":
            raise HubError(400, None, "A commit payload starts with a `header` line")
        header = lines[0]["value"]
        with self.hub.lock:
            head = self._branch_head(target, rev)
            if header.get("parentCommit", head.id) != head.id:
                raise HubError(412, None, f"A commit has happened since {header['parentCommit']}: refresh and retry")
            files = dict(head.files)
            for operation in lines[1:]:
                self._apply(files, operation["key"], operation["value"])
            commit = target.add_commit(rev, files, header["summary"], header.get("description", ""), self.hub.user)
        return _json({"commitUrl": f"{self._repo_url(repo)}/commit/{commit.id}", "commitOid": commit.id,
                      "success": True, "pullRequestUrl": None})  # fmt: skip

    def _apply(self, files: dict[str, FileEntry], key: str, value: dict[str, Any]) -> None:
        path = value["path"]
        if key == "file":
            files[path] = self.hub.store_file(base64.b64decode(value["content"]))
        elif key == "lfsFile":
            files[path] = self.hub.lfs_entry(value["oid"], path)
        elif key in ("deletedFile", "deletedFolder"):
            folder = path.rstrip("/") + "/"
            doomed = [name for name in files if name == path or (key == "deletedFolder" and name.startswith(folder))]
            if not doomed:
                raise HubError(404, "EntryNotFound", f"A file with this name doesn't exist: {path}")
            for name in doomed:
                del files[name]
        else:
            raise HubError(400, None, f"Unknown commit operation {key!r}")

    def lfs_batch(self, repo: str) -> _Response:
        self._repo(repo, write=True)
        payload = self._json_body()
        if payload.get("operation") != "upload":
            raise HubError(400, None, f"Only the LFS upload operation is served, got {payload.get('operation')!r}")
        objects = []
        for item in payload["objects"]:
            oid, size = item["oid"], item["size"]
            if self.hub.blob_size(oid) == size:
                objects.append({"oid": oid, "size": size})  # already stored: nothing to upload
                continue
            ticket = secrets.token_hex(16)
            with self.hub.lock:
                self.hub.upload_tickets[ticket] = (oid, size)
            actions = {"upload": {"href": f"{self.hub.url}/lfs-upload/{ticket}"},
                       "verify": {"href": f"{self._repo_url(repo)}.git/info/lfs/objects/verify"}}  # fmt: skip
            objects.append({"oid": oid, "size": size, "authenticated": True, "actions": actions})
        return _json(
            {"transfer": "basic", "objects": objects}, headers={"Content-Type": "application/vnd.git-lfs+json"}
        )

    def lfs_upload(self, ticket: str) -> _Response:
        # Like a pre-signed storage URL: the ticket authorizes the upload, no token is sent.
        with self.hub.lock:
            expected = self.hub.upload_tickets.pop(ticket, None)
        if expected is None:
            raise HubError(403, None, "Unknown or already used upload URL")
        oid, size = expected
        if len(self.body) != size or hashlib.sha256(self.body).hexdigest() != oid:
            raise HubError(400, None, f"Uploaded content does not match oid {oid} and size {size}")
        self.hub.store_blob(self.body)
        return _Response(200)

    def lfs_verify(self, repo: str) -> _Response:
        self._repo(repo, write=True)
        payload = self._json_body()
        if self.hub.blob_size(payload["oid"]) != payload["size"]:
            raise HubError(404, None, f"LFS object {payload['oid']} of size {payload['size']} was not uploaded")
        return _json({})

    # --- browsing -----------------------------------------------------------------------------------------------

    def tree(self, repo: str, rev: str, path: str = "") -> _Response:
        files = self._repo(repo).resolve(rev).files
        prefix = f"{path}/" if path else ""
        recursive = self.query.get("recursive", ["false"])[0].lower() == "true"
        folders, entries = set(), []
        for name in sorted(name for name in files if name.startswith(prefix)):
            parts = name[len(prefix) :].split("/")
            depth = len(parts) - 1 if recursive else min(1, len(parts) - 1)
            folders.update(prefix + "/".join(parts[:level]) for level in range(1, depth + 1))
            if recursive or len(parts) == 1:
                entries.append(files[name].info(name))
        if path and not (folders or entries):
            raise HubError(404, "EntryNotFound", f"{path} is not a folder at {rev}")
        return _json([_folder_info(files, folder) for folder in sorted(folders)] + entries)

    def paths_info(self, repo: str, rev: str) -> _Response:
        files = self._repo(repo).resolve(rev).files
        infos = []
        for path in parse_qs(self.body.decode()).get("paths", []):
            if path in files:
                infos.append(files[path].info(path))
            elif any(name.startswith(f"{path}/") for name in files):
                infos.append(_folder_info(files, path))
        return _json(infos)

    def refs(self, repo: str) -> _Response:
        target = self._repo(repo)

        def listing(refs: dict[str, str], kind: str) -> list[dict[str, str]]:
            return [{"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": commit_id}
                    for name, commit_id in sorted(refs.items())]  # fmt: skip

        return _json({"branches": listing(target.branches, "heads"), "tags": listing(target.tags, "tags"),
                      "converts": [], "pullRequests": []})  # fmt: skip

    def commits(self, repo: str, rev: str) -> _Response:
        target = self._repo(repo)
        history, commit = [], target.resolve(rev)
        while True:
            history.append({"id": commit.id, "title": commit.title, "message": commit.message,
                            "authors": [{"user": commit.author}], "date": commit.date})  # fmt: skip
            if commit.parent is None:
                return _json(history)
            commit = target.commits[commit.parent]

    def create_branch(self, repo: str, name: str) -> _Response:
        target = self._repo(repo, write=True)
        start = target.resolve(self._json_body().get("startingPoint", "main"))
        with self.hub.lock:
            if name in target.branches:
                raise HubError(409, None, f"Branch {name} already exists")
            target.branches[name] = start.id
        return _json({})

    def delete_branch(self, repo: str, name: str) -> _Response:
        target = self._repo(repo, write=True)
        if name == "main":
            raise HubError(403, None, "The default branch cannot be deleted")
        self._branch_head(target, name)
        with self.hub.lock:
            del target.branches[name]
        return _json({})

    def create_tag(self, repo: str, rev: str) -> _Response:
        target = self._repo(repo, write=True)
        commit, tag = target.resolve(rev), self._json_body()["tag"]
        with self.hub.lock:
            if tag in target.tags:
                raise HubError(409, None, f"Tag {tag} already exists")
            target.tags[tag] = commit.id
        return _json({})

    def delete_tag(self, repo: str, name: str) -> _Response:
        target = self._repo(repo, write=True)
        with self.hub.lock:
            if target.tags.pop(name, None) is None:
                raise HubError(404, "RevisionNotFound", f"Invalid rev id: {name} is not a tag")
        return _json({})

    # --- downloads ----------------------------------------------------------------------------------------------

    def resolve(self, repo: str, rev: str, path: str) -> _Response:
        commit = self._repo(repo, content=True).resolve(rev)
        entry = commit.files.get(path)
        if entry is None:
            # The commit header lets the client cache that the file does not exist at this commit.
            raise HubError(404, "EntryNotFound", f"{path} does not exist at {rev}", {"X-Repo-Commit": commit.id})
        headers = {"X-Repo-Commit": commit.id, "ETag": f'"{entry.etag}"', "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}  # fmt: skip
        if entry.lfs:
            headers |= {"X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(entry.size)}
        data = self.hub.blob_path(entry.sha256).read_bytes()
        requested = self.headers.get("Range")
        if requested is None:
            return _Response(200, data, headers)
        byte_range = _byte_range(requested, len(data))
        if byte_range is None:
            raise HubError(
                416, None, f"Range {requested!r} is not satisfiable", {"Content-Range": f"bytes */{len(data)}"}
            )
        start, end = byte_range
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        return _Response(206, data[start : end + 1], headers)


@pytest.fixture(scope="session")
def local_hub() -> Iterator[LocalHub]:
    """A [`LocalHub`] serving for the whole test session; give each test its own repo names."""
    with LocalHub() as hub:
        yield hub


def hub_env(hub: LocalHub, hf_home: str | os.PathLike[str], token: str | None = None) -> dict[str, str]:
    """The environment of a client process that talks to `hub`, with its own `HF_HOME` and optionally a token.

    Every inherited Hugging Face variable is dropped (offline flags, tokens, cache paths), so the client sees only
    the local Hub and the given `hf_home`.
    """
    env = {name: value for name, value in os.environ.items() if not name.startswith(("HF_", "HUGGING"))}
    env |= {
        "HF_ENDPOINT": hub.url,
        "HF_HOME": os.fspath(hf_home),
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_XET": "1",  # the Xet storage protocol is not emulated
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }
    if token is not None:
        env["HF_TOKEN"] = token
    return env


def run_client(script: str, env: Mapping[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a Python `script` (dedented) in a fresh interpreter with `env`; fail showing its output if it fails."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], env=dict(env), capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        pytest.fail(
            f"Client script exited with code {result.returncode}.\n"
            f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
        )
    return result
