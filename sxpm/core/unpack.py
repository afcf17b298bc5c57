"""What every unpacking of untrusted bytes shares: safe file names and bounded streams.

Installed files are hard links to store blobs. Two layers landing on one path, or a
layer landing on the install record, would make an install write one artifact's
bytes through the link into a blob that another artifact uses. So the paths of an
artifact are checked as a set, at pack and at install (:class:`PathSet`), and
unpacking never opens an existing file for writing. Archives (package layers, legacy
``.expert`` tar.gz files) are read through :class:`Bounded`, so a small archive
cannot unpack to gigabytes, nor a header claim them.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import unicodedata
from pathlib import Path, PurePosixPath
from typing import Any

from sxpm.core.names import INSTALL_RECORD
from sxpm.errors import ArtifactInputError

# Written by sxpm into every installed tree; no artifact file may take its name.

_HOSTILE = "the artifact is malformed or hostile; do not install it"

MAX_RATIO = 200  # unpacked bytes per packed byte before we call it a bomb
MAX_HEADER_BYTES = 1 << 20  # a member's headers (pax, long names): real ones are < 4 KiB
_READ = 1 << 20
# What the readers above a Bounded stream may hold ahead of tarfile's position: the
# buffered reader's chunk and tarfile's stream buffer (20 records).
_AHEAD = _READ + 20 * tarfile.RECORDSIZE


def safe_relpath(title: str, where: str) -> str:
    """``title`` as a normalised relative POSIX path that stays inside its tree."""
    path = PurePosixPath(title)
    if not title or path.is_absolute() or ".." in path.parts or "\\" in title \
            or "\x00" in title or not path.parts or path.parts == (".",):
        raise ArtifactInputError(f"{where}: unsafe file name {title!r} in the artifact",
                                 hint=_HOSTILE)
    return str(path)


def path_key(rel: str) -> str:
    """The file a name reaches on a case-insensitive or normalising file system
    (macOS, Windows): two names with one key are one file there."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", rel).casefold())


class PathSet:
    """The files and directories one tree will hold; refuses a second claim on a path.

    A file may not share its path (up to case and Unicode normalisation) with another
    file, with a directory, or with the install record; a directory may not be a
    file's path. ``rel`` must already be :func:`safe_relpath`'s output.
    """

    def __init__(self, where: str, hint: str = _HOSTILE) -> None:
        self.where = where
        self.hint = hint
        self._files: dict[str, str] = {path_key(INSTALL_RECORD): INSTALL_RECORD}
        self._dirs: dict[str, str] = {}

    def _refuse(self, rel: str, other: str, why: str) -> ArtifactInputError:
        if path_key(other) == path_key(INSTALL_RECORD):
            why = f"takes the name of sxpm's install record {INSTALL_RECORD!r}, which is reserved"
        return ArtifactInputError(f"{self.where}: file {rel!r} {why}", hint=self.hint)

    def _parents(self, rel: str) -> None:
        parts = rel.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            key = path_key(parent)
            if key in self._files:
                raise self._refuse(rel, self._files[key],
                                   f"is inside {self._files[key]!r}, which is a file")
            self._dirs.setdefault(key, parent)

    def add_file(self, rel: str) -> None:
        key = path_key(rel)
        if key in self._files:
            raise self._refuse(rel, self._files[key],
                               f"is also {self._files[key]!r} (one path, two files)")
        if key in self._dirs:
            raise self._refuse(rel, self._dirs[key], "is also a directory of other files")
        self._parents(rel)
        self._files[key] = rel

    def add_dir(self, rel: str) -> None:
        key = path_key(rel)
        if key in self._files:
            raise self._refuse(rel, self._files[key],
                               f"is a directory but also the file {self._files[key]!r}")
        self._parents(rel)
        self._dirs.setdefault(key, rel)


def check_paths(titles: list[str], where: str, hint: str = _HOSTILE) -> None:
    """Refuse unsafe, duplicate or reserved file names among ``titles``."""
    paths = PathSet(where, hint)
    for title in titles:
        paths.add_file(safe_relpath(title, where))


