"""``simplex.lock``: every artifact pinned by digest, in a deterministic TOML file.

Format versions 1 and 2. Version 2 adds the portable record of a model whose variant
the project does not pin: every variant the image index lists (``[[artifact.variants]]``:
name, manifest digest, layers) and no single ``manifest``, so each machine chooses its
variant at install. A lock is written in the lowest version that holds what it pins
(a lock without such a record is still version 1, byte for byte as before), so an older
sxpm reads every lock it can read correctly and refuses the rest: one that finds a newer
``version`` says to upgrade. The file is written in one fixed order (artifacts sorted
by name, keys in a fixed order) so the same resolution always gives the same bytes.

Parsing is hand-checked (not jsonschema) because ``install --frozen`` reads the lock
on its fast path; ``schemas/simplex-lock.schema.json`` documents the same shape and
the tests check written locks against it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sxpm.core.names import check_name, normalize_name
from sxpm.core.reference import Digest, Reference
from sxpm.errors import ManifestError, NotFoundError

LOCK_VERSION = 2  # the newest format this sxpm reads
# The format that first holds variants chosen per machine (``[[artifact.variants]]``).
VARIANTS_VERSION = 2
HEADER = "# simplex.lock: written by sxpm from simplex.toml; do not edit by hand.\n"


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string that reads back as ``text``.

    A JSON string is one, but for two spellings TOML refuses: ``\\ud83d\\ude00``
    (JSON's surrogate escapes for characters outside the BMP, such as an emoji in a file
    name) and a raw DEL. So characters stay as they are and only DEL is escaped.
    """
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


@dataclass(frozen=True)
class LockedLayer:
    path: str
    digest: Digest
    size: int
    media_type: str


@dataclass(frozen=True)
class LockedVariant:
    """One variant a portable record lets a machine choose: its manifest and layers."""

    name: str
    manifest: Digest
    layers: tuple[LockedLayer, ...] = ()

    @property
    def size(self) -> int:
        return sum(layer.size for layer in self.layers)


@dataclass(frozen=True)
class LockedArtifact:
    """One pinned artifact. Either one manifest (``manifest``, with ``variant`` and
    ``layers`` for a variant the project or the artifact fixes), or, for a model whose
    variant each machine chooses at install, ``manifest`` None and every variant of the
    image index ``digest`` in ``variants``."""

    name: str
    kind: str
    version: str
    source: Reference  # the repository (no tag or digest), e.g. localhost:5000/simplex/tiny
    digest: Digest  # what the index published: manifest or image index
    manifest: Digest | None  # the manifest installed (a variant's); None: see variants
    variant: str | None = None
    dependencies: tuple[str, ...] = ()
    layers: tuple[LockedLayer, ...] = ()
    signer: str | None = None
    variants: tuple[LockedVariant, ...] = ()

    @property
    def per_machine(self) -> bool:
        """Each machine chooses among ``variants`` at install."""
        return self.manifest is None

    def choices(self) -> tuple[LockedVariant, ...]:
        """What an install may put in place: every locked variant, or the one manifest."""
        if self.manifest is None:
            return self.variants
        return (LockedVariant(self.variant or "", self.manifest, self.layers),)

    def manifests(self) -> tuple[Digest, ...]:
        return tuple(v.manifest for v in self.choices())

    def chosen(self, variant: LockedVariant) -> LockedArtifact:
        """This record as installed on a machine that chose ``variant``."""
        return replace(self, manifest=variant.manifest, variant=variant.name or None,
                       layers=variant.layers, variants=())

    @property
    def size(self) -> int:
        """Bytes of the one manifest's layers; of the largest variant per machine."""
        return max((v.size for v in self.choices()), default=0)


