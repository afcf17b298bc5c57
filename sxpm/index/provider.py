"""The resolver's provider over a registry index: one index file read per name."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from sxpm.core.versions import parse_version
from sxpm.index.client import IndexClient
from sxpm.index.format import IndexEntry, index_path
from sxpm.resolver.model import Candidate


class IndexProvider:
    """Candidates from an :class:`IndexClient`; records what it read as the index state."""

    def __init__(self, client: IndexClient) -> None:
        self.client = client
        self._seen: list[str] = []

    @classmethod
    def open(cls, location: str, *, offline: bool = False, insecure: bool = False
             ) -> IndexProvider:
        return cls(IndexClient(location, offline=offline, insecure=insecure))

    @property
    def source(self) -> str:
        return str(self.client.location)

    @property
    def state(self) -> str:
        """A digest of every index file the resolution read: the state it saw."""
        h = hashlib.sha256()
        for name in sorted(set(self._seen)):
            h.update(f"{name}\n{self.client.read_text(index_path(name)) or ''}".encode())
        return "sha256:" + h.hexdigest()

    def candidates(self, name: str) -> Sequence[Candidate]:
        entries = self.client.entries(name)  # the client keeps the file's text
        self._seen.append(name)
        return [candidate_from_entry(e) for e in entries]

    def known_names(self) -> Iterable[str]:
        return self.client.names()


def candidate_from_entry(entry: IndexEntry) -> Candidate:
    """The resolver's view of one index line, its values already parsed by the client."""
    return Candidate(name=entry.name, kind=entry.kind, version=parse_version(entry.vers),
                     digest=entry.digest, ref=entry.ref, deps=entry.deps,
                     variants=entry.variants, yanked=entry.yanked, size=entry.size)
