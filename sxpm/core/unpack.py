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

import io
import unicodedata
from pathlib import PurePosixPath
from typing import Any

from sxpm.errors import ArtifactInputError

# Written by sxpm into every installed tree; no artifact file may take its name.
INSTALL_RECORD = ".sxpm-install.json"

_HOSTILE = "the artifact is malformed or hostile; do not install it"


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
    """A decompressed stream, cut off once it passes ``limit`` bytes.

    Member sizes are checked against a budget as they come, but archive headers (a
    pax header can claim gigabytes that ``tarfile`` reads into memory) are not
    members: the whole stream is bounded too.
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
