"""The checks ``pull`` and ``install`` run, and the signer the lockfile records.

``pull`` calls :func:`check_pull` once it holds the manifests and before it fetches
any layer: the signature is checked against the manifest digest, and the layers
are then fetched by the digests that manifest pins, each verified as it lands. A
refusal therefore leaves the store without the artifact's layers and without a ref.

``install`` of something already in the store calls :func:`check_local`, which
re-verifies the signature kept in the store (no network), so content pulled with
``--insecure-skip-verify`` or packed locally is still held to the policy.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sxpm.core.oci import Descriptor, ImageIndex, Manifest, parse_manifest_bytes
from sxpm.core.progress import SILENT
from sxpm.core.reference import Reference
from sxpm.errors import InvalidVersionError, ManifestError, StoreError, SxpmError
from sxpm.home import Home
from sxpm.transport import Repository
from sxpm.transport.referrers import MAX_REFERRERS, attach_referrer, stored_referrers
from sxpm.trust.envelope import MAX_SIGNATURE_BYTES, SIGNATURE_ARTIFACT
from sxpm.trust.payload import Payload, subject_payload
from sxpm.trust.policy import Requirement, load_policy
from sxpm.trust.verify import Candidate, VerifiedSigner, check_signatures


def tag_version(ref: Reference) -> str | None:
    """The version a tag asks for, when the tag is a version."""
    from sxpm.core.versions import parse_version

    if not ref.tag:
        return None
    try:
        return str(parse_version(ref.tag))
    except InvalidVersionError:
        return None


def _expected(ref: Reference, top: Descriptor, data: bytes,
              child: Callable[[Descriptor], Manifest]) -> Payload:
    obj = parse_manifest_bytes(data, str(ref))
    return subject_payload(top, obj, child, fallback_name=ref.name,
                           fallback_version=ref.tag or "")


def _requirement(home: Home, ref: Reference, expected: Payload,
                 cwd: Path | None) -> Requirement | None:
    return load_policy(home, cwd).requirement([expected.name, ref.name])


def _fetch_candidate(home: Home, repo: Repository, desc: Descriptor) -> Candidate:
    """Read a signature manifest from ``repo``; its blobs go into the store (verified)."""
    try:
        mdesc, data = repo.get_manifest(str(desc.digest))
        obj = parse_manifest_bytes(data, f"{repo}@{desc.digest}")
        if not isinstance(obj, Manifest):
            raise ManifestError(str(desc.digest), "a signature must be an image manifest")
        for blob in obj.blobs():
            if blob.size > MAX_SIGNATURE_BYTES:
                raise ManifestError(str(desc.digest), f"signature blob of {blob.size} bytes")
            if not home.store.has_blob(blob.digest):
                with home.store.writer(blob, where=str(repo)) as w:
                    if w.offset:
                        w.restart()
                    repo.fetch_blob(blob, w, SILENT.start("signature", blob.size))
                    w.commit()
        layer = home.store.read_blob(obj.layers[0]) if len(obj.layers) == 1 else None
        return Candidate(mdesc, obj, layer, "" if layer else "not exactly one layer", data)
    except SxpmError as exc:
        placeholder = Manifest(Descriptor("", desc.digest, 0), ())
        return Candidate(desc, placeholder, None, f"unreadable ({exc.one_line()})")


def _plain(ref: Reference, obj: Manifest | ImageIndex) -> Manifest:
    if not isinstance(obj, Manifest):
        raise StoreError(f"{ref}: nested image indexes are not supported")
    return obj


def check_pull(home: Home, ref: Reference, repo: Repository,
               manifests: list[tuple[Descriptor, bytes]], *, skip: bool = False,
               requirement: Requirement | None = None, keep: bool = True,
               cwd: Path | None = None) -> VerifiedSigner | None:
    """Check the artifact whose manifests (children first, top last) were just read.

    None when skipped or when no policy covers the artifact; raises
    :class:`~sxpm.errors.SignatureError` when the policy is not met. The verified
    signature is kept in the store beside the artifact (``keep``).
    """
    if skip:
        return None
    top, data = manifests[-1]
    children = {d.digest: b for d, b in manifests[:-1]}

    def child(d: Descriptor) -> Manifest:
        raw = children.get(d.digest)
        if raw is None:
            raw = repo.get_manifest(str(d.digest))[1]
        return _plain(ref, parse_manifest_bytes(raw, f"{ref}@{d.digest}"))

    expected = _expected(ref, top, data, child)
    req = requirement or _requirement(home, ref, expected, cwd)
    if req is None:
        return None
    found = repo.referrers(top.digest, SIGNATURE_ARTIFACT)[:MAX_REFERRERS]
    candidates = [_fetch_candidate(home, repo, d) for d in found]
    signer = check_signatures(expected, req, candidates, artifact=str(ref),
                              tag_version=tag_version(ref))
    if keep:
        chosen = next(c for c in candidates if c.descriptor.digest == signer.signature)
        attach_referrer(home, ref, chosen.manifest, data=chosen.raw)
    return signer


def check_local(home: Home, ref: Reference, top: Descriptor, *, skip: bool = False,
                requirement: Requirement | None = None,
                cwd: Path | None = None) -> VerifiedSigner | None:
    """Check an artifact the store holds against the signatures the store keeps."""
    if skip:
        return None
    store = home.store
    data = store.read_blob(top)

    def child(d: Descriptor) -> Manifest:
        return _plain(ref, store.load_manifest(d))

    expected = _expected(ref, top, data, child)
    req = requirement or _requirement(home, ref, expected, cwd)
    if req is None:
        return None
    candidates = []
    for desc, manifest in stored_referrers(home, ref, top.digest, SIGNATURE_ARTIFACT):
        try:
            layer = store.read_blob(manifest.layers[0]) if len(manifest.layers) == 1 else None
            candidates.append(Candidate(desc, manifest, layer, "not exactly one layer"))
        except SxpmError as exc:
            candidates.append(Candidate(desc, manifest, None, exc.one_line()))
    return check_signatures(expected, req, candidates, artifact=str(ref),
                            tag_version=tag_version(ref))


def verified_signer(home: Home, ref: Reference, *, cwd: Path | None = None
                    ) -> VerifiedSigner | None:
    """The signer of the artifact ``ref`` names in the store, verified now, offline.

    This is what the lockfile records per artifact (``VerifiedSigner.to_dict()``).
    None when no trust policy covers the artifact; raises
    :class:`~sxpm.errors.SignatureError` when one does and no valid signature from a
    trusted signer is kept in the store.
    """
    from sxpm.store.refs import resolve_local

    return check_local(home, ref, resolve_local(home.store, ref), cwd=cwd)


def remote_manifests(repo: Repository, ref: Reference) -> list[tuple[Descriptor, bytes]]:
    """The manifests of ``ref`` (variants first, top last), no layers."""
    from sxpm.errors import CorruptBlobError

    top, data = repo.get_manifest(str(ref.digest) if ref.digest else (ref.tag or "latest"))
    if ref.digest and top.digest != ref.digest:
        raise CorruptBlobError(str(ref.digest), str(top.digest), where=str(ref))
    obj = parse_manifest_bytes(data, str(ref))
    out = []
    if isinstance(obj, ImageIndex):
        for d in obj.manifests:
            cdesc, cdata = repo.get_manifest(str(d.digest))
            out.append((cdesc, cdata))
    out.append((Descriptor(top.media_type, top.digest, top.size,
                           artifact_type=obj.artifact_type), data))
    return out
