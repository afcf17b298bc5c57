"""OCI distribution registries over HTTP(S).

Data paths use one ``requests`` session per registry host (shared by every
repository of that host in the process, so connections and tokens are reused):

* pulls stream each blob into the store's :class:`~sxpm.store.layout.BlobWriter`, which
  hashes while it writes; a dropped connection resumes with ``Range`` from the bytes
  already on disk, in this process or the next;
* pushes ``HEAD`` first, try a cross-repository mount, then stream from the store's
  blob file: one ``PUT`` for small blobs, ``PATCH`` chunks for large ones (memory
  stays at one read buffer, whatever the blob's size);
* every request retries with exponential backoff and jitter on 429/5xx and on a
  reset connection, honouring ``Retry-After``, within a bounded number of attempts
  and a bounded total time.

Authentication follows the registry's ``WWW-Authenticate`` challenge: Basic, or a
Bearer token fetched from the realm with the credentials of Docker's
``config.json`` (:mod:`sxpm.transport.credentials`). Credentials never appear in an
error message, a log line or a ``repr``, and go only where :mod:`sxpm.core.http`
allows: the registry's own host (a realm on another host gets that host's own
credentials, if any), over HTTPS unless the host is loopback or ``--insecure`` was
given. Redirects are followed here, not by ``requests``, so that every hop is held
to that rule and a loop ends with its own error.

Every body has a bound: those read whole a byte limit and a deadline, streamed blobs
a minimum rate (:class:`~sxpm.transport.base.TransportOptions`).
"""

from __future__ import annotations

import collections
import contextlib
import email.utils
import functools
import json
import os
import random
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import urlencode, urljoin

from sxpm._version import __version__
from sxpm.core.http import (
    MAX_REDIRECTS,
    BodyTooLargeError,
    Deadline,
    RateGuard,
    StalledError,
    authority,
    bound_header_time,
    may_send_credentials,
    read_bounded,
    response_socket,
    same_host,
    stall_under,
)
from sxpm.core.oci import (
    INDEX_TYPES,
    MANIFEST_TYPES,
    MAX_MANIFEST_BYTES,
    Descriptor,
    ImageIndex,
    digest_of,
    parse_manifest_bytes,
)
from sxpm.core.progress import Progress
from sxpm.core.reference import Digest, Reference, is_loopback
from sxpm.errors import (
    AuthenticationError,
    CorruptBlobError,
    ManifestError,
    NotFoundError,
    RegistryError,
    SizeMismatchError,
)
from sxpm.store.layout import CHUNK, BlobWriter, OCILayout
from sxpm.store.sink import BUFFER, Lane, Sink, receive
from sxpm.transport import credentials
from sxpm.transport.base import (
    Repository,
    Taken,
    TransportOptions,
    read_referrers_fallback,
    update_referrers_fallback,
)
from sxpm.transport.credentials import Credentials
from sxpm.transport.ranges import STREAMS_LIMIT, Ahead, NearEnd, Opened, Piece, RangedPull

if TYPE_CHECKING:
    import requests

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
ERROR_BODY_MAX = 64 * 1024
"""Bytes of an error answer read for its message; the rest is never read."""
SMALL_BODY_MAX = 64 * 1024
"""Bytes read of an answer whose body sxpm does not use (HEAD, PUT, POST, PATCH)."""
TOKEN_BODY_MAX = 256 * 1024
"""A token answer: a JWT of a few KiB in practice."""
TAG_PAGE_MAX = 1024 * 1024
"""One page of a tag list (1 000 tags of up to 128 characters is 135 KB)."""
MAX_TAG_PAGES = 200
MAX_TAGS = 100_000
MAX_MEMO_BYTES = 64 * 1024 * 1024
"""Manifests kept by digest per repository, so an index naming one manifest many
times is fetched and held once."""
ACCEPT_MANIFESTS = ", ".join(sorted(MANIFEST_TYPES | INDEX_TYPES))
_CHALLENGE_RE = re.compile(r'([A-Za-z_]+)=(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


_PERMANENT = frozenset({"connection refused", "name or service not known",
                        "temporary failure in name resolution", "no route to host",
                        "certificate verify failed"})


def _reason(exc: BaseException) -> str:
    """A short cause for a connection failure, without URLs that could carry secrets."""
    stall = stall_under(exc)
    if stall is not None:
        return str(stall)
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "timed out",
                   "Connection reset", "certificate verify failed", "No route to host",
                   "Temporary failure in name resolution", "Remote end closed"):
        if marker in text:
            return marker.lower()
    return type(exc).__name__


def _same(value: Any) -> Any:
    return value


class AnswerTooLargeError(RegistryError):
    """An answer read whole went past its limit (reading stopped there)."""


class _NoRangesError(Exception):
    """The registry answered a range request with something else."""


_CONTENT_RANGE_RE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$")


def _content_range(value: str) -> tuple[int, int, int | None] | None:
    match = _CONTENT_RANGE_RE.match(value)
    if not match:
        return None
    total = None if match.group(3) == "*" else int(match.group(3))
    return int(match.group(1)), int(match.group(2)), total


