"""Checking signatures against a requirement of the trust policy.

A signature is accepted when all of these hold:

1. its manifest's ``subject`` is the artifact's manifest digest;
2. its signer is one the requirement trusts (a key id, or a Sigstore identity and
   issuer);
3. the signature is cryptographically valid over the payload it carries (Ed25519
   over DSSE's PAE, or a Sigstore bundle verified offline against the trust root
   the ``sigstore`` package embeds, with its certificate chain, transparency-log
   inclusion and signed timestamps);
4. the payload names this artifact: same digest, kind, name and version, and the
   version asked for when the tag is a version.

The first accepted signature wins and is returned as a :class:`VerifiedSigner`;
when none is accepted, :class:`~sxpm.errors.SignatureError` says what each
candidate was wrong with.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sxpm.core.oci import Descriptor, Manifest
from sxpm.core.reference import Digest
from sxpm.errors import ManifestError, SignatureError, SxpmError
from sxpm.trust.envelope import (
    ANN_PAYLOAD,
    DSSE_MEDIA_TYPE,
    SIGSTORE_BUNDLE_MEDIA_TYPE,
    Envelope,
    pae,
)
from sxpm.trust.keys import parse_key_id
from sxpm.trust.payload import PAYLOAD_MEDIA_TYPE, Payload
from sxpm.trust.policy import Requirement, SigstoreIdentity

if TYPE_CHECKING:
    from sigstore.verify import Verifier

# Fulcio certificate extensions holding the OIDC issuer (v2: DER UTF8String; v1: raw).
_OID_ISSUER_V2 = "1.3.6.1.4.1.57264.1.8"
_OID_ISSUER_V1 = "1.3.6.1.4.1.57264.1.1"


@dataclass(frozen=True)
class VerifiedSigner:
    """Who signed an artifact, as verified: what the lockfile records."""

    type: str  # "ed25519" or "sigstore"
    id: str  # the key id, or the Sigstore identity
    issuer: str | None  # the OIDC issuer (Sigstore only)
    signature: Digest  # the signature manifest that was verified

    def to_dict(self) -> dict[str, str]:
        out = {"type": self.type, "signature": str(self.signature)}
        if self.type == "ed25519":
            out["key"] = self.id
        else:
            out["identity"] = self.id
            out["issuer"] = self.issuer or ""
        return out

    def __str__(self) -> str:
        if self.type == "ed25519":
            return f"key {self.id}"
        return f"Sigstore identity {self.id} (issuer {self.issuer})"


@dataclass(frozen=True)
class Candidate:
    """A signature manifest found for the artifact, with its layer's bytes."""

    descriptor: Descriptor
    manifest: Manifest
    layer: bytes | None  # None when the layer could not be fetched
    problem: str = ""
    raw: bytes | None = None  # the manifest's bytes as the source served them


@functools.lru_cache(maxsize=1)
def _verifier() -> Verifier:
    # Verification never touches the network: the trust root is the one the sigstore
    # package embeds (or its local TUF cache). Its "offline mode" warning is noise here.
    logging.getLogger("sigstore").addHandler(logging.NullHandler())
    logging.getLogger("sigstore").propagate = False
    from sigstore.verify import Verifier

    try:
        return Verifier.production(offline=True)
    except Exception as exc:  # the package raises many kinds; all mean the same here
        raise SxpmError(f"Cannot load the Sigstore trust root ({exc})",
                        hint="reinstall the sigstore package; check that $HOME is writable"
                        ) from None


def _der_utf8(value: bytes) -> str:
    if len(value) >= 2 and value[0] == 0x0C:
        length, offset = value[1], 2
        if length & 0x80:
            n = length & 0x7F
            length, offset = int.from_bytes(value[2:2 + n], "big"), 2 + n
        return value[offset:offset + length].decode("utf-8", "replace")
    return value.decode("utf-8", "replace")


