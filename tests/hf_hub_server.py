"""A small real HTTP server on loopback that answers the calls huggingface_hub makes.

Only what ``HfApi().model_info(files_metadata=True)`` and ``hf_hub_download`` ask for,
shaped as the Hub answers them:

* ``GET /api/models/{owner}/{repo}[/revision/{rev}]``: the model's commit ``sha`` and
  its ``siblings``, with ``size`` and ``lfs`` (``sha256``, ``size``) for LFS files when
  ``blobs=true`` is asked;
* ``HEAD``/``GET /{owner}/{repo}/resolve/{rev}/{file}``: for an LFS file a 302 to a
  content URL, with ``X-Repo-Commit``, ``X-Linked-Etag`` (the LFS sha256) and
  ``X-Linked-Size``; for a file kept in git, 200 with ``ETag`` and the bytes;
* ``GET /cdn/{sha256}``: the bytes of an LFS file.

A repository may declare, as the Hub would, the sha256 of bytes other than those it
serves (``served``): a download gone wrong. With ``token`` set, a request without
``Authorization: Bearer TOKEN`` gets 401, as for a gated or private repository.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


@dataclass
class HubRepo:
    commit: str
    files: dict[str, bytes]  # what the Hub says the files are (their LFS sha256)
    served: dict[str, bytes] = field(default_factory=dict)  # bytes served instead
    token: str | None = None

    def body(self, name: str) -> bytes:
        return self.served.get(name, self.files[name])


class HubServer:
    def __init__(self) -> None:
        self.repos: dict[str, HubRepo] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, auth)
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
                hub.handle(self, head=True)

            def do_GET(self) -> None:  # noqa: N802
                hub.handle(self, head=False)

        # The Hub redirects LFS files to a content host of another origin, where
        # huggingface_hub stops following (the metadata is on the redirect itself).
        self.servers = [ThreadingHTTPServer(("127.0.0.1", 0), Handler) for _ in range(2)]
        self.url, self.cdn = (f"http://127.0.0.1:{s.server_address[1]}" for s in self.servers)
        for server in self.servers:
            threading.Thread(target=server.serve_forever, daemon=True).start()

    def close(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()

    # --- answers ------------------------------------------------------------------

    def _send(self, h: BaseHTTPRequestHandler, status: int, body: bytes = b"", *,
              head: bool = False, headers: dict[str, str] | None = None) -> None:
        h.send_response(status)
        for key, value in (headers or {}).items():
            h.send_header(key, value)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not head:
            h.wfile.write(body)

    def _error(self, h: BaseHTTPRequestHandler, status: int, code: str, message: str,
               head: bool) -> None:
        # huggingface_hub reads X-Error-Code to tell a missing repo from a missing file.
        self._send(h, status, json.dumps({"error": message}).encode(), head=head,
                   headers={"X-Error-Code": code, "X-Error-Message": message,
                            "Content-Type": "application/json"})

    def _repo(self, h: BaseHTTPRequestHandler, repo_id: str, head: bool) -> HubRepo | None:
        repo = self.repos.get(repo_id)
        if repo is None:
            self._error(h, 404, "RepoNotFound", f"Repository {repo_id} not found", head)
            return None
        if repo.token and h.headers.get("Authorization") != f"Bearer {repo.token}":
            self._error(h, 401, "GatedRepo", "Access to this repository is restricted", head)
            return None
        return repo

    def handle(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        split = urlsplit(h.path)
        path = unquote(split.path)
        self.requests.append((h.command, path, h.headers.get("Authorization")))
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            repo = self._repo(h, "/".join(parts[2:4]), head)
            if repo is None:
                return
            rev = "/".join(parts[5:]) if parts[4:5] == ["revision"] else "main"
            if rev not in ("main", repo.commit):
                self._error(h, 404, "RevisionNotFound", f"Invalid rev id: {rev}", head)
                return
            blobs = "blobs=" in (split.query or "").lower()
            siblings = []
            for name, data in sorted(repo.files.items()):
                entry: dict[str, object] = {"rfilename": name}
                if blobs:
                    entry["size"] = len(data)
                    entry["blobId"] = hashlib.sha1(data).hexdigest()
                    entry["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(),
                                    "size": len(data), "pointerSize": 134}
                siblings.append(entry)
            info = {"_id": "0" * 24, "id": "/".join(parts[2:4]),
                    "modelId": "/".join(parts[2:4]), "sha": repo.commit, "private": False,
                    "disabled": False, "gated": False, "downloads": 0, "likes": 0,
                    "tags": ["gguf"], "siblings": siblings}
            self._send(h, 200, json.dumps(info).encode(), head=head,
                       headers={"Content-Type": "application/json"})
            return
        if parts[:1] == ["cdn"] and len(parts) == 2:
            for repo in self.repos.values():
                for name, data in repo.files.items():
                    if hashlib.sha256(data).hexdigest() == parts[1]:
                        self._send(h, 200, repo.body(name), head=head,
                                   headers={"Content-Type": "application/octet-stream"})
                        return
            self._send(h, 404, b"no such object", head=head)
            return
        if len(parts) >= 5 and parts[2] == "resolve":
            repo = self._repo(h, "/".join(parts[:2]), head)
            if repo is None:
                return
            rev, name = parts[3], "/".join(parts[4:])
            if rev not in ("main", repo.commit):
                self._error(h, 404, "RevisionNotFound", f"Invalid rev id: {rev}", head)
                return
            if name not in repo.files:
                self._error(h, 404, "EntryNotFound", f"{name} does not exist", head)
                return
            sha = hashlib.sha256(repo.files[name]).hexdigest()
            self._send(h, 302, b"", head=head, headers={
                "Location": f"{self.cdn}/cdn/{sha}",
                "X-Repo-Commit": repo.commit,
                "X-Linked-Etag": f'"{sha}"',
                "X-Linked-Size": str(len(repo.body(name))),
                "ETag": f'"{hashlib.sha1(name.encode()).hexdigest()}"'})
            return
        self._send(h, 404, b"not found", head=head)
