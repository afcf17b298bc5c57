"""``simplex.toml``: the project manifest, read with tomllib and edited with tomlkit.

Edits (``sxpm init/add/remove``) go through tomlkit so the user's comments, order
and formatting survive.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sxpm.core.names import validate_name
from sxpm.core.validation import validate
from sxpm.errors import InputError, ManifestError, NotFoundError

if TYPE_CHECKING:
    from sxpm.resolver.model import Requirement

MANIFEST = "simplex.toml"
LOCKFILE = "simplex.lock"
TABLE_BY_KIND = {"model": "models", "expert": "experts", "package": "dependencies"}
KIND_BY_TABLE = {v: k for k, v in TABLE_BY_KIND.items()}
_LINE_COL = re.compile(r"\(at line (\d+), column (\d+)\)")


def find_manifest(start: Path | None = None) -> Path | None:
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / MANIFEST
        if candidate.is_file():
            return candidate
    return None


def parse_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        m = _LINE_COL.search(message)
        where = f"line {m.group(1)} column {m.group(2)}" if m else ""
        raise ManifestError(source, f"invalid TOML: {_LINE_COL.sub('', message).strip()}",
                            path=where, hint="fix the TOML syntax") from None


@dataclass
class Project:
    path: Path  # the simplex.toml
    data: dict[str, Any]

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def lock_path(self) -> Path:
        return self.root / LOCKFILE

    @property
    def install_root(self) -> Path:
        return self.root / ".simplex"

    @classmethod
    def load(cls, path: Path | None = None) -> Project:
        if path is None or path.is_dir():
            found = find_manifest(path)
            if found is None:
                raise NotFoundError(f"No {MANIFEST} in {path or Path.cwd()} or its parents",
                                    hint="run `sxpm init` to create one")
            path = found
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise NotFoundError(f"{path} does not exist", hint="run `sxpm init`") from None
        except UnicodeDecodeError:
            raise ManifestError(str(path), "not UTF-8 text") from None
        data = parse_toml(text, str(path))
        from sxpm.core.validation import ValidationCache

        # The schema and every requirement are checked once per content of the file:
        # a file that passed both before (same bytes, same sxpm) passes again.
        checked = ValidationCache.for_home()
        key = checked.key("simplex-toml", text) if checked else None
        if key and checked and checked.seen(key):
            return cls(path, data)
        validate(data, "simplex-toml", str(path))
        project = cls(path, data)
        project.requirements()  # parse every requirement now: errors name their key
        project.check_features()
        project.check_defaults()
        if key and checked:
            checked.remember(key)
        return project

    @classmethod
    def nearest(cls, start: Path | None = None) -> Project | None:
        """The nearest ``simplex.toml`` at or above ``start``, parsed but not checked
        against the schema (None when there is none): for commands that need one table
        and must stay cheap, such as finding the index for a search."""
        found = find_manifest(start)
        if found is None:
            return None
        try:
            text = found.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ManifestError(str(found), "not UTF-8 text") from None
        return cls(found, parse_toml(text, str(found)))

    def requirements(self) -> list[Requirement]:
        from sxpm.core.versions import VersionReq
        from sxpm.resolver.model import Requirement

        out: list[Requirement] = []
        for table, kind in KIND_BY_TABLE.items():
            for name, spec in self.data.get(table, {}).items():
                where = f"$.{table}.{name}"
                text = spec if isinstance(spec, str) else spec.get("version", "*")
                try:
                    req = VersionReq.parse(text)
                except InputError as exc:
                    raise ManifestError(str(self.path), exc.message, path=where) from None
                variant = spec.get("variant") if isinstance(spec, dict) else None
                base = spec.get("base") if isinstance(spec, dict) else None
                out.append(Requirement(name, kind, req, variant, base))
        names = [r.name for r in out]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ManifestError(str(self.path), f"{dupes[0]!r} is listed in two tables",
                                hint="a name may appear once across models, experts and "
                                     "dependencies")
        return sorted(out, key=lambda r: (r.kind, r.name))

    def requirement_records(self) -> list[dict[str, str]]:
        """Requirements as plain records: what the lock stores to name changes."""
        records = []
        optional = self.optional_names()
        for r in self.requirements():
            rec = {"name": r.name, "kind": r.kind, "req": str(r.req)}
            if r.variant:
                rec["variant"] = r.variant
            if r.base:
                rec["base"] = r.base
            if r.name in optional:  # only then: a lock without features stays fresh
                rec["optional"] = "true"
            records.append(rec)
        return records

    # --- features (Cargo's): read from the tables directly, without the version
    # library, because a no-op `install --frozen` chooses its set too.

    def required_names(self) -> list[str]:
        """Every name the requirement tables list, optional ones included."""
        return [name for table in KIND_BY_TABLE for name in self.data.get(table, {})]

    def optional_names(self) -> set[str]:
        """Requirements marked ``optional = true``: installed only when a feature
        enables them (the lock holds them all the same)."""
        return {name for table in KIND_BY_TABLE
                for name, spec in self.data.get(table, {}).items()
                if isinstance(spec, dict) and spec.get("optional") is True}

    def default_models(self) -> list[str]:
        """Models marked ``default = true``: each the project's default of its category
        (the category is the model's own, read where it is installed)."""
        return [name for name, spec in self.data.get("models", {}).items()
                if isinstance(spec, dict) and spec.get("default") is True]

    def check_defaults(self) -> None:
        """``default`` marks models only: an expert or package has no category."""
        for table in ("experts", "dependencies"):
            for name, spec in self.data.get(table, {}).items():
                if isinstance(spec, dict) and "default" in spec:
                    raise ManifestError(str(self.path), f"{name!r} is not a model: only "
                                        "models have a default", path=f"$.{table}.{name}",
                                        hint="remove `default`, or mark a model in [models]")

    @property
    def features(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self.data.get("features", {}).items()}

    def check_features(self) -> None:
        """Each feature lists features or optional requirements, and no feature
        enables itself through others."""
        features = self.features
        optional = self.optional_names()
        required = set(self.required_names())
        for feature, items in features.items():
            for item in items:
                if item in features or item in optional:
                    continue
                why = ("is not optional (add `optional = true` to it)" if item in required
                       else "is neither a feature nor a requirement")
                raise ManifestError(str(self.path), f"feature {feature!r} enables {item!r}, "
                                    f"which {why}", path=f"$.features.{feature}",
                                    hint="a feature lists other features and optional "
                                         "requirements")

    def enabled_names(self, features: Sequence[str] = (), *, all_features: bool = False,
                      default_features: bool = True) -> tuple[list[str], list[str]]:
        """The features enabled (``features``, plus ``default`` unless
        ``default_features`` is false, plus every feature they enable) and the
        requirement names installed with them: every requirement that is not optional,
        and the optional ones those features enable."""
        table = self.features
        unknown = [f for f in features if f not in table]
        if unknown:
            known = ", ".join(sorted(f for f in table if f != "default")) or "none"
            raise InputError(f"{self.path} has no feature {unknown[0]!r}",
                             hint=f"features: {known}")
        todo = list(table) if all_features else list(features)
        if default_features and not all_features:
            todo += table.get("default", [])
        on: set[str] = set()
        names: set[str] = set()
        optional = self.optional_names()
        while todo:
            item = todo.pop()
            if item in table and item not in on:
                on.add(item)
                todo += table[item]
            elif item in optional:
                names.add(item)
        chosen = [n for n in self.required_names() if n not in optional or n in names]
        return sorted(on - {"default"}), chosen

    def requirements_hash(self) -> str:
        # Mirrors only say where the same bytes may also come from: a lock stays the
        # same whichever host serves them.
        registries = {k: v for k, v in self.data.get("registries", {}).items()
                      if k != "mirrors"}
        payload = {"requirements": self.requirement_records(),
                   "registries": registries,
                   "features": self.data.get("features", {})}
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()

    @property
    def registries(self) -> dict[str, str]:
        return {k: v for k, v in self.data.get("registries", {}).items()
                if isinstance(v, str)}

    @property
    def mirrors(self) -> dict[str, list[str]]:
        """``[registries.mirrors]``: registry host -> mirror hosts, tried in order."""
        table = self.data.get("registries", {}).get("mirrors", {})
        return {str(k): [str(m) for m in v] for k, v in table.items()
                if isinstance(v, list)} if isinstance(table, dict) else {}

    @property
    def trust(self) -> dict[str, Any]:
        return dict(self.data.get("trust", {}))


def trust_here(directory: Path | None = None) -> tuple[Any, str]:
    """The ``[trust]`` table of ``simplex.toml`` in ``directory`` (default: here), and
    where it came from; None for the table when there is no such file or table.

    For commands that work outside a project (pull, install REF, verify, sign): the
    policy of the directory they run in still applies. Only this table is read, so a
    file that is not a whole project yet does not stop them.
    """
    path = (directory or Path.cwd()) / MANIFEST
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError):
        return None, str(path)
    except UnicodeDecodeError:
        raise ManifestError(str(path), "not UTF-8 text") from None
    return parse_toml(text, str(path)).get("trust"), str(path)