@functools.lru_cache(maxsize=1)
def _network_errors() -> tuple[type[BaseException], ...]:
    import http.client

    import requests
    import urllib3.exceptions

    return (requests.RequestException, urllib3.exceptions.HTTPError,
            http.client.HTTPException, ConnectionError, TimeoutError)


def _read_errors() -> tuple[type[BaseException], ...]:
    """What reading a body whole may raise: the network's errors and the limit's."""
    return (BodyTooLargeError, *_network_errors())


def _reader(resp: requests.Response, guard: RateGuard) -> Callable[[memoryview], int]:
    """``readinto`` for a streamed body, held to ``guard``'s minimum rate.

    Each call is one read of the socket (what has arrived, at least a byte), so the
    guard sees a dripping server between its bytes: a read that fills the whole view
    would wait for 2 MiB, byte by byte. With a ``Content-Length`` and no encoding the
    bytes go straight from the socket's buffer into the view; otherwise through
    urllib3, which decodes chunks.
    """
    raw = resp.raw
    fp = getattr(getattr(raw, "_fp", None), "fp", None)  # the socket's BufferedReader
    length = resp.headers.get("Content-Length", "")
    if fp is not None and callable(getattr(fp, "readinto1", None)) and length.isdigit() \
            and not resp.headers.get("Content-Encoding") \
            and not getattr(raw._fp, "chunked", True):
        left = int(length)
        readinto1 = fp.readinto1
        response: Any = raw._fp  # http.client's response, which owns ``fp``

        def direct(view: memoryview) -> int:
            nonlocal left
            if left <= 0:
                return 0
            n: int = readinto1(view[:left] if len(view) > left else view)
            left -= n
            guard.add(n)
            if left == 0:
                # The body is read whole around urllib3, which would otherwise close the
                # connection as unfinished: hand it back to the pool instead (closing
                # http.client's reader first, so that the next request may use it). A
                # new connection per range costs a TCP (and TLS) handshake and a slow
                # start over a real link.
                response.close()
                raw.release_conn()
            return n

        return direct

    def readinto(view: memoryview) -> int:
        data = raw.read1(len(view), decode_content=False)
        view[:len(data)] = data
        guard.add(len(data))
        return len(data)

    return readinto


def _telling(readinto: Callable[[memoryview], int], pos: int, piece: Piece,
             near_end: NearEnd) -> Callable[[memoryview], int]:
    """``readinto`` that tells ``near_end`` the bytes of the piece left after each read."""
    def read(view: memoryview) -> int:
        nonlocal pos
        n = readinto(view)
        pos += n
        near_end(piece.end - pos)
        return n

    return read


class _Body:
    """A slice of a file as a request body: read in large blocks, progress counted."""

    def __init__(self, path: str, start: int, length: int, progress: Progress) -> None:
        self._fh: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed at the end of the body
        self._fh.seek(start)
        self._left = length
        self.length = length
        self.sent = 0
        self._progress = progress

    def __len__(self) -> int:
        return self.length

    def read(self, _size: int = -1) -> bytes:
        if self._left <= 0:
            self._fh.close()
            return b""
        data = self._fh.read(min(CHUNK, self._left))
        if not data:  # the file shrank under us; the registry will refuse the digest
            self._left = 0
            self._fh.close()
            return b""
        self._left -= len(data)
        self.sent += len(data)
        self._progress.update(len(data))
        return data

    def close(self) -> None:
        self._fh.close()


