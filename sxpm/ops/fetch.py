"""One way to get an artifact: its manifests verified once, its trust checked once.

Every workflow that needs an artifact (pull, install, lock, sign, verify, and the
runner's ``--install``) asks one :class:`Fetcher`, made once per command:

* :meth:`Fetcher.tree` reads a reference's manifest tree (the top manifest or image
  index and every variant's manifest) from the store when it holds them, else from
  the registry. Each manifest's bytes are checked against their digest once and
  remembered by digest for the rest of the command, so no later step reads or
  hashes them again.
* :meth:`Fetcher.artifact` picks the manifest to install, reads its config, and
  works out the artifact's :class:`Identity` from everything that names it: the
  index's and the manifest's annotations, the config, and what the caller expected
  (the index line, the lock record). If they disagree on kind, name or version the
  artifact is refused: the name the trust policy is checked against is exactly the
  name that is installed.
* :meth:`Fetcher.signer` checks the trust policy for that identity once per
  artifact: against the signatures the store keeps, else the registry's.

The trust policy is loaded once, by :func:`policy_for`, from the home's config and
the ``[trust]`` table of the project the command already read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sxpm.artifacts import ollama
from sxpm.artifacts.describe import ArtifactInfo, not_an_artifact, parse_config
from sxpm.core import oci
from sxpm.core.oci import (
    MAX_MANIFEST_BYTES,
    Descriptor,
    ImageIndex,
    Manifest,
    parse_manifest_bytes,
)
from sxpm.core.progress import SILENT
from sxpm.core.reference import Digest, Reference
from sxpm.core.variants import select as select_variant
from sxpm.errors import (
    CorruptBlobError,
    ManifestError,
    NotFoundError,
    SignatureError,
    StoreError,
)
from sxpm.home import Home
from sxpm.project.manifest import Project, trust_here
from sxpm.store.refs import store_name
from sxpm.transport import Repository, TransportOptions, open_repository
from sxpm.trust.enforce import (
    keep_signature,
    remote_candidates,
    stored_candidates,
    tag_version,
)
from sxpm.trust.payload import Payload
from sxpm.trust.policy import Requirement, TrustPolicy, load_policy
from sxpm.trust.verify import Candidate, VerifiedSigner, check_signatures, valid_signers

Budget = int | Callable[[], int | None] | None
"""Usable bytes for the variant policy, or a function measuring them when needed."""


def policy_for(home: Home, project: Project | None = None, *,
               cwd: Path | None = None) -> TrustPolicy:
    """The trust policy of a command: the home's, plus the project's ``[trust]`` table
    (the project the command loaded, else ``simplex.toml`` in ``cwd``, default here)."""
    if project is not None:
        return load_policy(home, project.data.get("trust"), str(project.path))
    table, source = trust_here(cwd)
    return load_policy(home, table, source)


@dataclass(frozen=True)
class Fetched:
    """A manifest or image index whose bytes were checked against ``descriptor``."""

    descriptor: Descriptor
    obj: Manifest | ImageIndex
    data: bytes


@dataclass(frozen=True)
class Identity:
    """What an artifact is: the kind, name and version it is installed and trusted as."""

    kind: str
    name: str
    version: str

    def __str__(self) -> str:
        return f"{self.kind} {self.name} {self.version}"


@dataclass(frozen=True)
class Tree:
    """A reference's manifests: the top one and, for an image index, every variant's."""

    ref: Reference
    top: Fetched
    children: tuple[Fetched, ...] = ()

    @property
    def descriptor(self) -> Descriptor:
        return self.top.descriptor

    @property
    def index(self) -> ImageIndex | None:
        return self.top.obj if isinstance(self.top.obj, ImageIndex) else None

    def entry(self, variant: str | None, *, budget: Budget = None,
              pinned: str | None = None) -> Descriptor:
        """The index entry the variant policy picks (:mod:`sxpm.core.variants`: ``variant``,
        else ``pinned``, else the largest that fits ``budget``); the top for a manifest.
        A ``budget`` given as a function is called only when there is a choice to make:
        measuring the machine (the accelerator's library loaded, ~20 ms) is wasted on a
        single manifest."""
        index = self.index
        if index is None:
            return self.top.descriptor
        if callable(budget):
            budget = budget() if variant is None and pinned is None else None
        return select_variant(index, explicit=variant, pinned=pinned, budget=budget)

    def entry_for(self, digest: Digest) -> Descriptor | None:
        """The entry whose manifest is ``digest``; None when the tree has no such one."""
        index = self.index
        if index is None:
            return self.top.descriptor if digest == self.top.descriptor.digest else None
        return next((d for d in index.manifests if d.digest == digest), None)

    def manifest(self, entry: Descriptor) -> Manifest:
        for child in (*self.children, self.top):
            if child.descriptor.digest == entry.digest and isinstance(child.obj, Manifest):
                return child.obj
        raise ManifestError(str(entry.digest), f"not a manifest of {self.ref}")

    def manifests(self) -> list[tuple[Descriptor, bytes]]:
        """Every manifest's descriptor and bytes, variants first, top last."""
        return [(f.descriptor, f.data) for f in (*self.children, self.top)]


@dataclass(frozen=True)
class Artifact:
    """One manifest of a tree, ready to install: what it is, and who signed it."""

    tree: Tree
    info: ArtifactInfo
    identity: Identity
    signer: VerifiedSigner | None


@dataclass
class Fetcher:
    """Gets artifacts for one command; see the module docstring.

    ``offline``: never ask a registry. ``skip_verify``: do not enforce the policy
    (``--insecure-skip-verify``).
    """

    home: Home
    policy: TrustPolicy
    options: TransportOptions = field(default_factory=TransportOptions)
    offline: bool = False
    skip_verify: bool = False
    _manifests: dict[Digest, Fetched] = field(default_factory=dict, repr=False)
    _configs: dict[Digest, dict[str, Any]] = field(default_factory=dict, repr=False)
    _repos: dict[str, Repository] = field(default_factory=dict, repr=False)
    _signers: dict[tuple[Any, ...], VerifiedSigner] = field(default_factory=dict, repr=False)
    fetched: dict[Digest, int] = field(default_factory=dict, repr=False)
    """Config blobs this fetcher brought into the store (digest -> size): transfers
    report them with the layers."""

    @classmethod
    def for_command(cls, home: Home, project: Project | None = None, *,
                    cwd: Path | None = None, options: TransportOptions | None = None,
                    offline: bool = False, skip_verify: bool = False) -> Fetcher:
        return cls(home, policy_for(home, project, cwd=cwd), options or TransportOptions(),
                   offline, skip_verify)

    # --- manifests ----------------------------------------------------------------------
    def repo(self, ref: Reference) -> Repository:
        if self.offline:
            raise StoreError(f"{ref} is not in the store and --offline was given",
                             hint="run once without --offline")
        key = ref.locator
        if key not in self._repos:
            self._repos[key] = open_repository(ref, self.options)
        return self._repos[key]

    def _remember(self, digest: Digest, data: bytes, where: str) -> Fetched:
        obj = parse_manifest_bytes(data, where)
        fetched = Fetched(Descriptor(obj.media_type, digest, len(data),
                                     artifact_type=obj.listed_type), obj, data)
        self._manifests[digest] = fetched
        return fetched

    def manifest(self, ref: Reference, digest: Digest) -> Fetched:
        """The manifest ``digest`` of ``ref``'s repository: remembered, else the store's,
        else the registry's; its bytes are checked against the digest once."""
        known = self._manifests.get(digest)
        if known is not None:
            return known
        store = self.home.store
        where = f"{ref.with_digest(None).with_tag(None)}@{digest}"
        if store.has_blob(digest):
            data = store.read_blob(Descriptor("application/octet-stream", digest,
                                              store.blob_size(digest)))
            return self._remember(digest, data, where)
        desc, data = self.repo(ref).get_manifest(str(digest))
        if desc.digest != digest:
            raise CorruptBlobError(str(digest), str(desc.digest), where=str(ref))
        return self._remember(digest, data, where)

    def tagged(self, ref: Reference) -> Fetched:
        """What ``ref``'s tag names in its registry now (read and checked once)."""
        desc, data = self.repo(ref).get_manifest(ref.tag or "latest")
        known = self._manifests.get(desc.digest)
        return known if known is not None else self._remember(desc.digest, data, str(ref))

    def top(self, ref: Reference, *, where: str = "any") -> Fetched:
        """What ``ref`` names. ``where``: "store" (only), "registry" (a tag is asked
        of the registry), or "any" (the store's tag, else the registry's)."""
        store = self.home.store
        if ref.digest is not None:
            if where == "store" and not store.has_blob(ref.digest):
                raise NotFoundError(f"{ref} is not in the store", hint="pull it first")
            found = self.manifest(ref, ref.digest)
            if ref.tag and where != "registry":
                tagged = store.resolve(store_name(ref)) if store.exists() else None
                if tagged is not None and tagged.digest != ref.digest:
                    raise NotFoundError(f"{ref}: the tag points at {tagged.digest}, not "
                                        f"{ref.digest}")
            return found
        if where != "registry":
            tagged = store.resolve(store_name(ref)) if store.exists() else None
            if tagged is not None:
                return self.manifest(ref, tagged.digest)
            if where == "store":
                raise NotFoundError(f"{ref} is not in the store",
                                    hint="pack or pull it first; `sxpm list` shows what is "
                                         "there")
        return self.tagged(ref)

    def tree(self, ref: Reference, *, where: str = "any") -> Tree:
        """``ref``'s manifest tree (see :meth:`top` for ``where``); no layer is read."""
        top = self.top(ref, where=where)
        pinned = ref.with_digest(top.descriptor.digest)
        children = []
        if isinstance(top.obj, ImageIndex):
            for entry in top.obj.manifests:
                child = self.manifest(pinned, entry.digest)
                if not isinstance(child.obj, Manifest):
                    raise StoreError(f"{ref}: nested image indexes are not supported")
                children.append(child)
        return Tree(ref, top, tuple(children))

    def keep(self, tree: Tree) -> None:
        """Put the tree's manifests into the store (already checked: not hashed again)."""
        for desc, data in tree.manifests():
            self.home.store.put_verified(desc, data)

    # --- what the artifact is -------------------------------------------------------------
    def config(self, ref: Reference, manifest: Manifest) -> dict[str, Any]:
        """The config blob of ``manifest`` (fetched into the store when missing)."""
        desc = manifest.config
        known = self._configs.get(desc.digest)
        if known is not None:
            return known
        if desc.size > MAX_MANIFEST_BYTES:
            raise ManifestError(str(desc.digest), f"config blob of {desc.size} bytes is over "
                                "the limit", hint="the registry serves a malformed artifact")
        store = self.home.store
        if not store.has_blob(desc.digest):
            repo = self.repo(ref)
            with store.writer(desc, where=str(ref)) as w:
                if store.has_blob(desc.digest):  # another install fetched it while we waited
                    w.abort(keep_partial=True)
                else:
                    if w.offset:
                        w.restart()
                    repo.fetch_blob(desc, w, SILENT.start("config", desc.size))
                    w.commit()
                    self.fetched[desc.digest] = desc.size
        config = parse_config(store.read_blob(desc), desc)
        self._configs[desc.digest] = config
        return config

    def identity(self, tree: Tree, manifest: Manifest | None = None,
                 config: dict[str, Any] | None = None, expect: Identity | None = None
                 ) -> Identity:
        """The kind, name and version every source that states them agrees on.

        Sources: the index's annotations, ``manifest``'s (default: an index's first
        variant), its ``config`` and ``expect`` (the index line or lock record). A
        disagreement is refused: an artifact must be trusted and installed as one
        name. A name no source states is the repository's; a version, the tag.
        """
        index = tree.index
        if manifest is None:
            manifest = tree.manifest(tree.entry(None)) if index is None or index.manifests \
                else None
        claims: list[tuple[str, dict[str, str | None]]] = []
        if index is not None:
            claims.append(("image index", {
                "kind": index.kind,
                "name": index.annotations.get(oci.ANN_NAME),
                "version": index.annotations.get(oci.ANN_VERSION)}))
        if manifest is not None:
            claims.append(("manifest", {"kind": manifest.kind,
                                        "name": manifest.annotations.get(oci.ANN_NAME),
                                        "version": manifest.annotations.get(oci.ANN_VERSION)}))
        if config is not None and manifest is not None:
            body = config.get("descriptor", {}) if manifest.config.media_type == \
                oci.MODEL_CONFIG else config
            claims.append(("config", {"kind": oci.KIND_BY_CONFIG.get(manifest.config.media_type),
                                      "name": _text(body.get("name")),
                                      "version": _text(body.get("version"))}))
        if expect is not None:
            claims.append(("record", {"kind": expect.kind, "name": expect.name,
                                      "version": expect.version}))
        agreed: dict[str, str] = {}
        first: dict[str, str] = {}
        for what, values in claims:
            for key, value in values.items():
                if value is None:
                    continue
                if key in agreed and agreed[key] != value:
                    raise ManifestError(
                        str(tree.ref), f"its {first[key]} says {key} {agreed[key]!r}, its "
                        f"{what} {value!r}", hint="an artifact must name itself one way; "
                        "it is not installed (ask its publisher to pack it again)")
                agreed.setdefault(key, value)
                first.setdefault(key, what)
        return Identity(agreed.get("kind", "unknown"),
                        agreed.get("name") or tree.ref.name,
                        agreed.get("version") or tree.ref.tag or "")

    def artifact(self, tree: Tree, entry: Descriptor | None = None, *,
                 expect: Identity | None = None, trust: bool = True) -> Artifact:
        """The manifest ``entry`` of ``tree`` (default: the first variant), checked."""
        entry = entry or tree.entry(None)
        manifest = tree.manifest(entry)
        if manifest.kind is None and ollama.is_ollama(manifest):  # docs/format.md
            manifest = ollama.view(manifest, str(entry.digest))  # titled parts, same digests
        if manifest.kind is None:  # refused before its config or any layer is fetched
            raise not_an_artifact(manifest, f"{tree.ref} ({entry.digest})")
        config = self.config(tree.ref.with_digest(tree.descriptor.digest), manifest)
        identity = self.identity(tree, manifest, config, expect)
        if identity.kind == "unknown":
            raise not_an_artifact(manifest, str(entry.digest))
        signer = self.signer(tree, identity) if trust else None
        variant = entry.annotations.get(oci.ANN_VARIANT) if tree.index is not None else None
        desc = Descriptor(manifest.media_type, entry.digest, entry.size,
                          artifact_type=manifest.artifact_type)
        info = ArtifactInfo(identity.kind, identity.name, identity.version, desc, manifest,
                            variant, config)
        return Artifact(tree, info, identity, signer)

    def check(self, tree: Tree, entry: Descriptor) -> VerifiedSigner | None:
        """Check one manifest of ``tree`` for a transfer: an sxpm artifact as
        :meth:`artifact` does; any other OCI artifact by its manifests alone (its
        config is not sxpm's to read). Returns the signer."""
        manifest = tree.manifest(entry)
        if manifest.kind is None:
            return self.signer(tree, self.identity(tree, manifest))
        return self.artifact(tree, entry).signer

    # --- trust ----------------------------------------------------------------------------
    def requirement(self, tree: Tree, identity: Identity) -> Requirement | None:
        """What the policy asks of this artifact: the signers trusted for its name and
        for the repository it came from (so a repository name cannot escape a rule)."""
        if self.skip_verify:
            return None
        return self.policy.requirement([identity.name, tree.ref.name])

    def signer(self, tree: Tree, identity: Identity, *,
               requirement: Requirement | None = None, where: str = "any",
               keep: bool = True) -> VerifiedSigner | None:
        """Who signed the artifact, checked once per command; None when no policy covers
        it. Raises :class:`~sxpm.errors.SignatureError` when one does and no trusted
        signature is valid. The store's signatures are tried first; the registry's
        (``where`` "any" or "registry") when those do not satisfy the policy."""
        req = requirement or self.requirement(tree, identity)
        if req is None:
            return None
        top = tree.descriptor.digest
        wanted = tag_version(tree.ref)
        key = (top, identity, req, wanted)
        known = self._signers.get(key)
        if known is not None:
            return known
        expected = Payload(identity.kind, identity.name, identity.version, top)

        def check(candidates: Iterable[Candidate]) -> VerifiedSigner:
            return check_signatures(expected, req, candidates, artifact=str(tree.ref),
                                    tag_version=wanted)

        stored = stored_candidates(self.home, tree.ref, top) if where != "registry" else []
        remote = where != "store" and not self.offline
        try:
            if stored or not remote:
                signer = check(stored)
                self._signers[key] = signer
                return signer
        except SignatureError:
            if not remote:
                raise
        candidates = remote_candidates(self.home, self.repo(tree.ref), top)
        signer = check(candidates)
        if keep:
            keep_signature(self.home, tree.ref,
                           next(c for c in candidates if c.descriptor.digest == signer.signature))
        self._signers[key] = signer
        return signer


    def valid_signers(self, tree: Tree, identity: Identity, *, where: str = "any"
                      ) -> tuple[list[VerifiedSigner], list[str]]:
        """Everyone with a valid signature on the artifact, whoever they are (no policy
        decides here), and what is wrong with each other signature found: the store's
        signatures, and the registry's unless ``where`` is "store" or offline."""
        top = tree.descriptor.digest
        expected = Payload(identity.kind, identity.name, identity.version, top)
        found = stored_candidates(self.home, tree.ref, top) if where != "registry" else []
        if where != "store" and not self.offline:
            seen = {c.descriptor.digest for c in found}
            found += [c for c in remote_candidates(self.home, self.repo(tree.ref), top)
                      if c.descriptor.digest not in seen]
        return valid_signers(expected, found, tag_version=tag_version(tree.ref))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def verified_signer(home: Home, ref: Reference, *, cwd: Path | None = None
                    ) -> VerifiedSigner | None:
    """The signer of the artifact ``ref`` names in the store, verified now, offline.

    This is what the lockfile records per artifact (``VerifiedSigner.to_dict()``).
    None when no trust policy covers the artifact; raises
    :class:`~sxpm.errors.SignatureError` when one does and no valid signature from a
    trusted signer is kept in the store.
    """
    fetcher = Fetcher.for_command(home, cwd=cwd, offline=True)
    tree = fetcher.tree(ref, where="store")
    return fetcher.signer(tree, fetcher.identity(tree), where="store")
