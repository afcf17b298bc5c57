"""A hostile OCI registry (and its accomplice on another host) for the network tests.

A real threaded HTTP server on a loopback address, holding manifests and blobs in
memory, that records the ``Authorization`` header of every request and misbehaves
where a test asks it to: challenges that send the token request to another host,
tag lists whose next page lives elsewhere or never ends, upload sessions placed on
another host, redirects that loop, blobs that drip a byte at a time, bodies of a
gigabyte. The "other host" is a second server on ``127.0.0.2`` (another loopback
address, so another host to sxpm) that records what it is sent.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Handler = Callable[["Request"], bool]
"""A hook: answer the request itself and return True, or return False to go on."""


class Request:
    def __init__(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        self.h = handler
        self.method = method
        self.path = handler.path
        self.headers = {k.lower(): v for k, v in handler.headers.items()}
        length = int(self.headers.get("content-length") or 0)
        self.body = handler.rfile.read(length) if length else b""

    def send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
             length: int | None = None) -> None:
        self.h.send_response(status)
        for k, v in (headers or {}).items():
            self.h.send_header(k, v)
        self.h.send_header("Content-Length", str(len(body) if length is None else length))
        self.h.end_headers()
        if body and self.method != "HEAD":
            self.h.wfile.write(body)

    def stream(self, status: int, length: int, chunks: Any,
               headers: dict[str, str] | None = None) -> None:
        """Answer with ``length`` announced and the bytes of ``chunks`` (an iterable)."""
        self.h.send_response(status)
        for k, v in (headers or {}).items():
            self.h.send_header(k, v)
        self.h.send_header("Content-Length", str(length))
        self.h.end_headers()
        try:
            for chunk in chunks:
                self.h.wfile.write(chunk)
                self.h.wfile.flush()
        except OSError:
            pass  # the client hung up, as it should


class Server:
    """One HTTP server on ``host``; ``hooks`` see each request first."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.log: list[tuple[str, str, str | None]] = []  # method, path, Authorization
        self.hooks: list[Handler] = []
        self.lock = threading.Lock()
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _any(self) -> None:
                req = Request(self, self.command)
                with server.lock:
                    server.log.append((req.method, req.path, req.headers.get("authorization")))
                for hook in list(server.hooks):
                    if hook(req):
                        return
                server.default(req)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = _any  # noqa: N815

        self.httpd = ThreadingHTTPServer((host, 0), _Handler)
        self.httpd.daemon_threads = True
        self.host = f"{host}:{self.httpd.server_address[1]}"
        self.url = f"http://{self.host}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def default(self, req: Request) -> None:
        req.send(404, b'{"errors":[{"code":"NOT_FOUND","message":"nothing here"}]}')

    def auths(self, part: str = "") -> list[str | None]:
        """The Authorization header of each request whose path contains ``part``."""
        with self.lock:
            return [a for _, p, a in self.log if part in p]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class HostileRegistry(Server):
    """An OCI registry in memory: ``/v2/``, manifests, blobs, tags and uploads.

    ``basic`` (user, password) makes every ``/v2/`` request need that login (a Basic
    challenge) unless ``realm`` is set: then the challenge is a Bearer one pointing at
    ``realm``, and any ``Bearer`` token is accepted.
    """

    def __init__(self, host: str = "127.0.0.1", *, basic: tuple[str, str] | None = None,
                 realm: str | None = None) -> None:
        super().__init__(host)
        self.basic = basic
        self.realm = realm
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[str, tuple[str, bytes]] = {}  # tag or digest -> type, bytes

    def _authorized(self, req: Request) -> bool:
        got = req.headers.get("authorization", "")
        if self.realm is not None:
            if got.startswith("Bearer "):
                return True
            req.send(401, headers={"WWW-Authenticate": f'Bearer realm="{self.realm}",'
                                   'service="hostile",scope="repository:x:pull"'})
            return False
        if self.basic is None:
            return True
        import base64

        want = "Basic " + base64.b64encode(":".join(self.basic).encode()).decode()
        if got == want:
            return True
        req.send(401, headers={"WWW-Authenticate": 'Basic realm="hostile"'})
        return False

    def add_blob(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self.blobs[digest] = data
        return digest

    def add_manifest(self, repo: str, tag: str, layers: list[bytes]) -> dict[str, Any]:
        config = self.add_blob(b"{}")
        manifest = {
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config,
                       "size": 2},
            "layers": [{"mediaType": "application/octet-stream", "digest": self.add_blob(d),
                        "size": len(d)} for d in layers]}
        data = json.dumps(manifest).encode()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        for key in (tag, digest):
            self.manifests[f"{repo}:{key}"] = (manifest["mediaType"], data)
        return {"digest": digest, "size": len(data), "manifest": manifest}

    def default(self, req: Request) -> None:
        path = req.path.split("?", 1)[0]
        if not path.startswith("/v2/") or not self._authorized(req):
            if not path.startswith("/v2/"):
                super().default(req)
            return
        if path == "/v2/":
            req.send(200, b"{}")
            return
        name, _, rest = path[len("/v2/"):].partition("/manifests/")
        if rest:
            found = self.manifests.get(f"{name}:{rest}")
            if found is None:
                super().default(req)
                return
            media, data = found
            req.send(200, data, {"Content-Type": media, "Docker-Content-Digest":
                                 "sha256:" + hashlib.sha256(data).hexdigest()})
            return
        name, _, digest = path[len("/v2/"):].partition("/blobs/")
        if digest and not digest.startswith("uploads"):
            data = self.blobs.get(digest)
            if data is None:
                super().default(req)
            else:
                req.send(200, data)
            return
        if digest.startswith("uploads") and req.method == "POST":
            req.send(202, headers={"Location": f"/v2/{name}/blobs/uploads/session-1"})
            return
        if digest.startswith("uploads") and req.method in ("PUT", "PATCH"):
            wanted = req.path.partition("digest=")[2].split("&")[0].replace("%3A", ":")
            if req.method == "PUT" and wanted:
                self.blobs[wanted] = req.body
                req.send(201, headers={"Location": f"/v2/{name}/blobs/{wanted}"})
            else:
                req.send(202, headers={"Location": req.path, "Range": f"0-{len(req.body) - 1}"})
            return
        super().default(req)


def drip(data: bytes, every_s: float) -> Any:
    """The bytes of ``data`` one at a time, ``every_s`` apart."""
    for i in range(len(data)):
        yield data[i:i + 1]
        time.sleep(every_s)


def zeros(total: int, chunk: int = 1024 * 1024) -> Any:
    """``total`` zero bytes, made as they are sent (a gigabyte costs no memory here)."""
    block = bytes(chunk)
    sent = 0
    while sent < total:
        n = min(chunk, total - sent)
        yield block[:n]
        sent += n