class Bounded(io.RawIOBase):
    """A decompressed stream, cut off once it passes ``limit`` bytes, or the end of a
    window that the caller moves along (:meth:`window`).

    Member sizes are checked against a budget as they come, but archive headers are
    not members: a pax header can claim gigabytes that ``tarfile`` reads into memory
    whole. The limit bounds the whole stream; the window bounds each header.
    """

    def __init__(self, inner: Any, limit: int, what: str) -> None:
        self._inner = inner
        self._left = limit
        self._limit = limit
        self._what = what
        self._read = 0
        self._window_end: int | None = None

    def readable(self) -> bool:
        return True

    def window(self, end: int) -> None:
        """Refuse reading past stream offset ``end`` (plus what readers buffer ahead)."""
        self._window_end = end + _AHEAD

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer)
        data = self._inner.read(min(len(view), self._left + 1))
        if len(data) > self._left:
            raise ArtifactInputError(f"{self._what} unpacks to over {self._limit} bytes",
                                     hint="refused as a decompression bomb")
        self._left -= len(data)
        self._read += len(data)
        if self._window_end is not None and self._read > self._window_end:
            raise ArtifactInputError(f"{self._what} has a header over {MAX_HEADER_BYTES} "
                                     "bytes", hint="refused as a decompression bomb")
        view[:len(data)] = data
        return len(data)


def extract_tar(stream: Any, dest: Path, where: str, *, packed_size: int, max_members: int,
                max_bytes: int, paths: PathSet | None = None,
                digests: dict[str, str] | None = None) -> None:
    """Unpack a tar ``stream`` (already decompressed, read once) under ``dest``.

    Only regular files and directories, under safe relative names that no other file
    of the tree (``paths``) takes; every file is created new. Bounded in members,
    total bytes (``max_bytes`` and :data:`MAX_RATIO` times ``packed_size``) and
    header bytes, so memory and disk stay bounded whatever the archive claims.
    ``digests``, when given, gets each file's ``sha256:<hex>``, hashed as it is
    written. Raises :class:`ArtifactInputError`; ``tarfile.TarError`` and the
    decompressor's own errors are the caller's to word.
    """
    budget = min(max_bytes, max(packed_size, 1) * MAX_RATIO)
    paths = paths or PathSet(where)
    # Headers and padding: 512 bytes or so per member, on top of the files' bytes.
    bounded = Bounded(stream, budget + 1024 * max_members, where)
    bounded.window(MAX_HEADER_BYTES)
    total = 0
    try:
        with tarfile.open(fileobj=io.BufferedReader(bounded, _READ), mode="r|") as tf:
            for count, member in enumerate(tf, 1):
                if count > max_members:
                    raise ArtifactInputError(f"{where} has over {max_members} files")
                if not (member.isfile() or member.isdir()):
                    raise ArtifactInputError(
                        f"{where}: {member.name!r} is a link or special file",
                        hint="only regular files and directories are allowed")
                rel = safe_relpath(member.name, where)
                total += member.size
                if total > budget:
                    raise ArtifactInputError(f"{where} unpacks to over {budget} bytes",
                                             hint="refused as a decompression bomb")
                # The next header starts at tf.offset; it may take MAX_HEADER_BYTES.
                bounded.window(tf.offset + MAX_HEADER_BYTES)
                target = dest / rel
                if member.isdir():
                    paths.add_dir(rel)
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                paths.add_file(rel)
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tf.extractfile(member)
                assert src is not None
                # "x": a new file, never through a link into the store.
                with open(target, "xb") as out:
                    if digests is None:
                        shutil.copyfileobj(src, out, _READ)
                    else:
                        h = hashlib.sha256()
                        while chunk := src.read(_READ):
                            h.update(chunk)
                            out.write(chunk)
                        digests[rel] = f"sha256:{h.hexdigest()}"
                    os.fchmod(out.fileno(), 0o755 if member.mode & 0o111 else 0o644)
    except (FileExistsError, NotADirectoryError):
        raise ArtifactInputError(f"{where}: two files land on one path",
                                 hint=_HOSTILE) from None
