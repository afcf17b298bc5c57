"""Installed views: an artifact's files as a tree of hard links into the store.

``<root>/<kind>s/<name>/<version>/`` holds the artifact's files under their
titles, plus ``.sxpm-install.json`` saying what was installed. Files are hard links
to the read-only store blobs (a copy where the file system cannot link), so an
install costs no space and cannot be edited by accident. A tree is built beside
its final place and renamed in, so a crash never leaves half an install.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

from sxpm.artifacts.describe import ArtifactInfo, model_traits
from sxpm.core import categories, oci
from sxpm.core.gguf import read_header
from sxpm.core.names import INSTALL_RECORD
from sxpm.core.oci import Descriptor
from sxpm.core.unpack import PathSet, extract_tar, safe_relpath
from sxpm.errors import ArtifactInputError, ModelFileError, NotFoundError
from sxpm.home import KINDS
from sxpm.installed.records import (
    Installed,
    find_installed,
    install_dir,
    save_stamps,
    take_stamps,
)
from sxpm.store.layout import CHUNK, OCILayout

MAX_PACKAGE_MEMBERS = 100_000
MAX_PACKAGE_BYTES = 16 * 1024**3
# A ModelPack archive layer holds one file or a model directory; its bytes are bounded
# by the ratio to its packed size (core.unpack.MAX_RATIO), this only caps the absurd.
MAX_MODEL_ARCHIVE_MEMBERS = 10_000
MAX_MODEL_ARCHIVE_BYTES = 4 * 1024**4


def _link_or_copy(src: Path, dst: Path, where: str) -> None:
    """A new file at ``dst`` with ``src``'s bytes; never writes through an existing one.

    ``dst`` is a hard link to a store blob when it can be, so opening an existing
    ``dst`` for writing would change the blob under every artifact that uses it.
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
        return
    except FileExistsError:
        raise _taken(dst, where) from None
    except OSError:
        pass  # another file system, or no hard links there: copy
    try:
        out = open(dst, "xb")
    except FileExistsError:
        raise _taken(dst, where) from None
    with out, open(src, "rb") as fh:
        shutil.copyfileobj(fh, out, CHUNK)
    os.chmod(dst, 0o444)


def _taken(path: Path, where: str) -> ArtifactInputError:
    return ArtifactInputError(f"{where}: two files of the artifact land on {path.name!r}",
                              hint="the artifact is malformed or hostile; do not install it")


_SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,127}$")


def _check_segment(value: str, what: str, where: str) -> str:
    """A name or version that becomes a directory name: no separators, no dot-dot."""
    if not _SAFE_SEGMENT.match(value):
        raise ArtifactInputError(f"{where}: unsafe {what} {value!r} in the artifact",
                                 hint="the artifact is malformed or hostile; do not install it")
    return value


def extract_package(store: OCILayout, layer: Descriptor, dest: Path,
                    paths: PathSet | None = None) -> None:
    """Unpack a package layer, refusing links, devices, escapes, bombs and two
    members (or a member and another layer of ``paths``) on one path."""
    import zstandard

    where = f"package {layer.digest}"
    with store.open_blob(layer.digest) as raw:
        try:
            extract_tar(zstandard.ZstdDecompressor().stream_reader(raw), dest, where,
                        packed_size=layer.size, max_members=MAX_PACKAGE_MEMBERS,
                        max_bytes=MAX_PACKAGE_BYTES, paths=paths)
        except (tarfile.TarError, zstandard.ZstdError) as exc:
            raise ArtifactInputError(f"{where} is not a valid tar+zstd ({exc})") from None


