"""Ranking ``search.json`` rows against a query, in plain Python (no heavy imports).

Ranking, best first: the name equals the query; the name starts with it; the name
contains it; then, word by word, names, tags and descriptions that contain every
word. Ties go to the shorter, then alphabetically first, name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sxpm.index.format import normalize_name


@dataclass(frozen=True)
class Hit:
    name: str
    kind: str
    vers: str
    size: int
    description: str
    tags: tuple[str, ...]
    score: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "version": self.vers,
                "size": self.size, "description": self.description,
                "tags": list(self.tags), "score": self.score}


def _score(query: str, words: list[str], name: str, description: str,
           tags: Sequence[str]) -> int:
    n = normalize_name(name)
    if n == query:
        return 10_000
    if n.startswith(query):
        return 8_000
    if query in n:
        return 6_000
    score = 0
    lower_desc: str | None = None
    lower_tags: list[str] | None = None
    for word in words:
        if word in n:
            score += 300
            continue
        if lower_tags is None:
            lower_tags = [normalize_name(t) for t in tags]
        if word in lower_tags:
            score += 200
            continue
        if any(word in t for t in lower_tags):
            score += 120
            continue
        if lower_desc is None:
            lower_desc = description.lower().replace("_", "-")
        if word in lower_desc:
            score += 100
            continue
        return 0  # every word must match somewhere
    return score


def search(rows: Sequence[Sequence[Any]], query: str, *, kind: str | None = None,
           limit: int | None = 20) -> list[Hit]:
    """Rank catalogue ``rows`` (``search.json`` arrays) against ``query``.

    An empty query lists every name alphabetically.
    """
    q = normalize_name(" ".join(query.split()))
    words = q.split()
    scored: list[tuple[int, int, str, Sequence[Any]]] = []
    for row in rows:
        name, row_kind, _vers, _size, description, tags = row[:6]
        if kind is not None and row_kind != kind:
            continue
        score = _score(q, words, name, description, tags) if q else 1
        if score:
            scored.append((-score, len(name), name, row))
    scored.sort(key=lambda item: item[:3])
    if limit is not None:
        scored = scored[:limit]
    return [Hit(r[0], r[1], r[2], r[3], r[4], tuple(r[5]), -s) for s, _, _, r in scored]


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
