"""Removing what is installed and stored, and what the store holds on disk.

``gc`` keeps what something still uses: the store's refs, the manifests installed
trees were built from, the artifacts the locks of projects installed from this home
pin, and the signatures (referrers tags) of what is kept; a signature listing whose
subject goes, goes with it. ``rm`` removes an artifact's refs and installed trees in
one step, then collects. ``du`` tells, per artifact, what removing it would give back.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from sxpm.core.oci import KIND_BY_ARTIFACT, Descriptor, ImageIndex, parse_manifest_bytes
from sxpm.core.reference import Digest, Reference
from sxpm.errors import InputError, NotFoundError, SxpmError
from sxpm.home import Home
from sxpm.installed.records import Installed, list_installed
from sxpm.installed.tree import remove_installed
from sxpm.project.lock import Lock
from sxpm.store.layout import OCILayout, write_atomic

PROJECTS_FILE = "projects.json"
_REFERRERS = re.compile(r":(sha256|sha512)-([0-9a-f]{64,128})$")


# --- projects that installed from this home ----------------------------------------------


def record_project(home: Home, lock_path: Path) -> None:
    """Remember that the project whose lock is ``lock_path`` installed from this home, so
    ``gc`` keeps what it pins and ``rm`` asks before removing it."""
    path = home.root / PROJECTS_FILE
    known = project_locks(home)
    text = str(lock_path.resolve())
    if text not in map(str, known):
        write_atomic(path, json.dumps(sorted([*map(str, known), text]), indent=2).encode())


def project_locks(home: Home) -> list[Path]:
    """Lock files of the projects recorded, those that still exist."""
    try:
        data = json.loads((home.root / PROJECTS_FILE).read_text())
    except (OSError, ValueError):
        return []
    return [Path(p) for p in data if isinstance(p, str) and Path(p).is_file()] \
        if isinstance(data, list) else []


def _locks(home: Home) -> list[tuple[Path, Lock]]:
    out = []
    for path in project_locks(home):
        try:
            out.append((path, Lock.read(path)))
        except (SxpmError, OSError):
            continue  # a broken lock pins nothing it can name
    return out


# --- roots --------------------------------------------------------------------------------


def _descriptor(store: OCILayout, digest: Digest) -> Descriptor | None:
    """A stored manifest's descriptor, from its bytes (None when absent or not one)."""
    if not store.has_blob(digest):
        return None
    size = store.blob_size(digest)
    try:
        obj = parse_manifest_bytes(store.read_blob(Descriptor("application/octet-stream",
                                                              digest, size)), str(digest))
    except SxpmError:
        return None
    return Descriptor(obj.media_type, digest, size, artifact_type=obj.listed_type)


def _installed_digests(home: Home) -> dict[Digest, list[Installed]]:
    out: dict[Digest, list[Installed]] = {}
    for item in list_installed(home.root):
        try:
            out.setdefault(Digest.parse(str(item.record.get("digest"))), []).append(item)
        except InputError:
            continue
    return out


def _lock_digests(home: Home) -> dict[Digest, Path]:
    out: dict[Digest, Path] = {}
    for path, lock in _locks(home):
        for art in lock.artifacts:
            out.setdefault(art.digest, path)
            for manifest in art.manifests():  # every variant a machine may choose
                out.setdefault(manifest, path)
    return out


def _subject(name: str) -> Digest | None:
    m = _REFERRERS.search(name)
    return Digest.parse(f"{m.group(1)}:{m.group(2)}") if m else None


def gc_roots(home: Home, refs: dict[str, Descriptor]) -> tuple[list[Descriptor], list[str]]:
    """What gc keeps (refs, installed trees' manifests, projects' locks, signatures of
    what is kept) and the signature refs it drops (their subject goes)."""
    store = home.store
    roots = [d for name, d in refs.items() if _subject(name) is None]
    for digest in [*_installed_digests(home), *_lock_digests(home)]:
        desc = _descriptor(store, digest)
        if desc is not None:
            roots.append(desc)
    kept = store.reachable(roots)
    drop = []
    for name, desc in refs.items():
        subject = _subject(name)
        if subject is None:
            continue
        if subject in kept:
            roots.append(desc)
        else:
            drop.append(name)
    return roots, drop


def collect(home: Home, *, dry_run: bool = False) -> tuple[int, int]:
    """``gc`` with every root above: (blobs removed, bytes freed on disk)."""
    if not home.store.exists():
        return 0, 0
    return home.store.gc(dry_run=dry_run, roots=lambda refs: gc_roots(home, refs))


# --- rm -----------------------------------------------------------------------------------