class RegistryClient:
    """HTTP to one registry host: scheme, TLS, authentication and retries."""

    _shared: dict[tuple[str, TransportOptions], RegistryClient] = {}
    _shared_lock = threading.Lock()

    @classmethod
    def for_host(cls, host: str, options: TransportOptions) -> RegistryClient:
        with cls._shared_lock:
            client = cls._shared.get((host, options))
            if client is None:
                client = cls._shared[(host, options)] = cls(host, options)
            return client

    def __init__(self, host: str, options: TransportOptions,
                 credentials: Credentials | None = None) -> None:
        import requests
        from requests.adapters import HTTPAdapter

        self.host = host
        self.options = options
        self.session = requests.Session()
        # A far link's ranged streams hold two connections each for a moment (the next
        # piece's request goes out before the current piece ends, sxpm.transport.ranges).
        pool = max(2 * STREAMS_LIMIT, options.jobs * 4)
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        bound_header_time(self.session, options.deadline_s)
        self.session.headers["User-Agent"] = f"sxpm/{__version__}"
        self.loopback = is_loopback(host)
        self.scheme = "http" if self.loopback else "https"
        self.verify = not options.insecure
        self._credentials = credentials
        self._credentials_loaded = credentials is not None
        self._basic: str | None = None
        self._tokens: dict[str, str] = {}
        self._lock = threading.Lock()
        self.fastest_answer_s: float | None = None
        """The shortest wait yet for an answer's headers from this host: its round trip
        (and the server's least work), which the ranged-pull planner starts from."""

    # --- credentials ---------------------------------------------------------------
    def credentials(self) -> Credentials | None:
        with self._lock:
            if not self._credentials_loaded:
                self._credentials = credentials.get(self.host)
                self._credentials_loaded = True
            return self._credentials

    def url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.scheme}://{self.host}{path}"

    def _may_carry(self, url: str) -> bool:
        """Whether this registry's login (Basic or its tokens) may go with ``url``."""
        return may_send_credentials(url, self.host, insecure=self.options.insecure)

    def _auth_header(self, scope: str) -> str | None:
        return self._tokens.get(scope) or self._basic

    def _authenticate(self, resp: requests.Response, scope: str) -> bool:
        """Answer a 401 challenge; False when there is nothing to answer it with."""
        challenge = resp.headers.get("WWW-Authenticate", "")
        kind, _, rest = challenge.strip().partition(" ")
        params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
                  for m in _CHALLENGE_RE.finditer(rest)}
        if kind.lower() == "basic":
            creds = self.credentials()
            if creds is None or creds.is_identity_token:
                return False
            import base64

            token = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
            self._basic = f"Basic {token}"
            return True
        if kind.lower() != "bearer" or not params.get("realm"):
            return False
        realm = urljoin(self.url("/v2/"), params["realm"])
        scopes = sorted(set(scope.split()) | set((params.get("scope") or "").split()))
        self._tokens[scope] = f"Bearer {self._fetch_token(realm, params, scopes)}"
        return True

    def _realm_credentials(self, realm: str) -> Credentials | None:
        """What goes to a token realm: the registry's login when the realm is the
        registry's own host (or Docker Hub's auth service), else the realm host's own
        credentials; none over plain HTTP to a host that is not loopback."""
        host = authority(realm)
        if same_host(realm, self.host) or credentials.same_login(self.host, host):
            creds = self.credentials()
        else:
            creds = credentials.get(host)
        if creds is None or not may_send_credentials(realm, host,
                                                     insecure=self.options.insecure):
            return None
        return creds

    def _fetch_token(self, realm: str, params: Mapping[str, str], scopes: list[str]) -> str:

        creds = self._realm_credentials(realm)
        query: list[tuple[str, str]] = [("scope", s) for s in scopes]
        if params.get("service"):
            query.append(("service", params["service"]))
        shown = realm.split("?", 1)[0]
        try:
            if creds is not None and creds.is_identity_token:
                resp = self.session.post(realm, data={
                    "grant_type": "refresh_token", "refresh_token": creds.password,
                    "service": params.get("service", ""), "scope": " ".join(scopes),
                    "client_id": "sxpm"}, verify=self.verify, timeout=30, stream=True,
                    allow_redirects=False)
            else:
                auth = (creds.username, creds.password) if creds else None
                # Redirects are not followed: a login sent to a realm must not travel on.
                resp = self.session.get(realm, params=query, auth=auth, verify=self.verify,
                                        timeout=30, stream=True, allow_redirects=False)
            with resp:
                data = self._read(resp, TOKEN_BODY_MAX) if resp.status_code == 200 else b""
        except _read_errors() as exc:
            reason = "an answer over 256 KiB" if isinstance(exc, BodyTooLargeError) \
                else _reason(exc)
            raise RegistryError(f"Cannot get a token from {shown} for {self.host}: {reason}",
                                url=shown) from None
        if resp.status_code in (401, 403):
            raise AuthenticationError(
                f"{self.host} refused the credentials"
                if creds else f"{self.host} needs credentials",
                url=shown, status=resp.status_code, hint=f"run `sxpm login {self.host}`")
        if resp.status_code != 200:
            raise RegistryError(f"The token service {shown} of {self.host} answered HTTP "
                                f"{resp.status_code}", url=shown, status=resp.status_code)
        try:
            body = json.loads(data)
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"The token service {shown} of {self.host} sent no token",
                                url=shown)
        return token

    def _read(self, resp: requests.Response, limit: int, *, head: bool = False) -> bytes:
        """A body read whole: at most ``limit`` bytes, within the deadline.

        Raises :class:`BodyTooLargeError`, or :class:`StalledError` when the deadline
        cut the connection. The answer to a ``HEAD`` has no body whatever its
        ``Content-Length`` says (reading it releases the connection for reuse).
        """
        length = resp.headers.get("Content-Length", "")
        if not head and length.isdigit() and int(length) > limit:
            raise BodyTooLargeError(limit)
        with Deadline(self.options.deadline_s, lambda: response_socket(resp)) as deadline:
            try:
                return read_bounded(resp.iter_content(65536), limit)
            except _network_errors():
                if deadline.fired:
                    raise StalledError(f"the answer took over {self.options.deadline_s:g} s"
                                       ) from None
                raise

    # --- requests ----------------------------------------------------------------------
    def backoff(self, attempt: int) -> float:
        base = self.options.backoff_s * (2 ** attempt)
        return float(min(base, 30.0) * (0.5 + random.random() / 2))

    @staticmethod
    def retry_after(resp: requests.Response) -> float | None:
        value = resp.headers.get("Retry-After")
        if not value:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())

    def request(self, method: str, path: str, *, scope: str, what: str,
                headers: Mapping[str, str] | None = None,
                body: Callable[[], Any] | None = None, stream: bool = False,
                expect: Sequence[int] = (200,), retry: bool = True,
                params: Mapping[str, str] | None = None,
                limit: int = SMALL_BODY_MAX) -> requests.Response:
        """Send a request, answering auth challenges and retrying what is worth it.

        ``body`` makes a fresh request body for each attempt. ``what`` names the
        object for error messages (reference and digest). Unless ``stream``, the body
        of the answer is read here, at most ``limit`` bytes within the deadline, and
        is the response's ``content``. Redirects of GET and HEAD are followed (at
        most :data:`MAX_REDIRECTS`), the login going only to the registry's host.
        """
        import requests

        url = self.url(path)
        if params:
            url += ("&" if "?" in url else "?") + urlencode(params)
        target = url  # where this attempt goes: ``url``, or where it was redirected
        deadline = time.monotonic() + self.options.retry_max_s
        attempt = 0
        hops = 0
        answered_challenge = False
        while True:
            sent = dict(headers or {})
            own = self._may_carry(target)
            auth = self._auth_header(scope) if own else None
            if auth:
                sent["Authorization"] = auth
            data = body() if body else None
            try:
                sent_at = time.monotonic()
                resp = self.session.request(method, target, headers=sent, data=data,
                                            stream=True, verify=self.verify,
                                            allow_redirects=False,
                                            timeout=(15, self.options.timeout_s))
                if data is None and same_host(target, self.host):
                    waited = time.monotonic() - sent_at
                    if self.fastest_answer_s is None or waited < self.fastest_answer_s:
                        self.fastest_answer_s = waited
                if resp.status_code in expect and not stream:
                    try:
                        # requests reads a non-streamed body whole, with no limit; this
                        # reads it bounded and keeps it where ``Response.content`` does.
                        resp._content = self._read(resp, limit, head=method == "HEAD")
                    except BodyTooLargeError:
                        resp.close()
                        raise AnswerTooLargeError(
                            f"{method} {url.split('?', 1)[0]} for {what}: the answer is "
                            f"over {limit} bytes; reading stopped", url=url.split("?", 1)[0],
                            hint="the registry is misbehaving; report it to its "
                                 "operators") from None
            except requests.exceptions.SSLError as exc:
                if self.options.insecure and target.startswith("https://"):
                    # --insecure: a registry that speaks plain HTTP.
                    if same_host(target, self.host):
                        self.scheme = "http"
                    url = "http://" + url.split("://", 1)[1] if url == target else url
                    target = "http://" + target.split("://", 1)[1]
                    continue
                raise RegistryError(f"TLS failed with {self.url('/v2/')}: {_reason(exc)}",
                                    url=self.url("/v2/"),
                                    hint="fix the certificate, or pass --insecure for a "
                                         "registry you trust") from None
            except _network_errors() as exc:
                if isinstance(data, _Body):
                    data.close()
                permanent = _reason(exc) in _PERMANENT
                if retry and not permanent and attempt < self.options.retries \
                        and time.monotonic() < deadline:
                    time.sleep(self.backoff(attempt))
                    attempt += 1
                    continue
                where = target.split("?", 1)[0]
                raise RegistryError(f"Cannot reach the registry at {where}: {_reason(exc)}",
                                    url=where,
                                    hint="check the address, the network and that the "
                                         "registry is running") from None
            if resp.status_code in REDIRECT_STATUS and method in ("GET", "HEAD") \
                    and resp.headers.get("Location"):
                resp.close()
                hops += 1
                if hops > MAX_REDIRECTS:
                    where = url.split("?", 1)[0]
                    raise RegistryError(
                        f"{self.host} redirected {method} {where} for {what} more than "
                        f"{MAX_REDIRECTS} times (a redirect loop)", url=where,
                        status=resp.status_code,
                        hint="the registry or its storage is misconfigured; report it to "
                             "its operators")
                target = urljoin(target, resp.headers["Location"])
                continue
            if resp.status_code == 401 and not answered_challenge and own:
                answered_challenge = True
                resp.close()
                if self._authenticate(resp, scope):
                    continue
            if resp.status_code in RETRY_STATUS and retry and attempt < self.options.retries:
                wait = self.retry_after(resp)
                wait = self.backoff(attempt) if wait is None else wait
                if time.monotonic() + wait < deadline:
                    resp.close()
                    time.sleep(wait)
                    attempt += 1
                    target = url
                    continue
            if resp.status_code in expect:
                return resp
            raise self.error(resp, method, target, what)

    def error(self, resp: requests.Response, method: str, url: str, what: str) -> Exception:
        status = resp.status_code
        message = ""
        try:
            with resp:
                errors = json.loads(self._read(resp, ERROR_BODY_MAX)).get("errors") or []
            if errors and isinstance(errors[0], dict):
                message = str(errors[0].get("message") or errors[0].get("code") or "")
        except _read_errors():
            pass  # no message, or not one worth the wait: the status says enough
        except (ValueError, AttributeError):
            pass  # not the distribution spec's error JSON
        message = " ".join(message.split())[:200]
        where = url.split("?", 1)[0]
        host = authority(url)
        if status in (401, 403):
            has = self.credentials() is not None
            return AuthenticationError(
                f"{host} refused access to {what} (HTTP {status}"
                + (f": {message}" if message else "") + ")",
                url=where, status=status,
                hint=(f"check your permissions, or run `sxpm login {host}` again" if has
                      else f"run `sxpm login {host}`"))
        if status == 404:
            return NotFoundError(f"{what} not found at {host}"
                                 + (f" ({message})" if message else ""),
                                 hint="check the repository, tag and digest")
        return RegistryError(f"{method} {where} for {what} failed: HTTP {status}"
                             + (f" ({message})" if message else ""), url=where, status=status)

    def ping(self) -> None:
        """``GET /v2/``: raises when the registry is unreachable or refuses the login."""
        resp = self.request("GET", "/v2/", scope="", what="the registry API")
        resp.close()


