"""Signing an artifact: with an Ed25519 key file, or keylessly with Sigstore.

:func:`sign_artifact` signs what ``REF`` names: the manifest (or image index) in the
store, or, when the store does not hold it, in its registry (only manifests are
read, never layers). The signature manifest is written into the store as a
referrer of the signed manifest and, when the registry holds the signed manifest,
pushed there too; otherwise the next ``sxpm push`` carries it.

Sigstore keyless signing needs an OIDC identity token (``--identity-token``, the
``SIGSTORE_ID_TOKEN`` variable, or the ambient credential of a CI job such as
GitHub Actions with ``id-token: write``) and the network (Fulcio, Rekor).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sxpm.core.oci import Descriptor, Manifest
from sxpm.core.reference import Reference
from sxpm.errors import (
    InputError,
    MissingIdentityTokenError,
    NotFoundError,
    RegistryError,
    SigningError,
)
from sxpm.home import Home
from sxpm.transport import Repository, TransportOptions, open_repository
from sxpm.trust import keys
from sxpm.trust.envelope import (
    DSSE_MEDIA_TYPE,
    EMPTY_CONFIG,
    SIGSTORE_BUNDLE_MEDIA_TYPE,
    Envelope,
    EnvelopeSignature,
    pae,
    signature_manifest,
)
from sxpm.trust.payload import PAYLOAD_MEDIA_TYPE, Payload, subject_payload


@dataclass(frozen=True)
class SignResult:
    ref: Reference
    payload: Payload
    signer: str  # key id or Sigstore identity
    signature: Descriptor  # the signature manifest
    pushed: bool  # whether it went to the registry as well as the store


def _subject(home: Home, ref: Reference, repo: Repository) -> tuple[Payload, Descriptor]:
    from sxpm.store.refs import resolve_local
    from sxpm.trust.enforce import remote_manifests

    def fallback() -> dict[str, str]:
        return {"fallback_name": ref.name, "fallback_version": ref.tag or ""}

    try:
        top = resolve_local(home.store, ref)
    except NotFoundError:
        manifests = remote_manifests(repo, ref)
        top, data = manifests[-1]
        from sxpm.core.oci import parse_manifest_bytes

        by_digest = {d.digest: b for d, b in manifests}

        def remote_child(d: Descriptor) -> Manifest:
            obj = parse_manifest_bytes(by_digest[d.digest], str(d.digest))
            assert isinstance(obj, Manifest)
            return obj

        obj = parse_manifest_bytes(data, str(ref))
        return subject_payload(top, obj, remote_child, **fallback()), top
    store = home.store

    def child(d: Descriptor) -> Manifest:
        obj = store.load_manifest(d)
        if not isinstance(obj, Manifest):
            raise InputError(f"{ref}: nested image indexes are not supported")
        return obj

    return subject_payload(top, store.load_manifest(top), child, **fallback()), top


def _registry_has(repo: Repository, top: Descriptor) -> bool:
    try:
        repo.get_manifest(str(top.digest))
    except (NotFoundError, RegistryError):
        return False
    return True


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


def sign_artifact(home: Home, ref: Reference, *, key: Path | None = None,
                  use_sigstore: bool = False, identity_token: str | None = None,
                  upload: bool = True, options: TransportOptions | None = None) -> SignResult:
    """Sign ``ref``: with ``key``, with Sigstore, or with the policy's ``signing_key``.

    This is what ``sxpm publish`` calls after pushing.
    """
    if key is not None and use_sigstore:
        raise InputError("--key and --sigstore exclude each other", hint="give one of them")
    private = None
    if not use_sigstore:
        if key is None:
            key = configured_signing_key(home)
        if key is None:
            raise InputError("No signing key given or configured",
                             hint="pass --key FILE (from `sxpm keygen`) or --sigstore, or set "
                                  "trust.signing_key in the config")
        private = keys.load_private(key)
    repo = open_repository(ref, options)
    payload, top = _subject(home, ref, repo)
    store = home.store
    if private is not None:
        layer_bytes, who = sign_with_key(payload, private)
        media_type = DSSE_MEDIA_TYPE
        carried = None
    else:
        layer_bytes, who = sign_with_sigstore(payload, identity_token)
        media_type = SIGSTORE_BUNDLE_MEDIA_TYPE
        carried = payload.to_bytes()
    from sxpm.core.oci import OCI_EMPTY

    store.put_bytes(EMPTY_CONFIG, OCI_EMPTY)
    layer = store.put_bytes(layer_bytes, media_type)
    manifest = signature_manifest(top, layer, who, carried)
    pushed = upload and _registry_has(repo, top)
    from sxpm.transport.referrers import attach_referrer

    desc = attach_referrer(home, ref, manifest, repo if pushed else None)
    return SignResult(ref, payload, who, desc, pushed)


def configured_signing_key(home: Home, cwd: Path | None = None) -> Path | None:
    """The key file ``trust.signing_key`` names (home config or simplex.toml), if any."""
    from sxpm.trust.policy import load_policy

    text = load_policy(home, cwd).signing_key
    return Path(text).expanduser() if text else None


def sign_if_configured(home: Home, ref: Reference, *, options: TransportOptions | None = None
                       ) -> SignResult | None:
    """Sign with the configured key when one is set (what publish does); else None."""
    key = configured_signing_key(home)
    if key is None:
        return None
    return sign_artifact(home, ref, key=key, options=options)
