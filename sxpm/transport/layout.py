"""The embedded registry: one OCI image layout directory per repository.

``oci:./registry/tiny-llama`` is the layout at ``./registry/tiny-llama``; its tags
are the ``org.opencontainers.image.ref.name`` annotations of ``index.json``, as
``oras --oci-layout`` writes them. No server is involved.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from sxpm.core.oci import MAX_MANIFEST_BYTES, Descriptor, digest_of, parse_manifest_bytes
from sxpm.core.progress import Progress
from sxpm.core.reference import Digest, Reference
from sxpm.errors import CorruptBlobError, NotFoundError, SizeMismatchError
from sxpm.store.layout import BlobWriter, OCILayout
from sxpm.store.sink import receive
from sxpm.transport.base import (
    Repository,
    Taken,
    read_referrers_fallback,
    update_referrers_fallback,
)


class LayoutRepository(Repository):
    def __init__(self, ref: Reference) -> None:
        super().__init__(ref)
        self.layout = OCILayout(ref.repository)

    def _missing(self, what: str) -> NotFoundError:
        return NotFoundError(f"{what} not found in {self.ref.locator}",
                             hint="check the reference; `sxpm list` shows what is stored")

    def get_manifest(self, reference: str) -> tuple[Descriptor, bytes]:
        if not self.layout.exists():
            raise self._missing("Repository")
        if ":" in reference:  # a digest (a tag has no colon)
            digest = Digest.parse(reference)
            if not self.layout.has_blob(digest):
                raise self._missing(f"Manifest {digest}")
            size = self.layout.blob_size(digest)
            media_type = "application/vnd.oci.image.manifest.v1+json"
        else:
            found = self.layout.resolve(reference)
            if found is None:
                raise self._missing(f"Tag {reference!r}")
            digest, size, media_type = found.digest, found.size, found.media_type
        if size > MAX_MANIFEST_BYTES:
            raise CorruptBlobError(str(digest), f"a manifest of {size} bytes (over 4 MiB)",
                                   where=self.ref.locator)
        with self.layout.open_blob(digest) as fh:
            data = fh.read(MAX_MANIFEST_BYTES + 1)
        actual = digest_of(data, digest.algorithm)
        if actual != digest:
            raise CorruptBlobError(str(digest), str(actual), where=self.ref.locator)
        media_type = parse_manifest_bytes(data, f"{self.ref.locator}@{digest}").media_type
        return Descriptor(media_type, digest, len(data)), data

    def has_blob(self, digest: Digest) -> bool:
        return self.layout.has_blob(digest)

    def fetch_blob(self, desc: Descriptor, writer: BlobWriter, progress: Progress,
                   streams: int = 1, taken: Taken | None = None) -> None:
        progress.update(writer.offset)
        _copy(self.layout, desc, writer, progress)

    def push_blob(self, desc: Descriptor, store: OCILayout, progress: Progress,
                  mount_from: Sequence[str] = ()) -> bool:
        if self.layout.has_blob(desc.digest):
            return False
        self.layout.ensure()
        with self.layout.writer(desc, where=str(store.root)) as w:
            _copy(store, desc, w, progress)
            w.commit()
        return True

    def push_manifest(self, desc: Descriptor, data: bytes, tag: str | None) -> None:
        self.layout.ensure()
        stored = self.layout.put_bytes(data, desc.media_type, desc.digest.algorithm)
        if stored.digest != desc.digest:
            raise CorruptBlobError(str(desc.digest), str(stored.digest), where="push")
        if tag:
            self.layout.set_ref(tag, Descriptor(desc.media_type, desc.digest, desc.size,
                                                artifact_type=desc.artifact_type))
        update_referrers_fallback(self, desc, data)

    def tags(self) -> list[str]:
        if not self.layout.exists():
            return []
        return sorted(self.layout.refs())

    def referrers(self, subject: Digest, artifact_type: str | None = None) -> list[Descriptor]:
        # A layout has no referrers API: the tag schema, like registries without one.
        return read_referrers_fallback(self, subject, artifact_type)


def _copy(source: OCILayout, desc: Descriptor, writer: BlobWriter, progress: Progress) -> None:
    """The bytes of ``desc`` from ``source`` after those ``writer`` has, through its
    sink (written and hashed on their own threads). A source shorter than the
    descriptor fails at commit, a longer one here."""
    with source.open_blob(desc.digest) as fh:
        with writer.sink() as sink:
            fh.seek(writer.written)
            receive(fh.readinto, sink, sink.lane(), writer.written, desc.size, progress)
        if fh.read(1):
            writer.abort(keep_partial=False)
            raise SizeMismatchError(str(desc.digest), desc.size, os.fstat(fh.fileno()).st_size,
                                    where=writer.where)
