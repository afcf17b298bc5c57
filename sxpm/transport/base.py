"""The interface every registry is reached through, and the referrers tag schema.

A :class:`Repository` is one repository of one registry: a directory holding an
OCI image layout (:mod:`sxpm.transport.layout`, the embedded registry) or a
repository of an OCI distribution registry (:mod:`sxpm.transport.remote`). The
operations above it (:mod:`sxpm.ops.transfer`) never know which.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sxpm.core.oci import Descriptor, ImageIndex, Manifest, parse_manifest_bytes
from sxpm.core.progress import Progress
from sxpm.core.reference import Digest, Reference
from sxpm.errors import NotFoundError
from sxpm.store.layout import BlobWriter, OCILayout

Taken = Callable[[], None]
"""Told once every byte of a blob has been asked for (see :meth:`Repository.fetch_blob`)."""


@dataclass(frozen=True)
class TransportOptions:
    insecure: bool = False
    """Allow plain HTTP and unverified TLS for non-loopback hosts."""
    jobs: int = 4
    """Parallel transfers."""
    retries: int = 6
    """Attempts after the first, for 429/5xx answers and dropped connections."""
    backoff_s: float = 0.5
    """First wait between attempts; doubled each time, with jitter, at most 30 s."""
    retry_max_s: float = 120.0
    """No retry starts after this many seconds spent on one request."""
    timeout_s: float = 60.0
    """Seconds without a byte from the registry before a read gives up."""
    chunk_bytes: int = 64 * 1024 * 1024
    """Uploads larger than this go in PATCH chunks of this size."""
    range_min_bytes: int = 64 * 1024 * 1024
    """Blobs of at least this size are pulled by several streams of HTTP ranges."""
    range_piece_bytes: int = 64 * 1024 * 1024
    """The size of one ranged request (the streams take pieces in order). Each request
    costs the registry and the client a few milliseconds of CPU: 64 MiB pieces pulled
    a 1 GiB blob about 15% faster than 16 MiB ones (docs/benchmarks.md)."""
    mirrors: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """Mirror hosts per registry host, tried in order before it (a project's
    ``[registries.mirrors]``; the home's ``config.json`` ``mirrors`` are added after)."""
    range_streams: int = 0
    """Streams per large blob; 0 decides: one from a loopback registry, else the
    ``jobs`` shared among the large blobs, at most the CPUs (at least 2)."""
    stall_bytes: int = 64 * 1024
    """A streamed blob that brings fewer bytes than this in ``stall_window_s`` seconds
    has stalled: it is cut and resumed like a dropped connection (a server dripping a
    byte now and then never trips the read timeout)."""
    stall_window_s: float = 30.0
    """The window of ``stall_bytes``."""
    deadline_s: float = 120.0
    """Seconds a body read whole (manifest, tag list page, token, referrers, error
    body) may take in all, per attempt; and the status line and headers of any answer."""


class Repository(ABC):
    """One repository: tags, manifests and blobs."""

    def __init__(self, ref: Reference) -> None:
        self.ref = ref.with_tag(None).with_digest(None)

    def __str__(self) -> str:
        return self.ref.locator

    @abstractmethod
    def get_manifest(self, reference: str) -> tuple[Descriptor, bytes]:
        """The manifest (or index) at a tag or digest: its descriptor and raw bytes.

        The descriptor's digest is computed from the bytes; when ``reference`` is a
        digest, implementations raise if the bytes do not match it.
        """

    @abstractmethod
    def has_blob(self, digest: Digest) -> bool: ...

    @abstractmethod
    def fetch_blob(self, desc: Descriptor, writer: BlobWriter, progress: Progress,
                   streams: int = 1, taken: Taken | None = None) -> None:
        """Stream a blob into ``writer``, starting at ``writer.offset`` (resume).

        The writer hashes and checks; this only moves bytes. ``streams`` > 1 lets a
        large blob come in that many parallel ranged streams, where the source can.
        ``taken``, where given, may be called once every byte has been asked for,
        before the last ones arrive (the caller may start the next blob then).
        """

    @abstractmethod
    def push_blob(self, desc: Descriptor, store: OCILayout, progress: Progress,
                  mount_from: Sequence[str] = ()) -> bool:
        """Upload a blob from ``store`` unless present; False when nothing was sent."""

    @abstractmethod
    def push_manifest(self, desc: Descriptor, data: bytes, tag: str | None) -> None: ...

    @abstractmethod
    def tags(self) -> list[str]: ...

    @abstractmethod
    def referrers(self, subject: Digest, artifact_type: str | None = None) -> list[Descriptor]:
        """Manifests whose ``subject`` is ``subject``."""


# --- referrers: the tag schema shared by every registry without the referrers API ---


def referrers_tag(subject: Digest) -> str:
    """The fallback tag listing the referrers of ``subject``: ``sha256-<hex>``."""
    return f"{subject.algorithm}-{subject.hex}"


def read_referrers_fallback(repo: Repository, subject: Digest,
                            artifact_type: str | None = None) -> list[Descriptor]:
    """Referrers of ``subject`` from the image index at its fallback tag."""
    try:
        _, data = repo.get_manifest(referrers_tag(subject))
    except NotFoundError:
        return []
    index = parse_manifest_bytes(data, f"{repo.ref.locator}:{referrers_tag(subject)}")
    if not isinstance(index, ImageIndex):
        return []
    return [d for d in index.manifests
            if artifact_type is None or d.artifact_type == artifact_type]


def update_referrers_fallback(repo: Repository, desc: Descriptor, data: bytes) -> None:
    """After pushing a manifest with a ``subject``, add it to the subject's fallback index.

    A read-modify-write of one tag: two writers racing may drop one entry, which the
    next push of that referrer restores (the OCI spec accepts the same limitation).
    """
    obj = parse_manifest_bytes(data, f"{repo.ref.locator}@{desc.digest}")
    if obj.subject is None:
        return
    artifact_type = obj.artifact_type
    if artifact_type is None and isinstance(obj, Manifest):
        artifact_type = obj.config.media_type
    entry = Descriptor(obj.media_type, desc.digest, desc.size, dict(obj.annotations),
                       artifact_type)
    current = read_referrers_fallback(repo, obj.subject.digest)
    if any(d.digest == desc.digest for d in current):
        return
    index = ImageIndex((*current, entry))
    repo.push_manifest(index.descriptor(), index.to_bytes(), referrers_tag(obj.subject.digest))
