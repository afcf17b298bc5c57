"""What a signature says: the canonical payload.

A signature signs these bytes, never the artifact's files directly::

    {"_type":"sxpm/signature/v1","digest":"sha256:...","kind":"model",
     "name":"tiny-llama","version":"1.0.0"}

canonical JSON (sorted keys, no spaces, UTF-8). ``digest`` is the digest of the
manifest (or image index) the tag resolves to; that manifest pins every blob by
digest, so the signature covers all content. Binding ``kind``, ``name`` and
``version`` as well means a signature cannot be moved to another artifact or
another version, and a registry cannot serve an old signed version under a newer
tag. The registry repository is deliberately *not* bound: artifacts are copied
between registries and mirrors, and their signatures travel with them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sxpm.core.oci import canonical_json
from sxpm.core.reference import Digest
from sxpm.errors import ManifestError

PAYLOAD_TYPE = "sxpm/signature/v1"
PAYLOAD_MEDIA_TYPE = "application/vnd.simplex.signature.payload.v1+json"
MAX_PAYLOAD_BYTES = 64 * 1024


@dataclass(frozen=True)
class Payload:
    kind: str
    name: str
    version: str
    digest: Digest

    def to_dict(self) -> dict[str, Any]:
        return {"_type": PAYLOAD_TYPE, "kind": self.kind, "name": self.name,
                "version": self.version, "digest": str(self.digest)}

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_dict())

    def __str__(self) -> str:
        return f"{self.kind} {self.name} {self.version}, {self.digest.short}"

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "signature payload") -> Payload:
        if len(data) > MAX_PAYLOAD_BYTES:
            raise ManifestError(source, "payload is too large")
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise ManifestError(source, "payload is not JSON") from None
        if not isinstance(obj, dict) or obj.get("_type") != PAYLOAD_TYPE:
            raise ManifestError(source, f"payload is not of type {PAYLOAD_TYPE!r}")
        fields = {}
        for key in ("kind", "name", "version", "digest"):
            value = obj.get(key)
            if not isinstance(value, str):
                raise ManifestError(source, f"payload field {key!r} must be a string")
            fields[key] = value
        try:
            digest = Digest.parse(fields["digest"])
        except ValueError as exc:
            raise ManifestError(source, str(exc)) from None
        return cls(fields["kind"], fields["name"], fields["version"], digest)
