"""Attaching referrer manifests (signatures) to a subject, and finding them again.

This is the store-side minimum the trust code needs, kept behind three functions so
a fuller registry client (the OCI 1.1 referrers API, with this as its fallback) can
replace it without touching callers:

* :func:`attach_referrer` - write a referrer manifest into the store and, when a
  repository is given, push it there; in both, add it to the subject's
  referrers tag-schema index.
* :func:`stored_referrers` - the referrers of a subject that the store holds.
* :func:`push_referrers` - send the store's referrers of a subject to a repository.
* :func:`fetch_referrers` - bring a repository's referrers of a subject (signatures,
  SBOMs, anything attached) into the store, as they were served.

The tag schema (OCI distribution spec 1.1, "referrers tag schema"): the referrers
of ``sha256:<hex>`` are listed by an image index tagged ``sha256-<hex>`` in the
subject's repository. In the store, that tag is kept as the ref
``<repository>:sha256-<hex>``, like any other tag of that repository, so ``gc``
keeps signatures as long as the ref exists. Updating the index is a
read-modify-write: two signers racing on one subject can lose one entry (rerun
`sxpm sign`); the registry API does not have that problem.
"""

from __future__ import annotations

from sxpm.core.oci import Descriptor, ImageIndex, Manifest, parse_manifest_bytes
from sxpm.core.progress import SILENT
from sxpm.core.reference import Digest, Reference
from sxpm.errors import ManifestError, NotFoundError
from sxpm.home import Home
from sxpm.transport.base import Repository, referrers_tag

MAX_REFERRERS = 64


def _store_name(ref: Reference, subject: Digest) -> str:
    from sxpm.store.refs import store_name

    return store_name(ref.with_digest(None).with_tag(referrers_tag(subject)))


def _merged(existing: ImageIndex | None, entry: Descriptor) -> ImageIndex:
    items = [d for d in (existing.manifests if existing else ()) if d.digest != entry.digest]
    return ImageIndex(tuple([*items, entry]))


def _entry(desc: Descriptor, manifest: Manifest) -> Descriptor:
    return Descriptor(desc.media_type, desc.digest, desc.size, dict(manifest.annotations),
                      manifest.artifact_type)


def attach_referrer(home: Home, ref: Reference, manifest: Manifest,
                    repo: Repository | None = None, data: bytes | None = None,
                    desc: Descriptor | None = None) -> Descriptor:
    """Store ``manifest`` (whose blobs the store already holds) as a referrer of its
    subject under ``ref``'s repository; push it to ``repo`` too when given.

    ``data`` is the manifest's bytes as read from a registry, kept as they are so
    the referrer keeps its digest; ``desc``, when given, is their descriptor as the
    reader verified it (so they are not hashed again).
    """
    assert manifest.subject is not None, "a referrer needs a subject"
    subject = manifest.subject.digest
    store = home.store
    if data is None:
        data = manifest.to_bytes()
        desc = None
    if desc is None:
        desc = store.put_bytes(data, manifest.media_type)
    else:
        store.put_verified(desc, data)
    entry = _entry(desc, manifest)
    name = _store_name(ref, subject)
    with store.ref_lock(name):
        found = store.resolve(name)
        existing = store.load_manifest(found) if found is not None else None
        listed = existing.manifests if isinstance(existing, ImageIndex) else ()
        if entry not in listed:  # already listed as it is: nothing to write
            index = _merged(existing if isinstance(existing, ImageIndex) else None, entry)
            store.set_ref(name, store.put_manifest(index))
    if repo is not None:
        _push_one(home, repo, desc, manifest, data)
    return desc


def _push_one(home: Home, repo: Repository, desc: Descriptor, manifest: Manifest,
              data: bytes) -> None:
    """Push a referrer; every transport adds it to its subject's fallback index."""
    bar = SILENT.start("referrer", 0)
    for blob in manifest.blobs():
        repo.push_blob(blob, home.store, bar)
    repo.push_manifest(desc, data, None)


def stored_referrers(home: Home, ref: Reference, subject: Digest,
                     artifact_type: str | None = None) -> list[tuple[Descriptor, Manifest]]:
    """The referrer manifests of ``subject`` the store holds under ``ref``'s repository."""
    store = home.store
    found = store.resolve(_store_name(ref, subject)) if store.exists() else None
    if found is None:
        return []
    index = store.load_manifest(found)
    if not isinstance(index, ImageIndex):
        return []
    out = []
    for d in index.manifests[:MAX_REFERRERS]:
        if d.artifact_type not in (None, artifact_type) and artifact_type is not None:
            continue
        try:
            obj = store.load_manifest(d)
        except NotFoundError:
            continue
        # A listing written by another tool may leave artifactType out: the manifest
        # itself says what it is.
        if isinstance(obj, Manifest) and (artifact_type is None
                                          or referrer_type(obj) == artifact_type):
            out.append((d, obj))
    return out


def referrer_type(manifest: Manifest) -> str:
    """What a referrer is: its ``artifactType``, else its config's media type (the
    rule of the referrers API)."""
    return manifest.artifact_type or manifest.config.media_type


def push_referrers(home: Home, ref: Reference, repo: Repository, subject: Digest) -> int:
    """Push every referrer of ``subject`` that the store holds (under ``ref``) to ``repo``."""
    count = 0
    for desc, manifest in stored_referrers(home, ref, subject):
        if all(home.store.has_blob(b.digest) for b in manifest.blobs()):
            _push_one(home, repo, desc, manifest, home.store.read_blob(desc))
            count += 1
    return count


def fetch_referrers(home: Home, ref: Reference, repo: Repository, subject: Digest) -> int:
    """Bring every referrer ``repo`` lists for ``subject`` (bounded) into the store under
    ``ref``'s repository, byte for byte, each blob verified as it lands; how many."""
    count = 0
    for listed in repo.referrers(subject)[:MAX_REFERRERS]:
        desc, data = repo.get_manifest(str(listed.digest))
        obj = parse_manifest_bytes(data, f"{repo.ref.locator}@{listed.digest}")
        if not isinstance(obj, Manifest) or obj.subject is None \
                or obj.subject.digest != subject:
            raise ManifestError(str(listed.digest), f"listed as a referrer of {subject} "
                                "but is not one")
        for blob in obj.blobs():
            if home.store.has_blob(blob.digest):
                continue
            with home.store.writer(blob, where=str(repo.ref.locator)) as w:
                if w.offset:
                    w.restart()
                repo.fetch_blob(blob, w, SILENT.start("referrer", blob.size))
                w.commit()
        attach_referrer(home, ref, obj, data=data, desc=desc)
        count += 1
    return count
