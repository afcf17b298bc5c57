"""The signatures an artifact carries, gathered for :func:`~sxpm.trust.verify.check_signatures`.

The workflow that fetches an artifact (:mod:`sxpm.ops.fetch`) decides the expected
payload and the requirement from manifests it has already read and verified; this
module only finds the candidate signatures: those the store keeps beside the
artifact (no network), or the registry's referrers, whose blobs are fetched into
the store (each verified as it lands) and kept there once one of them is accepted.
"""

from __future__ import annotations

from sxpm.core.oci import Descriptor, Manifest, parse_manifest_bytes
from sxpm.core.progress import SILENT
from sxpm.core.reference import Digest, Reference
from sxpm.errors import InvalidVersionError, ManifestError, SxpmError
from sxpm.home import Home
from sxpm.transport import Repository
from sxpm.transport.referrers import (
    MAX_REFERRERS,
    attach_referrer,
    referrer_type,
    stored_referrers,
)
from sxpm.trust.envelope import MAX_SIGNATURE_BYTES, SIGNATURE_ARTIFACT
from sxpm.trust.verify import Candidate


def tag_version(ref: Reference) -> str | None:
    """The version a tag asks for, when the tag is a version."""
    from sxpm.core.versions import parse_version

    if not ref.tag:
        return None
    try:
        return str(parse_version(ref.tag))
    except InvalidVersionError:
        return None


def _fetch_candidate(home: Home, repo: Repository, desc: Descriptor) -> Candidate | None:
    """Read a signature manifest from ``repo``; its blobs go into the store (verified).
    None when a referrer the listing did not type turns out not to be a signature."""
    try:
        mdesc, data = repo.get_manifest(str(desc.digest))
        obj = parse_manifest_bytes(data, f"{repo}@{desc.digest}")
        if not isinstance(obj, Manifest):
            raise ManifestError(str(desc.digest), "a signature must be an image manifest")
        if desc.artifact_type is None and referrer_type(obj) != SIGNATURE_ARTIFACT:
            return None
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


def remote_candidates(home: Home, repo: Repository, subject: Digest) -> list[Candidate]:
    """The signatures ``repo`` lists for ``subject`` (its referrers, bounded). A listing
    may leave ``artifactType`` out (the spec only asks registries to copy it, and some
    tools' fallback indexes lack it), so untyped referrers are read to see what they are;
    the listing is therefore asked for unfiltered."""
    found = [d for d in repo.referrers(subject)
             if d.artifact_type in (None, SIGNATURE_ARTIFACT)][:MAX_REFERRERS]
    return [c for c in (_fetch_candidate(home, repo, d) for d in found) if c is not None]


def stored_candidates(home: Home, ref: Reference, subject: Digest) -> list[Candidate]:
    """The signatures of ``subject`` the store keeps under ``ref``'s repository."""
    out = []
    for desc, manifest in stored_referrers(home, ref, subject, SIGNATURE_ARTIFACT):
        try:
            layer = home.store.read_blob(manifest.layers[0]) if len(manifest.layers) == 1 \
                else None
            out.append(Candidate(desc, manifest, layer, "not exactly one layer"))
        except SxpmError as exc:
            out.append(Candidate(desc, manifest, None, exc.one_line()))
    return out


def keep_signature(home: Home, ref: Reference, candidate: Candidate) -> None:
    """Keep an accepted signature in the store beside the artifact, as it was served."""
    attach_referrer(home, ref, candidate.manifest, data=candidate.raw,
                    desc=candidate.descriptor if candidate.raw is not None else None)
