"""Reading an index from a directory or over HTTP(S).

Over HTTP every file goes through ``CacheControl`` (on ``requests``) with a
``FileCache`` under ``$SIMPLEX_HOME/cache/index``: a warm read is one conditional
request (``If-None-Match``) answered ``304 Not Modified``, and ``offline`` reads the
cached copy with no request at all. ``requests`` is imported only for HTTP indexes,
so a search of a local checkout stays fast; and a warm read that CacheControl's
entry answers (a 304, or a fresh entry) does not import it either: see
:mod:`sxpm.index.httpcache`.

Over HTTP every file is read with a byte limit suited to it and an overall deadline
(:data:`FILE_LIMITS`, :data:`DEADLINE_S`), at most :data:`~sxpm.core.http.MAX_REDIRECTS`
redirects. Userinfo in the index URL (``https://user:token@host/``) authenticates the
requests to that host only (``requests`` drops it on a redirect elsewhere) and is
never shown: :attr:`IndexClient.location` and every message use the URL without it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sxpm.core.http import (
    MAX_REDIRECTS,
    BodyTooLargeError,
    Deadline,
    StalledError,
    bound_header_time,
    read_bounded,
    response_socket,
    stall_under,
    strip_userinfo,
)
from sxpm.core.names import normalize_name
from sxpm.core.reference import is_loopback
from sxpm.core.versions import version_key
from sxpm.errors import IndexFormatError, IndexLocationError, IndexUnavailableError
from sxpm.index.format import (
    CATALOG_FILE,
    CONFIG_FILE,
    IndexConfig,
    IndexEntry,
    index_path,
    parse_lines,
)

FILE_LIMITS = {CONFIG_FILE: 1024 * 1024, CATALOG_FILE: 64 * 1024 * 1024}
"""Bytes an index file may have over HTTP, by name; others: :data:`DEFAULT_FILE_LIMIT`."""
DEFAULT_FILE_LIMIT = 16 * 1024 * 1024
"""A name's file: one JSON line per version, 16 MiB is tens of thousands of versions."""
DEADLINE_S = 120.0
"""Seconds one index file may take to arrive in all (each read also times out)."""


@dataclass(frozen=True)
class CatalogRow:
    name: str
    kind: str
    vers: str  # the latest version that is not yanked
    size: int
    description: str
    tags: tuple[str, ...]
    versions: int


def default_cache_dir() -> Path:
    home = os.environ.get("SIMPLEX_HOME")
    root = Path(home).expanduser() if home else Path.home() / ".simplex"
    return root / "cache" / "index"


def is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


