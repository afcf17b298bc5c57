"""Warm reads of an HTTP index straight from CacheControl's cache.

Over HTTP the index is cached by ``CacheControl`` (on ``requests``) in a
``FileCache``. Importing ``requests`` and ``CacheControl`` costs more than a whole
warm ``sxpm search`` may take, so a warm read first looks at CacheControl's entry
itself and revalidates it with one conditional request over ``http.client``:

* the entry is read where ``FileCache`` keeps it (the SHA-224 of the normalised URL,
  split into five directory levels) and decoded as CacheControl's serializer writes
  it (``cc=4,`` then msgpack);
* an entry CacheControl would serve without a request (fresh by ``max-age`` or
  ``Expires``) is served without one;
* otherwise ``If-None-Match`` (and ``If-Modified-Since``) go out as CacheControl
  would send them; a ``304 Not Modified`` serves the cached body and refreshes the
  entry's headers the way CacheControl does on a 304.

Anything else gives ``None`` and the caller takes the full CacheControl path: no
entry, an entry this reader does not handle (``Vary``, a compressed body, a status
other than 200), a proxy or netrc credentials from the environment (which
``requests`` would use), a changed file (``200``), a redirect, an error. So the cache
keeps CacheControl's format and semantics, and every response that changes it is
handled by CacheControl itself; a changed file costs one extra conditional request.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path
from typing import Any

USER_AGENT = "sxpm-index"
TIMEOUT = 30
_PREFIX = b"cc=4,"
# Plain URLs only: for these, requests' prepared URL equals the text, so the cache
# key is CacheControl's. Anything fancier (userinfo, query, escapes, IDNA) falls back.
_SIMPLE_URL = re.compile(r"^(https?)://([A-Za-z0-9.\-]+(?::\d+)?)(/[A-Za-z0-9._~/\-]*)$",
                         re.IGNORECASE)
_PROXY_VARS = {"http": ("http_proxy", "all_proxy"), "https": ("https_proxy", "all_proxy")}


def cache_key(url: str) -> str | None:
    """CacheControl's cache key (its normalised URL) for a plain URL, else None."""
    match = _SIMPLE_URL.match(url)
    if match is None:
        return None
    scheme, authority, path = match.groups()
    if any(part in (".", "..") for part in path.split("/")):
        return None
    return f"{scheme.lower()}://{authority.lower()}{path}"


def entry_path(cache_dir: Path, key: str) -> Path:
    """Where ``FileCache`` stores the entry of ``key``."""
    hashed = hashlib.sha224(key.encode()).hexdigest()
    return cache_dir.joinpath(*hashed[:5], hashed)


def _environment_allows(scheme: str) -> bool:
    """False when the environment changes what requests would do (a proxy for
    ``scheme``, netrc credentials): then only requests itself makes the request."""
    proxies = _PROXY_VARS.get(scheme.lower(), ())
    if any(k.lower() in proxies and v for k, v in os.environ.items()):
        return False
    if os.environ.get("NETRC"):
        return False
    home = Path.home()
    return not ((home / ".netrc").exists() or (home / "_netrc").exists())


