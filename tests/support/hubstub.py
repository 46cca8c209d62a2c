"""A stand-in for the Hugging Face Hub's upload endpoints (the only stand-in in these tests).

A small, real HTTP server on 127.0.0.1 that speaks the subset of the Hub API that
huggingface_hub 2.x uses to create a dataset repo, list its refs and files, upload LFS
objects (basic transfer, `HF_HUB_DISABLE_XET=1`), commit, open pull requests and create
tags. It keeps repos in memory as real commit histories (files with git blob ids, LFS
files as pointers with sha256), checks the bearer token on every request, and can be told
to fail: answer a route with 429 + Retry-After or 5xx a number of times, or hold a commit
until the test has killed the client (an interrupted upload).

It is not the Hub: no Xet, no pagination, no permissions beyond one token.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".parquet", ".png", ".arrow", ".bin", ".safetensors")
GITATTRIBUTES = (
    b"*.parquet filter=lfs diff=lfs merge=lfs -text\n*.png filter=lfs diff=lfs merge=lfs -text\n"
)


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()
    )


@dataclass
class StoredFile:
    data: bytes | None  # regular files
    sha256: str | None  # LFS files
    size: int

    @property
    def blob_id(self) -> str:
        if self.sha256 is not None:
            return git_blob_id(lfs_pointer(self.sha256, self.size))
        return git_blob_id(self.data or b"")


@dataclass
class Commit:
    oid: str
    parent: str | None
    message: str
    files: dict[str, StoredFile]


@dataclass
class Repo:
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    prs: dict[int, str] = field(default_factory=dict)

    def resolve(self, rev: str) -> str | None:
        rev = unquote(rev)
        if rev in self.branches:
            return self.branches[rev]
        if rev in self.tags:
            return self.tags[rev]
        match = re.fullmatch(r"refs/pr/(\d+)", rev)
        if match:
            return self.prs.get(int(match.group(1)))
        if rev in self.commits:
            return rev
        found = [oid for oid in self.commits if oid.startswith(rev)] if len(rev) >= 7 else []
        return found[0] if len(found) == 1 else None


@dataclass
class Fault:
    method: str
    route: str  # regex searched in the path
    status: int
    headers: dict[str, str]
    times: int


class HubStub:
    def __init__(self, token: str) -> None:
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status)
        self.faults: list[Fault] = []
        self.hold_commits = threading.Event()  # set: commits wait for `release_commits`
        self.commit_reached = threading.Event()
        self.release_commits = threading.Event()
        self._lock = threading.Lock()
        self._counter = 0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                stub._dispatch(self)

            do_GET = do_POST = do_PUT = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # -- lifecycle -----------------------------------------------------------------------
    def __enter__(self) -> HubStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release_commits.set()
        self.server.shutdown()
        self.server.server_close()

    # -- test controls -------------------------------------------------------------------
    def fail(
        self,
        method: str,
        route: str,
        status: int,
        *,
        times: int = 1,
        retry_after: str | None = None,
    ) -> None:
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        self.faults.append(Fault(method, route, status, headers, times))

    def count(self, method: str, route: str, status: int | None = None) -> int:
        return sum(
            1
            for m, p, s in self.requests
            if m == method and re.search(route, p) and (status is None or s == status)
        )

    def repo(self, repo_id: str) -> Repo:
        return self.repos[repo_id]

    def files_at(self, repo_id: str, rev: str) -> dict[str, bytes]:
        repo = self.repos[repo_id]
        commit = repo.commits[repo.resolve(rev)]  # type: ignore[index]
        return {
            p: f.data if f.sha256 is None else self.lfs[f.sha256] for p, f in commit.files.items()
        }

    def history(self, repo_id: str, rev: str = "main") -> list[Commit]:
        repo = self.repos[repo_id]
        oid = repo.resolve(rev)
        out = []
        while oid:
            out.append(repo.commits[oid])
            oid = repo.commits[oid].parent
        return out

    # -- HTTP ----------------------------------------------------------------------------
    def _reply(
        self,
        h: BaseHTTPRequestHandler,
        status: int,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        payload = b"" if body is None else json.dumps(body).encode()
        self.requests.append((h.command, urlsplit(h.path).path, status))
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(payload)))
            for k, v in (headers or {}).items():
                h.send_header(k, v)
            h.end_headers()
            if h.command != "HEAD":
                h.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _error(
        self, h: BaseHTTPRequestHandler, status: int, message: str, code: str | None = None
    ) -> None:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._reply(h, status, {"error": message}, headers)

    def _dispatch(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        split = urlsplit(h.path)
        path, query = split.path, parse_qs(split.query)
        for fault in self.faults:
            if fault.times > 0 and fault.method == h.command and re.search(fault.route, path):
                fault.times -= 1
                self._reply(h, fault.status, {"error": "injected"}, fault.headers)
                return
        if path == "/api/agent-harnesses":  # huggingface_hub's best-effort client detection
            self._error(h, 404, "not served by the stand-in")
            return
        presigned = path.startswith("/lfs-upload/")  # LFS upload URLs carry no token, like S3's
        if not presigned and h.headers.get("Authorization") != f"Bearer {self.token}":
            self._error(h, 401, "Invalid credentials in Authorization header")
            return
        with self._lock:
            self._route(h, path, query, body)

    def _route(
        self, h: BaseHTTPRequestHandler, path: str, query: dict[str, list[str]], body: bytes
    ) -> None:
        m = h.command
        if m == "POST" and path == "/api/repos/create":
            return self._create_repo(h, json.loads(body))
        if m == "POST" and path == "/api/validate-yaml":
            return self._reply(h, 200, {"errors": [], "warnings": []})
        match = re.fullmatch(r"/datasets/([^/]+/[^/]+)\.git/info/lfs/objects/batch", path)
        if m == "POST" and match:
            return self._lfs_batch(h, json.loads(body))
        match = re.fullmatch(r"/lfs-upload/([0-9a-f]{64})", path)
        if m == "PUT" and match:
            if hashlib.sha256(body).hexdigest() != match.group(1):
                return self._error(h, 400, "sha256 mismatch")
            self.lfs[match.group(1)] = body
            return self._reply(h, 200, {})
        if m == "POST" and path == "/lfs-verify":
            data = json.loads(body)
            ok = data["oid"] in self.lfs and len(self.lfs[data["oid"]]) == data["size"]
            return self._reply(h, 200 if ok else 404, {})
        match = re.fullmatch(
            r"/api/datasets/([^/]+/[^/]+)/(refs|tree|preupload|commit|tag|revision)(?:/(.*))?", path
        )
        if not match:
            return self._error(h, 404, f"no route {m} {path}")
        repo_id, action, rest = match.group(1), match.group(2), match.group(3) or ""
        repo = self.repos.get(repo_id)
        if repo is None:
            return self._error(h, 404, "Repository not found", "RepoNotFound")
        if action == "refs" and m == "GET":
            return self._refs(h, repo, "include_prs" in query)
        rev, _, sub = rest.partition("/")
        oid = repo.resolve(rev)
        if action == "commit" and m == "POST":
            return self._commit(h, repo_id, repo, unquote(rev), body, "create_pr" in query)
        if oid is None:
            return self._error(h, 404, f"Invalid rev id: {unquote(rev)}", "RevisionNotFound")
        if action == "tree" and m == "GET":
            return self._tree(h, repo.commits[oid], unquote(sub))
        if action == "revision" and m == "GET":
            files = repo.commits[oid].files
            return self._reply(
                h,
                200,
                {
                    "id": repo_id,
                    "sha": oid,
                    "private": repo.private,
                    "siblings": [{"rfilename": p} for p in files],
                },
            )
        if action == "preupload" and m == "POST":
            return self._preupload(h, repo.commits[oid], json.loads(body))
        if action == "tag" and m == "POST":
            tag = json.loads(body)["tag"]
            if tag in repo.tags:
                return self._error(h, 409, f"Tag {tag} already exists")
            repo.tags[tag] = oid
            return self._reply(h, 200, {})
        return self._error(h, 404, f"no route {m} {path}")

    def _new_oid(self, *parts: str) -> str:
        self._counter += 1
        return hashlib.sha1(
            "|".join([*parts, str(self._counter), str(time.time())]).encode()
        ).hexdigest()

    def _create_repo(self, h: BaseHTTPRequestHandler, data: dict[str, Any]) -> None:
        repo_id = f"{data['organization']}/{data['name']}"
        if data.get("type") != "dataset":
            return self._error(h, 400, "this stand-in only hosts datasets")
        if repo_id in self.repos:
            return self._error(h, 409, "You already created this dataset repo")
        repo = Repo(private=data.get("visibility") == "private" or bool(data.get("private")))
        oid = self._new_oid(repo_id, "initial")
        files = {".gitattributes": StoredFile(GITATTRIBUTES, None, len(GITATTRIBUTES))}
        repo.commits[oid] = Commit(oid, None, "initial commit", files)
        repo.branches["main"] = oid
        self.repos[repo_id] = repo
        self._reply(h, 200, {"url": f"{self.url}/datasets/{repo_id}"})

    def _refs(self, h: BaseHTTPRequestHandler, repo: Repo, include_prs: bool) -> None:
        def ref(kind: str, name: str, oid: str) -> dict[str, str]:
            return {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": oid}

        data: dict[str, Any] = {
            "branches": [ref("heads", n, o) for n, o in repo.branches.items()],
            "tags": [ref("tags", n, o) for n, o in repo.tags.items()],
            "converts": [],
        }
        if include_prs:
            data["pullRequests"] = [ref("pr", str(n), o) for n, o in repo.prs.items()]
        self._reply(h, 200, data)

    def _tree(self, h: BaseHTTPRequestHandler, commit: Commit, prefix: str) -> None:
        prefix = prefix.strip("/")
        entries, folders = [], set()
        for path, f in sorted(commit.files.items()):
            if prefix and not path.startswith(prefix + "/"):
                continue
            parts = path.split("/")
            for i in range(1, len(parts)):
                folders.add("/".join(parts[:i]))
            entry: dict[str, Any] = {"type": "file", "oid": f.blob_id, "size": f.size, "path": path}
            if f.sha256 is not None:
                pointer = lfs_pointer(f.sha256, f.size)
                entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": len(pointer)}
            entries.append(entry)
        entries += [
            {"type": "directory", "oid": "0" * 40, "size": 0, "path": d} for d in sorted(folders)
        ]
        self._reply(h, 200, entries)

    def _preupload(self, h: BaseHTTPRequestHandler, commit: Commit, data: dict[str, Any]) -> None:
        out = []
        for f in data["files"]:
            lfs = f["path"].endswith(LFS_SUFFIXES) or f["size"] > 10 * 2**20
            existing = commit.files.get(f["path"])
            oid = None
            if existing is not None:
                oid = existing.sha256 if lfs else git_blob_id(existing.data or b"")
            out.append(
                {
                    "path": f["path"],
                    "uploadMode": "lfs" if lfs else "regular",
                    "shouldIgnore": False,
                    "oid": oid,
                }
            )
        self._reply(h, 200, {"files": out, "commitOid": None})

    def _lfs_batch(self, h: BaseHTTPRequestHandler, data: dict[str, Any]) -> None:
        objects = []
        for obj in data["objects"]:
            entry: dict[str, Any] = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.lfs:
                entry["actions"] = {
                    "upload": {"href": f"{self.url}/lfs-upload/{obj['oid']}"},
                    "verify": {"href": f"{self.url}/lfs-verify"},
                }
            objects.append(entry)
        self._reply(h, 200, {"transfer": "basic", "objects": objects})

    def _commit(
        self,
        h: BaseHTTPRequestHandler,
        repo_id: str,
        repo: Repo,
        rev: str,
        body: bytes,
        create_pr: bool,
    ) -> None:
        if self.hold_commits.is_set():
            self.commit_reached.set()
            self._lock.release()  # let the test look around while this commit hangs
            try:
                self.release_commits.wait(timeout=60)
            finally:
                self._lock.acquire()
            return self._error(h, 500, "commit abandoned")
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = lines[0]["value"]
        base = repo.resolve(rev)
        if base is None:
            return self._error(h, 404, f"Invalid rev id: {rev}", "RevisionNotFound")
        if header.get("parentCommit") and header["parentCommit"] != base:
            return self._error(h, 412, "A commit has happened since. Please refresh and try again.")
        files = dict(repo.commits[base].files)
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            if key == "file":
                data = base64.b64decode(value["content"])
                files[value["path"]] = StoredFile(data, None, len(data))
            elif key == "lfsFile":
                if value["oid"] not in self.lfs:
                    return self._error(h, 400, f"LFS object {value['oid']} was not uploaded")
                files[value["path"]] = StoredFile(None, value["oid"], value["size"])
            elif key == "deletedFile":
                if value["path"] not in files:
                    return self._error(
                        h, 404, "A file with this name doesn't exist", "EntryNotFound"
                    )
                del files[value["path"]]
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {p: f for p, f in files.items() if not p.startswith(prefix)}
        message = header["summary"] + (
            "\n\n" + header["description"] if header.get("description") else ""
        )
        oid = self._new_oid(repo_id, message)
        repo.commits[oid] = Commit(oid, base, message, files)
        result: dict[str, Any] = {
            "commitUrl": f"{self.url}/datasets/{repo_id}/commit/{oid}",
            "commitOid": oid,
        }
        if create_pr:
            number = max(repo.prs, default=0) + 1
            repo.prs[number] = oid
            result["pullRequestUrl"] = f"{self.url}/datasets/{repo_id}/discussions/{number}"
        else:
            repo.branches[rev] = oid
        self._reply(h, 200, result)
