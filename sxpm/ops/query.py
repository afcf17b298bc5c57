"""Questions to the registry index: search it, and show one name's versions.

Kept light (no store, no transports, no requests for a local or warm index): a
search must answer in well under 150 ms.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sxpm.core.categories import check_category
from sxpm.index.client import IndexClient
from sxpm.index.format import CATALOG_FILE, IndexEntry
from sxpm.index.location import find_index
from sxpm.index.search import Hit
from sxpm.project.manifest import Project


def open_index(index: str | None = None, *, project: Project | None = None,
               offline: bool = False, insecure: bool = False,
               cwd: Path | None = None) -> IndexClient:
    """The index a command uses: ``index``, else ``SXPM_INDEX``, the project's
    ``[registries] index`` (``project``, else the nearest ``simplex.toml``), the home's
    config."""
    return IndexClient(find_index(index, project=project, cwd=cwd), offline=offline,
                       insecure=insecure)


@dataclass
class SearchResult:
    """Hits best first; ``has_catalog`` is False when the index has no ``search.json``
    (so nothing can match until it is built)."""

    query: str
    hits: list[Hit]
    has_catalog: bool


def search(query: str, *, kind: str | None = None, limit: int | None = 20,
           index: str | None = None, project: Project | None = None, offline: bool = False,
           insecure: bool = False, category: str | None = None) -> SearchResult:
    """Search the index for ``query``: names first, then descriptions and tags;
    ``category`` keeps models of that category only."""
    if category is not None:
        check_category(category)
    client = open_index(index, project=project, offline=offline, insecure=insecure)
    hits = client.search(query, kind=kind, limit=limit, category=category)
    has_catalog = bool(hits) or client.read_text(CATALOG_FILE) is not None
    return SearchResult(query, hits, has_catalog)


@dataclass
class Info:
    """One name in the index: the version asked for (default: the latest not yanked)
    and every published version, lowest first, yanked ones included."""

    entry: IndexEntry
    versions: list[IndexEntry]


def info(name: str, version: str | None = None, *, index: str | None = None,
         project: Project | None = None, offline: bool = False,
         insecure: bool = False) -> Info:
    """``name``'s versions, variants, dependencies, license and digest."""
    client = open_index(index, project=project, offline=offline, insecure=insecure)
    entry = client.entry(name, version)
    return Info(entry, client.entries(name))