def certificate_identity(cert: Any) -> tuple[str, str]:
    """(SANs, issuer) of a Fulcio certificate, for messages only (not for trust)."""
    from cryptography import x509

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(v) for v in san.get_values_for_type(x509.UniformResourceIdentifier)]
        names += [str(v) for v in san.get_values_for_type(x509.RFC822Name)]
    except x509.ExtensionNotFound:
        names = []
    issuer = "?"
    for oid, decode in ((_OID_ISSUER_V2, _der_utf8),
                        (_OID_ISSUER_V1, lambda b: b.decode("utf-8", "replace"))):
        try:
            ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(oid))
        except x509.ExtensionNotFound:
            continue
        issuer = decode(ext.value.value)
        break
    return ", ".join(names) or "?", issuer


def verify_sigstore_bundle(data: bytes, bundle_json: bytes,
                           identities: Iterable[SigstoreIdentity],
                           what: str = "artifact") -> SigstoreIdentity:
    """Verify a Sigstore bundle over ``data`` offline; the trusted identity that signed.

    Raises :class:`~sxpm.errors.SignatureError` when the bundle is malformed, its
    signer is not one of ``identities``, or it does not verify over ``data``.
    """
    trusted = sorted(set(identities))
    expected = " or ".join(str(i) for i in trusted) or "a trusted Sigstore identity"
    result = _check_bundle(data, bundle_json, trusted)
    if isinstance(result, str):
        raise SignatureError(what, expected, [result])
    return result


def _check_bundle(data: bytes, bundle_json: bytes, trusted: list[SigstoreIdentity], *,
                  any_signer: bool = False) -> SigstoreIdentity | str:
    """The identity that signed ``data`` (one of ``trusted``, or with ``any_signer``
    whoever the certificate names), or what is wrong."""
    from sigstore.errors import Error as SigstoreBaseError
    from sigstore.errors import VerificationError
    from sigstore.models import Bundle
    from sigstore.verify.policy import Identity, UnsafeNoOp

    try:
        bundle = Bundle.from_json(bundle_json)
    except (SigstoreBaseError, ValueError) as exc:
        return f"malformed Sigstore bundle ({exc})"
    cert = bundle.signing_certificate
    if any_signer:
        # No policy to hold the identity to: the chain, log and timestamps still are.
        names, issuer = certificate_identity(cert)
        try:
            _verifier().verify_artifact(data, bundle, UnsafeNoOp())
        except (SigstoreBaseError, ValueError) as exc:
            return f"Sigstore signature by {names} does not verify: {' '.join(str(exc).split())}"
        return SigstoreIdentity(names, issuer)
    matched = None
    for ident in trusted:
        try:
            Identity(identity=ident.identity, issuer=ident.issuer).verify(cert)
        except VerificationError:
            continue
        matched = ident
        break
    if matched is None:
        names, issuer = certificate_identity(cert)
        return f"signed by Sigstore identity {names} (issuer {issuer}), which is not trusted"
    try:
        _verifier().verify_artifact(data, bundle,
                                    Identity(identity=matched.identity, issuer=matched.issuer))
    except (SigstoreBaseError, ValueError) as exc:
        text = " ".join(str(exc).split())
        if "digest mismatch" in text:
            text = "it was made over other bytes (the signed content differs)"
        return f"Sigstore signature by {matched.identity} does not verify: {text}"
    return matched


def _match(payload: Payload, expected: Payload, tag_version: str | None) -> str | None:
    if payload.digest != expected.digest:
        return (f"signs {payload} instead of this manifest {expected.digest.short} "
                "(a signature moved from another artifact)")
    if (payload.kind, payload.name) != (expected.kind, expected.name):
        return f"signs {payload.kind} {payload.name}, not {expected.kind} {expected.name}"
    if payload.version != expected.version:
        return f"signs version {payload.version}, not {expected.version}"
    if tag_version is not None and payload.version != tag_version:
        return f"signs version {payload.version}, but version {tag_version} was asked for"
    return None