TEMPLATE = """\
[package]
name = "{name}"
version = "0.1.0"

# Models, experts and code packages this project needs; versions use Cargo's
# requirement syntax (^1.2, ~1.2, =1.2.3, >=1,<2, *).
[models]

[experts]

[dependencies]

[registries]
{registries}
"""


def init(directory: Path, name: str | None = None, *, registry: str | None = None,
         index: str | None = None) -> Path:
    path = directory / MANIFEST
    if path.exists():
        raise InputError(f"{path} already exists", hint="edit it, or use `sxpm add`")
    from sxpm.store.layout import write_atomic

    name = validate_name(name or _default_name(directory))
    lines = []
    if registry:
        lines.append(f"default = {json.dumps(registry)}")
    if index:
        lines.append(f"index = {json.dumps(index)}")
    directory.mkdir(parents=True, exist_ok=True)
    write_atomic(path, TEMPLATE.format(name=name, registries="\n".join(lines)).encode())
    return path


def _default_name(directory: Path) -> str:
    base = re.sub(r"[^a-z0-9._-]+", "-", directory.resolve().name.lower()).strip("-._")
    return base or "my-project"


def _edit(project: Project) -> Any:
    import tomlkit

    return tomlkit.parse(project.path.read_text(encoding="utf-8"))


