"""The resolver's only door to the world, and its progress hooks."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from sxpm.resolver.model import Candidate


class Provider(Protocol):
    def candidates(self, name: str) -> Sequence[Candidate]:
        """Every published version of ``name``, yanked ones included, in any order.

        Called at most once per name per resolution (the resolver caches it), so an
        implementation may do I/O here (read one index file). Unknown names give ``[]``.
        """
        ...

    def known_names(self) -> Iterable[str]:
        """Names that exist, for "did you mean" suggestions; called only on errors."""
        ...


class ResolutionReporter:
    """Hooks called while resolving; the base class does nothing."""

    def pinning(self, candidate: Candidate) -> None:
        """A candidate was tried for its name."""

    def backtracking(self, candidate: Candidate, reason: str) -> None:
        """A candidate was dropped again."""
