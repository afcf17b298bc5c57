"""Ranking ``search.json`` rows against a query, in plain Python (no heavy imports).

Ranking, best first: the name equals the query; the name starts with it; the name
contains it; then, word by word, names, tags and descriptions that contain every
word. Ties go to the shorter, then alphabetically first, name.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sxpm.core.names import normalize_name


@dataclass(frozen=True)
class Hit:
    name: str
    kind: str
    vers: str
    size: int
    description: str
    tags: tuple[str, ...]
    score: int
    category: str | None = None  # a model's; None for other kinds and older catalogues
    capabilities: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "version": self.vers,
                "size": self.size, "description": self.description,
                "tags": list(self.tags), "score": self.score, "category": self.category,
                "capabilities": list(self.capabilities)}


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


def _category(row: Sequence[Any]) -> str | None:
    """A row's category: None in a catalogue built before rows had one."""
    value = row[7] if len(row) > 7 else None
    return value if isinstance(value, str) and value else None


def search(rows: Sequence[Sequence[Any]], query: str, *, kind: str | None = None,
           limit: int | None = 20, category: str | None = None) -> list[Hit]:
    """Rank catalogue ``rows`` (``search.json`` arrays) against ``query``; ``category``
    keeps only models of that category.

    An empty query lists every name alphabetically.
    """
    q = normalize_name(" ".join(query.split()))
    words = q.split()
    scored: list[tuple[int, int, str, Sequence[Any]]] = []
    for row in rows:
        name, row_kind, _vers, _size, description, tags = row[:6]
        if kind is not None and row_kind != kind:
            continue
        if category is not None and _category(row) != category:
            continue
        score = _score(q, words, name, description, tags) if q else 1
        if score:
            scored.append((-score, len(name), name, row))
    scored.sort(key=lambda item: item[:3])
    if limit is not None:
        scored = scored[:limit]
    return [Hit(r[0], r[1], r[2], r[3], r[4], tuple(r[5]), -s, _category(r),
                tuple(r[8]) if len(r) > 8 and isinstance(r[8], list) else ())
            for s, _, _, r in scored]


def _rows_of_lines(text: str) -> tuple[list[str], int] | None:
    """Lines of a ``search.json`` written one row per line, and the first row's index.

    None when the file is laid out otherwise (hand-edited, another writer).
    """
    lines = text.split("\n")
    if not lines or not lines[0].startswith('{"format":') or \
            not lines[0].endswith('"packages":['):
        return None
    return lines, 1


def search_text(text: str, query: str, *, kind: str | None = None, limit: int | None = 20,
                source: str = "search.json", category: str | None = None) -> list[Hit]:
    """:func:`search` straight on the text of ``search.json``.

    ``index build`` writes one row per line, so the query's words are first looked for
    in the lower-cased text of each line (a C-speed substring test) and only lines that
    hold every word are parsed and ranked: at 10,000 names this is a few milliseconds
    instead of parsing the whole catalogue.
    """
    q = normalize_name(" ".join(query.split()))
    words = q.split()
    layout = _rows_of_lines(text)
    if layout is None or not words or any('"' in w or "\\" in w for w in words):
        return search(load_catalog_rows(text, source), query, kind=kind, limit=limit,
                      category=category)
    lines, first = layout
    check_catalog_header(lines[0], source)
    lowered = text.lower().replace("_", "-").split("\n")
    candidates = [i for i in range(first, len(lines))
                  if all(w in lowered[i] for w in words) and lines[i].startswith("[")]
    try:
        rows = json.loads("[" + ",".join(lines[i].rstrip(",") for i in candidates) + "]")
    except ValueError:
        return search(load_catalog_rows(text, source), query, kind=kind, limit=limit,
                      category=category)
    return search(rows, query, kind=kind, limit=limit, category=category)


def check_catalog_header(header: str, source: str) -> None:
    from sxpm.index.format import CATALOG_FORMAT

    try:
        obj = json.loads(header + "]}")
    except ValueError:
        obj = None
    if not isinstance(obj, dict) or obj.get("format") != CATALOG_FORMAT:
        from sxpm.errors import IndexFormatError

        raise IndexFormatError(source, 1, f"not a search catalogue of format {CATALOG_FORMAT}",
                               hint="regenerate it with `sxpm index build`")


def load_catalog_rows(text: str, source: str) -> list[Any]:
    """Every row of a ``search.json`` text, checking its format."""
    from sxpm.errors import IndexFormatError
    from sxpm.index.format import CATALOG_FORMAT

    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise IndexFormatError(source, getattr(exc, "lineno", None),
                               f"not valid JSON ({getattr(exc, 'msg', exc)})") from None
    if not isinstance(obj, dict) or obj.get("format") != CATALOG_FORMAT:
        raise IndexFormatError(source, None, f"not a search catalogue of format {CATALOG_FORMAT}",
                               hint="regenerate it with `sxpm index build`")
    rows = obj.get("packages")
    if not isinstance(rows, list):
        raise IndexFormatError(source, None, "'packages' is not a list")
    return rows
