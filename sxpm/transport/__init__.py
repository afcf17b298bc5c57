"""The one interface every registry is reached through.

A :class:`Repository` is one repository of one registry: a directory holding an
OCI image layout (:mod:`sxpm.transport.layout`, the embedded registry) or a
repository of an OCI distribution registry (:mod:`sxpm.transport.remote`). The
operations above it (:mod:`sxpm.distribution`) never know which.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from sxpm.layout import BlobWriter, OCILayout
from sxpm.oci import Descriptor
from sxpm.progress import Progress
from sxpm.reference import Digest, Reference


@dataclass(frozen=True)
class TransportOptions:
    insecure: bool = False
    """Allow plain HTTP and unverified TLS for non-loopback hosts."""
    jobs: int = 4
    """Parallel transfers."""


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
    def fetch_blob(self, desc: Descriptor, writer: BlobWriter, progress: Progress) -> None:
        """Stream a blob into ``writer``, starting at ``writer.offset`` (resume).

        The writer hashes and checks; this only moves bytes.
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


def open_repository(ref: Reference, options: TransportOptions | None = None) -> Repository:
    options = options or TransportOptions()
    if ref.is_layout:
        from sxpm.transport.layout import LayoutRepository

        return LayoutRepository(ref)
    from sxpm.transport.remote import RemoteRepository

    return RemoteRepository(ref, options)
