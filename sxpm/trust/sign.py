"""Signing a payload: with an Ed25519 key file, or keylessly with Sigstore.

The workflow that signs an artifact (finding its manifests, attaching and pushing
the signature) is :func:`sxpm.ops.sign.sign_artifact`.

Sigstore keyless signing needs an OIDC identity token (``--identity-token``, the
``SIGSTORE_ID_TOKEN`` variable, or the ambient credential of a CI job such as
GitHub Actions with ``id-token: write``) and the network (Fulcio, Rekor).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from sxpm.core.oci import Descriptor
from sxpm.core.reference import Reference
from sxpm.errors import (
    MissingIdentityTokenError,
    SigningError,
)
from sxpm.trust import keys
from sxpm.trust.envelope import (
    Envelope,
    EnvelopeSignature,
    pae,
)
from sxpm.trust.payload import PAYLOAD_MEDIA_TYPE, Payload


@dataclass(frozen=True)
class SignResult:
    ref: Reference
    payload: Payload
    signer: str  # key id or Sigstore identity
    signature: Descriptor  # the signature manifest
    pushed: bool  # whether it went to the registry as well as the store


def sign_with_key(payload: Payload, key: keys.PrivateKey) -> tuple[bytes, str]:
    """(DSSE envelope bytes, key id) for ``payload``."""
    body = payload.to_bytes()
    sig = key.sign(pae(PAYLOAD_MEDIA_TYPE, body))
    return Envelope(body, (EnvelopeSignature(key.id, sig),)).to_bytes(), key.id


def sign_with_sigstore(payload: Payload, identity_token: str | None) -> tuple[bytes, str]:
    """(Sigstore bundle JSON, signer identity) for ``payload``: needs a token and network."""
    token_text = identity_token or os.environ.get("SIGSTORE_ID_TOKEN")
    from sigstore.oidc import IdentityError, IdentityToken, detect_credential

    if not token_text:
        try:
            token_text = detect_credential()
        except IdentityError as exc:
            raise SigningError(f"Sigstore: no ambient OIDC credential ({exc})") from None
    if not token_text:
        raise MissingIdentityTokenError(
            "Sigstore keyless signing needs an OIDC identity token, and none was found",
            hint="pass --identity-token TOKEN or set SIGSTORE_ID_TOKEN; in GitHub Actions "
                 "grant `permissions: id-token: write`; or sign with --key FILE")
    try:
        token = IdentityToken(token_text)
    except IdentityError as exc:
        raise MissingIdentityTokenError(f"Sigstore: the identity token is not usable ({exc})",
                                        hint="get a fresh OIDC token for audience 'sigstore'"
                                        ) from None
    from sigstore.models import ClientTrustConfig
    from sigstore.sign import SigningContext

    try:
        context = SigningContext.from_trust_config(ClientTrustConfig.production())
        with context.signer(token) as signer:
            bundle = signer.sign_artifact(payload.to_bytes())
    except Exception as exc:  # network, Fulcio or Rekor: the package raises many kinds
        raise SigningError(f"Sigstore signing failed ({' '.join(str(exc).split())})",
                           hint="it needs network access to Fulcio and Rekor; or sign with "
                                "--key FILE") from None
    return bundle.to_json().encode(), str(token.identity)