def _save(project: Project, doc: Any) -> None:
    import tomlkit

    text = tomlkit.dumps(doc)
    data = parse_toml(text, str(project.path))
    validate(data, "simplex-toml", str(project.path))
    from sxpm.store.layout import write_atomic

    edited = Project(project.path, data)
    edited.requirements()
    edited.check_features()
    edited.check_defaults()
    write_atomic(project.path, text.encode())


def add(project: Project, name: str, kind: str, req: str | None, *,
        variant: str | None = None, base: str | None = None) -> str:
    """Add or change a requirement; returns the requirement text written."""
    import tomlkit

    from sxpm.core.versions import VersionReq

    validate_name(name)
    text = str(VersionReq.parse(req or "*"))
    table_name = TABLE_BY_KIND[kind]
    doc = _edit(project)
    for other, other_kind in KIND_BY_TABLE.items():
        if other != table_name and name in doc.get(other, {}):
            raise InputError(f"{name} is already a {other_kind} in {project.path}",
                             hint=f"`sxpm remove {name}` first")
    if table_name not in doc:
        doc.add(table_name, tomlkit.table())
    table = doc[table_name]
    if variant or base:
        value = tomlkit.inline_table()
        value["version"] = text
        if variant:
            value["variant"] = variant
        if base:
            value["base"] = base
        table[name] = value
    else:
        table[name] = text
    _save(project, doc)
    return text


def remove(project: Project, name: str) -> str:
    """Remove a requirement; returns the kind it had."""
    doc = _edit(project)
    for table_name, kind in KIND_BY_TABLE.items():
        if table_name in doc and name in doc[table_name]:
            del doc[table_name][name]
            _save(project, doc)
            return kind
    raise NotFoundError(f"{name} is not a requirement in {project.path}",
                        hint="`sxpm tree` shows what the project requires")