def _load(path: Path) -> dict[str, Any] | None:
    """The entry as CacheControl's serializer wrote it, if this reader can use it."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if not data.startswith(_PREFIX):
        return None
    try:
        import msgpack

        cached = msgpack.loads(data[len(_PREFIX):], raw=False)
    except (ImportError, ValueError):
        return None
    if not isinstance(cached, dict) or cached.get("vary"):
        return None
    response = cached.get("response")
    if not isinstance(response, dict) or not isinstance(response.get("body"), bytes) \
            or not isinstance(response.get("headers"), dict):
        return None
    headers = {str(k).lower(): str(v) for k, v in response["headers"].items()}
    if headers.get("content-encoding", "identity").lower() != "identity":
        return None  # the body is stored as sent: let urllib3 decode it
    return cached


def _lower(headers: dict[str, Any]) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in headers.items()}


def _max_age(cache_control: str) -> int | None:
    """The ``max-age`` of a Cache-Control header, read as CacheControl reads it."""
    value: int | None = None
    for directive in cache_control.split(","):
        name, _, arg = directive.partition("=")
        if name.strip() == "max-age":
            try:
                value = int(arg.strip())
            except ValueError:
                pass
    return value


def is_fresh(headers: dict[str, str], now: float | None = None) -> bool:
    """Whether CacheControl would serve a response with ``headers`` without a request."""
    import calendar
    from email.utils import parsedate_tz

    if "date" not in headers:
        return False
    parsed = parsedate_tz(headers["date"])
    if parsed is None:
        return False
    date = calendar.timegm(parsed[:6])
    current_age = max(0.0, (time.time() if now is None else now) - date)
    lifetime = 0
    max_age = _max_age(headers.get("cache-control", ""))
    if max_age is not None:
        lifetime = max_age
    elif "expires" in headers:
        expires = parsedate_tz(headers["expires"])
        if expires is not None:
            lifetime = max(0, calendar.timegm(expires[:6]) - date)
    return lifetime > current_age


def read_offline(url: str, cache_dir: Path) -> tuple[bool, bytes | None]:
    """``(True, body)`` from the cache with no request (``body`` None for a cached 404),
    or ``(False, None)`` when the caller must use CacheControl's reader."""
    key = cache_key(url)
    cached = _load(entry_path(cache_dir, key)) if key else None
    if cached is None:
        return False, None
    if cached["response"].get("status") == 404:
        return True, None
    return True, bytes(cached["response"]["body"])


def revalidate(url: str, cache_dir: Path, *, insecure: bool = False) -> bytes | None:
    """The cached body of ``url`` when it is still valid, else None (see the module)."""
    key = cache_key(url)
    if key is None or not _environment_allows(key.partition(":")[0]):
        return None
    path = entry_path(cache_dir, key)
    cached = _load(path)
    if cached is None or cached["response"].get("status") != 200:
        return None
    response = cached["response"]
    headers = _lower(response["headers"])
    if "etag" not in headers:
        return None
    if is_fresh(headers):
        return bytes(response["body"])
    fresh = _conditional_get(url, headers, insecure)
    if fresh is None:
        return None
    _store_304(path, cached, fresh)
    return bytes(response["body"])


def _conditional_get(url: str, cached: dict[str, str], insecure: bool
                     ) -> list[tuple[str, str]] | None:
    """Headers of a ``304`` answer to a conditional GET of ``url``, else None."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn: http.client.HTTPConnection
    try:
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(parts.netloc, timeout=TIMEOUT,
                                               context=_tls_context(insecure))
        else:
            conn = http.client.HTTPConnection(parts.netloc, timeout=TIMEOUT)
    except (ImportError, OSError):  # no ssl module, or an unreadable CA bundle
        return None
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate",
               "Accept": "*/*", "If-None-Match": cached["etag"]}
    if "last-modified" in cached:
        headers["If-Modified-Since"] = cached["last-modified"]
    try:
        conn.request("GET", parts.path, headers=headers)
        answer = conn.getresponse()
        if answer.status != 304:
            return None
        answer.read()
        return answer.getheaders()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def _tls_context(insecure: bool) -> Any:
    import ssl

    if insecure:  # as requests' verify=False: no certificate or host name checks
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    # The bundle requests verifies against: its environment variables, else certifi's.
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle and os.path.isdir(bundle):
        return ssl.create_default_context(capath=bundle)
    if not bundle:
        import certifi

        bundle = certifi.where()
    return ssl.create_default_context(cafile=bundle)


def _store_304(path: Path, cached: dict[str, Any], headers: list[tuple[str, str]]) -> None:
    """Refresh the entry's headers from a 304, as CacheControl's update does."""
    if any(k.lower() == "vary" for k, _v in headers):
        return  # CacheControl would recompute Vary from its own request: leave it be
    merged = dict(cached["response"]["headers"])
    for name, value in headers:
        if name.lower() == "content-length":
            continue
        for old in [k for k in merged if k.lower() == name.lower()]:
            del merged[old]
        merged[name] = value
    cached["response"]["headers"] = merged
    cached["response"]["status"] = 200
    try:
        import msgpack

        data = _PREFIX + msgpack.dumps(cached, use_bin_type=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, path)  # atomic, as FileCache writes: readers see old or new
        finally:
            if tmp.exists():
                tmp.unlink()
    except (ImportError, OSError, ValueError):
        return  # the entry stays as it was: still valid, only its headers are older
