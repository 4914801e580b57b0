"""A stand-in for the Hugging Face Hub on 127.0.0.1, and an offline Hub cache, for tests.

It answers the calls huggingface_hub's snapshot_download makes, with the headers it reads
(huggingface_hub 1.x, `_snapshot_download.py` and `file_download.py`):
- `GET /api/models/{repo}/revision/{rev}`: the repo's info, `sha` = the commit `rev` resolves to;
- `GET /api/models/{repo}/tree/{commit}`: the file listing (`lfs` entries for LFS files);
- `HEAD|GET /{repo}/resolve/{commit}/{file}`: a plain file as 200 with `ETag` (its git blob
  hash), `X-Repo-Commit` and `Content-Length`; an LFS file as a 302 to a CDN host (`localhost`,
  another host than the endpoint's 127.0.0.1, as the Hub's CDN is) with `X-Linked-Etag` (its
  sha256), `X-Linked-Size` and `X-Repo-Commit`;
- `GET /cdn/{sha256}` with `Range: bytes=N-` answered 206 and `Content-Range`.
Errors carry the Hub's `X-Error-Code` (RepoNotFound, RevisionNotFound, GatedRepo) and 401 for a
token it does not know ("Invalid credentials in Authorization header").
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
from dataclasses import dataclass, field
from functools import cached_property
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".gguf", ".onnx", ".h5")


@dataclass(frozen=True)
class HubFile:
    path: str
    data: bytes

    @property
    def lfs(self) -> bool:
        return self.path.endswith(LFS_SUFFIXES)

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @cached_property
    def git_sha1(self) -> str:
        return hashlib.sha1(b"blob %d\0" % len(self.data) + self.data).hexdigest()

    @property
    def etag(self) -> str:
        """What the Hub sends as the file's ETag, and so the blob's name in the cache."""
        return self.sha256 if self.lfs else self.git_sha1


@dataclass
class HubRepo:
    repo_id: str
    files: dict[str, HubFile]
    token: str | None = None  # private: only this token sees it
    gated: bool = False  # anyone sees the listing; files need `token`
    down: int | None = None  # an HTTP status every request for it gets (a Hub outage)
    refs: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        digest = hashlib.sha1(self.repo_id.encode())
        for name in sorted(self.files):
            digest.update(name.encode() + self.files[name].git_sha1.encode())
        self.refs.setdefault("main", digest.hexdigest())

    @property
    def commit(self) -> str:
        return self.refs["main"]

    @classmethod
    def from_folder(
        cls, repo_id: str, folder: Path, extra: dict[str, bytes] | None = None, **kwargs
    ) -> HubRepo:
        """A repo holding a model folder's files (tuneserve's own manifest.json left out)."""
        files = {
            p.name: HubFile(p.name, p.read_bytes())
            for p in sorted(folder.iterdir())
            if p.is_file() and p.name != "manifest.json"
        }
        files.update({name: HubFile(name, data) for name, data in (extra or {}).items()})
        return cls(repo_id, files, **kwargs)


def write_offline_cache(repo: HubRepo, cache: Path, only: list[str] | None = None) -> Path:
    """`repo` as huggingface_hub lays a download out in HF_HUB_CACHE: blobs named by ETag,
    snapshots/<commit>/ of relative symlinks to them, refs/main holding the commit."""
    storage = cache / f"models--{repo.repo_id.replace('/', '--')}"
    snapshot = storage / "snapshots" / repo.commit
    for name in only if only is not None else list(repo.files):
        hub_file = repo.files[name]
        blob = storage / "blobs" / hub_file.etag
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(hub_file.data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (storage / "refs").mkdir(parents=True, exist_ok=True)
    (storage / "refs" / "main").write_text(repo.commit)  # no newline, as huggingface_hub writes
    return snapshot


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


class StandInHub:
    """`with StandInHub([repo, ...]) as hub:` serves the repos at `hub.endpoint` (HF_ENDPOINT)."""

    def __init__(self, repos: list[HubRepo]) -> None:
        self.repos = {repo.repo_id: repo for repo in repos}
        self.requests: list[Seen] = []
        self._drops: dict[str, int] = {}  # sha256 -> bytes to send before dropping, once
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def drop_once(self, hub_file: HubFile, after: int) -> None:
        """The next full GET of `hub_file` sends `after` bytes, then the connection is cut."""
        self._drops[hub_file.sha256] = after

    def gets_of(self, hub_file: HubFile) -> list[Seen]:
        """The GETs that fetched `hub_file`'s content (from the CDN or the resolve URL)."""
        ends = (f"/cdn/{hub_file.sha256}", f"/{hub_file.path}")
        return [
            r
            for r in self.requests
            if r.method == "GET" and r.path.endswith(ends) and "/api/" not in r.path
        ]

    def __enter__(self) -> StandInHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _handler(hub: StandInHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # keep test output clean
            pass

        def do_HEAD(self) -> None:
            self._route(body=False)

        def do_GET(self) -> None:
            self._route(body=True)

        def _route(self, body: bool) -> None:
            path = urlsplit(self.path).path
            with hub._lock:
                hub.requests.append(
                    Seen(self.command, path, {k.lower(): v for k, v in self.headers.items()})
                )
            parts = path.split("/")
            if parts[1] == "cdn":
                return self._cdn(parts[2], body)
            if self._bad_token():
                return self._error(401, None, "Invalid credentials in Authorization header")
            if parts[1:3] == ["api", "models"] and len(parts) >= 7:
                repo, revision = self._repo_and_commit(f"{parts[3]}/{parts[4]}", parts[6])
                if repo is None:
                    return None
                if parts[5] == "revision":
                    return self._json(
                        {
                            "id": repo.repo_id,
                            "sha": revision,
                            "private": repo.token is not None and not repo.gated,
                            "gated": "manual" if repo.gated else False,
                            "siblings": [{"rfilename": p} for p in repo.files],
                        }
                    )
                if parts[5] == "tree":
                    return self._json([_tree_entry(f) for f in repo.files.values()])
            if len(parts) >= 6 and parts[3] == "resolve":
                repo, revision = self._repo_and_commit(f"{parts[1]}/{parts[2]}", parts[4])
                if repo is None:
                    return None
                if repo.gated and not self._has_token(repo):
                    return self._error(
                        403, "GatedRepo", f"Access to model {repo.repo_id} is restricted."
                    )
                hub_file = repo.files.get(unquote("/".join(parts[5:])))
                if hub_file is None:
                    return self._error(404, "EntryNotFound", "Entry not found", revision)
                return self._resolve(hub_file, revision, body)
            return self._error(404, None, "Not found")

        def _token(self) -> str | None:
            auth = self.headers.get("Authorization", "")
            return auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None

        def _bad_token(self) -> bool:
            token = self._token()
            return token is not None and token not in {r.token for r in hub.repos.values()}

        def _has_token(self, repo: HubRepo) -> bool:
            return repo.token is not None and self._token() == repo.token

        def _repo_and_commit(self, repo_id: str, revision: str) -> tuple[HubRepo | None, str]:
            repo = hub.repos.get(repo_id)
            if repo is not None and repo.down:
                self._error(repo.down, None, "Service unavailable")
                return None, ""
            hidden = (
                repo is not None and repo.token and not repo.gated and not self._has_token(repo)
            )
            if repo is None or hidden:
                # The Hub answers a private repo it hides as missing: 401 to an anonymous request.
                status = 401 if hidden and self._token() is None else 404
                self._error(status, "RepoNotFound", "Repository not found")
                return None, ""
            revision = unquote(revision)
            commit = repo.refs.get(revision, revision if revision in repo.refs.values() else None)
            if commit is None:
                self._error(404, "RevisionNotFound", "Invalid rev id: " + revision)
                return None, ""
            return repo, commit

        def _resolve(self, hub_file: HubFile, commit: str, body: bool) -> None:
            headers = {"X-Repo-Commit": commit, "Accept-Ranges": "bytes"}
            if hub_file.lfs:
                headers |= {
                    "Location": f"http://localhost:{hub.port}/cdn/{hub_file.sha256}",
                    "X-Linked-Etag": f'"{hub_file.sha256}"',
                    "X-Linked-Size": str(len(hub_file.data)),
                    "ETag": f'W/"{hub_file.git_sha1}"',
                }
                return self._send(302, headers, b"", body)
            headers["ETag"] = f'"{hub_file.git_sha1}"'
            return self._send(200, headers, hub_file.data, body)

        def _cdn(self, sha256: str, body: bool) -> None:
            found = [f for r in hub.repos.values() for f in r.files.values() if f.sha256 == sha256]
            if not found:
                return self._error(404, None, "Not found")
            data = found[0].data
            start = 0
            ranged = self.headers.get("Range", "")
            if ranged.startswith("bytes="):
                start = int(ranged.removeprefix("bytes=").split("-")[0])
            drop = hub._drops.pop(sha256, None) if body and not ranged else None
            if drop is not None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[:drop])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)  # the connection drops mid-file
                self.close_connection = True
                return None
            if ranged:
                headers = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
                return self._send(206, headers, data[start:], body)
            return self._send(200, {"ETag": f'"{sha256}"'}, data, body)

        def _json(self, value: object) -> None:
            data = json.dumps(value).encode()
            self._send(200, {"Content-Type": "application/json"}, data, True)

        def _error(
            self, status: int, code: str | None, message: str, commit: str | None = None
        ) -> None:
            headers = {"X-Error-Message": message, "Content-Type": "application/json"}
            if code:
                headers["X-Error-Code"] = code
            if commit:
                headers["X-Repo-Commit"] = commit
            self._send(
                status, headers, json.dumps({"error": message}).encode(), self.command != "HEAD"
            )

        def _send(self, status: int, headers: dict[str, str], data: bytes, body: bool) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)

    return Handler


def _tree_entry(hub_file: HubFile) -> dict:
    entry = {"type": "file", "path": hub_file.path, "size": len(hub_file.data)}
    if hub_file.lfs:
        pointer = (
            f"version https://git-lfs.github.com/spec/v1\noid sha256:{hub_file.sha256}\n"
            f"size {len(hub_file.data)}\n"
        ).encode()
        entry |= {
            "oid": HubFile("pointer", pointer).git_sha1,
            "lfs": {
                "oid": hub_file.sha256,
                "size": len(hub_file.data),
                "pointerSize": len(pointer),
            },
        }
    else:
        entry["oid"] = hub_file.git_sha1
    return entry
