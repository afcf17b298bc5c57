"""Project workflows: resolve ``simplex.toml`` into ``simplex.lock``, install the lock.

``lock`` resolves through a provider (the index, or a registry's tag list), then
pins every artifact's manifest and layer digests by reading the manifests from the
registry (verified, and kept in the store so install need not fetch them again).
``install`` fetches every missing blob of every artifact in one parallel pass,
verifies them, and links the trees into the project's ``.simplex/``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from sxpm.core.progress import SILENT, Reporter
from sxpm.errors import CorruptBlobError, InputError, ManifestError, NotFoundError, StoreError
from sxpm.installed.records import INSTALL_RECORD, install_dir, list_installed
from sxpm.project.lock import Lock, LockedArtifact, LockedLayer, changed_requirements

if TYPE_CHECKING:
    from sxpm.artifacts.describe import ArtifactInfo
    from sxpm.core.oci import Descriptor, ImageIndex, Manifest
    from sxpm.core.versions import Version
    from sxpm.home import Home
    from sxpm.project.manifest import Project
    from sxpm.resolver import Candidate, Dep, Provider, Resolution, Variant
    from sxpm.transport import Repository, TransportOptions

# The store, transports, resolver and version library load in the functions that use
# them: a no-op `sxpm install --frozen` only reads the lock and the install records.


class LockMismatchError(InputError):
    """``--locked`` and the lock would change."""


# --- manifests through the store ----------------------------------------------------


class ManifestSource:
    """Reads manifests by digest: from the store when present, else from the registry.

    Every manifest read from a registry is checked against its digest and kept in the
    store, so lock and install never fetch one twice.
    """

    def __init__(self, home: Home, options: TransportOptions, offline: bool) -> None:
        self.home = home
        self.options = options
        self.offline = offline
        self._repos: dict[str, Repository] = {}

    def repo(self, source: str) -> Repository:
        if source not in self._repos:
            from sxpm.core.reference import Reference
            from sxpm.transport import open_repository

            self._repos[source] = open_repository(Reference.parse(source), self.options)
        return self._repos[source]

    def get(self, source: str, digest: str) -> tuple[Descriptor, Manifest | ImageIndex]:
        from sxpm.core.oci import Descriptor, parse_manifest_bytes
        from sxpm.core.reference import Digest

        d = Digest.parse(digest)
        store = self.home.store
        if store.has_blob(d):
            size = store.blob_size(d)
            data = store.read_blob(Descriptor("application/octet-stream", d, size))
        else:
            if self.offline:
                raise StoreError(f"{source}@{digest} is not in the store and --offline was "
                                 "given", hint="run once without --offline")
            desc, data = self.repo(source).get_manifest(digest)
            if desc.digest != d:
                raise CorruptBlobError(digest, str(desc.digest), where=source)
            store.put_bytes(data, desc.media_type, d.algorithm)
        obj = parse_manifest_bytes(data, f"{source}@{digest}")
        return Descriptor(obj.media_type, d, len(data), artifact_type=obj.artifact_type), obj


# --- providers --------------------------------------------------------------------


class RegistryProvider:
    """Candidates from a registry's tag list, for private registries with no index.

    Each semantic-version tag of ``<registry>/<name>`` is a candidate; its kind,
    dependencies and variants are read from the manifest (one request per tag).
    """

    def __init__(self, registry: str, manifests: ManifestSource) -> None:
        self.registry = registry.rstrip("/")
        self.manifests = manifests

    def _source(self, name: str) -> str:
        return f"{self.registry}/{name}"

    def candidates(self, name: str) -> Sequence[Candidate]:
        from sxpm.core.oci import parse_manifest_bytes
        from sxpm.core.versions import parse_version

        source = self._source(name)
        repo = self.manifests.repo(source)
        try:
            tags = repo.tags()
        except NotFoundError:
            return []
        out = []
        for tag in tags:
            try:
                version = parse_version(tag)
            except InputError:
                continue
            desc, data = repo.get_manifest(tag)
            obj = parse_manifest_bytes(data, f"{source}:{tag}")
            out.append(self._candidate(name, version, source, desc, obj))
        return out

    def _candidate(self, name: str, version: Version, source: str, desc: Descriptor,
                   obj: Manifest | ImageIndex) -> Candidate:
        from sxpm.core import oci
        from sxpm.core.oci import ImageIndex, Manifest
        from sxpm.core.versions import VersionReq
        from sxpm.resolver import Candidate, Dep, Variant

        variants: list[Variant] = []
        deps: dict[str, Dep] = {}
        manifests: list[Manifest] = []
        if isinstance(obj, ImageIndex):
            for entry in obj.manifests:
                ann = entry.annotations
                variants.append(Variant(ann.get(oci.ANN_VARIANT, str(entry.digest)),
                                        str(entry.digest), int(ann.get("org.simplex.size", 0)),
                                        int(ann.get(oci.ANN_MEMORY, 0) or 0),
                                        ann.get(oci.ANN_BASE_MODEL)))
                _, child = self.manifests.get(source, str(entry.digest))
                if isinstance(child, Manifest):
                    manifests.append(child)
        else:
            manifests.append(obj)
        kind = "package"
        for m in manifests:
            kind = m.kind or kind
            try:
                listed = json.loads(m.annotations.get(oci.ANN_DEPENDENCIES, "[]"))
                for d in listed:
                    deps[d["name"]] = Dep(d["name"], VersionReq.parse(d.get("req", "*")),
                                          d.get("kind", "package"))
            except (ValueError, TypeError, KeyError, AttributeError):
                raise ManifestError(f"{source}:{version}", "bad dependencies annotation",
                                    hint="the registry serves a malformed artifact") from None
        return Candidate(name, kind, version, str(desc.digest), source,
                         tuple(deps.values()), tuple(variants))

    def known_names(self) -> Iterable[str]:
        return []


# --- trust ----------------------------------------------------------------------


def check_trust(home: Home, manifests: ManifestSource, source: str, digest: str,
                cwd: Path | None, skip: bool = False) -> str | None:
    """The verified signer of ``source@digest`` when a trust policy covers it.

    Signatures the store keeps are checked first (offline); otherwise the registry's
    referrers. Raises :class:`~sxpm.errors.SignatureError` when a policy covers the
    artifact and no trusted signature is valid. None when nothing covers it.
    """
    if skip:
        return None
    from sxpm.core.reference import Digest, Reference
    from sxpm.errors import SignatureError
    from sxpm.trust.enforce import check_local, check_pull, remote_manifests
    from sxpm.trust.policy import load_policy

    if not load_policy(home, cwd).covers_anything():
        return None
    ref = Reference.parse(source).with_digest(Digest.parse(digest))
    top, _ = manifests.get(source, digest)
    try:
        signer = check_local(home, ref, top, cwd=cwd)
    except SignatureError:
        if manifests.offline:
            raise
        repo = manifests.repo(source)
        signer = check_pull(home, ref, repo, remote_manifests(repo, ref), cwd=cwd)
    return str(signer) if signer else None


# --- lock -----------------------------------------------------------------------


@dataclass
class LockResult:
    lock: Lock
    changed: bool
    resolution: Resolution | None = None
    updates: list[str] = field(default_factory=list)


def _pin(manifests: ManifestSource, cand: Candidate, variant: Variant | None,
         deps: Iterable[Dep]) -> LockedArtifact:
    from sxpm.core.oci import ImageIndex, Manifest

    top_desc, top = manifests.get(cand.ref, cand.digest)
    manifest_digest = cand.digest
    if isinstance(top, ImageIndex):
        entry = top.select(variant.name if variant else None)
        manifest_digest = str(entry.digest)
        _, obj = manifests.get(cand.ref, manifest_digest)
    else:
        obj = top
    if not isinstance(obj, Manifest):
        raise ManifestError(f"{cand.ref}@{manifest_digest}", "nested indexes are not supported")
    layers = tuple(
        LockedLayer(layer.title or str(layer.digest), str(layer.digest), layer.size,
                    layer.media_type) for layer in obj.layers)
    return LockedArtifact(
        name=cand.name, kind=cand.kind, version=str(cand.version), source=cand.ref,
        digest=cand.digest, manifest=manifest_digest,
        variant=variant.name if variant else None,
        dependencies=tuple(sorted({d.name for d in deps})), layers=layers)


def lock(project: Project, home: Home, provider: Provider, *, index_source: str = "",
         index_state: str = "", update: Sequence[str] | None = None,
         memory_budget: int | None = None, options: TransportOptions | None = None,
         offline: bool = False, insecure_skip_verify: bool = False) -> LockResult:
    """Resolve and pin; keeps versions the existing lock has unless ``update`` names them.

    ``update=None`` keeps every locked version it can; ``update=[]`` moves everything
    forward; ``update=[names]`` moves only those names.
    """
    from sxpm.resolver import resolve
    from sxpm.transport import TransportOptions

    old: Lock | None = Lock.read(project.lock_path) if project.lock_path.exists() else None
    preferred: dict[str, str] = {}
    if old is not None:
        preferred = {a.name: a.version for a in old.artifacts}
        if update is not None:
            preferred = {} if not update else {
                n: v for n, v in preferred.items() if n not in update}
        for name in update or []:
            if old is not None and name not in old.by_name():
                raise NotFoundError(f"{name} is not in {project.lock_path}",
                                    hint="`sxpm tree` lists what is locked")
    resolution = resolve(project.requirements(), provider, preferred=preferred,
                         memory_budget=memory_budget)
    # An index provider knows the lines it read: the state this lock was resolved on.
    index_state = index_state or str(getattr(provider, "state", ""))
    manifests = ManifestSource(home, options or TransportOptions(), offline)
    pinned = []
    for r in resolution.artifacts.values():
        art = _pin(manifests, r.candidate, r.variant, r.deps)
        signer = check_trust(home, manifests, art.source, art.digest, project.root,
                             insecure_skip_verify)
        pinned.append(replace(art, signer=signer) if signer else art)
    new = Lock(project.requirements_hash(), project.requirement_records(), pinned,
               index_source, index_state)
    updates = _diff_versions(old, new)
    changed = old is None or old.dumps() != new.dumps()
    if changed:
        new.write(project.lock_path)
    return LockResult(new, changed, resolution, updates)


def _diff_versions(old: Lock | None, new: Lock) -> list[str]:
    before = old.by_name() if old else {}
    out = []
    for art in new.artifacts:
        prev = before.get(art.name)
        if prev is None:
            out.append(f"add {art.name} {art.version}")
        elif prev.version != art.version or prev.manifest != art.manifest:
            out.append(f"update {art.name} {prev.version} -> {art.version}")
    for name in sorted(set(before) - {a.name for a in new.artifacts}):
        out.append(f"remove {name} {before[name].version}")
    return out


def check_fresh(project: Project, current: Lock) -> None:
    """Raise :class:`LockMismatchError` naming what changed if the lock is stale."""
    if current.requirements_hash == project.requirements_hash():
        return
    changes = changed_requirements(current.requirements, project.requirement_records())
    what = "; ".join(changes) if changes else "[registries] or [features] changed"
    raise LockMismatchError(f"{project.lock_path} does not match {project.path}: {what}",
                            hint="run `sxpm lock` (or drop --locked) to update the lock")


# --- install --------------------------------------------------------------------


@dataclass
class InstallReport:
    installed: list[LockedArtifact] = field(default_factory=list)
    unchanged: list[LockedArtifact] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    blobs_fetched: int = 0
    bytes_fetched: int = 0


def _is_installed(root: Path, art: LockedArtifact) -> bool:
    record = install_dir(root, art.kind, art.name, art.version) / INSTALL_RECORD
    try:
        return bool(json.loads(record.read_text()).get("digest") == art.manifest)
    except (OSError, ValueError):
        return False


def install_lock(home: Home, lock_: Lock, root: Path, *, offline: bool = False,
                 options: TransportOptions | None = None, reporter: Reporter = SILENT,
                 insecure_skip_verify: bool = False, cwd: Path | None = None
                 ) -> InstallReport:
    """Install exactly what ``lock_`` pins under ``root``; nothing is re-resolved.

    A trust policy is enforced again (it may have changed since the lock was
    written) before any layer is fetched.
    """
    report = InstallReport()
    todo: list[LockedArtifact] = []
    for art in lock_.artifacts:
        (report.unchanged if _is_installed(root, art) else todo).append(art)
    if todo:
        with home.store.in_use():  # gc waits until the refs name what was fetched
            _install_todo(home, todo, root, report, offline=offline, options=options,
                          reporter=reporter, insecure_skip_verify=insecure_skip_verify,
                          cwd=cwd)
    locked = {(a.kind, a.name, a.version) for a in lock_.artifacts}
    for item in list_installed(root):
        if (item.kind, item.name, item.version) not in locked:
            from sxpm.installed.tree import remove_installed

            remove_installed(root, item.kind, item.name, item.version)
            report.removed.append(f"{item.name} {item.version}")
    return report


def _install_todo(home: Home, todo: list[LockedArtifact], root: Path, report: InstallReport,
                  *, offline: bool, options: TransportOptions | None, reporter: Reporter,
                  insecure_skip_verify: bool, cwd: Path | None) -> None:
    from sxpm.artifacts.describe import ArtifactInfo
    from sxpm.core.oci import Manifest
    from sxpm.installed.tree import materialize
    from sxpm.ops.transfer import fetch_blobs
    from sxpm.transport import TransportOptions

    if todo:
        options = options or TransportOptions()
        manifests = ManifestSource(home, options, offline)
        infos: list[tuple[LockedArtifact, ArtifactInfo]] = []
        wanted: list[tuple[str, Descriptor]] = []
        for art in todo:
            check_trust(home, manifests, art.source, art.digest, cwd, insecure_skip_verify)
            desc, obj = manifests.get(art.source, art.manifest)
            if not isinstance(obj, Manifest):
                raise ManifestError(f"{art.source}@{art.manifest}", "expected a manifest")
            pinned = [(layer.digest, layer.size) for layer in art.layers]
            actual = [(str(layer.digest), layer.size) for layer in obj.layers]
            if pinned != actual:
                raise CorruptBlobError(art.manifest, "a manifest whose layers differ from "
                                       "the lock", where=art.source)
            try:
                config = json.loads(home.store.read_blob(obj.config)) if home.store.has_blob(
                    obj.config.digest) else {}
            except ValueError as exc:
                if isinstance(exc, ManifestError):
                    raise
                raise ManifestError(str(obj.config.digest), "config blob is not JSON") from None
            infos.append((art, ArtifactInfo(art.kind, art.name, art.version, desc, obj,
                                            art.variant, config)))
            wanted += [(art.source, b) for b in obj.blobs()]
        missing = [(s, b) for s, b in wanted if not home.store.has_blob(b.digest)]
        if missing and offline:
            raise StoreError(f"{len(missing)} blob(s) are not in the store and --offline was "
                             "given", hint="run once without --offline")
        report.blobs_fetched, report.bytes_fetched = fetch_blobs(
            home, missing, options=options, reporter=reporter)
        for art, info in infos:
            materialize(home.store, info, root, f"{art.source}@{art.manifest}")
            name = f"{art.source}@{art.manifest}"
            home.store.set_ref(name, info.descriptor)
            report.installed.append(art)
