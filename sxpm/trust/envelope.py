"""The signature artifact: how a signature is stored as an OCI referrer.

A signature is an OCI image manifest with

* ``artifactType``: ``application/vnd.simplex.signature.v1+json``
  (:data:`SIGNATURE_ARTIFACT`),
* ``config``: the empty descriptor (``application/vnd.oci.empty.v1+json``, ``{}``),
* ``subject``: the descriptor of the signed manifest (or image index),
* one layer, either
  - a DSSE envelope (``application/vnd.dsse.envelope.v1+json``) for an Ed25519 key:
    ``{"payloadType": "application/vnd.simplex.signature.payload.v1+json",
    "payload": <base64 payload>, "signatures": [{"keyid": "ed25519:...",
    "sig": <base64>}]}``, the signature made over DSSE's pre-authentication
    encoding ``PAE(payloadType, payload)``; or
  - a Sigstore bundle (``application/vnd.dev.sigstore.bundle.v0.3+json``) whose
    message signature is over the payload bytes themselves; the payload travels in
    the manifest annotation ``org.simplex.signature.payload`` (base64).
* annotations: ``org.simplex.signature.signer`` (key id or Sigstore identity, for
  display only; verification never trusts it).

The payload (:mod:`sxpm.trust.payload`) names kind, name, version and manifest
digest. Signature manifests are deterministic (no timestamps), so signing twice
with one key yields one referrer, not two.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from sxpm.core.oci import OCI_EMPTY, Descriptor, Manifest, canonical_json
from sxpm.errors import ManifestError
from sxpm.trust.payload import PAYLOAD_MEDIA_TYPE

SIGNATURE_ARTIFACT = "application/vnd.simplex.signature.v1+json"
DSSE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"
SIGSTORE_BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
ANN_SIGNER = "org.simplex.signature.signer"
ANN_PAYLOAD = "org.simplex.signature.payload"
EMPTY_CONFIG = b"{}"
MAX_SIGNATURE_BYTES = 1024 * 1024


def empty_config() -> Descriptor:
    return Descriptor.for_bytes(OCI_EMPTY, EMPTY_CONFIG)


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding."""
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(body), body)


@dataclass(frozen=True)
class EnvelopeSignature:
    keyid: str
    sig: bytes


@dataclass(frozen=True)
class Envelope:
    payload: bytes
    signatures: tuple[EnvelopeSignature, ...]
    payload_type: str = PAYLOAD_MEDIA_TYPE

    def to_bytes(self) -> bytes:
        return canonical_json({
            "payloadType": self.payload_type,
            "payload": base64.b64encode(self.payload).decode(),
            "signatures": [{"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode()}
                           for s in self.signatures],
        })

    @classmethod
    def from_bytes(cls, data: bytes, source: str) -> Envelope:
        try:
            obj: Any = json.loads(data)
            if not isinstance(obj, dict) or not isinstance(obj.get("signatures"), list):
                raise ValueError("not a DSSE envelope")
            payload = base64.b64decode(obj["payload"], validate=True)
            sigs = tuple(EnvelopeSignature(str(s["keyid"]), base64.b64decode(s["sig"],
                                                                              validate=True))
                         for s in obj["signatures"][:16])
            payload_type = obj["payloadType"]
            if not isinstance(payload_type, str):
                raise ValueError("payloadType must be a string")
        except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
            raise ManifestError(source, f"malformed signature envelope ({exc})") from None
        return cls(payload, sigs, payload_type)


def signature_manifest(subject: Descriptor, layer: Descriptor, signer: str,
                       payload: bytes | None = None) -> Manifest:
    annotations = {ANN_SIGNER: signer}
    if payload is not None:
        annotations[ANN_PAYLOAD] = base64.b64encode(payload).decode()
    return Manifest(empty_config(), (layer,), SIGNATURE_ARTIFACT, annotations,
                    Descriptor(subject.media_type, subject.digest, subject.size))
