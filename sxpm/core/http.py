"""Rules every HTTP request of sxpm follows, whoever makes it (registry or index).

* **Where credentials may go.** A secret stored for a host goes to that host only
  (the same ``host[:port]``; default ports compare equal), and over plain HTTP only to
  a loopback host or with ``--insecure``. A ``Link``, ``Location``, redirect or token
  ``realm`` naming another host gets a request without them.
* **What a URL shows.** ``https://user:pass@host/...`` is shown and stored as
  ``https://host/...``: userinfo is a secret.
* **How long and how much.** A body read whole (manifests, tag lists, tokens, error
  bodies, index files) has a byte limit and an overall deadline; a streamed blob has a
  minimum rate over a window (:class:`RateGuard`), so a server that drips bytes is cut
  off instead of holding a pull (and ``gc``, which waits for it) for hours. The status
  line and headers of every answer have a deadline too (:func:`bound_header_time`).

Only the standard library is imported here: the index's warm path uses it too.
"""

from __future__ import annotations

import functools
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

from sxpm.core.reference import is_loopback

MAX_REDIRECTS = 10
"""Redirects followed for one request; more is a loop (or as good as one)."""

_DEFAULT_PORTS = {"http": "80", "https": "443"}


def strip_userinfo(url: str) -> str:
    """``url`` without ``user:password@``; anything that is not a URL is returned as is."""
    if "://" not in url or "@" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if "@" not in parts.netloc:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit(SplitResult(parts.scheme, netloc, parts.path, parts.query,
                                  parts.fragment))


def authority(url: str) -> str:
    """``host[:port]`` of ``url``, lower case, without userinfo or a default port."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2].lower()
    port = _DEFAULT_PORTS.get(parts.scheme.lower())
    if port and netloc.endswith(f":{port}") and not netloc.endswith("]"):
        netloc = netloc[:-len(port) - 1]
    return netloc


def same_host(url: str, host: str) -> bool:
    """Whether ``url`` points at ``host`` (``host[:port]`` as credentials are stored)."""
    return authority(url) == host.lower()


def may_send_credentials(url: str, host: str, *, insecure: bool) -> bool:
    """Whether a secret stored for ``host`` may travel with a request to ``url``."""
    if not same_host(url, host):
        return False
    scheme = urlsplit(url).scheme.lower()
    return scheme == "https" or (scheme == "http" and (insecure or is_loopback(host)))


# --- bounds on time and size ----------------------------------------------------------


class StalledError(TimeoutError):
    """A body came slower than the minimum rate, or past its deadline."""


def stall_under(exc: BaseException) -> StalledError | None:
    """The :class:`StalledError` ``exc`` wraps (urllib3 and requests wrap one raised
    under them, e.g. by :func:`bound_header_time`), or None."""
    cause: BaseException | None = exc
    for _ in range(8):
        if cause is None or isinstance(cause, StalledError):
            return cause
        cause = cause.__cause__ or cause.__context__
    return None


class BodyTooLargeError(Exception):
    """A body read whole went past its limit; reading stopped there."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"over {limit} bytes")
        self.limit = limit


class RateGuard:
    """Fewer than ``min_bytes`` in ``window_s`` seconds is a stall.

    :meth:`add` is called once per read (a few per 2 MiB buffer on a fast stream) and
    costs a clock read and two comparisons. Windows are consecutive, so a stall is
    noticed between one and two windows after it starts.
    """

    __slots__ = ("_count", "_mark", "_start", "min_bytes", "window_s")

    def __init__(self, min_bytes: int, window_s: float) -> None:
        self.min_bytes = min_bytes
        self.window_s = window_s
        self._count = 0
        self._mark = 0
        self._start = time.monotonic()

    def add(self, n: int) -> None:
        self._count += n
        now = time.monotonic()
        if now - self._start >= self.window_s:
            if self._count - self._mark < self.min_bytes:
                raise StalledError(
                    f"stalled: fewer than {self.min_bytes} bytes in {self.window_s:g} s")
            self._mark = self._count
            self._start = now


class Deadline:
    """Cut a response's connection when ``seconds`` pass before the body is read.

    A blocked read of a dripping server wakes up (the socket is shut down under it) and
    fails; :attr:`fired` then tells the reader why. ``connection`` returns the socket,
    or None when there is none to cut.
    """

    def __init__(self, seconds: float, connection: Callable[[], Any]) -> None:
        self.fired = False
        self._connection = connection
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def _fire(self) -> None:
        self.fired = True
        sock = self._connection()
        if isinstance(sock, socket.socket):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


def read_bounded(chunks: Iterable[bytes], limit: int) -> bytes:
    """Join ``chunks``; :class:`BodyTooLargeError` as soon as they pass ``limit`` bytes."""
    out = bytearray()
    for chunk in chunks:
        out += chunk
        if len(out) > limit:
            raise BodyTooLargeError(limit)
    return bytes(out)


def response_socket(resp: Any) -> socket.socket | None:
    """The socket under a ``requests`` response (urllib3 keeps its connection), or None."""
    conn = getattr(getattr(resp, "raw", None), "connection", None)
    sock = getattr(conn, "sock", None)
    return sock if isinstance(sock, socket.socket) else None


@functools.lru_cache(maxsize=8)
def _timed_pools(seconds: float) -> dict[str, Any]:
    """urllib3 connection pools whose connections give up on an answer whose status
    line and headers take more than ``seconds`` in all."""
    # Here, not at the top: the index's warm path must not import urllib3.
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    def timed(base: Any) -> Any:
        class Timed(base):  # type: ignore[misc]
            def getresponse(self, *args: Any, **kwargs: Any) -> Any:
                # Each read of a dripping server comes well inside the read timeout,
                # so only a clock on the whole header stops it: when it runs out,
                # the socket is shut down under the blocked read.
                deadline = Deadline(seconds, lambda: self.sock)
                with deadline:
                    try:
                        response = super().getresponse(*args, **kwargs)
                    except Exception:
                        if not deadline.fired:
                            raise
                        response = None
                # A cut between header lines reads as their end (http.client takes an
                # empty read for the blank line), so a cut answer is never returned.
                if deadline.fired:  # urllib3 reports it as a read timeout
                    if response is not None:
                        response.close()
                    raise StalledError(f"the answer's headers took over {seconds:g} s")
                return response
        return Timed

    class Pool(HTTPConnectionPool):
        ConnectionCls = timed(HTTPConnection)

    class SecurePool(HTTPSConnectionPool):
        ConnectionCls = timed(HTTPSConnection)

    return {"http": Pool, "https": SecurePool}


def bound_header_time(session: Any, seconds: float) -> Any:
    """Give every adapter mounted on a ``requests`` session a deadline of ``seconds``
    for an answer's status line and headers (requests bounds each read, not the
    headers: a server sending a header byte every few seconds held a request for
    hours). Call it after mounting, before the first request."""
    for adapter in session.adapters.values():
        manager = getattr(adapter, "poolmanager", None)
        if manager is not None:
            manager.pool_classes_by_scheme = _timed_pools(seconds)
    return session
