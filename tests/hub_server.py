"""A small Hugging Face Hub-compatible HTTP server on 127.0.0.1, for tests.

It speaks the part of the Hub API that huggingface_hub's client uses to create repos, commit files
(regular base64 files and LFS uploads), tag revisions, list trees and download files, so the real
client runs end to end. Storage: content-addressed blobs under ``root`` (a tmp_path); repo metadata in
memory. Every commit gets a fresh random 40-hex sha; revisions resolve by branch, tag or commit sha.
No authentication (any token is accepted).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import shutil
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

LFS_THRESHOLD = 10_000  # bytes; bigger files (and *.safetensors) go through the LFS batch API
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass
class FileEntry:
    sha256: str
    size: int
    git_oid: str
    lfs: bool


@dataclass
class Commit:
    sha: str
    parent: str | None
    files: dict[str, FileEntry]
    message: str


@dataclass
class Repo:
    repo_id: str
    repo_type: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)

    def resolve(self, rev: str) -> Commit | None:
        sha = self.branches.get(rev) or self.tags.get(rev) or (rev if rev in self.commits else None)
        return self.commits.get(sha) if sha else None


class HubState:
    """Repos and blobs. ``requests`` logs (method, path) of every request, for tests that assert no traffic."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.RLock()
        self.auth: list[tuple[str, str, str | None]] = []  # (method, path, Authorization header) per request
        self.content_etags = False  # True: ETag = sha256 of the bytes served (follows a tampered blob)

    def blob_path(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256

    def put_blob(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        path = self.blob_path(sha)
        if not path.exists():
            tmp = path.with_suffix(f".tmp{secrets.token_hex(4)}")
            tmp.write_bytes(data)
            tmp.replace(path)
        return sha

    def entry_for(self, data: bytes, lfs: bool) -> FileEntry:
        sha = self.put_blob(data)
        git_oid = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        return FileEntry(sha256=sha, size=len(data), git_oid=git_oid, lfs=lfs)

    def new_commit(self, repo: Repo, parent: str | None, files: dict[str, FileEntry], message: str) -> str:
        sha = secrets.token_hex(20)
        repo.commits[sha] = Commit(sha=sha, parent=parent, files=files, message=message)
        return sha

    def create_repo(self, repo_type: str, repo_id: str, private: bool) -> Repo:
        repo = Repo(repo_id=repo_id, repo_type=repo_type, private=private)
        attrs = self.entry_for(b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n", lfs=False)
        repo.branches["main"] = self.new_commit(repo, None, {".gitattributes": attrs}, "initial commit")
        self.repos[(repo_type, repo_id)] = repo
        return repo

    def tamper(self, repo_id: str, path: str, rev: str = "main", repo_type: str = "model") -> None:
        """Flip one byte of a stored file in place (simulates a bad mirror / storage corruption)."""
        entry = self.repos[(repo_type, repo_id)].resolve(rev).files[path]  # type: ignore[union-attr]
        blob = self.blob_path(entry.sha256)
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 0xFF
        blob.write_bytes(bytes(data))


_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: LoopbackHub

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    # ---------------------------------------------------------------------------------------- plumbing
    @property
    def state(self) -> HubState:
        return self.server.state

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json", head: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _error(self, status: int, code: str | None, message: str, headers: dict[str, str] | None = None,
               head: bool = False) -> None:
        h = dict(headers or {})
        if code:
            h["X-Error-Code"] = code
        h["X-Error-Message"] = message
        self._send(status, json.dumps({"error": message}).encode(), h, head=head)

    def _repo(self, repo_type: str, repo_id: str, head: bool = False) -> Repo | None:
        repo = self.state.repos.get((repo_type, repo_id))
        if repo is None:
            self._error(404, "RepoNotFound", f"Repository not found: {repo_id}", head=head)
        return repo

    def _commit(self, repo: Repo, rev: str, head: bool = False) -> Commit | None:
        commit = repo.resolve(rev)
        if commit is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", head=head)
        return commit

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        path = url.path
        query = parse_qs(url.query)
        with self.state.lock:
            self.state.requests.append((method, path))
            self.state.auth.append((method, path, self.headers.get("Authorization")))
        body = self._body() if method in ("POST", "PUT", "DELETE") else b""
        try:
            with self.state.lock:
                self._route(method, path, query, body)
        except BrokenPipeError:
            pass

    do_GET = lambda self: self._dispatch("GET")  # noqa: E731
    do_HEAD = lambda self: self._dispatch("HEAD")  # noqa: E731
    do_POST = lambda self: self._dispatch("POST")  # noqa: E731
    do_PUT = lambda self: self._dispatch("PUT")  # noqa: E731
    do_DELETE = lambda self: self._dispatch("DELETE")  # noqa: E731

    # ------------------------------------------------------------------------------------------ routes
    def _route(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> None:
        base = self.server.url
        if method == "POST" and path == "/api/repos/create":
            req = json.loads(body or b"{}")
            repo_type = req.get("type") or "model"
            repo_id = f"{req['organization']}/{req['name']}" if req.get("organization") else req["name"]
            url = f"{base}/{_PREFIX[repo_type]}{repo_id}"
            if (repo_type, repo_id) in self.state.repos:
                return self._json(409, {"error": "You already created this repo", "url": url})
            private = req.get("visibility") == "private" or bool(req.get("private"))  # 2.x sends visibility
            self.state.create_repo(repo_type, repo_id, private)
            return self._json(200, {"url": url, "name": repo_id})
        if method == "DELETE" and path == "/api/repos/delete":
            req = json.loads(body or b"{}")
            repo_id = f"{req['organization']}/{req['name']}" if req.get("organization") else req["name"]
            if self.state.repos.pop((req.get("type") or "model", repo_id), None) is None:
                return self._error(404, "RepoNotFound", f"Repository not found: {repo_id}")
            return self._json(200, {})
        if method == "POST" and path == "/api/validate-yaml":
            return self._json(200, {"errors": [], "warnings": []})
        if method == "PUT" and path.startswith("/lfs-upload/"):
            oid = path.rsplit("/", 1)[1]
            if hashlib.sha256(body).hexdigest() != oid:
                return self._error(400, None, f"uploaded content does not match oid {oid}")
            self.state.put_blob(body)
            return self._json(200, {})
        m = re.match(r"^/(?:(datasets|spaces)/)?(.+)\.git/info/lfs/objects/batch$", path)
        if m and method == "POST":
            return self._lfs_batch(json.loads(body))
        m = re.match(r"^/api/(models|datasets|spaces)/(.+)$", path)
        if m:
            return self._api(method, _TYPES[m.group(1)], m.group(2), query, body)
        m = re.match(r"^/(?:(datasets|spaces)/)?([^/]+/[^/]+|[^/]+)/resolve/([^/]+)/(.+)$", path)
        if m and method in ("GET", "HEAD"):
            repo_type = _TYPES[m.group(1)] if m.group(1) else "model"
            return self._resolve(repo_type, m.group(2), unquote(m.group(3)), unquote(m.group(4)), method == "HEAD")
        return self._error(404, None, f"no route for {method} {path}", head=method == "HEAD")

    def _lfs_batch(self, req: dict[str, Any]) -> None:
        objects = []
        for obj in req.get("objects", []):
            out = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if not self.state.blob_path(obj["oid"]).exists():
                out["actions"] = {"upload": {"href": f"{self.server.url}/lfs-upload/{obj['oid']}"}}
            objects.append(out)
        self._send(200, json.dumps({"transfer": "basic", "objects": objects}).encode(),
                   content_type="application/vnd.git-lfs+json")

    def _tree_entries(self, commit: Commit, prefix: str, recursive: bool) -> list[dict[str, Any]]:
        prefix = prefix.strip("/")
        files, dirs = [], set()
        for p, e in sorted(commit.files.items()):
            if prefix and not p.startswith(prefix + "/"):
                continue
            rest = p[len(prefix) + 1:] if prefix else p
            parts = rest.split("/")
            for i in range(1, len(parts)):
                if recursive or i == 1:
                    dirs.add("/".join(([prefix] if prefix else []) + parts[:i]))
            if recursive or len(parts) == 1:
                files.append(self._file_info(p, e))
        return [{"type": "directory", "path": d, "oid": "0" * 40} for d in sorted(dirs)] + files

    @staticmethod
    def _file_info(p: str, e: FileEntry) -> dict[str, Any]:
        info: dict[str, Any] = {"type": "file", "path": p, "size": e.size, "oid": e.git_oid}
        if e.lfs:
            info["lfs"] = {"oid": e.sha256, "size": e.size, "pointerSize": 134}
        return info

    def _api(self, method: str, repo_type: str, rest: str, query: dict[str, list[str]], body: bytes) -> None:
        # rest is "<org>/<name>[/<action>/<rev>[/<path>]]" or "<name>[...]"
        m = re.match(r"^([^/]+/[^/]+|[^/]+?)(?:/(revision|tree|preupload|commit|paths-info|tag|branch|refs|commits)"
                     r"(?:/([^/]+)(?:/(.*))?)?)?$", rest)
        if not m:
            return self._error(404, None, f"no API route for {rest}")
        repo_id, action, rev, sub = m.group(1), m.group(2), unquote(m.group(3) or "main"), unquote(m.group(4) or "")
        repo = self._repo(repo_type, repo_id)
        if repo is None:
            return
        if action in (None, "revision") and method == "GET":
            commit = self._commit(repo, rev)
            if commit is None:
                return
            return self._json(200, {
                "id": repo_id, "modelId": repo_id, "sha": commit.sha, "private": repo.private,
                "siblings": [{"rfilename": p, "size": e.size} for p, e in sorted(commit.files.items())],
                "tags": [], "downloads": 0, "likes": 0, "disabled": False, "gated": False,
            })
        if action == "refs" and method == "GET":
            return self._json(200, {
                "branches": [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": s} for b, s in repo.branches.items()],
                "tags": [{"name": t, "ref": f"refs/tags/{t}", "targetCommit": s} for t, s in repo.tags.items()],
                "converts": [],
            })
        if action == "tree" and method == "GET":
            commit = self._commit(repo, rev)
            if commit is None:
                return
            if sub and sub in commit.files:
                return self._json(200, [self._file_info(sub, commit.files[sub])])
            entries = self._tree_entries(commit, sub, recursive=query.get("recursive", ["false"])[0].lower() == "true")
            if sub and not entries:
                return self._error(404, "EntryNotFound", f"{sub} does not exist on {rev}")
            return self._json(200, entries)
        if action == "paths-info" and method == "POST":
            commit = self._commit(repo, rev)
            if commit is None:
                return
            try:
                paths = json.loads(body).get("paths", [])
            except json.JSONDecodeError:
                paths = parse_qs(body.decode()).get("paths", [])
            return self._json(200, [self._file_info(p, commit.files[p]) for p in paths if p in commit.files])
        if action == "preupload" and method == "POST":
            files = json.loads(body)["files"]
            return self._json(200, {"files": [
                {"path": f["path"], "shouldIgnore": False, "oid": None,
                 "uploadMode": "lfs" if f["size"] > LFS_THRESHOLD or f["path"].endswith(".safetensors") else "regular"}
                for f in files
            ]})
        if action == "commit" and method == "POST":
            return self._commit_files(repo, rev, body)
        if action == "tag" and method == "POST":
            commit = self._commit(repo, rev)
            if commit is None:
                return
            tag = json.loads(body)["tag"]
            if tag in repo.tags:
                return self._error(409, None, f"tag {tag} already exists")
            repo.tags[tag] = commit.sha
            return self._json(200, {})
        if action == "tag" and method == "DELETE":
            if repo.tags.pop(rev, None) is None:
                return self._error(404, "RevisionNotFound", f"tag {rev} not found")
            return self._json(200, {})
        if action == "branch" and method == "POST":
            req = json.loads(body or b"{}")
            start = repo.resolve(req.get("startingPoint") or "main")
            if rev in repo.branches:
                return self._error(409, None, f"branch {rev} already exists")
            repo.branches[rev] = start.sha if start else repo.branches["main"]
            return self._json(200, {})
        if action == "commits" and method == "GET":
            commit = self._commit(repo, rev)
            out = []
            while commit is not None:
                out.append({"id": commit.sha, "title": commit.message, "message": "", "authors": [],
                            "date": "2026-01-01T00:00:00.000Z"})
                commit = repo.commits.get(commit.parent) if commit.parent else None
            return self._json(200, out)
        return self._error(404, None, f"no API route for {method} {rest}")

    def _commit_files(self, repo: Repo, rev: str, body: bytes) -> None:
        if rev not in repo.branches:
            return self._error(404, "RevisionNotFound", f"cannot commit to {rev}: not a branch")
        parent = repo.commits[repo.branches[rev]]
        files = dict(parent.files)
        message = ""
        for line in body.decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                message = value.get("summary", "")
                want_parent = value.get("parentCommit")
                if want_parent and want_parent != parent.sha:
                    return self._error(412, None, f"parent commit {want_parent} is not the head of {rev}")
            elif key == "file":
                data = base64.b64decode(value["content"]) if value.get("encoding", "base64") == "base64" \
                    else value["content"].encode()
                files[value["path"]] = self.state.entry_for(data, lfs=False)
            elif key == "lfsFile":
                blob = self.state.blob_path(value["oid"])
                if not blob.exists():
                    return self._error(400, None, f"LFS object {value['oid']} for {value['path']} was never uploaded")
                files[value["path"]] = self.state.entry_for(blob.read_bytes(), lfs=True)
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                folder = value["path"].rstrip("/") + "/"
                files = {p: e for p, e in files.items() if not p.startswith(folder)}
            else:
                return self._error(400, None, f"unsupported commit operation {key!r}")
        sha = self.state.new_commit(repo, parent.sha, files, message)
        repo.branches[rev] = sha
        self._json(200, {"commitUrl": f"{self.server.url}/{_PREFIX[repo.repo_type]}{repo.repo_id}/commit/{sha}",
                         "commitOid": sha, "pullRequestUrl": None})

    def _resolve(self, repo_type: str, repo_id: str, rev: str, path: str, head: bool) -> None:
        repo = self._repo(repo_type, repo_id, head)
        if repo is None:
            return
        commit = self._commit(repo, rev, head)
        if commit is None:
            return
        entry = commit.files.get(path)
        if entry is None:
            return self._error(404, "EntryNotFound", f"{path} does not exist on {rev}",
                               {"X-Repo-Commit": commit.sha}, head=head)
        data = b"" if head else self.state.blob_path(entry.sha256).read_bytes()
        etag = entry.sha256 if entry.lfs else entry.git_oid
        if self.state.content_etags:
            etag = hashlib.sha256(self.state.blob_path(entry.sha256).read_bytes()).hexdigest()
        headers = {"ETag": f'"{etag}"', "X-Repo-Commit": commit.sha, "Accept-Ranges": "none"}
        if head:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(entry.size))
            self.end_headers()
            return
        self._send(200, data, headers, content_type="application/octet-stream")


class LoopbackHub(ThreadingHTTPServer):
    """``with LoopbackHub(root) as hub: ... hub.url ...`` — serves in a daemon thread on a free port."""

    daemon_threads = True

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = HubState(root)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self) -> LoopbackHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)
        shutil.rmtree(self.state.root / "tmp", ignore_errors=True)

    def __enter__(self) -> LoopbackHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
