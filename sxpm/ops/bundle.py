"""Offline bundles: a project's artifacts in one OCI image layout tarball.

``create`` writes a plain OCI image layout (``oci-layout``, ``index.json``,
``blobs/sha256/...``) as a tar, so skopeo and oras read it; ``index.json`` names each
artifact by its store ref (``host/repo:tag`` or ``host/repo@digest``), signatures
(the referrers the store keeps) by their tag-schema refs, and ``sxpm-index/`` holds
the index lines the locked versions came from (other tools ignore it).

``import_bundle`` trusts nothing in the file: members are bounded (count, sizes, names;
regular files only, no links), every blob is streamed into a staging store beside
the home's and checked against its digest and size, every blob must be reachable
from ``index.json``, and signatures are checked under the home's trust policy there.
Only then do blobs move into the store (a rename on the same file system) and refs
are written, last. A bundle that fails any check leaves the store as it was.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sxpm.core.oci import (
    ANN_REF_NAME,
    ANN_SIMPLEX_REF,
    INDEX_TYPES,
    MANIFEST_TYPES,
    MAX_MANIFEST_BYTES,
    OCI_INDEX,
    Descriptor,
    ImageIndex,
    canonical_json,
    entry_ref,
    parse_manifest_bytes,
    ref_entry,
)
from sxpm.core.reference import Digest, Reference
from sxpm.errors import CorruptBlobError, InputError, NotFoundError, StoreError, SxpmError
from sxpm.home import Home
from sxpm.project.lock import Lock
from sxpm.store.layout import CHUNK, OCILayout
from sxpm.store.refs import resolve_local, store_name
from sxpm.transport import TransportOptions
from sxpm.transport.base import referrers_tag

MAX_MEMBERS = 100_000
"""Tar members a bundle may hold: far more than any project's blobs."""
MAX_SMALL = 16 * 1024 * 1024
"""Largest index line file or bundle note; index.json is bounded like a manifest."""
INDEX_DIR = "sxpm-index"
_MANIFESTISH = MANIFEST_TYPES | INDEX_TYPES


class BundleError(StoreError):
    """A bundle that is not what it claims: refused before anything enters the store."""

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(f"Bundle {path} refused: {reason}",
                         hint="nothing was imported; create the bundle again from its source")


@dataclass
class BundleResult:
    path: Path
    refs: list[str] = field(default_factory=list)
    blobs: int = 0
    bytes: int = 0
    index_lines: int = 0


# --- create ---------------------------------------------------------------------


def _walk(store: OCILayout, root: Descriptor, out: dict[Digest, Descriptor]) -> None:
    """Every blob ``root`` reaches, all required present (a bundle is never partial)."""
    stack = [root]
    while stack:
        desc = stack.pop()
        if desc.digest in out:
            continue
        if not store.has_blob(desc.digest):
            raise NotFoundError(f"Blob {desc.digest} is not in the store",
                                hint="pull the artifact (all the variants you need) first")
        out[desc.digest] = desc
        if desc.media_type in _MANIFESTISH:
            obj = store.load_manifest(desc)
            stack.extend(obj.manifests if isinstance(obj, ImageIndex) else obj.blobs())


def _variant_roots(store: OCILayout, top: Descriptor, wanted: Iterable[Digest]
                   ) -> list[Descriptor]:
    """The top manifest plus only the variants ``wanted`` of an image index: the bundle
    carries the index and every variant's manifest (the index keeps its digest) but the
    layers of the locked variant only."""
    obj = store.load_manifest(top)
    if not isinstance(obj, ImageIndex):
        return [top]
    keep = set(wanted)
    return [d for d in obj.manifests if d.digest in keep]


def _signatures(store: OCILayout, ref: Reference, subject: Digest
                ) -> list[tuple[str, Descriptor]]:
    name = store_name(ref.with_digest(None).with_tag(referrers_tag(subject)))
    found = store.resolve(name)
    return [(name, found)] if found is not None else []


