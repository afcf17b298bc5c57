"""Project workflows: resolve ``simplex.toml`` into ``simplex.lock``, install the lock.

``lock`` resolves through a provider (the index, or a registry's tag list), then
pins every artifact's manifest and layer digests by reading the manifests from the
registry (verified, and kept in the store so install need not fetch them again).
``install`` fetches every missing blob of every artifact in one parallel pass,
verifies them, and links the trees into the project's ``.simplex/``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from sxpm.core.http import strip_userinfo
from sxpm.core.progress import SILENT, Reporter
from sxpm.errors import CorruptBlobError, InputError, ManifestError, NotFoundError, StoreError
from sxpm.installed.records import find_installed, list_installed
from sxpm.project.lock import (
    Lock,
    LockedArtifact,
    LockedLayer,
    LockedVariant,
    changed_requirements,
)

if TYPE_CHECKING:
    from sxpm.core.artifact import Dependency, Variant
    from sxpm.core.oci import Descriptor, ImageIndex, Manifest
    from sxpm.core.reference import Reference
    from sxpm.core.versions import Version
    from sxpm.home import Home
    from sxpm.ops.fetch import Artifact, Fetcher, Tree
    from sxpm.project.manifest import Project
    from sxpm.resolver import Candidate, Provider, Resolution, Resolved
    from sxpm.transport import TransportOptions

# The store, transports, resolver and version library load in the functions that use
# them: a no-op `sxpm install --frozen` only reads the lock and the install records.


class LockMismatchError(InputError):
    """``--locked`` and the lock would change."""


# --- providers --------------------------------------------------------------------


class RegistryProvider:
    """Candidates from a registry's tag list, for private registries with no index.

    Each semantic-version tag of ``<registry>/<name>`` is a candidate; its kind,
    dependencies and variants are read from the manifest (one request per tag).
    """

    def __init__(self, registry: str, fetcher: Fetcher) -> None:
        self.registry = registry.rstrip("/")
        self.fetcher = fetcher

    def _source(self, name: str) -> Reference:
        from sxpm.core.reference import Reference

        return Reference.parse_locator(f"{self.registry}/{name}", exact=False)

    def candidates(self, name: str) -> Sequence[Candidate]:
        from sxpm.core.versions import parse_version

        ref = self._source(name)
        try:
            tags = self.fetcher.repo(ref).tags()
        except NotFoundError:
            return []
        out = []
        for tag in tags:
            try:
                version = parse_version(tag)
            except InputError:
                continue
            top = self.fetcher.tagged(ref.with_tag(tag))
            out.append(self._candidate(name, version, ref, top.descriptor, top.obj))
        return out

    def _candidate(self, name: str, version: Version, source: Reference, desc: Descriptor,
                   obj: Manifest | ImageIndex) -> Candidate:
        from sxpm.core import oci
        from sxpm.core.artifact import Dependency, Variant
        from sxpm.core.oci import ImageIndex, Manifest
        from sxpm.resolver import Candidate

        variants: list[Variant] = []
        deps: dict[str, Dependency] = {}
        manifests: list[Manifest] = []
        if isinstance(obj, ImageIndex):
            for entry in obj.manifests:
                ann = entry.annotations
                memory = ann.get(oci.ANN_MEMORY)
                variants.append(Variant(ann.get(oci.ANN_VARIANT, str(entry.digest)),
                                        entry.digest, int(ann.get("org.simplex.size", 0)),
                                        int(memory) if memory else None,
                                        ann.get(oci.ANN_BASE_MODEL)))
                child = self.fetcher.manifest(source, entry.digest).obj
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
                    dep = Dependency.from_dict(d)
                    deps[dep.name] = dep
            except (ValueError, TypeError, KeyError, AttributeError):
                raise ManifestError(f"{source}:{version}", "bad dependencies annotation",
                                    hint="the registry serves a malformed artifact") from None
        return Candidate(name, kind, version, desc.digest, source,
                         tuple(deps.values()), tuple(variants))

    def known_names(self) -> Iterable[str]:
        return []


# --- lock -----------------------------------------------------------------------


@dataclass
class LockResult:
    lock: Lock
    changed: bool
    resolution: Resolution | None = None
    updates: list[str] = field(default_factory=list)


def _pin(fetcher: Fetcher, resolved: Resolved) -> LockedArtifact:
    """The lock record of ``resolved``: its manifests read (and kept in the store), what
    it is checked against the index line, its signer checked against the policy. A
    model whose variant each machine chooses gets every variant of its image index."""
    from sxpm.core import oci
    from sxpm.ops.fetch import Identity

    cand, variant = resolved.candidate, resolved.variant
    if cand.ref is None:
        raise ManifestError(str(cand), "its index line names no repository",
                            hint="the index must give every line a ref")
    tree = fetcher.tree(cand.ref.with_digest(cand.digest))
    expect = Identity(cand.kind, cand.name, str(cand.version))
    portable = resolved.per_machine and tree.index is not None
    entries = list(tree.index.manifests) if portable and tree.index is not None \
        else [tree.entry(variant.name if variant else None)]
    found = [fetcher.artifact(tree, entry, expect=expect) for entry in entries]
    fetcher.keep(tree)

    def layers(art: Artifact) -> tuple[LockedLayer, ...]:
        return tuple(LockedLayer(layer.title or str(layer.digest), layer.digest, layer.size,
                                 layer.media_type) for layer in art.info.manifest.layers)

    signer = found[0].signer
    record = LockedArtifact(
        name=cand.name, kind=cand.kind, version=str(cand.version), source=cand.ref,
        digest=cand.digest, manifest=None,
        dependencies=tuple(sorted({d.name for d in resolved.deps})),
        signer=str(signer) if signer else None)
    if portable:
        # Named as the variant policy names them (variant_values), in the index's order.
        return replace(record, variants=tuple(
            LockedVariant(entry.annotations.get(oci.ANN_VARIANT, str(entry.digest)),
                          entry.digest, layers(art))
            for entry, art in zip(entries, found, strict=True)))
    return replace(record, manifest=found[0].info.descriptor.digest,
                   variant=variant.name if variant else None, layers=layers(found[0]))


def lock(project: Project, home: Home, provider: Provider, *, index_source: str = "",
         index_state: str = "", update: Sequence[str] | None = None,
         memory_budget: int | None = None, options: TransportOptions | None = None,
         offline: bool = False, insecure_skip_verify: bool = False,
         fetcher: Fetcher | None = None, write: bool = True) -> LockResult:
    """Resolve and pin; keeps versions the existing lock has unless ``update`` names them.

    ``update=None`` keeps every locked version it can; ``update=[]`` moves everything
    forward; ``update=[names]`` moves only those names. ``fetcher`` is the command's
    (made for ``project`` when not given).
    """
    from sxpm.ops.fetch import Fetcher
    from sxpm.resolver import resolve

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
    fetcher = fetcher or Fetcher.for_command(home, project, options=options, offline=offline,
                                             skip_verify=insecure_skip_verify)
    pinned = [_pin(fetcher, r) for r in resolution.artifacts.values()]
    new = Lock(project.requirements_hash(), project.requirement_records(), pinned,
               strip_userinfo(index_source), index_state)
    updates = _diff_versions(old, new)
    changed = old is None or old.dumps() != new.dumps()
    if changed and write:
        new.write(project.lock_path)
    return LockResult(new, changed, resolution, updates)


def _diff_versions(old: Lock | None, new: Lock) -> list[str]:
    before = old.by_name() if old else {}
    out = []
    for art in new.artifacts:
        prev = before.get(art.name)
        if prev is None:
            out.append(f"add {art.name} {art.version}")
        elif prev.version != art.version or prev.manifests() != art.manifests():
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
    # Variants of one version sit side by side (installed.tree.tree_dir): the locked
    # one is any tree of that version whose record names its manifest. A variant this
    # machine chose before stays: free memory moves, and a reinstall per change would
    # churn the tree under a running model.
    manifests = {str(m) for m in art.manifests()}
    return any(i.record.get("digest") in manifests
               for i in find_installed(root, art.kind, art.name, art.version))


def install_lock(home: Home, lock_: Lock, root: Path, *, offline: bool = False,
                 options: TransportOptions | None = None, reporter: Reporter = SILENT,
                 insecure_skip_verify: bool = False, cwd: Path | None = None,
                 project: Project | None = None, fetcher: Fetcher | None = None,
                 memory_budget: Callable[[], int | None] | None = None) -> InstallReport:
    """Install exactly what ``lock_`` pins under ``root``; nothing is re-resolved.

    Each record is checked as a chain before any layer is fetched: the manifest
    it installs must be the one its ``digest`` names (or a variant of that image
    index), with the layers the record lists, and the artifact must be what the
    record says. Where the lock lets each machine choose the variant, the variant
    policy (:mod:`sxpm.core.variants`) chooses among the locked variants for
    ``memory_budget()`` (usable bytes; default: this machine's, measured only then),
    and every locked variant must be the one the image index lists. A trust policy is
    enforced again (it may have changed since the lock was written) against that
    ``digest``. ``fetcher`` is the command's; else
    one is made when something is to be installed (a no-op install reads only the
    lock and the install records), with the policy of ``project`` (or of ``cwd``).
    """
    report = InstallReport()
    todo: list[LockedArtifact] = []
    for art in lock_.artifacts:
        (report.unchanged if _is_installed(root, art) else todo).append(art)
    if todo:
        from sxpm.ops.fetch import Fetcher

        fetcher = fetcher or Fetcher.for_command(home, project, cwd=cwd, options=options,
                                                 offline=offline,
                                                 skip_verify=insecure_skip_verify)
        with home.store.in_use():  # gc waits until the refs name what was fetched
            _install_todo(home, fetcher, todo, root, report, reporter=reporter,
                          memory_budget=memory_budget)
        if project is not None:  # gc keeps, and rm asks before removing, what it pins
            # Here, not at the top: a no-op `install --frozen` must not load the store.
            from sxpm.ops.lifecycle import record_project

            record_project(home, project.lock_path)
    locked = {(a.kind, a.name, a.version, str(m)) for a in lock_.artifacts
              for m in a.manifests()}
    for item in list_installed(root):
        if (item.kind, item.name, item.version, item.record.get("digest")) not in locked:
            from sxpm.installed.tree import remove_trees

            remove_trees([item])
            report.removed.append(f"{item.name} {item.version}")
    return report


def _choose(tree: Tree, art: LockedArtifact, budget: int | None) -> LockedArtifact:
    """The variant this machine installs of a record that lets it choose: each locked
    variant checked against the entry the image index lists for it, then the variant
    policy run over the locked ones (in the index's order, with its sizes)."""
    from sxpm.core.variants import choose_variant

    where = f"the lock's record of {art.name}"
    altered = "the lock was altered; run `sxpm lock` to write it again"
    if tree.index is None:
        raise ManifestError(where, f"its digest {art.digest} names one manifest, not the "
                            "image index its variants come from", path="variants",
                            hint=altered)
    listed = {v.name: v for v in tree.index.variant_values()}
    for locked in art.variants:
        entry = listed.get(locked.name)
        if entry is None or entry.digest != locked.manifest:
            what = f"lists {entry.digest}" if entry else "lists no such variant"
            raise ManifestError(where, f"its variant {locked.name!r} pins manifest "
                                f"{locked.manifest}; the image index {art.digest} {what}",
                                path=f"variants.{locked.name}", hint=altered)
    by_name = {v.name: v for v in art.variants}
    options = [v for v in tree.index.variant_values() if v.name in by_name]
    return art.chosen(by_name[choose_variant(options, budget=budget).name])


def _chain(fetcher: Fetcher, art: LockedArtifact, budget: int | None = None
           ) -> tuple[LockedArtifact, Artifact]:
    """The artifact a lock record installs, checked link by link: digest -> index ->
    variant manifest -> layers, and the record's name, kind and version; with the
    record as installed. A record that lets each machine choose its variant installs
    the one :func:`_choose` picks for ``budget``."""
    from sxpm.core import oci
    from sxpm.ops.fetch import Identity

    where = f"the lock's record of {art.name}"
    tree = fetcher.tree(art.source.with_digest(art.digest))
    chose = art.manifest is None
    if chose:  # the name was checked against the index entry there
        art = _choose(tree, art, budget)
    assert art.manifest is not None
    entry = tree.entry_for(art.manifest)
    if entry is None:
        what = "an image index that does not list it" if tree.index is not None else \
            "another manifest"
        raise ManifestError(where, f"its manifest {art.manifest} is not what its digest "
                            f"{art.digest} names ({what})", path="manifest",
                            hint="the lock was altered; run `sxpm lock` to write it again")
    if tree.index is not None and not chose \
            and entry.annotations.get(oci.ANN_VARIANT) != art.variant:
        raise ManifestError(where, f"its manifest {art.manifest} is variant "
                            f"{entry.annotations.get(oci.ANN_VARIANT)!r} of {art.digest}, "
                            f"not {art.variant!r}", path="variant",
                            hint="the lock was altered; run `sxpm lock` to write it again")
    found = fetcher.artifact(tree, entry, expect=Identity(art.kind, art.name, art.version))
    pinned = [(layer.path, layer.digest, layer.size) for layer in art.layers]
    actual = [(layer.title or str(layer.digest), layer.digest, layer.size)
              for layer in found.info.manifest.layers]
    if pinned != actual:
        raise CorruptBlobError(str(art.manifest), "a manifest whose layers differ from the lock",
                               where=str(art.source))
    return art, found


def _install_todo(home: Home, fetcher: Fetcher, todo: list[LockedArtifact], root: Path,
                  report: InstallReport, *, reporter: Reporter,
                  memory_budget: Callable[[], int | None] | None = None) -> None:
    from sxpm.installed.tree import materialize
    from sxpm.ops.transfer import fetch_blobs

    budget: int | None = None
    if any(art.per_machine for art in todo):  # measured once, and only when it decides
        # Here, as the rest of the install machinery: a no-op install measures nothing.
        from sxpm.core.detect import memory_budget as measured

        budget = (memory_budget or measured)()
    chained = [_chain(fetcher, art, budget) for art in todo]
    wanted = [(art.source, b) for art, found in chained for b in found.info.manifest.blobs()]
    missing = [(s, b) for s, b in wanted if not home.store.has_blob(b.digest)]
    if missing and fetcher.offline:
        raise StoreError(f"{len(missing)} blob(s) are not in the store and --offline was "
                         "given", hint="run once without --offline")
    report.blobs_fetched, report.bytes_fetched = fetch_blobs(
        home, missing, options=fetcher.options, reporter=reporter)
    for art, found in chained:
        fetcher.keep(found.tree)
        name = str(art.source.with_digest(found.info.descriptor.digest))
        materialize(home.store, found.info, root, name,
                    signer=found.signer.to_dict() if found.signer else None)
        home.store.set_ref(name, found.info.descriptor)
        report.installed.append(art)  # as installed here: with the variant chosen