@dataclass
class Lock:
    requirements_hash: str
    requirements: list[dict[str, str]] = field(default_factory=list)
    artifacts: list[LockedArtifact] = field(default_factory=list)
    index_source: str = ""
    index_state: str = ""
    version: int = 1  # as read; written as at least the version the records need

    def format_version(self) -> int:
        """The version this lock is written in: the lowest that holds its records (an
        older sxpm then reads every lock it can read correctly), never below the one
        it was read in (the same bytes back)."""
        needed = VARIANTS_VERSION if any(a.per_machine for a in self.artifacts) else 1
        return max(self.version, needed)

    def by_name(self) -> dict[str, LockedArtifact]:
        return {a.name: a for a in self.artifacts}

    # --- writing ---------------------------------------------------------------
    def dumps(self) -> str:
        q = toml_string
        out = [HEADER, f"version = {self.format_version()}\n",
               f"requirements-hash = {q(self.requirements_hash)}\n"]
        if self.index_source or self.index_state:
            out.append(f"\n[index]\nsource = {q(self.index_source)}\n"
                       f"state = {q(self.index_state)}\n")
        for req in sorted(self.requirements, key=lambda r: (r["kind"], r["name"])):
            out.append("\n[[requirement]]\n")
            for key in ("name", "kind", "req", "variant", "base", "optional"):
                if req.get(key):
                    out.append(f"{key} = {q(req[key])}\n")
        for art in sorted(self.artifacts, key=lambda a: (a.name, a.kind)):
            out.append("\n[[artifact]]\n")
            out.append(f"name = {q(art.name)}\nkind = {q(art.kind)}\n"
                       f"version = {q(art.version)}\nsource = {q(art.source.locator)}\n"
                       f"digest = {q(str(art.digest))}\n")
            if art.manifest is not None:
                out.append(f"manifest = {q(str(art.manifest))}\n")
            if art.variant:
                out.append(f"variant = {q(art.variant)}\n")
            out.append("dependencies = [" + ", ".join(q(d) for d in sorted(art.dependencies))
                       + "]\n")
            if art.signer:
                out.append(f"signer = {q(art.signer)}\n")
            if art.manifest is not None:
                out.append(_layers(art.layers))
            for v in art.variants:  # in the image index's order: its first is the default
                out.append(f"\n[[artifact.variants]]\nname = {q(v.name)}\n"
                           f"manifest = {q(str(v.manifest))}\n" + _layers(v.layers))
        return "".join(out)

    def write(self, path: Path) -> None:
        from sxpm.store.layout import write_atomic

        write_atomic(path, self.dumps().encode())

    # --- reading ---------------------------------------------------------------
    @classmethod
    def read(cls, path: Path) -> Lock:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise NotFoundError(f"{path} does not exist", hint="run `sxpm lock`") from None
        return cls.loads(text, str(path))

    @classmethod
    def loads(cls, text: str, source: str = "simplex.lock") -> Lock:
        from sxpm.project.manifest import parse_toml

        data = parse_toml(text, source)
        return cls.from_dict(data, source)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> Lock:
        def fail(path: str, message: str) -> ManifestError:
            return ManifestError(source, message, path=path,
                                 hint="run `sxpm lock` to write it again")

        version = data.get("version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise fail("$.version", "missing or non-integer format version")
        if version > LOCK_VERSION:
            raise ManifestError(source, f"lock format {version} is newer than this sxpm "
                                f"understands ({LOCK_VERSION})", path="$.version",
                                hint="upgrade sxpm: pip install -U sxpm")
        if version < 1:
            raise fail("$.version", f"unknown lock format {version}")

        def text(obj: dict[str, Any], key: str, where: str, required: bool = True
                 ) -> str | None:
            value = obj.get(key)
            if value is None and not required:
                return None
            if not isinstance(value, str) or not value:
                raise fail(f"{where}.{key}", "must be a non-empty string")
            return value

        def digest(obj: dict[str, Any], key: str, where: str) -> Digest:
            value = text(obj, key, where)
            assert value is not None
            try:
                return Digest.parse(value)
            except ValueError as exc:
                raise fail(f"{where}.{key}", str(exc)) from None

        def repository(obj: dict[str, Any], key: str, where: str) -> Reference:
            value = text(obj, key, where)
            assert value is not None
            try:
                # Not exact: a lock written before sources were parsed at lock time
                # may hold a relative oci: path, read from the working directory.
                return Reference.parse_locator(value, exact=False)
            except ValueError as exc:
                raise fail(f"{where}.{key}", str(exc)) from None

        def read_layers(obj: dict[str, Any], where: str) -> tuple[LockedLayer, ...]:
            layers_obj = obj.get("layers", [])
            if not isinstance(layers_obj, list):
                raise fail(f"{where}.layers", "must be an array")
            layers = []
            for j, layer in enumerate(layers_obj):
                lw = f"{where}.layers[{j}]"
                if not isinstance(layer, dict):
                    raise fail(lw, "must be a table")
                size = layer.get("size")
                if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                    raise fail(f"{lw}.size", "must be a non-negative integer")
                path = text(layer, "path", lw)
                media_type = text(layer, "media-type", lw)
                assert path is not None and media_type is not None
                layers.append(LockedLayer(path, digest(layer, "digest", lw), size, media_type))
            return tuple(layers)

        def read_variants(obj: dict[str, Any], where: str) -> tuple[LockedVariant, ...]:
            if version < VARIANTS_VERSION:
                raise fail(f"{where}.variants", f"variants chosen per machine need lock "
                           f"format {VARIANTS_VERSION}, this lock says {version}")
            listed = obj["variants"]
            if not isinstance(listed, list) or not listed \
                    or not all(isinstance(v, dict) for v in listed):
                raise fail(f"{where}.variants", "must be a non-empty array of tables")
            out: list[LockedVariant] = []
            for j, v in enumerate(listed):
                vw = f"{where}.variants[{j}]"
                vname = text(v, "name", vw)
                assert vname is not None
                if any(o.name == vname for o in out):
                    raise fail(f"{vw}.name", f"variant {vname!r} is locked twice")
                out.append(LockedVariant(vname, digest(v, "manifest", vw),
                                         read_layers(v, vw)))
            return tuple(out)

        req_hash = text(data, "requirements-hash", "$")
        assert req_hash is not None
        index = data.get("index", {})
        if not isinstance(index, dict):
            raise fail("$.index", "must be a table")
        reqs = data.get("requirement", [])
        if not isinstance(reqs, list) or not all(isinstance(r, dict) for r in reqs):
            raise fail("$.requirement", "must be an array of tables")
        requirements = []
        for i, r in enumerate(reqs):
            where = f"$.requirement[{i}]"
            rec = {k: text(r, k, where) for k in ("name", "kind", "req")}
            for k in ("variant", "base", "optional"):
                if r.get(k):
                    rec[k] = text(r, k, where)
            requirements.append({k: v for k, v in rec.items() if v is not None})
        arts = data.get("artifact", [])
        if not isinstance(arts, list) or not all(isinstance(a, dict) for a in arts):
            raise fail("$.artifact", "must be an array of tables")
        artifacts = []
        seen: set[str] = set()
        for i, a in enumerate(arts):
            where = f"$.artifact[{i}]"
            name = text(a, "name", where)
            assert name is not None
            try:
                check_name(name)
            except ValueError as exc:
                raise fail(f"{where}.name", str(exc)) from None
            if normalize_name(name) in seen:  # Foo_Bar and foo-bar are one name
                raise fail(f"{where}.name", f"{name!r} is locked twice")
            seen.add(normalize_name(name))
            kind = text(a, "kind", where)
            if kind not in ("model", "expert", "package"):
                raise fail(f"{where}.kind", f"unknown kind {kind!r}")
            deps = a.get("dependencies", [])
            if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
                raise fail(f"{where}.dependencies", "must be an array of names")
            manifest: Digest | None = None
            layers: tuple[LockedLayer, ...] = ()
            variants: tuple[LockedVariant, ...] = ()
            if "variants" in a:
                variants = read_variants(a, where)
                for key in ("manifest", "variant", "layers"):
                    if key in a:
                        raise fail(f"{where}.{key}", "a record with variants chosen per "
                                   "machine pins no single manifest, variant or layers")
            else:
                manifest = digest(a, "manifest", where)
                layers = read_layers(a, where)
            artifacts.append(LockedArtifact(
                name=name, kind=kind, version=str(text(a, "version", where)),
                source=repository(a, "source", where), digest=digest(a, "digest", where),
                manifest=manifest,
                variant=text(a, "variant", where, required=False),
                dependencies=tuple(deps), layers=layers,
                signer=text(a, "signer", where, required=False), variants=variants))
        return cls(req_hash, requirements, artifacts,
                   str(index.get("source", "")), str(index.get("state", "")), version)


def _layers(layers: tuple[LockedLayer, ...]) -> str:
    q = toml_string
    return "layers = [\n" + "".join(
        f"  {{ path = {q(layer.path)}, digest = {q(str(layer.digest))}, "
        f"size = {layer.size}, media-type = {q(layer.media_type)} }},\n"
        for layer in layers) + "]\n"


def changed_requirements(old: list[dict[str, str]], new: list[dict[str, str]]) -> list[str]:
    """Human descriptions of how ``new`` differs from ``old`` (lock vs simplex.toml)."""
    before = {r["name"]: r for r in old}
    after = {r["name"]: r for r in new}
    out = []
    for name in sorted(set(before) | set(after)):
        a, b = before.get(name), after.get(name)
        if a == b:
            continue
        if a is None:
            out.append(f"{name} was added ({b['req'] if b else ''})")
        elif b is None:
            out.append(f"{name} was removed")
        else:
            out.append(f"{name} changed from {_describe(a)} to {_describe(b)}")
    return out


def _describe(rec: dict[str, str]) -> str:
    text = rec.get("req", "*")
    for key in ("variant", "base"):
        if rec.get(key):
            text += f" {key}={rec[key]}"
    return text
