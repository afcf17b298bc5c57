"""The shape of the package: every import of ``sxpm`` (module-level and inside functions
alike) follows the layer order of docs/architecture.md, and no import cycle exists."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "sxpm"

# Lowest first. A module may import its own package and any package before it, never
# one after it. The order is docs/architecture.md's, package by package.
LAYERS = [
    "sxpm._version",
    "sxpm.errors",
    "sxpm.core",
    "sxpm.resolver",
    "sxpm.store",
    "sxpm.home",
    "sxpm.transport",
    "sxpm.trust",
    "sxpm.artifacts",
    "sxpm.installed",
    "sxpm.project",
    "sxpm.index",
    "sxpm.ops",
    "sxpm.runner",
    "sxpm.cli",
    "sxpm",  # the public face (sxpm/__init__.py) and sxpm/__main__.py
]
# At the top of sxpm/: only these modules besides packages.
TOP_MODULES = {"__init__", "__main__", "_version", "errors", "home"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _target(name: str) -> str | None:
    """The sxpm module an import names (``sxpm.core.oci.Descriptor`` -> ``sxpm.core.oci``)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str) -> set[str]:
    """Every sxpm module ``module`` imports, wherever the import statement stands."""
    tree = ast.parse(MODULES[module].read_text())
    is_pkg = MODULES[module].name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_pkg else anchor[:-1]
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            target = _target(name)
            if target is not None and target != module:
                found.add(target)
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def layer(module: str) -> int:
    best = -1
    for i, prefix in enumerate(LAYERS):
        if (module == prefix or module.startswith(prefix + ".")) and \
                (best < 0 or len(prefix) > len(LAYERS[best])):
            best = i
    assert best >= 0, module
    return best


def test_top_of_the_package_holds_packages_not_loose_modules() -> None:
    loose = sorted(p.stem for p in ROOT.glob("*.py") if p.stem not in TOP_MODULES)
    assert not loose, f"modules loose at the top of sxpm/: {loose}"


def test_every_import_follows_the_layer_order() -> None:
    wrong = sorted(f"{m} -> {t}" for m, targets in GRAPH.items() for t in targets
                   if layer(t) > layer(m))
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def test_lower_layers_never_import_workflows_runner_or_cli() -> None:
    top = {"sxpm.ops", "sxpm.runner", "sxpm.cli"}
    wrong = sorted(f"{m} -> {t}" for m, targets in GRAPH.items() for t in targets
                   if layer(m) < layer("sxpm.ops") and layer(t) >= layer("sxpm.ops"))
    assert not wrong and top, wrong


def _cycle() -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(GRAPH[m]):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state:
                found = visit(t)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(GRAPH):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_no_import_cycle() -> None:
    cycle = _cycle()
    assert cycle is None, " -> ".join(cycle or [])


@pytest.mark.parametrize("bad", [
    ("sxpm.core.oci", "sxpm.ops.transfer"),
    ("sxpm.store.layout", "sxpm.cli.main"),
])
def test_the_checks_catch_a_wrong_import(bad: tuple[str, str]) -> None:
    """The rules above are live: an upward import and a cycle are both seen."""
    module, target = bad
    assert layer(target) > layer(module)
    saved = GRAPH[target]
    GRAPH[target] = saved | {module}
    GRAPH[module] = GRAPH[module] | {target}
    try:
        assert _cycle() is not None
    finally:
        GRAPH[target] = saved
        GRAPH[module] = GRAPH[module] - {target}
