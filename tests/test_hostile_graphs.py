"""Hostile dependency graphs: an index or a lock built to exhaust time or memory.

A long chain (every name depends on the next) must resolve in linear memory and in
seconds; a diamond (every layer of two depends on both of the next) must not make
`sxpm tree` or `sxpm why` walk every one of its 2^25 paths.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from sxpm.core.reference import Reference
from sxpm.core.versions import VersionReq
from sxpm.ops.project import tree, why
from sxpm.project.lock import Lock, LockedArtifact
from sxpm.project.manifest import Project
from sxpm.resolver import Requirement, resolve
from sxpm.resolver.lines import LinesProvider

DIGEST = "sha256:" + "0" * 64
LAYERS = 26  # 52 artifacts: 2^25 chains from simplex.toml to the last layer


def chain_index(n: int) -> list[dict]:
    """Index lines of n names, each depending on the next."""
    return [{"name": f"c{i}", "vers": "1.0.0", "kind": "package",
             "digest": DIGEST, "ref": f"oci:/r/c{i}",
             "deps": [{"name": f"c{i + 1}", "req": "^1"}] if i + 1 < n else []}
            for i in range(n)]


def _resolve_chain(n: int) -> int:
    result = resolve([Requirement("c0", "package", VersionReq.parse("^1"))],
                     LinesProvider(chain_index(n)))
    return len(result.artifacts)


@pytest.mark.timeout(60)
def test_a_20000_name_chain_resolves_in_seconds() -> None:
    assert _resolve_chain(20_000) == 20_000


@pytest.mark.timeout(120)
def test_resolver_memory_grows_linearly_with_a_chain() -> None:
    peaks = {}
    for n in (500, 2_000):
        lines = chain_index(n)  # built before measuring: only the resolver counts
        tracemalloc.start()
        try:
            resolve([Requirement("c0", "package", VersionReq.parse("^1"))],
                    LinesProvider(lines))
            peaks[n] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    # Four times the names: about four times the memory (sixteen if it were quadratic).
    assert peaks[2_000] < 7 * peaks[500], peaks


def _artifact(name: str, deps: list[str]) -> LockedArtifact:
    return LockedArtifact(name=name, kind="package", version="1.0.0",
                          source=Reference.parse_locator(f"oci:/r/{name}"), digest=DIGEST,
                          manifest=DIGEST, dependencies=tuple(sorted(deps)))


def _project(tmp_path: Path, roots: list[str], arts: list[LockedArtifact]) -> Project:
    reqs = [{"name": r, "kind": "package", "req": "^1"} for r in roots]
    toml = tmp_path / "simplex.toml"
    toml.write_text('[package]\nname = "hostile"\nversion = "0.1.0"\n\n[dependencies]\n'
                    + "".join(f'{r} = "^1"\n' for r in roots))
    Lock(DIGEST, reqs, sorted(arts, key=lambda a: a.name)).write(tmp_path / "simplex.lock")
    return Project.load(toml)


def diamond(tmp_path: Path) -> Project:
    """Layers a<i>, b<i>; each depends on both of the next layer; a0 and b0 are roots."""
    arts = []
    for i in range(LAYERS):
        nxt = [f"a{i + 1}", f"b{i + 1}"] if i + 1 < LAYERS else []
        arts += [_artifact(f"a{i}", nxt), _artifact(f"b{i}", nxt)]
    return _project(tmp_path, ["a0", "b0"], arts)


@pytest.mark.timeout(30)
def test_tree_shows_each_shared_subtree_once(tmp_path: Path) -> None:
    found = tree(diamond(tmp_path))
    expanded = [r.name for r in found.rows
                if r.artifact and r.artifact.dependencies and not r.repeated]
    assert len(expanded) == len(set(expanded)) == 2 * (LAYERS - 1)  # each expanded once
    assert len(found.rows) <= 2 * 2 * LAYERS + 2  # one row per edge, plus the roots
    assert any(r.repeated for r in found.rows)


@pytest.mark.timeout(60)
def test_tree_and_why_cli_on_a_diamond(cli, tmp_path: Path) -> None:  # noqa: ANN001
    project = diamond(tmp_path)
    manifest = str(project.path)
    text = cli("tree", "--manifest-path", manifest, timeout=30).stdout
    assert "a1 1.0.0 (package) (*)" in text or "b1 1.0.0 (package) (*)" in text
    assert len(text.splitlines()) <= 2 * 2 * LAYERS + 3
    r = cli("why", f"a{LAYERS - 1}", "--manifest-path", manifest, timeout=30)
    shown = [line for line in r.stdout.splitlines() if line.startswith("simplex.toml")]
    assert 0 < len(shown) <= 20
    more = 2 ** (LAYERS - 1) - len(shown)
    assert f"... and {more} more chains" in r.stdout
    data = cli("why", f"a{LAYERS - 1}", "--manifest-path", manifest, "--json",
               timeout=30).json
    assert data["more"] == more and len(data["chains"]) == len(shown)


@pytest.mark.timeout(60)
def test_tree_and_why_on_a_20000_name_chain(tmp_path: Path) -> None:
    n = 20_000
    arts = [_artifact(f"c{i}", [f"c{i + 1}"] if i + 1 < n else []) for i in range(n)]
    project = _project(tmp_path, ["c0"], arts)
    found = why(project, f"c{n - 1}")
    assert len(found.chains) == 1 and len(found.chains[0]) == n + 1 and found.more == 0
    rows = tree(project).rows
    assert rows[0].name == "c0" and 0 < len(rows) <= n


@pytest.mark.timeout(30)
def test_why_in_a_cycle_ends(tmp_path: Path) -> None:
    arts = [_artifact("x", ["y"]), _artifact("y", ["x", "z"]), _artifact("z", [])]
    project = _project(tmp_path, ["x"], arts)
    found = why(project, "z")
    assert found.chains == [["simplex.toml", "x 1.0.0", "y 1.0.0", "z 1.0.0"]]
    rows = tree(project).rows
    assert [r.name for r in rows] == ["x", "y", "x", "z"] and rows[2].repeated
