"""A real HTTP reverse proxy in front of the test registry that injects faults.

It forwards every request to the registry and streams the answer back, except where
a rule says otherwise: answer with a status (429/503 with ``Retry-After``), cut the
connection after N bytes of a body, flip a byte, serve other bytes, stall (send
nothing for a while, before the headers or in the middle of a body), or slow the
stream down. It counts the body bytes it sends per request path, and every GET that
got a body per path, so tests can assert how much a pull really transferred and that
each blob was fetched once.
"""

from __future__ import annotations

import http.client
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
       "proxy-authorization", "proxy-authenticate"}


@dataclass
class Rule:
    pattern: str
    method: str | None = None
    times: int = 1
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    cut_after: int | None = None
    flip_at: int | None = None
    stall_s: float = 0.0
    """Send nothing for this long: before the answer, or at ``stall_at`` bytes of the body."""
    stall_at: int | None = None
    drop: bool = False
    """Read the request, then close the connection without an answer."""
    used: int = 0

    def matches(self, method: str, path: str) -> bool:
        return (self.used < self.times and (self.method is None or self.method == method)
                and re.search(self.pattern, path) is not None)


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.rules: list[Rule] = []
        self.log: list[tuple[str, str, dict[str, str], int]] = []  # method, path, hdrs, status
        self.sent: dict[str, int] = {}
        self.gets: dict[str, int] = {}  # GETs forwarded with a body, per path
        self.rate: float | None = None  # bytes per second, all bodies
        self.connections = 0
        """Connections accepted from clients (requests on a kept connection share one)."""
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with proxy.lock:
                    proxy.connections += 1

            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                try:
                    proxy.handle(self)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client went away (killed, timed out)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def add(self, pattern: str, **kw: object) -> Rule:
        rule = Rule(pattern, **kw)  # type: ignore[arg-type]
        with self.lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self.lock:
            self.rules.clear()
            self.log.clear()
            self.sent.clear()
            self.gets.clear()
            self.rate = None
            self.connections = 0

    def bytes_sent(self, pattern: str = "") -> int:
        with self.lock:
            return sum(n for path, n in self.sent.items() if re.search(pattern, path))

    def blob_gets(self) -> dict[str, int]:
        """How many times each blob was served (GET, body forwarded), by digest."""
        with self.lock:
            out: dict[str, int] = {}
            for path, n in self.gets.items():
                m = re.search(r"/blobs/(sha256:[0-9a-f]{64})", path)
                if m:
                    out[m.group(1)] = out.get(m.group(1), 0) + n
            return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- serving ------------------------------------------------------------------------
    def _rule(self, method: str, path: str) -> Rule | None:
        with self.lock:
            for rule in self.rules:
                if rule.matches(method, path):
                    rule.used += 1
                    return rule
        return None

    def handle(self, req: BaseHTTPRequestHandler) -> None:
        method, path = req.command, req.path
        length = int(req.headers.get("Content-Length") or 0)
        rule = self._rule(method, path)
        with self.lock:
            self.log.append((method, path, dict(req.headers.items()),
                             rule.status if rule and rule.status else 0))
        if rule is not None and rule.stall_s and rule.stall_at is None:
            time.sleep(rule.stall_s)  # nothing at all: not even the status line
        if rule is not None and rule.drop:
            import socket

            self._drain(req, length)
            req.close_connection = True
            req.connection.shutdown(socket.SHUT_RDWR)
            return
        if rule is not None and rule.status is not None:
            self._drain(req, length)
            body = rule.body or b""
            req.send_response(rule.status)
            for k, v in rule.headers.items():
                req.send_header(k, v)
            req.send_header("Content-Length", str(len(body)))
            req.end_headers()
            if method != "HEAD":
                req.wfile.write(body)
            return
        conn = http.client.HTTPConnection(self.upstream, timeout=120)
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for k, v in req.headers.items():
            if k.lower() not in HOP:
                conn.putheader(k, v)
        conn.endheaders()
        left = length
        while left > 0:
            chunk = req.rfile.read(min(1 << 20, left))
            if not chunk:
                break
            conn.send(chunk)
            left -= len(chunk)
        resp = conn.getresponse()
        data = rule.body if rule is not None else None
        headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP]
        if data is not None:
            resp.read()
            headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
            headers.append(("Content-Length", str(len(data))))
        for name, value in (rule.headers if rule is not None else {}).items():
            headers = [(k, v) for k, v in headers if k.lower() != name.lower()]
            if value:
                headers.append((name, value))
        req.send_response(resp.status)
        for k, v in headers:
            req.send_header(k, v)
        req.end_headers()
        if method == "HEAD":
            conn.close()
            return
        if method == "GET" and 200 <= resp.status < 300:
            with self.lock:
                self.gets[path] = self.gets.get(path, 0) + 1
        if data is not None:
            req.wfile.write(data)
            self._count(path, len(data))
            conn.close()
            return
        offset = 0
        while True:
            chunk = resp.read(65536)
            if not chunk:
                break
            if rule is not None and rule.flip_at is not None and \
                    offset <= rule.flip_at < offset + len(chunk):
                buf = bytearray(chunk)
                buf[rule.flip_at - offset] ^= 0xFF
                chunk = bytes(buf)
            if rule is not None and rule.stall_at is not None and \
                    offset <= rule.stall_at < offset + len(chunk):
                head = chunk[:rule.stall_at - offset]
                req.wfile.write(head)
                req.wfile.flush()
                self._count(path, len(head))
                time.sleep(rule.stall_s)  # the connection stays open, silent
                chunk = chunk[len(head):]
                offset += len(head)
            if rule is not None and rule.cut_after is not None and \
                    offset + len(chunk) >= rule.cut_after:
                part = chunk[:rule.cut_after - offset]
                req.wfile.write(part)
                req.wfile.flush()
                self._count(path, len(part))
                req.close_connection = True
                conn.close()
                import socket

                req.connection.shutdown(socket.SHUT_RDWR)
                return
            req.wfile.write(chunk)
            self._count(path, len(chunk))
            offset += len(chunk)
            if self.rate:
                time.sleep(len(chunk) / self.rate)
        conn.close()

    def _count(self, path: str, n: int) -> None:
        with self.lock:
            self.sent[path] = self.sent.get(path, 0) + n

    @staticmethod
    def _drain(req: BaseHTTPRequestHandler, length: int) -> None:
        while length > 0:
            chunk = req.rfile.read(min(1 << 20, length))
            if not chunk:
                return
            length -= len(chunk)
