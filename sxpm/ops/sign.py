"""Signing an artifact: what ``sxpm sign`` and ``sxpm publish`` do.

:func:`sign_artifact` signs what ``REF`` names: the manifest (or image index) in the
store, or, when the store does not hold it, in its registry (only manifests are
read, never layers, through the command's :class:`~sxpm.ops.fetch.Fetcher`). The
signature manifest is written into the store as a referrer of the signed manifest
and, when the registry holds the signed manifest, pushed there too; otherwise the
next ``sxpm push`` carries it.
"""

from __future__ import annotations

from pathlib import Path

from sxpm.core.oci import OCI_EMPTY, Descriptor
from sxpm.core.reference import Reference
from sxpm.errors import InputError, NotFoundError, RegistryError
from sxpm.home import Home
from sxpm.ops.fetch import Fetcher, policy_for
from sxpm.transport import Repository, TransportOptions
from sxpm.transport.referrers import attach_referrer
from sxpm.trust import keys
from sxpm.trust.envelope import (
    DSSE_MEDIA_TYPE,
    EMPTY_CONFIG,
    SIGSTORE_BUNDLE_MEDIA_TYPE,
    signature_manifest,
)
from sxpm.trust.payload import Payload
from sxpm.trust.policy import TrustPolicy
from sxpm.trust.sign import SignResult, sign_with_key, sign_with_sigstore


def _registry_has(repo: Repository, top: Descriptor) -> bool:
    try:
        repo.get_manifest(str(top.digest))
    except (NotFoundError, RegistryError):
        return False
    return True


def sign_artifact(home: Home, ref: Reference, *, key: Path | None = None,
                  use_sigstore: bool = False, identity_token: str | None = None,
                  upload: bool = True, options: TransportOptions | None = None,
                  policy: TrustPolicy | None = None) -> SignResult:
    """Sign ``ref``: with ``key``, with Sigstore, or with the policy's ``signing_key``.

    ``policy`` is the command's (default: the home's and this directory's).
    """
    if key is not None and use_sigstore:
        raise InputError("--key and --sigstore exclude each other", hint="give one of them")
    fetcher = Fetcher(home, policy or policy_for(home), options or TransportOptions())
    private = None
    if not use_sigstore:
        if key is None:
            key = configured_signing_key(home, fetcher.policy)
        if key is None:
            raise InputError("No signing key given or configured",
                             hint="pass --key FILE (from `sxpm keygen`) or --sigstore, or set "
                                  "trust.signing_key in the config")
        private = keys.load_private(key)
    tree = fetcher.tree(ref)
    identity = fetcher.identity(tree)
    top = tree.descriptor
    payload = Payload(identity.kind, identity.name, identity.version, top.digest)
    store = home.store
    if private is not None:
        layer_bytes, who = sign_with_key(payload, private)
        media_type = DSSE_MEDIA_TYPE
        carried = None
    else:
        layer_bytes, who = sign_with_sigstore(payload, identity_token)
        media_type = SIGSTORE_BUNDLE_MEDIA_TYPE
        carried = payload.to_bytes()
    store.put_bytes(EMPTY_CONFIG, OCI_EMPTY)
    layer = store.put_bytes(layer_bytes, media_type)
    manifest = signature_manifest(top, layer, who, carried)
    repo = None if fetcher.offline else fetcher.repo(ref)
    pushed = upload and repo is not None and _registry_has(repo, top)
    desc = attach_referrer(home, ref, manifest, repo if pushed else None)
    return SignResult(ref, payload, who, desc, pushed)


def configured_signing_key(home: Home, policy: TrustPolicy | None = None) -> Path | None:
    """The key file ``trust.signing_key`` names (home config or simplex.toml), if any."""
    text = (policy or policy_for(home)).signing_key
    return Path(text).expanduser() if text else None


def sign_if_configured(home: Home, ref: Reference, *, options: TransportOptions | None = None,
                       policy: TrustPolicy | None = None) -> SignResult | None:
    """Sign with the configured key when one is set (what publish does); else None."""
    policy = policy or policy_for(home)
    key = configured_signing_key(home, policy)
    if key is None:
        return None
    return sign_artifact(home, ref, key=key, options=options, policy=policy)
