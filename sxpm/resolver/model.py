"""Value types of resolution: what is asked for, what exists, what was chosen."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sxpm.core.artifact import Dependency, Variant
from sxpm.core.reference import Digest, Reference
from sxpm.core.versions import VersionReq

if TYPE_CHECKING:
    from sxpm.core.versions import Version

ROOT = "simplex.toml"


@dataclass(frozen=True)
class Candidate:
    """One published version of a name."""

    name: str
    kind: str
    version: Version
    digest: Digest
    ref: Reference | None  # the repository (no tag or digest); None in a bare snapshot
    deps: tuple[Dependency, ...] = ()
    variants: tuple[Variant, ...] = ()
    yanked: bool = False
    size: int = 0

    def __str__(self) -> str:
        return f"{self.name} {self.version}"

    def variant(self, name: str) -> Variant | None:
        return next((v for v in self.variants if v.name == name), None)

    def for_base(self, base: str) -> Variant | None:
        return next((v for v in self.variants if v.base_model == base), None)

    def deps_for(self, variant: Variant | None) -> tuple[Dependency, ...]:
        """Dependencies of one variant: an expert needs only the base model it runs on."""
        if variant is None or variant.base_model is None:
            return self.deps
        return tuple(d for d in self.deps if d.kind != "model" or d.name == variant.base_model)


@dataclass(frozen=True)
class Requirement:
    """A top-level requirement from ``simplex.toml``."""

    name: str
    kind: str
    req: VersionReq
    variant: str | None = None
    base: str | None = None


@dataclass(frozen=True)
class Constraint:
    """A requirement on a name and the chain of choices it came from."""

    req: VersionReq
    kind: str
    path: tuple[str, ...]
    variant: str | None = None
    base: str | None = None
    source: str | None = None  # the name whose chosen version imposed it; None: simplex.toml

    def explain(self, name: str) -> str:
        if len(self.path) == 1:
            return f"{self.path[0]} -> {name} {self.req}"
        return f"{' -> '.join(self.path)} -> requires {name} {self.req}"


@dataclass(frozen=True)
class Resolved:
    """A chosen version. ``per_machine``: a model whose variant no requirement names,
    so ``variant`` is only this machine's choice and each machine chooses at install."""

    candidate: Candidate
    variant: Variant | None
    required_by: tuple[str, ...] = ()
    deps: tuple[Dependency, ...] = ()
    per_machine: bool = False


@dataclass
class Resolution:
    """name -> what was chosen, in a deterministic (sorted) order."""

    artifacts: dict[str, Resolved] = field(default_factory=dict)
    steps: int = 0

    def __getitem__(self, name: str) -> Resolved:
        return self.artifacts[name]

    def versions(self) -> dict[str, str]:
        return {n: str(r.candidate.version) for n, r in sorted(self.artifacts.items())}
