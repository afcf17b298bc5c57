"""Tooling of an index checkout: regenerate ``search.json``, verify every file.

``build`` trusts the lines (CI runs ``verify`` on every pull request before a merge
triggers ``build``), so it parses JSON only and stays fast on large indexes.
``verify`` checks everything and reports every problem with its file and line.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sxpm.core.names import normalize_name
from sxpm.core.versions import is_prerelease, version_key
from sxpm.errors import IndexFormatError, InvalidNameError, SxpmError
from sxpm.index.format import (
    CATALOG_FIELDS,
    CATALOG_FILE,
    CATALOG_FORMAT,
    CONFIG_FILE,
    PACKAGES_DIR,
    IndexConfig,
    IndexEntry,
    index_path,
    load_line,
)


def index_files(root: Path) -> Iterator[Path]:
    """Every file under ``packages/``, in path order."""
    base = root / PACKAGES_DIR
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames.sort()
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


@dataclass
class BuildResult:
    path: Path
    names: int
    versions: int
    seconds: float


def catalog_row(lines: list[dict[str, Any]]) -> list[Any] | None:
    """The ``search.json`` row of one name's lines, or None when every version is yanked."""
    live = [d for d in lines if not d.get("yanked")]
    if not live:
        return None
    releases = [d for d in live if not is_prerelease(d["vers"])]
    best = max(releases or live, key=lambda d: version_key(d["vers"]))
    return [best["name"], best["kind"], best["vers"], best["size"],
            best.get("description", ""), best.get("tags", []), len(lines),
            best.get("category", ""), best.get("capabilities", [])]


def build_catalog(root: Path) -> dict[str, Any]:
    rows: list[list[Any]] = []
    versions = 0
    for path in index_files(root):
        lines = []
        with open(path, encoding="utf-8") as fh:
            for number, raw in enumerate(fh, 1):
                if raw.strip():
                    obj = load_line(raw, source=str(path), line=number)
                    if not isinstance(obj, dict):
                        raise IndexFormatError(str(path), number, "a line must be a JSON object")
                    lines.append(obj)
        versions += len(lines)
        try:
            row = catalog_row(lines)
        except (KeyError, TypeError) as exc:
            raise IndexFormatError(str(path), None, f"missing or malformed field {exc}"
                                   ) from None
        if row is not None:
            rows.append(row)
    rows.sort(key=lambda r: normalize_name(r[0]))
    return {"format": CATALOG_FORMAT, "fields": list(CATALOG_FIELDS), "names": len(rows),
            "versions": versions, "packages": rows}


def build(root: Path) -> BuildResult:
    """Regenerate ``search.json`` at the root of the index checkout ``root``."""
    start = time.perf_counter()
    catalog = build_catalog(root)
    out = root / CATALOG_FILE
    tmp = out.with_name(f".{CATALOG_FILE}.tmp")
    # One row per line: compact, yet a pull request diff stays readable.
    body = ",\n".join(json.dumps(r, separators=(",", ":"), ensure_ascii=False)
                      for r in catalog.pop("packages"))
    head = json.dumps(catalog, separators=(",", ":"), ensure_ascii=False)[:-1]
    tmp.write_text(f'{head},"packages":[\n{body}\n]}}\n', encoding="utf-8")
    os.replace(tmp, out)
    return BuildResult(out, catalog["names"], catalog["versions"],
                       time.perf_counter() - start)


# --- verify ----------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.message}"


@dataclass
class VerifyReport:
    files: int = 0
    lines: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _load_config(root: Path, report: VerifyReport) -> IndexConfig | None:
    path = root / CONFIG_FILE
    try:
        return IndexConfig.from_dict(json.loads(path.read_text(encoding="utf-8")), str(path))
    except FileNotFoundError:
        report.problems.append(Problem(str(path), None, "missing: every index needs one"))
    except ValueError as exc:
        report.problems.append(Problem(str(path), None, f"not valid JSON ({exc})"))
    except IndexFormatError as exc:
        report.problems.append(Problem(str(path), None, exc.reason))
    return None


def verify(root: Path, *, check_registry: bool = False, insecure: bool = False
           ) -> VerifyReport:
    """Check every file of the index checkout ``root``; never stops at the first problem.

    Checks: ``config.json``; every line valid JSON and valid against the schema; refs
    in the allowed registries; each file at the path of its name; one spelling of a
    name per file (collisions); versions ascending with no duplicates. With
    ``check_registry`` every digest is looked up in its registry.
    """
    report = VerifyReport()
    config = _load_config(root, report)
    checked: list[tuple[str, int, IndexEntry]] = []
    for path in index_files(root):
        report.files += 1
        rel = path.relative_to(root).as_posix()
        spelling: tuple[str, int] | None = None
        seen: dict[tuple[Any, ...], int] = {}
        previous: tuple[Any, ...] | None = None
        with open(path, encoding="utf-8", errors="replace") as fh:
            raw_lines = fh.read().splitlines()
        for number, raw in enumerate(raw_lines, 1):
            if not raw.strip():
                report.problems.append(Problem(rel, number, "empty line"))
                continue
            report.lines += 1
            try:
                entry = IndexEntry.from_dict(load_line(raw, source=rel, line=number),
                                             source=rel, line=number)
            except IndexFormatError as exc:
                report.problems.append(Problem(rel, number, exc.reason))
                continue
            try:
                expected = index_path(entry.name)
            except InvalidNameError as exc:
                report.problems.append(Problem(rel, number, exc.message))
                continue
            if expected != rel:
                report.problems.append(Problem(rel, number, f"{entry.name!r} belongs in "
                                               f"{expected}"))
            if spelling is None:
                spelling = (entry.name, number)
            elif entry.name != spelling[0]:
                report.problems.append(Problem(
                    rel, number, f"name {entry.name!r} collides with {spelling[0]!r} "
                    f"(line {spelling[1]}): names equal up to case and '_'/'-' are one name"))
            if config is not None:
                problem = config.ref_problem(entry.ref)
                if problem:
                    report.problems.append(Problem(rel, number, problem))
            key = version_key(entry.vers)
            if key in seen:
                report.problems.append(Problem(
                    rel, number, f"version {entry.vers} duplicates line {seen[key]}"))
            elif previous is not None and key < previous:
                report.problems.append(Problem(
                    rel, number, f"version {entry.vers} is out of order: lines are sorted "
                    "by ascending version"))
            seen.setdefault(key, number)
            previous = max(previous, key) if previous is not None else key
            checked.append((rel, number, entry))
    if check_registry:
        _check_registry(checked, root, report, insecure)
    return report


def _check_registry(entries: list[tuple[str, int, IndexEntry]], root: Path,
                    report: VerifyReport,
                    insecure: bool) -> None:
    from sxpm.transport import TransportOptions, open_repository

    options = TransportOptions(insecure=insecure)
    for rel, number, entry in entries:
        try:
            repo = open_repository(entry.ref, options)
            desc, _ = repo.get_manifest(str(entry.digest))
            if desc.digest != entry.digest:
                raise SxpmError(f"the registry returned {desc.digest}")
            for variant in entry.variants:
                repo.get_manifest(str(variant.digest))
        except SxpmError as exc:
            report.problems.append(Problem(
                rel, number, f"{entry.name} {entry.vers}: {entry.reference} is not in its "
                f"registry ({exc.message})"))