class IndexClient:
    """Read-only access to one registry index.

    ``location`` is a directory (a checkout of the index) or an ``http(s)://`` base
    URL. Every method raises :class:`~sxpm.errors.IndexFormatError` (with the file
    and line) for malformed content and :class:`~sxpm.errors.IndexUnavailableError`
    when the index cannot be reached.

    Cost: each method reads at most one file of the index; over HTTP that is one
    conditional request (none with ``offline``). Results are memoised per client,
    so calling ``entries(name)`` repeatedly for the same name is free.
    """

    def __init__(self, location: str | os.PathLike[str], *, offline: bool = False,
                 cache_dir: Path | None = None, insecure: bool = False) -> None:
        text = os.fspath(location)
        if text.startswith("file://"):
            text = text[len("file://"):]
        self.location = strip_userinfo(text)
        self.offline = offline
        self.insecure = insecure
        self.cache_dir = cache_dir or default_cache_dir()
        self._session: Any = None
        self._memo: dict[str, str | None] = {}
        self._config: IndexConfig | None = None
        if is_url(text):
            self.base_url = text if text.endswith("/") else text + "/"
            self.public_url = strip_userinfo(self.base_url)
            parts = urlsplit(self.base_url)
            if parts.scheme == "http" and not insecure and not is_loopback(parts.hostname or ""):
                raise IndexLocationError(
                    f"Index {self.location} is plain HTTP",
                    hint="use https://, or pass --insecure")
            self.root: Path | None = None
        else:
            self.base_url = self.public_url = ""
            self.root = Path(text).expanduser()
            if not self.root.is_dir():
                raise IndexLocationError(f"Index {text} is not a directory or an http(s) URL")

    def __repr__(self) -> str:
        return f"IndexClient({self.location!r})"

    @property
    def is_http(self) -> bool:
        return self.root is None

    def source(self, rel: str) -> str:
        """How a file of the index is named in messages: its path or URL."""
        return str(self.root / rel) if self.root is not None else self.public_url + rel

    # --- raw files ------------------------------------------------------------

    def read_text(self, rel: str) -> str | None:
        """The text of ``rel`` (a path relative to the root), or None when absent."""
        if rel in self._memo:
            return self._memo[rel]
        if self.root is not None:
            try:
                text: str | None = (self.root / rel).read_text(encoding="utf-8")
            except FileNotFoundError:
                text = None
            except UnicodeDecodeError:
                raise IndexFormatError(self.source(rel), None, "not UTF-8 text") from None
        else:
            text = self._fetch(rel)
        self._memo[rel] = text
        return text

    def _fetch(self, rel: str) -> str | None:
        url = self.base_url + rel
        shown = self.public_url + rel
        if self.offline:
            return self._cached(url, shown)
        if self._session is None:
            # Warm path: revalidate CacheControl's entry without importing requests.
            from sxpm.index.httpcache import revalidate

            body = revalidate(url, self.cache_dir, insecure=self.insecure)
            if body is not None:
                return self._decode(body, shown)
        body = self._revalidate_plain(url)
        if body is not None:
            return self._decode(body, shown)
        import requests

        limit = FILE_LIMITS.get(rel, DEFAULT_FILE_LIMIT)
        hint = "check the URL and the network; --offline reads the cached copy"
        try:
            # Streamed, so the body is read here with a limit; CacheControl stores it
            # only once it has been read to its end.
            resp = self._http().get(url, timeout=30, stream=True)
            with resp:
                if resp.status_code == 404:
                    return None
                if resp.status_code != 200:
                    raise IndexUnavailableError(
                        f"The index answered {resp.status_code} for {shown}", url=shown,
                        status=resp.status_code)
                length = resp.headers.get("Content-Length", "")
                if length.isdigit() and int(length) > limit:
                    raise BodyTooLargeError(limit)
                with Deadline(DEADLINE_S, lambda: response_socket(resp)) as deadline:
                    try:
                        body = read_bounded(resp.iter_content(65536), limit)
                    except (requests.RequestException, OSError):
                        if deadline.fired:
                            raise StalledError(f"it took over {DEADLINE_S:g} s") from None
                        raise
        except requests.TooManyRedirects:
            raise IndexUnavailableError(
                f"The index redirected {shown} more than {MAX_REDIRECTS} times (a redirect "
                "loop)", url=shown, hint="check the index URL; report the loop to the "
                "index's operators") from None
        except BodyTooLargeError:
            raise IndexUnavailableError(
                f"The index file {shown} is over {limit // (1024 * 1024)} MiB; reading "
                "stopped", url=shown, hint="check the index URL; an index file this large "
                "is refused by design") from None
        except StalledError as exc:
            raise IndexUnavailableError(f"Reading {shown} stalled: {exc}", url=shown,
                                        hint=hint) from None
        except (requests.RequestException, OSError) as exc:
            stall = stall_under(exc)
            raise IndexUnavailableError(
                f"Cannot reach the index at {shown}: {stall or exc.__class__.__name__}",
                url=shown,
                hint=hint) from None
        self._remember_plain(url, body, resp.headers)
        return self._decode(body, shown)

    # A server that sends no ETag (Last-Modified alone, or nothing): CacheControl keeps
    # nothing, so sxpm.index.plaincache does (revalidated by date, else content hash).
    def _revalidate_plain(self, url: str) -> bytes | None:
        from sxpm.index.plaincache import revalidate

        return revalidate(url, self.cache_dir, insecure=self.insecure)

    def _remember_plain(self, url: str, body: bytes, headers: Any) -> None:
        from sxpm.index.plaincache import remember

        remember(self.cache_dir, url, body, {str(k).lower(): str(v) for k, v in headers.items()})

    @staticmethod
    def _decode(body: bytes, shown: str) -> str:
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            raise IndexFormatError(shown, None, "not UTF-8 text") from None

    def _http(self) -> Any:
        if self._session is None:
            import requests
            from cachecontrol import CacheControl
            from cachecontrol.caches.file_cache import FileCache

            self.cache_dir.mkdir(parents=True, exist_ok=True)
            session = requests.Session()
            session.headers["User-Agent"] = "sxpm-index"
            session.verify = not self.insecure
            session.max_redirects = MAX_REDIRECTS
            self._session = bound_header_time(
                CacheControl(session, cache=FileCache(str(self.cache_dir))), DEADLINE_S)
        return self._session

    def _cached(self, url: str, shown: str) -> str | None:
        """The cached body of ``url`` without any request (offline mode)."""
        from sxpm.index.httpcache import read_offline

        found, body = read_offline(url, self.cache_dir)
        if found:
            return None if body is None else self._decode(body, shown)
        from sxpm.index.plaincache import read_offline as read_plain

        body = read_plain(self.cache_dir, url)
        if body is not None:
            return self._decode(body, shown)
        import requests
        from cachecontrol.caches.file_cache import FileCache
        from cachecontrol.controller import CacheController

        cache = FileCache(str(self.cache_dir))
        controller = CacheController(cache)
        request = requests.Request("GET", url).prepare()
        data = cache.get(controller.cache_url(url))
        response = controller.serializer.loads(request, data) if data else None
        if response is None:
            raise IndexUnavailableError(
                f"{shown} is not in the cache (offline)", url=shown,
                hint="run the command once without --offline to fill the cache")
        if response.status == 404:
            return None
        return self._decode(bytes(response.read()), shown)

    def _json(self, rel: str) -> Any:
        text = self.read_text(rel)
        if text is None:
            return None
        try:
            return json.loads(text)
        except ValueError as exc:
            raise IndexFormatError(self.source(rel), getattr(exc, "lineno", None),
                                   f"not valid JSON ({getattr(exc, 'msg', exc)})") from None

    # --- the API the resolver and the CLI use ------------------------------------

    def config(self) -> IndexConfig:
        """The index's ``config.json`` (default and allowed registries)."""
        if self._config is None:
            obj = self._json(CONFIG_FILE)
            if obj is None:
                raise IndexLocationError(
                    f"{self.source(CONFIG_FILE)} does not exist: {self.location} is not an "
                    f"sxpm index", hint="point --index at the root of a registry index")
            self._config = IndexConfig.from_dict(obj, self.source(CONFIG_FILE))
        return self._config

    def entries(self, name: str) -> list[IndexEntry]:
        """Every published version of ``name``, lowest version first, yanked included.

        ``name`` is compared normalised (case, ``_``/``-``). An unknown name gives
        ``[]``. Lines are checked against the schema and the config's registries, and
        every line must carry the file's name exactly as its first line spells it: a
        ``Foo_Bar`` line in ``foo-bar``'s file is another publisher's name, refused.
        """
        rel = index_path(name)
        text = self.read_text(rel)
        if text is None:
            return []
        source = self.source(rel)
        found = parse_lines(text, source=source)
        wanted = normalize_name(name)
        config = self.config()
        out = []
        for number, entry in enumerate(found, 1):
            problem = config.ref_problem(entry.ref)
            if problem is not None:
                raise IndexFormatError(source, number, problem)
            if normalize_name(entry.name) != wanted or entry.name != found[0].name:
                raise IndexFormatError(source, number, f"the line names {entry.name!r}, "
                                       f"not {found[0].name!r}, the name of this file",
                                       hint="names that differ only in case or _/- are "
                                            "one name; the index must be fixed")
            out.append(entry)
        out.sort(key=lambda e: version_key(e.vers))
        return out

    def entry(self, name: str, version: str | None = None) -> IndexEntry:
        """One version of ``name`` (default: the latest not yanked)."""
        from sxpm.errors import NotFoundError
        from sxpm.index.format import latest

        found = self.entries(name)
        if not found:
            raise NotFoundError(f"No {name!r} in the index {self.location}",
                                hint="`sxpm search` finds names")
        if version is None:
            chosen = latest(found) or latest(found, include_yanked=True)
            assert chosen is not None
            return chosen
        for entry in found:
            if entry.vers == version or entry.vers.split("+")[0] == version:
                return entry
        raise NotFoundError(f"{name} has no version {version} in the index",
                            hint=f"versions: {', '.join(e.vers for e in found)}")

    def names(self) -> list[str]:
        """Every name with a version not yanked (from ``search.json``; one file read)."""
        return [row[0] for row in self.catalog_rows()]

    def search_catalog(self) -> list[CatalogRow]:
        """The rows of ``search.json``, one per name (empty when the file is absent)."""
        return [CatalogRow(r[0], r[1], r[2], r[3], r[4], tuple(r[5]), r[6])
                for r in self.catalog_rows()]

    def catalog_rows(self) -> list[Any]:
        """``search.json`` rows as raw arrays (fields in ``CATALOG_FIELDS`` order)."""
        from sxpm.index.search import load_catalog_rows

        text = self.read_text(CATALOG_FILE)
        return [] if text is None else load_catalog_rows(text, self.source(CATALOG_FILE))

    def search(self, query: str, *, kind: str | None = None, limit: int | None = 20,
               category: str | None = None) -> list[Any]:
        """Ranked :class:`~sxpm.index.search.Hit` objects for ``query`` (one file read)."""
        from sxpm.index.search import search_text

        text = self.read_text(CATALOG_FILE)
        if text is None:
            return []
        return search_text(text, query, kind=kind, limit=limit,
                           source=self.source(CATALOG_FILE), category=category)