def extract_model_archive(store: OCILayout, layer: Descriptor, dest: Path, paths: PathSet,
                          digests: dict[str, str]) -> None:
    """Unpack a ModelPack tar, tar+gzip or tar+zstd layer under the same guards as a
    package layer; ``digests`` gets each file's digest (the record's, for run checks)."""
    # Imported here: zstandard is a heavy module only this form needs.
    import zstandard

    form = oci.model_archive(layer.media_type)
    where = f"model layer {layer.digest} ({form})"
    with store.open_blob(layer.digest) as raw:
        stream: Any = raw
        if form == "tar+gzip":
            stream = gzip.GzipFile(fileobj=raw, mode="rb")
        elif form == "tar+zstd":
            stream = zstandard.ZstdDecompressor().stream_reader(raw)
        try:
            extract_tar(stream, dest, where, packed_size=layer.size,
                        max_members=MAX_MODEL_ARCHIVE_MEMBERS,
                        max_bytes=MAX_MODEL_ARCHIVE_BYTES, paths=paths, digests=digests)
        except (tarfile.TarError, zstandard.ZstdError, OSError, EOFError, zlib.error) as exc:
            raise ArtifactInputError(f"{where} is not a valid {form} ({exc})") from None


def materialize(store: OCILayout, info: ArtifactInfo, root: Path, ref: str,
                signer: dict[str, str] | None = None) -> Installed:
    """Build the installed tree of ``info`` under ``root``; replaces an older one."""
    _check_segment(info.name, "name", ref)
    _check_segment(info.version, "version", ref)
    dest = tree_dir(root, info, ref)
    missing = [layer for layer in info.manifest.layers if not store.has_blob(layer.digest)]
    if missing:
        raise NotFoundError(f"{ref}: blob {missing[0].digest} is not in the store",
                            hint="pull the artifact again")
    paths = PathSet(ref)
    titled = [(layer, safe_relpath(title, ref)) for layer in info.manifest.layers
              if layer.media_type != oci.PACKAGE_LAYER and not oci.model_archive(layer.media_type)
              and (title := layer.annotations.get(oci.ANN_FILEPATH)
                   or layer.annotations.get(oci.ANN_TITLE))]
    for _, rel in titled:  # refused before anything is written
        paths.add_file(rel)
    created_parent = not dest.parent.exists()
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_trees(dest.parent)
    # The owner's pid in the name lets a later install or gc tell a killed build's
    # leftovers from a running one's.
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-{os.getpid()}-",
                                dir=dest.parent))
    unpacked: dict[str, str] = {}  # files of archive layers: their own digests
    try:
        for layer in info.manifest.layers:
            if layer.media_type == oci.PACKAGE_LAYER:
                extract_package(store, layer, tmp, paths)
            elif oci.model_archive(layer.media_type):
                extract_model_archive(store, layer, tmp, paths, unpacked)
        for layer, rel in titled:
            _link_or_copy(store.blob_path(layer.digest), tmp / rel, ref)
        files = {(layer.annotations.get(oci.ANN_FILEPATH)
                  or layer.annotations.get(oci.ANN_TITLE) or ""): str(layer.digest)
                 for layer in info.manifest.layers
                 if not oci.model_archive(layer.media_type)}
        files.update(unpacked)
        record = {
            "ref": ref,
            "kind": info.kind,
            "name": info.name,
            "version": info.version,
            "digest": str(info.descriptor.digest),
            "variant": info.variant,
            "files": files,
        }
        if signer:
            record["signer"] = signer
        traits = _traits(store, info, tmp, unpacked) if info.kind == "model" else None
        if traits is not None:  # what `model list --category` and `load(category=)` read
            record.update(traits.to_dict())
        with open(tmp / INSTALL_RECORD, "xb") as out:  # new: never through a link
            out.write(json.dumps(record, indent=2, sort_keys=True).encode())
        os.chmod(tmp, 0o755)
        stamps = take_stamps(tmp, list(files))
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old.{os.getpid()}")
            os.replace(dest, old)
            os.replace(tmp, dest)
            _rmtree(old)
        else:
            os.replace(tmp, dest)
        # What each file is now, so a load checks it with one stat (records.py).
        save_stamps(dest, list(files), stamps)
    except BaseException:
        _rmtree(tmp)
        if created_parent:  # a refused first install leaves no trace
            with contextlib.suppress(OSError):
                dest.parent.rmdir()
        raise
    return Installed(info.kind, info.name, info.version, dest, record)