def _index_lines(lock: Lock, cwd: Path | None) -> dict[str, list[str]]:
    """The index lines of the locked versions, from the index the lock names (its
    cache when offline); empty when the lock came from a registry's tags."""
    if not lock.index_source:
        return {}
    from sxpm.index.client import IndexClient
    from sxpm.index.format import index_path

    out: dict[str, list[str]] = {}
    try:
        client = IndexClient(lock.index_source, offline=False)
        for art in lock.artifacts:
            text = client.read_text(index_path(art.name)) or ""
            lines = []
            for line in text.splitlines():
                try:
                    if json.loads(line).get("vers") == art.version:
                        lines.append(line)
                except (ValueError, AttributeError):
                    continue
            if lines:
                out[index_path(art.name)] = lines
    except SxpmError:
        return out  # the bundle is still complete without them; install never reads them
    return out


def create(home: Home, out: Path, *, lock: Lock | None = None,
           refs: Sequence[Reference] = (), options: TransportOptions | None = None
           ) -> BundleResult:
    """Write a bundle of the artifacts ``lock`` pins (or ``refs`` names) to ``out``.

    Artifacts not in the store are pulled first (the locked variant, or every variant
    of a ``ref``); signatures are those the store keeps.
    """
    from sxpm.ops.transfer import pull

    if (lock is None) == (not refs):
        raise InputError("Give either a lock or references to bundle",
                         hint="sxpm bundle create --lock simplex.lock -o FILE.tar, or REF...")
    named: dict[str, Descriptor] = {}
    blobs: dict[Digest, Descriptor] = {}
    lines: dict[str, list[str]] = {}
    store = home.store
    if lock is not None:
        for art in lock.artifacts:
            ref = art.source.with_digest(art.digest)
            # A lock that lets each machine choose: every variant, for any machine.
            need = [art.digest, *(v.manifest for v in art.choices()),
                    *(layer.digest for v in art.choices() for layer in v.layers)]
            if not all(store.has_blob(d) for d in need):
                pull(home, ref, variant=art.variant, all_variants=art.per_machine,
                     options=options)
            top = resolve_local(store, ref)
            named[store_name(ref)] = top
            for root in _variant_roots(store, top, art.manifests()):
                _walk(store, root, blobs)
            obj = store.load_manifest(top)
            if isinstance(obj, ImageIndex):  # every variant's manifest, so the index is whole
                blobs[top.digest] = top
                for child in obj.manifests:
                    if store.has_blob(child.digest):
                        blobs.setdefault(child.digest, child)
            for name, desc in _signatures(store, ref, art.digest):
                named[name] = desc
                _walk(store, desc, blobs)
        lines = _index_lines(lock, None)
    for ref in refs:
        try:
            top = resolve_local(store, ref)
            _walk(store, top, {})
        except NotFoundError:
            pull(home, ref, all_variants=True, options=options)
            top = resolve_local(store, ref)
        named[store_name(ref)] = top
        _walk(store, top, blobs)
        for name, desc in _signatures(store, ref, top.digest):
            named[name] = desc
            _walk(store, desc, blobs)
    result = BundleResult(out, sorted(named), len(blobs), sum(d.size for d in blobs.values()),
                          sum(len(v) for v in lines.values()))
    _write_tar(store, out, named, blobs, lines)
    return result


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(mtime), 0o644
    tar.addfile(info, io.BytesIO(data))


def _write_tar(store: OCILayout, out: Path, named: dict[str, Descriptor],
               blobs: dict[Digest, Descriptor], lines: dict[str, list[str]]) -> None:
    entries = []
    for name, desc in sorted(named.items()):
        entries.append(ref_entry(name, desc.to_dict()))
    index = canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    now = time.time()
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            _add_bytes(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}', now)
            _add_bytes(tar, "index.json", index, now)
            for digest in sorted(blobs, key=str):
                info = tarfile.TarInfo(f"blobs/{digest.algorithm}/{digest.hex}")
                info.size, info.mtime, info.mode = blobs[digest].size, int(now), 0o444
                with store.open_blob(digest) as fh:
                    tar.addfile(info, fh)
            for rel, text in sorted(lines.items()):
                _add_bytes(tar, f"{INDEX_DIR}/{rel}", ("\n".join(text) + "\n").encode(), now)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


# --- import ---------------------------------------------------------------------


