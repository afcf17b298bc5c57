"""The index cache for answers CacheControl does not keep: no ETag, no max-age.

A plain static host (an S3 bucket, ``python -m http.server``, nginx with ``etag off``)
sends ``Last-Modified`` or nothing at all. CacheControl stores neither, so without
this module such an index is fetched whole every time and ``--offline`` finds nothing.
Here each such file is kept as its body and a small record (its URL, its
``Last-Modified``, the SHA-256 of the body), and revalidated:

* with ``Last-Modified``: ``If-Modified-Since``; a ``304`` serves the cached body;
* with neither validator: the file is fetched again and its content hash compared
  with the record's; the cache then holds what the server has now, and the
  revalidation costs one full (small) response, which is all such a host allows.

A body is kept only after its hash is written into the record (body first, record
last, each replaced atomically), and a body that does not match its record's hash
is ignored, so an interrupted write is never served. Requests go over ``http.client``
(the warm path imports neither ``requests`` nor CacheControl); anything unusual
(a redirect, an error, an answer that now carries an ETag) returns "not handled" and
the caller takes the ``requests`` path.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from sxpm.index.httpcache import TIMEOUT, USER_AGENT, _environment_allows, _tls_context, cache_key

# An index file is a few kilobytes; a search catalogue a few megabytes. A server that
# sends more is not an index, and its body is not kept.
MAX_BODY = 64 * 1024 * 1024
_DIR = "plain"


def _paths(cache_dir: Path, url: str) -> tuple[Path, Path]:
    hashed = hashlib.sha256(url.encode()).hexdigest()
    base = cache_dir / _DIR / hashed[:2]
    return base / f"{hashed}.json", base / f"{hashed}.body"


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _read(cache_dir: Path, url: str) -> tuple[dict[str, Any], bytes] | None:
    """The record and body kept for ``url``, when both are there and agree."""
    record_path, body_path = _paths(cache_dir, url)
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        body = body_path.read_bytes()
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("url") != url:
        return None
    if record.get("sha256") != hashlib.sha256(body).hexdigest():
        return None  # a body replaced after its record: not what the record vouches for
    return record, body


def needs_plain(headers: dict[str, str]) -> bool:
    """Whether an answer with ``headers`` (names lower-case) is one CacheControl does
    not keep, so this cache must."""
    if "etag" in headers:
        return False
    cache_control = headers.get("cache-control", "")
    if "no-store" in cache_control:
        return False
    kept_by_age = "date" in headers and ("max-age" in cache_control or "expires" in headers)
    return not kept_by_age


def remember(cache_dir: Path, url: str, body: bytes, headers: dict[str, str]) -> None:
    """Keep ``body`` for ``url`` when CacheControl does not (see :func:`needs_plain`)."""
    if not needs_plain(headers) or len(body) > MAX_BODY:
        return
    record = {"url": url, "sha256": hashlib.sha256(body).hexdigest(),
              "last-modified": headers.get("last-modified")}
    record_path, body_path = _paths(cache_dir, url)
    try:
        _write(body_path, body)
        _write(record_path, json.dumps(record).encode())
    except OSError:
        return  # a cache that cannot be written is only slower


def read_offline(cache_dir: Path, url: str) -> bytes | None:
    """The kept body of ``url``, without a request; None when there is none."""
    found = _read(cache_dir, url)
    return None if found is None else found[1]


def revalidate(url: str, cache_dir: Path, *, insecure: bool = False) -> bytes | None:
    """The current body of ``url`` when a kept copy could be revalidated (by
    ``Last-Modified``, else by content hash); None when the caller must fetch it."""
    found = _read(cache_dir, url)
    key = cache_key(url)
    if found is None or key is None or not _environment_allows(key.partition(":")[0]):
        return None
    record, body = found
    answer = _get(url, record.get("last-modified"), insecure)
    if answer is None:
        return None
    status, headers, fresh = answer
    if status == 304:
        return body
    if status != 200 or fresh is None or not needs_plain(headers):
        return None  # CacheControl's path keeps answers with validators
    if hashlib.sha256(fresh).hexdigest() != record.get("sha256") \
            or headers.get("last-modified") != record.get("last-modified"):
        remember(cache_dir, url, fresh, headers)
    return fresh


def _get(url: str, last_modified: str | None, insecure: bool
         ) -> tuple[int, dict[str, str], bytes | None] | None:
    """One GET of ``url`` (conditional on ``last_modified``): status, headers (lower-
    case names) and body (None for a 304); None when it fails or is too large."""
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
    except (ImportError, OSError):
        return None
    headers = {"User-Agent": USER_AGENT, "Accept": "*/*", "Accept-Encoding": "identity"}
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    try:
        conn.request("GET", parts.path, headers=headers)
        answer = conn.getresponse()
        got = {k.lower(): v for k, v in answer.getheaders()}
        if answer.status != 200:
            answer.read(0)
            return answer.status, got, None
        body = answer.read(MAX_BODY + 1)
        if len(body) > MAX_BODY:
            return None
        return answer.status, got, body
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()