def _traits(store: OCILayout, info: ArtifactInfo, tree: Path, unpacked: dict[str, str]
            ) -> categories.Traits | None:
    """A model's category and capabilities: declared, else from its GGUF blob, else
    (weights in an archive layer) from the largest GGUF unpacked into ``tree``."""
    traits = model_traits(store, info)
    ggufs = [tree / rel for rel in unpacked if rel.lower().endswith(".gguf")]
    if traits is not None or not ggufs:
        return traits
    try:
        header = read_header(max(ggufs, key=lambda p: p.stat().st_size))
    except ModelFileError:
        return None  # the runner refuses the file with its own message
    return categories.resolve(*categories.declared(info.manifest.annotations, info.config),
                              header)


def tree_dir(root: Path, info: ArtifactInfo, ref: str) -> Path:
    """Where the tree of ``info`` goes, so that variants of one version sit side by side.

    ``<version>/`` when it is free or holds this variant (or an artifact without
    variants), so a single-variant install and every tree installed before variants
    could coexist keep their path; another variant goes to ``<version>~<variant>/``
    (``~`` is in no tag, version or variant, so the name is unambiguous). Which tree
    holds what is read from the install records, never from the directory names.
    """
    base = install_dir(root, info.kind, info.name, info.version)
    if info.variant is None:
        return base
    side = base.with_name(f"{info.version}~{_check_segment(info.variant, 'variant', ref)}")
    if side.exists():
        return side
    try:
        held = json.loads((base / INSTALL_RECORD).read_text()).get("variant")
    except (OSError, ValueError, AttributeError, RecursionError):
        return base  # free, or nothing sxpm can read: replaced as before
    return base if held in (None, info.variant) else side


# Hidden trees an install leaves when killed: the tree being built and the old tree
# being replaced; before the owner's pid was in the name, mkdtemp's 8 characters only.
_BUILDING = re.compile(r"^\.(?P<version>.+)\.tmp-(?P<pid>\d+)-[a-z0-9_]{8}$")
_REPLACED = re.compile(r"^\.(?P<version>.+)\.old\.(?P<pid>\d+)$")
_UNOWNED = re.compile(r"^\.(?P<version>.+)\.[a-z0-9_]{8}$")
STALE_AFTER = 24 * 3600  # seconds; a tree this old is stale whoever owns it (pid reuse)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's process: alive
    return True


def remove_stale_trees(parent: Path, now: float | None = None) -> int:
    """Remove the hidden trees killed installs left in ``<kind>s/<name>/``; how many.

    A tree whose owner (the pid in its name) is gone, or that is older than
    :data:`STALE_AFTER`, is stale; a running install's tree is left alone.
    """
    now = time.time() if now is None else now
    removed = 0
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return 0
    for entry in entries:
        if not entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
            continue
        owned = _BUILDING.match(entry.name) or _REPLACED.match(entry.name)
        if not owned and not _UNOWNED.match(entry.name):
            continue
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        if age > STALE_AFTER or (owned and not _alive(int(owned.group("pid")))):
            _rmtree(Path(entry.path))
            removed += 1
    return removed


def remove_all_stale_trees(root: Path) -> int:
    """:func:`remove_stale_trees` for every installed name under ``root`` (``gc``)."""
    return sum(remove_stale_trees(parent) for kind in KINDS
               for parent in sorted((root / f"{kind}s").glob("*")) if parent.is_dir())


def _rmtree(path: Path) -> None:
    def onerror(func: Any, p: str, exc: Any) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(p), 0o755)
            func(p)

    shutil.rmtree(path, onerror=onerror)


def remove_installed(root: Path, kind: str, name: str, version: str | None = None
                     ) -> list[Installed]:
    found = find_installed(root, kind, name, version)
    if not found:
        what = f"{name}@{version}" if version else name
        raise NotFoundError(f"No installed {kind} {what}",
                            hint=f"`sxpm {kind} list` shows what is installed")
    return remove_trees(found)


def remove_trees(items: list[Installed]) -> list[Installed]:
    """Remove these installed trees (one variant each), and a name's folder left empty."""
    for item in items:
        _rmtree(item.path)
        with contextlib.suppress(OSError):
            item.path.parent.rmdir()
    return items