def _evaluate(c: Candidate, expected: Payload, req: Requirement | None,
              tag_version: str | None) -> VerifiedSigner | str:
    """The signer of ``c`` when it is valid for ``expected`` and ``req`` trusts it
    (``req`` None: whoever signed), else what is wrong with it."""
    where = f"signature {c.descriptor.digest.short}"
    subject = c.manifest.subject
    if subject is None or subject.digest != expected.digest:
        return (f"{where} is attached to "
                f"{subject.digest.short if subject else 'nothing'}, not to this manifest")
    if c.layer is None or len(c.manifest.layers) != 1:
        return f"{where}: {c.problem or 'malformed signature manifest'}"
    layer = c.manifest.layers[0]
    if layer.media_type == DSSE_MEDIA_TYPE:
        try:
            env = Envelope.from_bytes(c.layer, where)
        except ManifestError as exc:
            return str(exc)
        if env.payload_type != PAYLOAD_MEDIA_TYPE:
            return f"{where}: unknown payload type {env.payload_type!r}"
        untrusted = []
        for sig in env.signatures:
            if req is not None and sig.keyid not in req.keys:
                untrusted.append(sig.keyid)
                continue
            if not parse_key_id(sig.keyid).verify(sig.sig, pae(env.payload_type, env.payload)):
                return (f"{where} by key {sig.keyid} does not verify (the signature or what "
                        "it signs was altered)")
            try:
                payload = Payload.from_bytes(env.payload, where)
            except ManifestError as exc:
                return str(exc)
            problem = _match(payload, expected, tag_version)
            if problem:
                return f"{where} by key {sig.keyid} {problem}"
            return VerifiedSigner("ed25519", sig.keyid, None, c.descriptor.digest)
        return f"{where} is by untrusted key {', '.join(untrusted) or '(none)'}"
    if layer.media_type == SIGSTORE_BUNDLE_MEDIA_TYPE:
        import base64
        import binascii

        try:
            payload_bytes = base64.b64decode(c.manifest.annotations.get(ANN_PAYLOAD, ""),
                                             validate=True)
            payload = Payload.from_bytes(payload_bytes, where)
        except (binascii.Error, ValueError) as exc:
            return f"{where}: no readable payload ({exc})"
        result = _check_bundle(payload_bytes, c.layer,
                               sorted(req.identities) if req is not None else [],
                               any_signer=req is None)
        if isinstance(result, str):
            return f"{where} {result}" if result.startswith("signed") else f"{where}: {result}"
        problem = _match(payload, expected, tag_version)
        if problem:
            return f"{where} by {result.identity} {problem}"
        return VerifiedSigner("sigstore", result.identity, result.issuer, c.descriptor.digest)
    return f"{where}: unknown signature type {layer.media_type!r}"


def check_signatures(expected: Payload, requirement: Requirement,
                     candidates: Iterable[Candidate], *, artifact: str,
                     tag_version: str | None = None) -> VerifiedSigner:
    """The first candidate that satisfies ``requirement`` for ``expected``, else raise."""
    reasons = []
    for candidate in candidates:
        result = _evaluate(candidate, expected, requirement, tag_version)
        if isinstance(result, VerifiedSigner):
            return result
        reasons.append(result)
    raise SignatureError(f"{artifact} ({expected})", requirement.describe(), reasons)


def valid_signers(expected: Payload, candidates: Iterable[Candidate], *,
                  tag_version: str | None = None) -> tuple[list[VerifiedSigner], list[str]]:
    """Every signer whose signature is valid for ``expected``, trusted or not (for
    ``sxpm verify REF`` with no policy: who signed, not whether to trust them), and
    what each other candidate was wrong with."""
    signers: list[VerifiedSigner] = []
    reasons: list[str] = []
    for candidate in candidates:
        result = _evaluate(candidate, expected, None, tag_version)
        if isinstance(result, VerifiedSigner):
            signers.append(result)
        else:
            reasons.append(result)
    return signers, reasons
