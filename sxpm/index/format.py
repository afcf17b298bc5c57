"""The index format: where a name's file lives, what one line says, the index config.

A name's file holds one JSON line per published version (schema
``schemas/index-entry.schema.json``), in ascending version order. Lines are never
changed once written, except their ``yanked`` field.

This module imports no heavy dependency: ``jsonschema`` is loaded only when a line
is checked against the schema.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from sxpm.core.artifact import Dependency, Variant
from sxpm.core.names import check_name, normalize_name
from sxpm.core.reference import Digest, Reference
from sxpm.core.versions import check_version, is_prerelease, version_key
from sxpm.errors import IndexFormatError, InputError

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
CATALOG_FILE = "search.json"
CATALOG_FORMAT = 1
# search.json rows: one array per name, fields in this order. Fields are only ever
# appended, so readers of older catalogues (and older readers) keep working.
CATALOG_FIELDS = ("name", "kind", "vers", "size", "description", "tags", "versions",
                  "category", "capabilities")
PACKAGES_DIR = "packages"

def index_path(name: str) -> str:
    """The file of ``name``, relative to the index root (crates.io's layout).

    ``packages/1/a``, ``packages/2/ab``, ``packages/3/a/abc``, ``packages/ab/cd/abcd...``,
    always of the normalised name, so names that differ only in case or ``_``/``-``
    share one file (and `index verify` reports the collision).
    """
    n = normalize_name(check_name(name))
    if len(n) <= 2:
        return f"{PACKAGES_DIR}/{len(n)}/{n}"
    if len(n) == 3:
        return f"{PACKAGES_DIR}/3/{n[0]}/{n}"
    return f"{PACKAGES_DIR}/{n[:2]}/{n[2:4]}/{n}"


@dataclass(frozen=True)
class IndexEntry:
    """One published version of one name: one line of the index.

    ``ref`` is the registry repository (``host[:port]/repo`` or ``oci:/path``, no tag
    or digest; written back exactly as it was read) and
    ``digest`` the manifest or image-index digest, so ``f"{ref}@{digest}"`` pulls
    exactly what was published. ``size`` is the bytes of the default (first)
    variant, what a plain pull fetches.
    """

    name: str
    vers: str
    kind: str
    ref: Reference
    digest: Digest
    artifact_type: str
    size: int
    deps: tuple[Dependency, ...] = ()
    variants: tuple[Variant, ...] = ()
    description: str = ""
    license: str = ""
    tags: tuple[str, ...] = ()
    yanked: bool = False
    category: str = ""  # a model's (sxpm.core.categories); "" for other kinds, older lines
    capabilities: tuple[str, ...] = ()

    @property
    def reference(self) -> str:
        """The pinned reference to pull: ``REF@DIGEST``."""
        return f"{self.ref}@{self.digest}"

    def with_yanked(self, yanked: bool) -> IndexEntry:
        return replace(self, yanked=yanked)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name, "vers": self.vers, "kind": self.kind, "ref": self.ref.locator,
            "digest": str(self.digest), "artifactType": self.artifact_type, "size": self.size,
            "deps": [d.to_dict() for d in self.deps],
            "variants": [v.to_dict() for v in self.variants],
        }
        if self.description:
            out["description"] = self.description
        if self.license:
            out["license"] = self.license
        if self.tags:
            out["tags"] = list(self.tags)
        if self.category:
            out["category"] = self.category
        if self.capabilities:
            out["capabilities"] = list(self.capabilities)
        out["yanked"] = self.yanked
        return out

    def to_line(self) -> str:
        """The line as written to the index (no newline)."""
        return dump_line(self.to_dict())

    @classmethod
    def from_dict(cls, obj: Any, *, source: str = "index", line: int | None = None,
                  check: bool = True) -> IndexEntry:
        """Build from a parsed line; ``check`` validates it against the schema first."""
        if check:
            from sxpm.core.validation import first_error

            problem = first_error(obj, "index-entry")
            if problem is not None:
                raise IndexFormatError(source, line, problem[0], path=problem[1])
        elif not isinstance(obj, dict):
            raise IndexFormatError(source, line, "a line must be a JSON object")
        try:
            return cls(
                name=check_name(obj["name"]), vers=check_version(obj["vers"]), kind=obj["kind"],
                ref=parse_ref(obj["ref"]), digest=Digest.parse(obj["digest"]),
                artifact_type=obj["artifactType"], size=obj["size"],
                deps=tuple(Dependency.from_dict(d) for d in obj["deps"]),
                variants=tuple(Variant.from_dict(v) for v in obj["variants"]),
                description=obj.get("description", ""), license=obj.get("license", ""),
                tags=tuple(obj.get("tags", ())), yanked=bool(obj["yanked"]),
                category=obj.get("category", ""),
                capabilities=tuple(obj.get("capabilities", ())),
            )
        except (KeyError, TypeError, AttributeError) as exc:  # e.g. a variant that is null
            raise IndexFormatError(source, line, f"missing or malformed field {exc}") from None
        except InputError as exc:
            raise IndexFormatError(source, line, exc.message) from None


def parse_ref(text: Any) -> Reference:
    """A line's ``ref``: a registry repository, never a URL or a path with ``..``."""
    if isinstance(text, str) and "://" in text:
        scheme = text.split("://", 1)[0]
        raise InputError(f"ref {text!r} uses the scheme {scheme!r}; a ref names a registry "
                         "repository (host[:port]/REPOSITORY or oci:/PATH), not a URL")
    if isinstance(text, str) and ("/../" in f"{text}/" or "/./" in f"{text}/"):
        raise InputError(f"ref {text!r} contains '..' or '.' path components")
    return Reference.parse_locator(text)


def dump_line(obj: Mapping[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def load_line(text: str, *, source: str, line: int) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        reason = getattr(exc, "msg", str(exc))
        col = getattr(exc, "colno", None)
        raise IndexFormatError(source, line, f"not valid JSON ({reason}"
                               + (f" at column {col})" if col else ")")) from None


def parse_lines(text: str, *, source: str, check: bool = True) -> list[IndexEntry]:
    """Every line of one index file; errors name ``source`` and the line number."""
    out = []
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        out.append(IndexEntry.from_dict(load_line(raw, source=source, line=number),
                                        source=source, line=number, check=check))
    return out


@dataclass(frozen=True)
class IndexConfig:
    """``config.json`` of an index: its format and the registries its refs may name.

    A line's ``ref`` must name a repository under ``default_registry`` or one of
    ``allowed_registries`` (prefixes such as ``ghcr.io/simplex`` or ``oci:/srv/reg``),
    with no URL scheme: a line cannot send clients anywhere the index did not agree to.
    """

    default_registry: str
    allowed_registries: tuple[str, ...] = ()
    format: int = FORMAT_VERSION
    raw: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, obj: Any, source: str = CONFIG_FILE) -> IndexConfig:
        from sxpm.core.validation import first_error

        problem = first_error(obj, "index-config")
        if problem is not None:
            raise IndexFormatError(source, None, problem[0], path=problem[1],
                                   hint="see registry-index/README.md for config.json")
        return cls(obj["default_registry"], tuple(obj.get("allowed_registries", ())),
                   obj["format"], obj)

    @property
    def registries(self) -> tuple[str, ...]:
        out = [self.default_registry, *self.allowed_registries]
        return tuple(dict.fromkeys(r.rstrip("/") for r in out))

    def ref_problem(self, repository: Reference) -> str | None:
        """Why ``repository`` may not appear in this index, or None when it may.

        A URL scheme or a ``..`` component never gets this far: :func:`parse_ref`
        refuses them as the line is read."""
        ref = repository.locator
        for prefix in self.registries:
            if ref.startswith(prefix + "/") and len(ref) > len(prefix) + 1:
                return None
        return (f"ref {ref!r} is not in a registry this index allows "
                f"({', '.join(self.registries)})")

    def registry_allowed(self, registry: str) -> bool:
        registry = registry.rstrip("/")
        return any(registry == p or registry.startswith(p + "/") for p in self.registries)


def latest(entries: Iterable[IndexEntry], *, include_yanked: bool = False
           ) -> IndexEntry | None:
    """The highest version, preferring releases over pre-releases; None when none."""
    candidates = [e for e in entries if include_yanked or not e.yanked]
    if not candidates:
        return None
    releases = [e for e in candidates if not is_prerelease(e.vers)]
    return max(releases or candidates, key=lambda e: version_key(e.vers))
