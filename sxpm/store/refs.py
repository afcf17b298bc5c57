"""Names in the store: what a reference is kept under, and what it names there.

Read-only look-ups every layer above the store needs (install, trust, the runner, the
CLI), kept apart from the transfers that write those names.
"""

from __future__ import annotations

from sxpm.core.oci import Descriptor, parse_manifest_bytes
from sxpm.core.reference import Reference
from sxpm.errors import NotFoundError
from sxpm.store.layout import OCILayout


def store_name(ref: Reference) -> str:
    """The name a reference is kept under in the store's ``index.json``."""
    return str(ref.with_digest(None)) if ref.tag else str(ref)


def resolve_local(store: OCILayout, ref: Reference) -> Descriptor:
    """The descriptor a reference names in the store."""
    if ref.tag:
        found = store.resolve(store_name(ref))
        if found is None:
            raise NotFoundError(f"{ref} is not in the store",
                                hint="pack or pull it first; `sxpm list` shows what is there")
        if ref.digest and found.digest != ref.digest:
            raise NotFoundError(f"{ref}: the tag points at {found.digest}, not {ref.digest}")
        return found
    if ref.digest:
        for desc in store.refs().values():
            if desc.digest == ref.digest:
                return desc
        if store.has_blob(ref.digest):
            size = store.blob_size(ref.digest)
            data = store.read_blob(Descriptor("application/octet-stream", ref.digest, size))
            obj = parse_manifest_bytes(data, str(ref))
            return Descriptor(obj.media_type, ref.digest, size, artifact_type=obj.listed_type)
    raise NotFoundError(f"{ref} is not in the store", hint="pull it first")


