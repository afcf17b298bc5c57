"""The store, served read-only as an OCI distribution registry (``sxpm store serve``).

A lab downloads a big model once: one home serves its store on the LAN and the others
use it as a registry or a mirror. The server answers the read half of the
distribution API (``/v2/``, manifests by tag and digest, blobs with ``Range``, the tag
list, the referrers API) and refuses every write with 405.

What a request can reach is decided by the store's refs alone. A ref such as
``registry.example/simplex/tiny:1.0`` (or ``oci:/some/dir/tiny:1.0``) makes its
repository path (``simplex/tiny``; a layout's directory name, ``tiny``) servable; that
repository's tags are its refs' tags, and its manifests and blobs are what those refs
reach. Nothing from the request names a file: a repository is looked up in that
table, a blob by its parsed digest in the set its repository reaches, and only then
is the path computed from the digest. Requests are bounded (path length, one range,
no bodies read); manifests are read up to 4 MiB; blobs are streamed with
``os.sendfile`` from the open file, never read whole.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from sxpm.core.oci import INDEX_TYPES, MANIFEST_TYPES, MAX_MANIFEST_BYTES, Descriptor, ImageIndex
from sxpm.core.reference import Digest, Reference, is_valid_tag
from sxpm.errors import InvalidReferenceError, SxpmError
from sxpm.store.layout import OCILayout

MAX_PATH = 2048
"""Longest request target accepted: a repository name (255) plus a digest fits easily."""
MAX_CONNECTIONS = 64
"""Connections served at once; more wait in the listen queue."""
SEND_CHUNK = 8 * 1024 * 1024
"""Bytes handed to ``sendfile`` (or copied) per call, so a stop is noticed between."""
_MANIFESTISH = MANIFEST_TYPES | INDEX_TYPES
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
_REPO_RE = re.compile(r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)"
                      r"[a-z0-9]+)*)*$")


def served_name(ref: Reference) -> str | None:
    """The repository a store ref is served under: its path on its registry, or a
    layout directory's name; None when that is not a valid repository name."""
    name = ref.name if ref.is_layout else ref.repository
    return name if _REPO_RE.fullmatch(name) and len(name) <= 255 else None


@dataclass
class _Repo:
    tags: dict[str, Descriptor] = field(default_factory=dict)
    roots: list[Descriptor] = field(default_factory=list)
    media_types: dict[Digest, str] = field(default_factory=dict)
    """Every digest the repository reaches that the store holds, with its media type."""


class StoreView:
    """What the store serves, rebuilt when ``index.json`` changes."""

    def __init__(self, store: OCILayout) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._repos: dict[str, _Repo] = {}

    def repos(self) -> dict[str, _Repo]:
        try:
            st = self.store.index_path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = (0, 0)
        with self._lock:
            if stamp != self._stamp:
                self._repos = self._build()
                self._stamp = stamp
            return self._repos

    def _build(self) -> dict[str, _Repo]:
        repos: dict[str, _Repo] = {}
        refs = self.store.refs() if self.store.exists() else {}
        for text, desc in refs.items():
            try:
                ref = Reference.parse(text)
            except InvalidReferenceError:
                continue
            name = served_name(ref)
            if name is None:
                continue
            repo = repos.setdefault(name, _Repo())
            repo.roots.append(desc)
            if ref.tag:
                repo.tags[ref.tag] = desc
        for repo in repos.values():
            self._walk(repo)
        return repos

    def _walk(self, repo: _Repo) -> None:
        stack = list(repo.roots)
        while stack:
            desc = stack.pop()
            if desc.digest in repo.media_types or not self.store.has_blob(desc.digest):
                continue
            repo.media_types[desc.digest] = desc.media_type
            if desc.media_type in _MANIFESTISH:
                try:
                    obj = self.store.load_manifest(desc)
                except SxpmError:
                    continue
                stack.extend(obj.manifests if isinstance(obj, ImageIndex) else obj.blobs())
                if obj.subject is not None:
                    stack.append(obj.subject)