def login(host: str, creds: Credentials, options: TransportOptions | None = None) -> None:
    """Check ``creds`` against ``host``; raise :class:`AuthenticationError` if refused."""
    client = RegistryClient(host, options or TransportOptions(), credentials=creds)
    client.ping()
    with RegistryClient._shared_lock:  # later requests of this process use the new login
        for key in [k for k in RegistryClient._shared if k[0] == host]:
            del RegistryClient._shared[key]


class RemoteRepository(Repository):
    """One repository of an OCI distribution registry."""

    def __init__(self, ref: Reference, options: TransportOptions | None = None) -> None:
        super().__init__(ref)
        self.options = options or TransportOptions()
        self.client = RegistryClient.for_host(ref.registry, self.options)
        self.name = ref.repository
        self._pull = f"repository:{self.name}:pull"
        self._push = f"repository:{self.name}:pull,push"
        self._memo: collections.OrderedDict[Digest, bytes] = collections.OrderedDict()
        self._memo_lock = threading.Lock()

    def _remember(self, digest: Digest, data: bytes) -> None:
        """Keep a manifest fetched by digest (it cannot change), the oldest going first
        past :data:`MAX_MEMO_BYTES`."""
        with self._memo_lock:
            self._memo[digest] = data
            total = sum(len(v) for v in self._memo.values())
            while total > MAX_MEMO_BYTES and len(self._memo) > 1:
                total -= len(self._memo.popitem(last=False)[1])

    def _guard(self) -> RateGuard:
        return RateGuard(self.options.stall_bytes, self.options.stall_window_s)

    def _path(self, kind: str, ref: str | Digest) -> str:
        return f"/v2/{self.name}/{kind}/{ref}"

    def _what(self, reference: str | Digest) -> str:
        text = str(reference)
        sep = "@" if ":" in text else ":"
        return f"{self.ref.locator}{sep}{text}"

    # --- manifests -------------------------------------------------------------------
    def get_manifest(self, reference: str) -> tuple[Descriptor, bytes]:
        what = self._what(reference)
        expected = Digest.parse(reference) if ":" in reference else None
        if expected is not None:
            with self._memo_lock:
                kept = self._memo.get(expected)
            if kept is not None:
                obj = parse_manifest_bytes(kept, f"manifest {what}")
                return Descriptor(obj.media_type, expected, len(kept),
                                  artifact_type=obj.listed_type), kept
        resp = self.client.request("GET", self._path("manifests", reference), scope=self._pull,
                                   what=f"manifest {what}", stream=True,
                                   headers={"Accept": ACCEPT_MANIFESTS})
        with resp:
            length = resp.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > MAX_MANIFEST_BYTES:
                raise ManifestError(what, f"the registry offers a manifest of {length} bytes, "
                                    "over the 4 MiB limit; not read",
                                    hint="a manifest this large is refused by design")
            try:
                data = self.client._read(resp, MAX_MANIFEST_BYTES)
            except BodyTooLargeError:
                raise ManifestError(what, "the registry sent a manifest over the 4 MiB "
                                    "limit; reading stopped",
                                    hint="a manifest this large is refused by design") from None
            except _network_errors() as exc:
                raise RegistryError(f"Cannot read manifest {what} from {self.ref.registry}: "
                                    f"{_reason(exc)}", url=self.client.url(
                                        self._path("manifests", reference)),
                                    hint="run the same command again") from None
            announced = resp.headers.get("Docker-Content-Digest")
        algorithm = expected.algorithm if expected else "sha256"
        actual = digest_of(data, algorithm)
        if expected is not None and actual != expected:
            raise CorruptBlobError(str(expected), str(actual), where=what)
        if expected is None and announced:
            try:
                claimed = Digest.parse(announced.strip())
            except ValueError:
                claimed = None
            if claimed and claimed != digest_of(data, claimed.algorithm):
                raise CorruptBlobError(str(claimed), str(digest_of(data, claimed.algorithm)),
                                       where=what)
        obj = parse_manifest_bytes(data, f"manifest {what}@{actual}")
        if expected is not None:
            self._remember(expected, data)
        return Descriptor(obj.media_type, actual, len(data),
                          artifact_type=obj.listed_type), data

    def push_manifest(self, desc: Descriptor, data: bytes, tag: str | None) -> None:
        target = tag or str(desc.digest)
        what = self._what(target)
        resp = self.client.request("PUT", self._path("manifests", target), scope=self._push,
                                   what=f"manifest {what}", body=lambda: data,
                                   headers={"Content-Type": desc.media_type},
                                   expect=(200, 201, 202))
        resp.close()
        announced = resp.headers.get("Docker-Content-Digest")
        if announced and announced.strip() != str(desc.digest) and \
                announced.startswith(desc.digest.algorithm + ":"):
            raise CorruptBlobError(str(desc.digest), announced.strip(), where=f"push of {what}")
        if "OCI-Subject" not in resp.headers:
            # No referrers API: keep the tag-schema index of the subject up to date.
            update_referrers_fallback(self, desc, data)

    def tags(self) -> list[str]:
        """Every tag, following ``Link: rel="next"`` pages on the registry's own host,
        at most :data:`MAX_TAG_PAGES` pages and :data:`MAX_TAGS` tags."""
        import requests

        out: set[str] = set()
        path: str | None = f"/v2/{self.name}/tags/list?n=1000"
        pages = 0
        while path:
            pages += 1
            if pages > MAX_TAG_PAGES or len(out) > MAX_TAGS:
                raise RegistryError(
                    f"{self.ref.locator}: the tag list goes on past {len(out)} tags in "
                    f"{pages - 1} pages; stopped (at most {MAX_TAG_PAGES} pages and "
                    f"{MAX_TAGS} tags are read)", url=self.client.url(path).split("?", 1)[0],
                    hint="name a version or digest instead of a range, or clean up the "
                         "repository's tags")
            try:
                resp = self.client.request("GET", path, scope=self._pull, limit=TAG_PAGE_MAX,
                                           what=f"tags of {self.ref.locator}")
            except NotFoundError:
                return []
            with resp:
                try:
                    out.update(t for t in resp.json().get("tags") or [] if isinstance(t, str))
                except (ValueError, AttributeError, TypeError):
                    raise RegistryError(f"{self.ref.locator}: the tag list is not JSON",
                                        url=self.client.url(path)) from None
                nxt = requests.utils.parse_header_links(resp.headers.get("Link", ""))
            path = next((urljoin(self.client.url(path), link["url"]) for link in nxt
                         if link.get("rel") == "next" and link.get("url")), None)
            if path is not None and not same_host(path, self.client.host):
                # A registry pages on itself; a page elsewhere could only collect our
                # login or feed us another host's tags.
                raise RegistryError(
                    f"{self.ref.locator}: the tag list's next page is on another host "
                    f"({authority(path)}); refused", url=path.split("?", 1)[0],
                    hint="the registry is misbehaving; report it to its operators")
        return sorted(out)

    def referrers(self, subject: Digest, artifact_type: str | None = None) -> list[Descriptor]:
        params = {"artifactType": artifact_type} if artifact_type else None
        try:
            resp = self.client.request(
                "GET", self._path("referrers", subject), scope=self._pull,
                what=f"referrers of {self._what(subject)}", expect=(200, 404), params=params,
                headers={"Accept": "application/vnd.oci.image.index.v1+json"},
                limit=MAX_MANIFEST_BYTES)
        except AnswerTooLargeError:
            raise ManifestError(self._what(subject), "referrers index over 4 MiB; "
                                    "reading stopped") from None
            raise
        with resp:
            content_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
            if resp.status_code == 200 and content_type in INDEX_TYPES:
                index = parse_manifest_bytes(resp.content, f"referrers of {subject}")
                if isinstance(index, ImageIndex):
                    return [d for d in index.manifests
                            if artifact_type is None or d.artifact_type == artifact_type]
        return read_referrers_fallback(self, subject, artifact_type)

    # --- blobs -------------------------------------------------------------------------
    def has_blob(self, digest: Digest) -> bool:
        resp = self.client.request("HEAD", self._path("blobs", digest), scope=self._pull,
                                   what=f"blob {self._what(digest)}", expect=(200, 404))
        resp.close()
        return resp.status_code == 200

    def fetch_blob(self, desc: Descriptor, writer: BlobWriter, progress: Progress,
                   streams: int = 1, taken: Taken | None = None) -> None:
        # Parallel ranges win where one connection is held back (latency, limits per
        # connection); from a loopback registry nothing is, the registry shares our
        # CPUs, and one stream is faster (docs/benchmarks.md): one request, no probe.
        # Elsewhere the first piece shows what the link is: sxpm.transport.ranges
        # plans the streams from it (``streams`` no longer decides) unless
        # SXPM_RANGE_STREAMS fixes them. (Measuring cannot stand in for the loopback
        # rule: on a busy machine eight layers' first answers are as slow as a far
        # link's.) A range record left by an earlier ranged attempt is resumed by
        # ranges whatever the streams.
        # SXPM_RANGE_PLAN=measure plans a loopback registry's streams too: an SSH
        # tunnel or a local shaping proxy is loopback in front of a far link.
        measure = os.environ.get("SXPM_RANGE_PLAN") == "measure"
        fixed: int | None = 1 if self.client.loopback and not measure else None
        if self.options.range_streams:
            fixed = self.options.range_streams
        if desc.size >= self.options.range_min_bytes and desc.size > 0 and (
                fixed is None or fixed > 1 or writer.ranges_path.exists()):
            try:
                self._fetch_ranged(desc, writer, progress, fixed, taken)
                return
            except _NoRangesError:
                counted = writer.written
                writer.restart()  # the registry ignores Range: one stream, from the start
                progress.update(-counted)
        self._fetch_sequential(desc, writer, progress)

    def _fetch_sequential(self, desc: Descriptor, writer: BlobWriter,
                          progress: Progress) -> None:
        what = self._what(desc.digest)
        progress.update(writer.offset)
        drops = 0
        while True:
            start = writer.written
            if start >= desc.size:
                return
            headers = {"Range": f"bytes={start}-"} if start else {}
            resp = self.client.request("GET", self._path("blobs", desc.digest),
                                       scope=self._pull, what=f"blob {what}", stream=True,
                                       headers=headers, expect=(200, 206))
            with resp:
                if start and (resp.status_code == 200
                              or not resp.headers.get("Content-Range", "").startswith(
                                  f"bytes {start}-")):
                    writer.restart()  # the server cannot resume: start over
                    progress.update(-start)
                    start = 0
                length = resp.headers.get("Content-Length")
                if length and length.isdigit() and int(length) != desc.size - start:
                    writer.abort(keep_partial=False)
                    raise SizeMismatchError(str(desc.digest), desc.size, start + int(length),
                                            where=what)
                readinto = _reader(resp, self._guard())
                try:
                    with writer.sink() as sink:
                        receive(readinto, sink, sink.lane(), start, desc.size, progress)
                    if writer.written < desc.size:
                        raise ConnectionError("the registry ended the blob early")
                    if readinto(memoryview(bytearray(1))):  # more than the descriptor says
                        writer.abort(keep_partial=False)
                        raise SizeMismatchError(str(desc.digest), desc.size, desc.size + 1,
                                                where=what)
                    return
                except _network_errors() as exc:
                    drops += 1
                    self._after_drop(drops, exc, what, desc, writer)

    def _after_drop(self, drops: int, exc: BaseException, what: str, desc: Descriptor,
                    writer: BlobWriter) -> None:
        """Back off before resuming a dropped download, or give up past the retries."""
        if drops > self.options.retries:
            raise RegistryError(
                f"The connection to {self.ref.registry} dropped while fetching "
                f"{what} ({_reason(exc)}); {writer.written} of {desc.size} bytes "
                "are kept", url=self.client.url(self._path("blobs", desc.digest)),
                hint="run the same command again to resume") from None
        time.sleep(self.client.backoff(drops - 1))

    def _fetch_ranged(self, desc: Descriptor, writer: BlobWriter, progress: Progress,
                      fixed: int | None, taken: Taken | None = None) -> None:
        """Fetch the missing ranges of a large blob with parallel requests, ``fixed``
        streams or as many as :mod:`sxpm.transport.ranges` finds the link rewards.

        The missing ranges are cut into pieces taken in order, so the completed prefix
        grows about as fast as the bytes arrive and the writer's hashing thread keeps
        up with them. Raises :class:`_NoRangesError` (before writing a byte) when the
        registry answers a range with the whole blob.
        """
        missing = writer.open_ranges()
        progress.update(writer.written)
        if not missing:
            return
        piece = max(BUFFER, self.options.range_piece_bytes // BUFFER * BUFFER)
        if fixed == 1:
            piece = desc.size
        lock = threading.Lock()
        state = {"drops": 0}
        with writer.sink(receivers=fixed or STREAMS_LIMIT) as sink:
            def fetch(piece: Piece, lane: Lane, counted: Progress,
                      opened: Opened | None = None, near_end: NearEnd | None = None) -> None:
                self._fetch_range(desc, writer, sink, lane, counted, piece, run.stop, lock,
                                  state, opened, near_end)

            ahead = Ahead(open=lambda a, b: self._range_request(desc, a, b), fetch=fetch,
                          close=lambda resp: resp.close())
            run = RangedPull(missing, fetch, sink.lane, progress, fixed=fixed, piece=piece,
                             round_trip_s=self.client.fastest_answer_s, ahead=ahead,
                             taken=taken)
            run.run()
        if run.errors:
            first = next((e for e in run.errors if not isinstance(e, _NoRangesError)),
                         run.errors[0])
            if isinstance(first, SizeMismatchError):
                writer.abort(keep_partial=False)
            raise first

    def _fetch_range(self, desc: Descriptor, writer: BlobWriter, sink: Sink, lane: Lane,
                     progress: Progress, piece: Piece, stop: threading.Event,
                     lock: threading.Lock, state: dict[str, int], opened: Opened | None = None,
                     near_end: NearEnd | None = None) -> None:
        """Fetch ``piece`` into ``sink``; a dropped stream resumes where it stopped.

        ``opened`` is the answer to the piece's request, sent ahead; ``near_end`` is
        told the bytes left after each read. Where another stream took over the end of
        the piece, the stream stops there and its answer's connection is closed with
        the rest unread (it cannot carry another request before that rest).
        """
        what = self._what(desc.digest)
        pos = piece.start
        if stop.is_set() and opened is not None:
            with contextlib.suppress(BaseException):
                opened().close()  # sent ahead, never read: back to the pool
        while pos < piece.end and not stop.is_set():
            if opened is not None:
                resp, opened = opened(), None
                b = piece.asked  # the piece as it was when its request went out
            else:
                b = piece.end
                resp = self._range_request(desc, pos, b)
            progress.update(0)  # the answer started: the planner's round trip
            with resp:
                if resp.status_code == 416:  # the blob ends before the range starts
                    ends = resp.headers.get("Content-Range", "").rpartition("/")[2]
                    raise SizeMismatchError(str(desc.digest), desc.size,
                                            int(ends) if ends.isdigit() else pos, where=what)
                got = _content_range(resp.headers.get("Content-Range", ""))
                if resp.status_code == 200 or got is None:
                    if pos == 0 and b == desc.size and resp.status_code == 200:
                        got = (0, desc.size - 1, desc.size)  # the whole blob, as asked
                    else:
                        raise _NoRangesError()
                first, last, total = got
                if total is not None and total != desc.size:
                    raise SizeMismatchError(str(desc.digest), desc.size, total, where=what)
                if first != pos or last != b - 1:
                    raise _NoRangesError()
                readinto = _reader(resp, self._guard())
                if near_end is not None:
                    readinto = _telling(readinto, pos, piece, near_end)
                try:
                    pos = receive(readinto, sink, lane, pos, b, progress, stop, piece.claim)
                    if pos < piece.end and not stop.is_set():
                        raise ConnectionError("the registry ended the range early")
                except _network_errors() as exc:
                    with lock:
                        state["drops"] += 1
                        drops = state["drops"]
                    self._after_drop(drops, exc, what, desc, writer)

    def _range_request(self, desc: Descriptor, a: int, b: int) -> requests.Response:
        return self.client.request("GET", self._path("blobs", desc.digest), scope=self._pull,
                                   what=f"blob {self._what(desc.digest)}", stream=True,
                                   headers={"Range": f"bytes={a}-{b - 1}"},
                                   expect=(200, 206, 416))

    def push_blob(self, desc: Descriptor, store: OCILayout, progress: Progress,
                  mount_from: Sequence[str] = ()) -> bool:
        if self.has_blob(desc.digest):
            return False
        what = f"blob {self._what(desc.digest)}"
        uploads = f"/v2/{self.name}/blobs/uploads/"
        location: str | None = None
        for source in [s for s in mount_from if s != self.name][:3]:
            resp = self.client.request(
                "POST", uploads, scope=f"{self._push} repository:{source}:pull", what=what,
                params={"mount": str(desc.digest), "from": source}, expect=(201, 202),
                body=lambda: b"")
            resp.close()
            if resp.status_code == 201:
                return False
            location = resp.headers.get("Location")
            if location:
                location = urljoin(self.client.url(uploads), location)
                break
        if location is None:
            resp = self.client.request("POST", uploads, scope=self._push, what=what,
                                       expect=(202,), body=lambda: b"")
            resp.close()
            location = resp.headers.get("Location")
            if not location:
                raise RegistryError(f"{self.ref.registry} opened an upload for {what} "
                                    "without a Location", url=self.client.url(uploads))
            location = urljoin(self.client.url(uploads), location)
        self._upload(location, desc, store, progress, what)
        return True

    def _upload(self, location: str, desc: Descriptor, store: OCILayout, progress: Progress,
                what: str) -> None:
        path = str(store.blob_path(desc.digest))
        chunk = self.options.chunk_bytes
        digest = {"digest": str(desc.digest)}
        if desc.size <= chunk:
            bodies: list[_Body] = []

            def monolithic() -> _Body:
                for old in bodies:  # a retried attempt sends everything again
                    progress.update(-old.sent)
                    old.sent = 0
                bodies.append(_Body(path, 0, desc.size, progress))
                return bodies[-1]

            resp = self.client.request(
                "PUT", location, scope=self._push, what=what, body=monolithic, params=digest,
                headers={"Content-Type": "application/octet-stream"}, expect=(201, 204))
            resp.close()
            return
        offset = 0
        failures = 0
        while offset < desc.size:
            length = min(chunk, desc.size - offset)
            body = _Body(path, offset, length, progress)
            try:
                resp = self.client.request(
                    "PATCH", location, scope=self._push, what=what,
                    body=functools.partial(_same, body), retry=False, expect=(202,),
                    headers={"Content-Type": "application/octet-stream",
                             "Content-Range": f"{offset}-{offset + length - 1}"})
            except RegistryError as exc:
                body.close()
                failures += 1
                if failures > self.options.retries or (
                        exc.status is not None and exc.status not in RETRY_STATUS):
                    raise
                progress.update(-body.sent)
                time.sleep(self.client.backoff(failures - 1))
                resumed = self._upload_offset(location, what)
                progress.update(resumed - offset)
                offset = resumed
                continue
            resp.close()
            location = urljoin(location, resp.headers.get("Location") or location)
            offset += length
        resp = self.client.request("PUT", location, scope=self._push, what=what,
                                   params=digest, body=lambda: b"", expect=(201, 204))
        resp.close()

    def _upload_offset(self, location: str, what: str) -> int:
        """Where an interrupted upload session stands (``Range: 0-N`` means N+1 bytes)."""
        resp = self.client.request("GET", location, scope=self._push, what=what,
                                   expect=(204,))
        resp.close()
        match = re.match(r"^(?:bytes=)?0-(\d+)$", resp.headers.get("Range", ""))
        return int(match.group(1)) + 1 if match else 0
