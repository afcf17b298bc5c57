"""What a published artifact declares about itself: its dependencies and its variants.

The index, the resolver, the lock and the runner all speak of these; they share these
two value types, parsed once where the text enters (an index line, a manifest's
annotations) and written back with :meth:`to_dict` in the same shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sxpm.core.names import check_name
from sxpm.core.reference import Digest
from sxpm.core.versions import VersionReq


@dataclass(frozen=True)
class Dependency:
    """``name`` at ``req``, of ``kind`` (model, expert or package)."""

    name: str
    req: VersionReq
    kind: str = "package"

    @classmethod
    def from_dict(cls, obj: Any) -> Dependency:
        """From ``{"name", "req", "kind"}``; ``req`` defaults to ``*``, kind to package."""
        return cls(check_name(obj["name"]), VersionReq.parse(obj.get("req", "*")),
                   obj.get("kind", "package"))

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "req": str(self.req), "kind": self.kind}

    def __str__(self) -> str:
        return f"{self.name} {self.req}"


@dataclass(frozen=True)
class Variant:
    """One manifest of an image index: a quantization, or an expert's base model.

    ``size`` is the bytes of its files, ``memory`` what its weights take when loaded
    (None when the publisher did not say).
    """

    name: str
    digest: Digest
    size: int = 0
    memory: int | None = None
    base_model: str | None = None

    @property
    def need(self) -> int:
        """Bytes it needs to run: its memory when known, else its size."""
        return self.memory if self.memory is not None else self.size

    @classmethod
    def from_dict(cls, obj: Any) -> Variant:
        memory = obj.get("memory")
        return cls(obj["name"], Digest.parse(obj["digest"]), int(obj.get("size", 0)),
                   None if memory is None else int(memory), obj.get("base_model"))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "digest": str(self.digest), "size": self.size}
        if self.memory is not None:
            out["memory"] = self.memory
        if self.base_model is not None:
            out["base_model"] = self.base_model
        return out