def _member_kind(path: Path, member: tarfile.TarInfo) -> tuple[str, str]:
    """What a member is: ("blob", "alg:hex"), ("index"|"layout", ""), ("line", rel) or
    ("dir", ""); anything else is refused."""
    name = member.name.removeprefix("./")
    if member.isdir():
        if name.rstrip("/") in ("blobs", "blobs/sha256", "blobs/sha512", INDEX_DIR, "") or (
                name.startswith(f"{INDEX_DIR}/") and ".." not in name.split("/")):
            return "dir", ""
        raise BundleError(path, f"unexpected directory {name!r}")
    if not member.isreg() or member.issparse():
        raise BundleError(path, f"{name!r} is a link or a special file")
    if name == "oci-layout":
        return "layout", ""
    if name == "index.json":
        return "index", ""
    parts = name.split("/")
    if len(parts) == 3 and parts[0] == "blobs":
        try:
            return "blob", str(Digest.parse(f"{parts[1]}:{parts[2]}"))
        except SxpmError:
            raise BundleError(path, f"{name!r} is not a blob path") from None
    if parts[0] == INDEX_DIR and len(parts) <= 4 and all(
            p and p not in (".", "..") and not p.startswith(".") for p in parts[1:]):
        return "line", "/".join(parts[1:])
    raise BundleError(path, f"unexpected member {name!r}")


def import_bundle(home: Home, path: Path, *, cwd: Path | None = None,
                  insecure_skip_verify: bool = False) -> BundleResult:
    """Verify the bundle at ``path`` and add its artifacts (and signatures) to the store."""
    if not path.is_file():
        raise NotFoundError(f"{path} does not exist", hint="give the bundle's path")
    store = home.store
    store.ensure()
    staging_root = Path(tempfile.mkdtemp(prefix=".bundle-", dir=home.root))
    try:
        staging = Home(staging_root)
        try:
            shutil.copy2(home.config_path, staging.config_path)  # the same trust policy
        except FileNotFoundError:
            pass
        named, blobs, lines = _stage(path, staging.store)
        if not insecure_skip_verify:
            _check_signatures(staging, named, cwd)
        result = BundleResult(path, sorted(named), 0, 0, lines)
        with store.in_use():
            for digest, size in blobs.items():
                if store.has_blob(digest):
                    continue
                with store.blob_lock(digest):
                    target = store.blob_path(digest)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(staging.store.blob_path(digest), target)
                result.blobs += 1
                result.bytes += size
            for name, desc in sorted(named.items()):
                with store.ref_lock(name):
                    store.set_ref(name, desc)
        return result
    except tarfile.TarError as exc:
        raise BundleError(path, f"not a readable tar ({exc})") from None
    finally:
        shutil.rmtree(staging_root, ignore_errors=True)


def _stage(path: Path, staging: OCILayout) -> tuple[dict[str, Descriptor], dict[Digest, int],
                                                   int]:
    """Every member checked and every blob verified into ``staging``; the refs, the
    blobs (digest -> size) and the number of index lines."""
    staging.ensure()
    index_bytes: bytes | None = None
    sizes: dict[Digest, int] = {}
    line_count = 0
    seen_layout = False
    with tarfile.open(path, "r:") as tar:
        count = 0
        while (member := tar.next()) is not None:
            count += 1
            if count > MAX_MEMBERS:
                raise BundleError(path, f"more than {MAX_MEMBERS} members")
            kind, arg = _member_kind(path, member)
            if kind == "dir":
                continue
            fh = tar.extractfile(member)
            assert fh is not None  # a regular file
            if kind == "blob":
                digest = Digest.parse(arg)
                if digest in sizes:
                    raise BundleError(path, f"{digest} appears twice")
                desc = Descriptor("application/octet-stream", digest, member.size)
                try:
                    with staging.writer(desc, where=str(path)) as w:
                        for chunk in iter(lambda: fh.read(CHUNK), b""):  # noqa: B023
                            w.write(chunk)
                        w.commit()
                except CorruptBlobError as exc:
                    raise BundleError(path, f"blob {digest} does not match its digest "
                                      f"({exc.one_line()})") from None
                sizes[digest] = member.size
            elif kind == "index":
                if member.size > MAX_MANIFEST_BYTES:
                    raise BundleError(path, "index.json is over 4 MiB")
                index_bytes = fh.read()
            elif kind == "layout":
                if member.size > 4096:
                    raise BundleError(path, "oci-layout is too large")
                seen_layout = b"imageLayoutVersion" in fh.read()
            else:
                if member.size > MAX_SMALL:
                    raise BundleError(path, f"{member.name} is over 16 MiB")
                line_count += sum(1 for line in fh.read().splitlines() if line.strip())
    if index_bytes is None or not seen_layout:
        raise BundleError(path, "not an OCI image layout (no index.json or oci-layout)")
    named = _refs(path, index_bytes)
    reached: dict[Digest, Descriptor] = {}
    for desc in named.values():
        _reach(path, staging, desc, reached)
    for digest, desc in reached.items():
        if sizes.get(digest) not in (None, desc.size):
            raise BundleError(path, f"{digest} is {sizes[digest]} bytes, not {desc.size}")
    extra = set(sizes) - set(reached)
    if extra:
        raise BundleError(path, f"{len(extra)} blob(s) no ref reaches "
                          f"(e.g. {min(map(str, extra))})")
    for name, desc in named.items():  # the trust check finds signatures by their refs
        staging.set_ref(name, desc)
    return named, sizes, line_count


