"""Installed views: an artifact's files as a tree of hard links into the store.

``<root>/<kind>s/<name>/<version>/`` holds the artifact's files under their
titles, plus ``.sxpm-install.json`` saying what was installed. Files are hard links
to the read-only store blobs (a copy where the file system cannot link), so an
install costs no space and cannot be edited by accident. A tree is built beside
its final place and renamed in, so a crash never leaves half an install.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from sxpm.artifacts.describe import ArtifactInfo
from sxpm.core import oci
from sxpm.core.oci import Descriptor
from sxpm.errors import ArtifactInputError, NotFoundError
from sxpm.installed.records import (
    INSTALL_RECORD,
    Installed,
    file_stamp,
    find_installed,
    install_dir,
)
from sxpm.store.layout import CHUNK, OCILayout

MAX_PACKAGE_MEMBERS = 100_000
MAX_PACKAGE_BYTES = 16 * 1024**3
MAX_RATIO = 200  # unpacked bytes per packed byte before we call it a bomb


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
        os.chmod(dst, 0o444)


def _safe_relpath(title: str, where: str) -> str:
    path = PurePosixPath(title)
    if not title or path.is_absolute() or ".." in path.parts or "\\" in title \
            or "\x00" in title or not path.parts or path.parts == (".",):
        raise ArtifactInputError(f"{where}: unsafe file name {title!r} in the artifact",
                                 hint="the artifact is malformed or hostile; do not install it")
    return str(path)


_SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,127}$")


def _check_segment(value: str, what: str, where: str) -> str:
    """A name or version that becomes a directory name: no separators, no dot-dot."""
    if not _SAFE_SEGMENT.match(value):
        raise ArtifactInputError(f"{where}: unsafe {what} {value!r} in the artifact",
                                 hint="the artifact is malformed or hostile; do not install it")
    return value


class _Bounded(io.RawIOBase):
    """The decompressed stream, cut off once it passes ``limit`` bytes.

    Member sizes are checked against the budget as they come, but tar headers (a pax
    header can claim gigabytes that tarfile reads into memory) are not members: the
    whole stream is bounded too.
    """

    def __init__(self, inner: Any, limit: int, what: str) -> None:
        self._inner = inner
        self._left = limit
        self._limit = limit
        self._what = what

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer)
        data = self._inner.read(min(len(view), self._left + 1))
        if len(data) > self._left:
            raise ArtifactInputError(f"{self._what} unpacks to over {self._limit} bytes",
                                     hint="refused as a decompression bomb")
        self._left -= len(data)
        view[:len(data)] = data
        return len(data)


def extract_package(store: OCILayout, layer: Descriptor, dest: Path) -> None:
    """Unpack a package layer, refusing links, devices, escapes and bombs."""
    import zstandard

    budget = min(MAX_PACKAGE_BYTES, max(layer.size, 1) * MAX_RATIO)
    with store.open_blob(layer.digest) as raw:
        # Headers and padding: 512 bytes or so per member, on top of the files' bytes.
        reader = io.BufferedReader(_Bounded(
            zstandard.ZstdDecompressor().stream_reader(raw),
            budget + 1024 * MAX_PACKAGE_MEMBERS, f"package {layer.digest}"), CHUNK)
        try:
            with tarfile.open(fileobj=reader, mode="r|") as tf:
                total = 0
                for count, member in enumerate(tf, 1):
                    if count > MAX_PACKAGE_MEMBERS:
                        raise ArtifactInputError(f"package {layer.digest} has over "
                                                 f"{MAX_PACKAGE_MEMBERS} files")
                    if not (member.isfile() or member.isdir()):
                        raise ArtifactInputError(
                            f"package {layer.digest}: {member.name!r} is a link or special "
                            "file", hint="packages may hold only regular files")
                    rel = _safe_relpath(member.name, f"package {layer.digest}")
                    total += member.size
                    if total > budget:
                        raise ArtifactInputError(
                            f"package {layer.digest} unpacks to over {budget} bytes",
                            hint="refused as a decompression bomb")
                    target = dest / rel
                    if member.isdir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    src = tf.extractfile(member)
                    assert src is not None
                    with open(target, "wb") as out:
                        shutil.copyfileobj(src, out)
                    os.chmod(target, 0o755 if member.mode & 0o111 else 0o644)
        except (tarfile.TarError, zstandard.ZstdError) as exc:
            raise ArtifactInputError(f"package {layer.digest} is not a valid tar+zstd ({exc})"
                                     ) from None


def materialize(store: OCILayout, info: ArtifactInfo, root: Path, ref: str,
                signer: dict[str, str] | None = None) -> Installed:
    """Build the installed tree of ``info`` under ``root``; replaces an older one."""
    _check_segment(info.name, "name", ref)
    _check_segment(info.version, "version", ref)
    dest = install_dir(root, info.kind, info.name, info.version)
    missing = [layer for layer in info.manifest.layers if not store.has_blob(layer.digest)]
    if missing:
        raise NotFoundError(f"{ref}: blob {missing[0].digest} is not in the store",
                            hint="pull the artifact again")
    created_parent = not dest.parent.exists()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{info.version}.", dir=dest.parent))
    try:
        for layer in info.manifest.layers:
            if layer.media_type == oci.PACKAGE_LAYER:
                extract_package(store, layer, tmp)
                continue
            title = layer.annotations.get(oci.ANN_FILEPATH) or layer.annotations.get(
                oci.ANN_TITLE)
            if not title:
                continue
            target = tmp / _safe_relpath(title, ref)
            _link_or_copy(store.blob_path(layer.digest), target)
        files = {(layer.annotations.get(oci.ANN_FILEPATH)
                  or layer.annotations.get(oci.ANN_TITLE) or ""): str(layer.digest)
                 for layer in info.manifest.layers}
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
        # What each file was at install, so a load checks it with one stat (records.py).
        stamps = {title: file_stamp(tmp / title) for title in files
                  if title and (tmp / title).is_file()}
        (tmp / INSTALL_RECORD).write_text(json.dumps({**record, "stat": stamps}, indent=2,
                                                     sort_keys=True))
        os.chmod(tmp, 0o755)
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old.{os.getpid()}")
            os.replace(dest, old)
            os.replace(tmp, dest)
            _rmtree(old)
        else:
            os.replace(tmp, dest)
    except BaseException:
        _rmtree(tmp)
        if created_parent:  # a refused first install leaves no trace
            with contextlib.suppress(OSError):
                dest.parent.rmdir()
        raise
    return Installed(info.kind, info.name, info.version, dest, record)


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
    for item in found:
        _rmtree(item.path)
        with contextlib.suppress(OSError):
            item.path.parent.rmdir()
    return found