class _Error(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``[start, end)`` of one ``bytes=`` range; None for the whole blob."""
    match = _RANGE_RE.match(header.strip())
    if not match or match.group(0) == "bytes=-":
        raise _Error(416, "BLOB_UNKNOWN", "only one bytes range is supported")
    first, last = match.group(1), match.group(2)
    if first:
        start = int(first)
        end = min(size, int(last) + 1) if last else size
    else:  # a suffix: the last N bytes
        start, end = max(0, size - int(last)), size
    if start >= size or end <= start:
        raise _Error(416, "BLOB_UNKNOWN", "range not satisfiable")
    return start, end


class _Handler(BaseHTTPRequestHandler):
    server: StoreServer
    protocol_version = "HTTP/1.1"
    timeout = 60  # a client that stops reading or writing is dropped
    server_version = "sxpm-store"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        if self.server.log is not None:
            self.server.log(f"{self.address_string()} {format % args}")

    # --- verbs ---------------------------------------------------------------------
    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _refuse_write(self) -> None:
        self.close_connection = True  # the body, if any, is never read
        self._error(_Error(405, "UNSUPPORTED", "this registry is read-only"))

    do_POST = do_PUT = do_PATCH = do_DELETE = _refuse_write  # noqa: N815

    # --- answers -------------------------------------------------------------------
    def _send(self, status: int, headers: dict[str, str], body: bytes = b"",
              head: bool = False) -> None:
        self.send_response(status)
        headers.setdefault("Content-Length", str(len(body)))
        headers.setdefault("Docker-Distribution-API-Version", "registry/2.0")
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if body and not head:
            self.wfile.write(body)

    def _error(self, err: _Error, head: bool = False) -> None:
        body = json.dumps({"errors": [{"code": err.code, "message": err.message}]}).encode()
        headers = {"Content-Type": "application/json"}
        if err.status == 405:
            headers["Allow"] = "GET, HEAD"
        self._send(err.status, headers, body, head)

    def _serve(self, head: bool) -> None:
        try:
            if len(self.path) > MAX_PATH:
                raise _Error(414, "NAME_INVALID", "request target too long")
            url = urlsplit(self.path)
            path = unquote(url.path)
            if path in ("/v2", "/v2/"):
                self._send(200, {"Content-Type": "application/json"}, b"{}", head)
                return
            if not path.startswith("/v2/"):
                raise _Error(404, "NOT_FOUND", "not a registry path")
            name, kind, arg = self._split(path[4:])
            repo = self.server.view.repos().get(name)
            if repo is None:
                raise _Error(404, "NAME_UNKNOWN", f"repository {name} is not served")
            if kind == "tags":
                self._tags(repo, name, parse_qs(url.query), head)
            elif kind == "manifests":
                self._manifest(repo, arg, head)
            elif kind == "blobs":
                self._blob(repo, arg, head)
            else:
                self._referrers(repo, arg, parse_qs(url.query), head)
        except _Error as err:
            self._error(err, head)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True

    @staticmethod
    def _split(rest: str) -> tuple[str, str, str]:
        if rest.endswith("/tags/list"):
            name, kind, arg = rest[: -len("/tags/list")], "tags", ""
        else:
            match = re.match(r"^(.+)/(manifests|blobs|referrers)/([^/]+)$", rest)
            if not match:
                raise _Error(404, "NOT_FOUND", "not a registry path")
            name, kind, arg = match.group(1), match.group(2), match.group(3)
        if not _REPO_RE.fullmatch(name):
            raise _Error(404, "NAME_INVALID", "invalid repository name")
        return name, kind, arg

    @staticmethod
    def _digest(repo: _Repo, text: str, code: str) -> Digest:
        try:
            digest = Digest.parse(text)
        except SxpmError:
            raise _Error(400, "DIGEST_INVALID", "invalid digest") from None
        if digest not in repo.media_types:
            raise _Error(404, code, f"{digest} is not served here")
        return digest

    def _tags(self, repo: _Repo, name: str, query: dict[str, list[str]], head: bool) -> None:
        tags = sorted(repo.tags)
        last = (query.get("last") or [""])[0]
        if last:
            tags = [t for t in tags if t > last]
        count = (query.get("n") or [""])[0]
        headers = {"Content-Type": "application/json"}
        if count.isdigit() and 0 < int(count) < len(tags):
            tags = tags[: int(count)]
            headers["Link"] = f'</v2/{name}/tags/list?n={count}&last={tags[-1]}>; rel="next"'
        self._send(200, headers, json.dumps({"name": name, "tags": tags}).encode(), head)

    def _manifest(self, repo: _Repo, reference: str, head: bool) -> None:
        if ":" in reference:
            digest = self._digest(repo, reference, "MANIFEST_UNKNOWN")
            media_type = repo.media_types[digest]
        elif is_valid_tag(reference) and reference in repo.tags:
            desc = repo.tags[reference]
            digest, media_type = desc.digest, desc.media_type
        else:
            raise _Error(404, "MANIFEST_UNKNOWN", f"tag {reference} is not served here")
        if media_type not in _MANIFESTISH:
            raise _Error(404, "MANIFEST_UNKNOWN", f"{digest} is not a manifest")
        store = self.server.view.store
        try:
            data = store.read_blob(Descriptor(media_type, digest, store.blob_size(digest)),
                                   limit=MAX_MANIFEST_BYTES)
        except (SxpmError, OSError):
            raise _Error(404, "MANIFEST_UNKNOWN", f"{digest} cannot be read") from None
        self._send(200, {"Content-Type": media_type, "Docker-Content-Digest": str(digest)},
                   data, head)

    def _referrers(self, repo: _Repo, subject: str, query: dict[str, list[str]],
                   head: bool) -> None:
        try:
            digest = Digest.parse(subject)
        except SxpmError:
            raise _Error(400, "DIGEST_INVALID", "invalid digest") from None
        entries: list[Descriptor] = []
        fallback = repo.tags.get(f"{digest.algorithm}-{digest.hex}")
        if fallback is not None and fallback.media_type in INDEX_TYPES:
            try:
                index = self.server.view.store.load_manifest(fallback)
            except SxpmError:
                index = None
            if isinstance(index, ImageIndex):
                entries = [d for d in index.manifests if d.digest in repo.media_types]
        headers = {"Content-Type": "application/vnd.oci.image.index.v1+json"}
        wanted = (query.get("artifactType") or [""])[0]
        if wanted:
            entries = [d for d in entries if d.artifact_type == wanted]
            headers["OCI-Filters-Applied"] = "artifactType"
        body = ImageIndex(tuple(entries)).to_bytes()
        self._send(200, headers, body, head)

    def _blob(self, repo: _Repo, text: str, head: bool) -> None:
        digest = self._digest(repo, text, "BLOB_UNKNOWN")
        store = self.server.view.store
        try:
            fh = store.open_blob(digest)
        except SxpmError:
            raise _Error(404, "BLOB_UNKNOWN", f"{digest} is not in the store") from None
        with fh:
            size = os.fstat(fh.fileno()).st_size
            start, end, status = 0, size, 200
            headers = {"Content-Type": "application/octet-stream",
                       "Docker-Content-Digest": str(digest), "Accept-Ranges": "bytes"}
            wanted = self.headers.get("Range")
            if wanted and size:
                try:
                    span = _parse_range(wanted, size)
                except _Error:
                    headers = {"Content-Range": f"bytes */{size}"}
                    self._send(416, headers, b"", head)
                    return
                if span is not None:
                    start, end, status = span[0], span[1], 206
                    headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
            headers["Content-Length"] = str(end - start)
            self._send(status, headers, head=True)
            if not head:
                self.wfile.flush()
                self._stream(fh.fileno(), start, end)

    def _stream(self, fd: int, start: int, end: int) -> None:
        sock = self.connection
        pos = start
        while pos < end:
            try:
                sent = os.sendfile(sock.fileno(), fd, pos, min(SEND_CHUNK, end - pos))
            except (AttributeError, OSError) as exc:
                if isinstance(exc, (BrokenPipeError, ConnectionResetError)):
                    raise
                sent = self._copy(fd, pos, min(SEND_CHUNK, end - pos))
            if sent == 0:  # the file shrank under us: the client sees a short body
                self.close_connection = True
                return
            pos += sent

    def _copy(self, fd: int, pos: int, length: int) -> int:
        data = os.pread(fd, min(length, 1024 * 1024), pos)
        self.wfile.write(data)
        return len(data)


class StoreServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, store: OCILayout, host: str = "127.0.0.1", port: int = 5000,
                 log: Any = None) -> None:
        self.view = StoreView(store)
        self.log = log
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__((host, port), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self._slots.acquire()  # bounded: the accept loop waits for a free slot
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    @property
    def address(self) -> str:
        host, port = self.server_address[:2]
        return f"{host.decode() if isinstance(host, bytes) else host}:{port}"


@contextlib.contextmanager
def serving(store: OCILayout, host: str = "127.0.0.1", port: int = 0) -> Iterator[StoreServer]:
    """Serve ``store`` on a background thread for the duration of the block."""
    server = StoreServer(store, host, port)
    thread = threading.Thread(target=server.serve_forever, name="sxpm-store-serve", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