def _refs(path: Path, data: bytes) -> dict[str, Descriptor]:
    try:
        obj = json.loads(data)
        items = obj["manifests"]
        if not isinstance(items, list):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise BundleError(path, "index.json is not an OCI index") from None
    named: dict[str, Descriptor] = {}
    for i, item in enumerate(items):
        try:
            desc = Descriptor.from_dict(item, source="index.json", path=f"$.manifests[{i}]")
        except SxpmError as exc:
            raise BundleError(path, exc.one_line()) from None
        name = entry_ref(desc.annotations) or ""
        try:
            Reference.parse(name)
        except SxpmError:
            raise BundleError(path, f"index.json names {name!r}, not a reference") from None
        if desc.media_type not in _MANIFESTISH:
            raise BundleError(path, f"{name} is not a manifest")
        ann = {k: v for k, v in desc.annotations.items()
               if k not in (ANN_REF_NAME, ANN_SIMPLEX_REF)}
        named[name] = Descriptor(desc.media_type, desc.digest, desc.size, ann,
                                 desc.artifact_type)
    return named


def _reach(path: Path, staging: OCILayout, root: Descriptor,
           reached: dict[Digest, Descriptor]) -> None:
    """Walk from ``root``: a manifest must be in the bundle; a layer may be absent
    (variants not carried), and then the install of that variant needs the network."""
    stack = [(root, True)]
    while stack:
        desc, required = stack.pop()
        if desc.digest in reached:
            continue
        if not staging.has_blob(desc.digest):
            if required:
                raise BundleError(path, f"manifest {desc.digest} is missing")
            continue
        reached[desc.digest] = desc
        if desc.media_type in _MANIFESTISH:
            try:
                obj = parse_manifest_bytes(staging.read_blob(desc), f"manifest {desc.digest}")
            except SxpmError as exc:
                raise BundleError(path, exc.one_line()) from None
            if isinstance(obj, ImageIndex):
                stack.extend((d, False) for d in obj.manifests)
            else:
                stack.extend((d, False) for d in obj.blobs())


def _check_signatures(staging: Home, named: dict[str, Descriptor], cwd: Path | None) -> None:
    """Each artifact the home's trust policy covers must carry a valid signature from
    a trusted signer in the bundle itself (checked offline, in the staging store, which
    has the home's config and so its policy)."""
    from sxpm.ops.fetch import Fetcher, policy_for

    fetcher = Fetcher(staging, policy_for(staging, cwd=cwd), offline=True)
    for name in named:
        ref = Reference.parse(name)
        if ref.tag and ref.tag.startswith(("sha256-", "sha512-")):
            continue  # a signature index, checked with its subject
        tree = fetcher.tree(ref, where="store")
        entries = tree.index.manifests if tree.index is not None else (tree.descriptor,)
        for entry in entries:
            if tree.manifest(entry).blobs() and all(
                    staging.store.has_blob(b.digest) for b in tree.manifest(entry).blobs()):
                fetcher.check(tree, entry)
