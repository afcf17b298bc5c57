"""Version resolution: pure, with the world reached only through a provider.

* :mod:`sxpm.resolver.model` - the value types (requirements, candidates, result).
* :mod:`sxpm.resolver.provider` - the :class:`Provider` protocol and its reporters.
* :mod:`sxpm.resolver.resolve` - the backtracking resolver.
"""

from sxpm.core.artifact import Dependency, Variant
from sxpm.resolver.model import (
    Candidate,
    Requirement,
    Resolution,
    Resolved,
)
from sxpm.resolver.provider import Provider, ResolutionReporter
from sxpm.resolver.resolve import ResolutionImpossible, resolve

__all__ = [
    "Candidate",
    "Dependency",
    "Provider",
    "ResolutionReporter",
    "Requirement",
    "Resolution",
    "ResolutionImpossible",
    "Resolved",
    "Variant",
    "resolve",
]