@dataclass
class Removal:
    refs: list[str] = field(default_factory=list)
    installed: list[Installed] = field(default_factory=list)
    blobs: int = 0
    bytes_freed: int = 0


def _manifests_of(store: OCILayout, desc: Descriptor) -> set[Digest]:
    out = {desc.digest}
    if desc.is_index and store.has_blob(desc.digest):
        obj = store.load_manifest(desc)
        if isinstance(obj, ImageIndex):
            out.update(d.digest for d in obj.manifests)
    return out


def remove(home: Home, spec: str, *, keep_blobs: bool = False, force: bool = False
           ) -> Removal:
    """Remove ``spec`` (``NAME[@VERSION]`` or a ``REF``): its refs and installed trees,
    then (unless ``keep_blobs``) the blobs nothing else holds. Refuses, changing
    nothing, what a recorded project's lock pins unless ``force``."""
    store = home.store
    refs = store.refs() if store.exists() else {}
    chosen: dict[str, Descriptor] = {}
    name, _, version = spec.partition("@")
    by_name = "/" not in name and ":" not in spec
    if by_name:
        for text, desc in refs.items():
            try:
                ref = Reference.parse(text)
            except InputError:
                continue
            if ref.name == name and _subject(text) is None and (not version
                                                                or ref.tag == version):
                chosen[text] = desc
    else:
        ref = home.parse_ref(spec)
        text = str(ref.with_digest(None)) if ref.tag else str(ref)
        if text in refs:
            chosen[text] = refs[text]
    manifests: set[Digest] = set()
    for desc in chosen.values():
        manifests |= _manifests_of(store, desc)
    trees = [i for d, items in _installed_digests(home).items() for i in items
             if d in manifests or (by_name and i.name == name
                                   and (not version or i.version == version))]
    if not chosen and not trees:
        raise NotFoundError(f"{spec} is neither in the store nor installed",
                            hint="`sxpm list` and `sxpm model list` show what is there")
    manifests |= {Digest.parse(str(i.record["digest"])) for i in trees}
    if not force:
        for digest, lock_path in _lock_digests(home).items():
            if digest in manifests:
                raise InputError(f"{spec} is pinned by the lock of the project at "
                                 f"{lock_path.parent}",
                                 hint="remove it from that project first, or give --force")
    out = Removal()
    for text in sorted(chosen):
        if store.remove_ref(text):
            out.refs.append(text)
    for item in trees:
        out.installed.extend(remove_installed(home.root, item.kind, item.name, item.version))
    if not keep_blobs:
        out.blobs, out.bytes_freed = collect(home)
    return out


# --- du -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    ref: str
    kind: str | None
    size: int
    """Bytes of the blobs this artifact reaches (each blob once)."""
    shared: int
    """Of those, bytes something else (another ref, tree or lock) also reaches."""
    reclaimable: int
    """Bytes that removing it (`sxpm rm REF`) gives back to the disk."""


@dataclass
class DiskUsage:
    artifacts: list[Usage]
    total: int
    """Bytes of every blob in the store."""


def disk_usage(home: Home) -> DiskUsage:
    store = home.store
    if not store.exists():
        return DiskUsage([], 0)
    sizes: dict[Digest, tuple[int, int]] = {}
    for digest in store.iter_blobs():
        st = os.stat(store.blob_path(digest))
        sizes[digest] = (st.st_size, st.st_nlink)
    refs = store.refs()
    installed = _installed_digests(home)
    locked = set(_lock_digests(home))
    reach = {name: store.reachable([d]) for name, d in refs.items() if _subject(name) is None}
    rows = []
    for name, desc in sorted(refs.items()):
        if name not in reach:
            continue
        mine = _manifests_of(store, desc)
        others = [d for n, d in refs.items() if n != name and _subject(n) is None]
        others += [x for d in [*installed, *locked] if d not in mine or d in locked
                   if (x := _descriptor(store, d)) is not None]
        elsewhere = store.reachable(others)
        blobs = [d for d in reach[name] if d in sizes]
        size = sum(sizes[d][0] for d in blobs)
        shared = sum(sizes[d][0] for d in blobs if d in elsewhere)
        # A blob a tree of another root still hard-links stays on disk after rm.
        mine_trees = sum(len(installed.get(d, [])) for d in mine)
        reclaim = sum(sizes[d][0] for d in blobs if d not in elsewhere
                      and sizes[d][1] <= 1 + mine_trees)
        kind = KIND_BY_ARTIFACT.get(desc.artifact_type or "")
        rows.append(Usage(name, kind, size, shared, reclaim))
    return DiskUsage(rows, sum(s for s, _ in sizes.values()))
