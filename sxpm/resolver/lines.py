"""Candidates from index lines: the JSON objects of the registry index format."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sxpm.core.artifact import Dependency, Variant
from sxpm.core.reference import Digest, Reference
from sxpm.core.versions import parse_version
from sxpm.errors import ManifestError
from sxpm.resolver.model import Candidate


def candidate_from_line(line: Mapping[str, Any], source: str = "index") -> Candidate:
    """Build a :class:`Candidate` from one index line (``name``, ``vers``, ``deps``...)."""
    try:
        deps = tuple(Dependency.from_dict(d) for d in line.get("deps", []))
        variants = tuple(Variant.from_dict(v) for v in line.get("variants", []))
        ref = Reference.parse_locator(line["ref"]) if line.get("ref") else None
        return Candidate(
            name=line["name"], kind=line.get("kind", "package"),
            version=parse_version(line["vers"]), digest=Digest.parse(line["digest"]),
            ref=ref, deps=deps, variants=variants,
            yanked=bool(line.get("yanked", False)), size=int(line.get("size", 0)))
    except (KeyError, TypeError, ValueError) as exc:
        raise ManifestError(source, f"index line for {line.get('name')!r} is malformed "
                            f"({exc})") from None


class LinesProvider:
    """A provider over index lines held in memory (tests, snapshots, small indexes)."""

    def __init__(self, lines: Iterable[Mapping[str, Any]]) -> None:
        # Lines are parsed only for the names a resolution reaches, as an index
        # client reads only their files.
        self._lines: dict[str, list[Mapping[str, Any]]] = {}
        for line in lines:
            self._lines.setdefault(str(line.get("name")), []).append(line)
        self._parsed: dict[str, list[Candidate]] = {}

    def candidates(self, name: str) -> Sequence[Candidate]:
        if name not in self._parsed:
            self._parsed[name] = [candidate_from_line(line)
                                  for line in self._lines.get(name, [])]
        return self._parsed[name]

    def known_names(self) -> Iterable[str]:
        return self._lines.keys()
