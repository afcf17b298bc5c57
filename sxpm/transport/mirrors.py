"""Mirrors: other hosts tried, in order, before a registry (containerd's ``hosts.toml``).

A mirror may be a pull-through cache (Debian's ``docker-registry`` with
``proxy.remoteurl``), another home's ``sxpm store serve``, or a plain copy; it serves
the same repository paths as the registry it mirrors. Reads (manifests, blobs, tags,
referrers) go to the first mirror that answers and fall back to the next and then
to the registry itself; writes go to the registry only. Every manifest and blob is
checked against its digest whoever served it, so a lock records the registry's
reference and stays the same whichever host served the bytes. Each mirror host has
its own credentials (Docker's ``config.json``, by host), as any registry.

Configured in the home's ``config.json``::

    {"mirrors": {"registry.example.org": ["lab-box:5000", "cache.internal"]}}

and in a project's ``simplex.toml`` (tried before the home's)::

    [registries.mirrors]
    "registry.example.org" = ["lab-box:5000"]
"""

from __future__ import annotations

import dataclasses
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from sxpm.core.oci import Descriptor
from sxpm.core.progress import Progress
from sxpm.core.reference import Digest, Reference, is_loopback
from sxpm.errors import ManifestError, SxpmError
from sxpm.home import Home
from sxpm.store.layout import BlobWriter, OCILayout
from sxpm.transport.base import Repository, Taken, TransportOptions

T = TypeVar("T")


def _hosts(value: object, where: str) -> dict[str, tuple[str, ...]]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
            isinstance(v, list) and all(isinstance(m, str) and m for m in v)
            for v in value.values()):
        raise ManifestError(where, "mirrors must map a registry host to a list of hosts",
                            hint='write {"registry.example.org": ["mirror:5000"]}')
    return {str(k): tuple(_host(m) for m in v) for k, v in value.items()}


def _host(text: str) -> str:
    return text.strip().removeprefix("https://").removeprefix("http://").rstrip("/")


def configured(home: Home, options: TransportOptions) -> dict[str, tuple[str, ...]]:
    """Mirror hosts per registry host: the options' (a project's) first, then the home's."""
    out: dict[str, list[str]] = {}
    sources = [dict(options.mirrors),
               _hosts(home.config().get("mirrors"), str(home.config_path))]
    for table in sources:
        for host, mirrors in table.items():
            listed = out.setdefault(host, [])
            listed += [m for m in mirrors if m not in listed and m != host]
    return {k: tuple(v) for k, v in out.items() if v}


def as_option(table: dict[str, list[str]]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """A ``[registries.mirrors]`` table as :attr:`TransportOptions.mirrors`."""
    return tuple(sorted((host, tuple(_host(m) for m in mirrors))
                        for host, mirrors in table.items()))


class MirroredRepository(Repository):
    """Reads from each of ``mirrors`` in order, then from ``upstream``; writes to
    ``upstream`` only. The reference stays the upstream's."""

    def __init__(self, upstream: Repository, mirrors: Sequence[Repository]) -> None:
        super().__init__(upstream.ref)
        self.upstream = upstream
        self.mirrors = list(mirrors)
        self.served_by: str | None = None
        """The host that answered the last read (for messages and tests)."""

    def _first(self, call: Callable[[Repository], T]) -> T:
        errors: list[SxpmError] = []
        for repo in [*self.mirrors, self.upstream]:
            try:
                result = call(repo)
            except SxpmError as exc:
                errors.append(exc)
                continue
            self.served_by = repo.ref.registry
            return result
        raise errors[-1]  # the upstream's own error says most

    def get_manifest(self, reference: str) -> tuple[Descriptor, bytes]:
        return self._first(lambda r: r.get_manifest(reference))

    def has_blob(self, digest: Digest) -> bool:
        for repo in [*self.mirrors, self.upstream]:
            try:
                if repo.has_blob(digest):
                    return True
            except SxpmError:
                continue
        return False

    def fetch_blob(self, desc: Descriptor, writer: BlobWriter, progress: Progress,
                   streams: int = 1, taken: Taken | None = None) -> None:
        # A mirror that fails mid-blob leaves verified-later bytes on disk: the next
        # host resumes after them (same digest, same bytes), and the writer's digest
        # check at commit catches any host that sent others.
        def fetch(repo: Repository) -> None:
            before = writer.written
            try:
                repo.fetch_blob(desc, writer, progress, streams, taken)
            except SxpmError:
                progress.update(-(writer.written - before))
                raise

        self._first(fetch)

    def push_blob(self, desc: Descriptor, store: OCILayout, progress: Progress,
                  mount_from: Sequence[str] = ()) -> bool:
        return self.upstream.push_blob(desc, store, progress, mount_from)

    def push_manifest(self, desc: Descriptor, data: bytes, tag: str | None) -> None:
        self.upstream.push_manifest(desc, data, tag)

    def tags(self) -> list[str]:
        return self._first(lambda r: r.tags())

    def referrers(self, subject: Digest, artifact_type: str | None = None) -> list[Descriptor]:
        return self._first(lambda r: r.referrers(subject, artifact_type))


def wrap(ref: Reference, upstream: Repository, options: TransportOptions,
         home: Home | None = None) -> Repository:
    """``upstream`` behind the mirrors configured for its host, if any."""
    if ref.is_layout:
        return upstream
    mirrors = configured(home or Home.from_env(), options).get(ref.registry, ())
    if not mirrors:
        return upstream
    from sxpm.transport.remote import RemoteRepository

    return MirroredRepository(upstream, [
        RemoteRepository(dataclasses.replace(ref, registry=m), options) for m in mirrors])


@dataclass(frozen=True)
class MirrorStatus:
    registry: str
    mirror: str
    answers: bool
    detail: str

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def check(home: Home, options: TransportOptions | None = None, timeout_s: float = 3.0
          ) -> list[MirrorStatus]:
    """Whether each configured mirror answers ``GET /v2/`` (200, or 401 asking for
    credentials, both mean a registry is there)."""
    out = []
    for registry, mirrors in sorted(configured(home, options or TransportOptions()).items()):
        for mirror in mirrors:
            scheme = "http" if is_loopback(mirror) else "https"
            try:
                with urllib.request.urlopen(f"{scheme}://{mirror}/v2/", timeout=timeout_s) as r:
                    out.append(MirrorStatus(registry, mirror, True, f"HTTP {r.status}"))
            except urllib.error.HTTPError as exc:
                out.append(MirrorStatus(registry, mirror, exc.code == 401, f"HTTP {exc.code}"))
            except (OSError, ValueError) as exc:
                reason = getattr(exc, "reason", exc)
                out.append(MirrorStatus(registry, mirror, False, str(reason)))
    return out
