"""A shaping TCP proxy: a WAN link in front of a loopback registry.

Every connection gets its own cap on the bytes it carries to the client (the way
CDNs and object-store-backed registries cap one connection), and every request waits
``latency_s`` before it reaches the registry (a request is bytes from the client
after the connection was quiet), so each request costs a round trip as over a WAN.
It works below HTTP, so it shapes sxpm, curl, aria2c and oras alike.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

CHUNK = 64 * 1024


class WanProxy:
    def __init__(self, upstream: str, *, latency_s: float, rate: float,
                 address: str = "127.0.0.1") -> None:
        host, _, port = upstream.rpartition(":")
        self.upstream = (host, int(port))
        self.latency_s = latency_s
        self.rate = rate
        self.connections = 0
        self._sock = socket.create_server((address, 0), backlog=128)
        self.host = f"{address}:{self._sock.getsockname()[1]}"
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True, name="wan-accept").start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            up = socket.create_connection(self.upstream)
        except OSError:
            client.close()
            return
        for s in (client, up):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=self._requests, args=(client, up), daemon=True).start()
        self._answers(up, client)

    def _requests(self, src: socket.socket, dst: socket.socket) -> None:
        buf = bytearray(CHUNK)
        quiet_since = 0.0
        try:
            while True:
                n = src.recv_into(buf)
                if not n:
                    break
                now = time.monotonic()
                if now - quiet_since > 0.002:  # a new request: one round trip first
                    time.sleep(self.latency_s)
                dst.sendall(memoryview(buf)[:n])
                quiet_since = time.monotonic()
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def _answers(self, src: socket.socket, dst: socket.socket) -> None:
        buf = bytearray(CHUNK)
        due = time.monotonic()
        try:
            while True:
                n = src.recv_into(buf)
                if not n:
                    break
                now = time.monotonic()
                due = max(due, now)  # an idle connection banks nothing
                due += n / self.rate
                if due > now:
                    time.sleep(due - now)
                dst.sendall(memoryview(buf)[:n])
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()

    def close(self) -> None:
        self._closed.set()
        self._sock.close()
