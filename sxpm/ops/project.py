"""A project's workflows for library users: lock, update, install, tree and why.

Each takes the :class:`~sxpm.project.manifest.Project` its caller loaded once and
returns typed results; the CLI only chooses flags and prints them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sxpm.core.detect import memory_budget
from sxpm.core.progress import SILENT, Reporter
from sxpm.errors import IndexLocationError, NotFoundError
from sxpm.home import Home
from sxpm.index.location import find_index
from sxpm.ops.lock import (
    InstallReport,
    LockResult,
    ManifestSource,
    RegistryProvider,
    check_fresh,
    install_lock,
)
from sxpm.ops.lock import lock as resolve_and_pin
from sxpm.project.lock import Lock, LockedArtifact
from sxpm.project.manifest import Project

if TYPE_CHECKING:
    from os import PathLike

    from sxpm.resolver import Provider
    from sxpm.transport import TransportOptions


def _options(options: TransportOptions | None, project: Project | None = None
             ) -> TransportOptions:
    # The transports load only when a workflow may touch a registry: a no-op
    # `install --frozen` must start without them.
    from sxpm.transport import TransportOptions

    options = options or TransportOptions()
    if project is not None and project.mirrors:  # the project's mirrors come first
        from dataclasses import replace

        from sxpm.transport.mirrors import as_option

        options = replace(options, mirrors=as_option(project.mirrors) + options.mirrors)
    return options


@dataclass(frozen=True)
class ProviderChoice:
    """Where candidates come from: an index (``index_source`` its location) or, with
    no index configured, the default registry's tag lists (``index_source`` empty)."""

    provider: Provider
    index_source: str = ""


def choose_provider(project: Project, home: Home, *, index: str | None = None,
                    offline: bool = False, options: TransportOptions | None = None
                    ) -> ProviderChoice:
    """The index when one is configured (``index``, ``SXPM_INDEX``, the project's
    ``[registries] index``, the home's config), else the project's default registry
    (``[registries] default``, else the home's)."""
    options = _options(options)
    try:
        location = find_index(index, project=project)
    except IndexLocationError:
        registry = project.registries.get("default") or home.default_registry
        return ProviderChoice(RegistryProvider(registry, ManifestSource(home, options,
                                                                        offline)))
    # The index provider brings the version library: a no-op `install --frozen` must not.
    from sxpm.index.provider import IndexProvider

    return ProviderChoice(IndexProvider.open(location, offline=offline,
                                             insecure=options.insecure), location)


def load_project(path: str | PathLike[str] | Project | None = None) -> Project:
    """``path`` as a loaded project: a simplex.toml, a folder to search upwards from, or
    None for the current directory. A :class:`Project` is returned as it is."""
    if isinstance(path, Project):
        return path
    from pathlib import Path

    return Project.load(None if path is None else Path(path))


def lock_project(project: str | PathLike[str] | Project | None = None,
                 home: Home | None = None, *, index: str | None = None,
                 update: Sequence[str] | None = None, offline: bool = False,
                 options: TransportOptions | None = None,
                 insecure_skip_verify: bool = False) -> LockResult:
    """Resolve the project's ``simplex.toml`` and write ``simplex.lock``.

    Keeps every version the lock has unless ``update`` names it (``[]``: move
    everything forward). The lock is written only when it changes.
    """
    project = load_project(project)
    home = home or Home.from_env()
    options = _options(options, project)
    choice = choose_provider(project, home, index=index, offline=offline, options=options)
    return resolve_and_pin(project, home, choice.provider, index_source=choice.index_source,
                           update=update, memory_budget=memory_budget(), options=options,
                           offline=offline, insecure_skip_verify=insecure_skip_verify)


def read_lock(project: Project) -> Lock:
    """The project's ``simplex.lock``; :class:`NotFoundError` when there is none."""
    if not project.lock_path.exists():
        raise NotFoundError(f"{project.lock_path} does not exist", hint="run `sxpm lock` first")
    return Lock.read(project.lock_path)


@dataclass
class ProjectInstall:
    """What ``install_project`` did: the lock it installed (``locked`` when it wrote
    one first) and the install report."""

    lock: Lock
    report: InstallReport
    locked: LockResult | None = None


def install_project(project: str | PathLike[str] | Project | None = None,
                    home: Home | None = None, *, frozen: bool = False, locked: bool = False,
                    index: str | None = None, offline: bool = False,
                    options: TransportOptions | None = None, reporter: Reporter = SILENT,
                    insecure_skip_verify: bool = False) -> ProjectInstall:
    """Install what ``simplex.lock`` pins into the project's ``.simplex/``.

    Locks first unless ``frozen`` (install the lock as it is) or ``locked`` (raise
    :class:`~sxpm.ops.lock.LockMismatchError` if the lock is stale).
    """
    project = load_project(project)
    home = home or Home.from_env()
    options = _options(options, project)
    result: LockResult | None = None
    if frozen or locked:
        current = read_lock(project)
        if locked:
            check_fresh(project, current)
    else:
        result = lock_project(project, home, index=index, offline=offline, options=options,
                              insecure_skip_verify=insecure_skip_verify)
        current = result.lock
    report = install_lock(home, current, project.install_root, offline=offline,
                          options=options, reporter=reporter,
                          insecure_skip_verify=insecure_skip_verify, cwd=project.root)
    return ProjectInstall(current, report, result)


# --- tree and why -----------------------------------------------------------------


# A hostile lock can make the tree deep or its paths many: each subtree is shown once,
# no deeper than this, and `why` shows at most WHY_CHAINS chains (and counts the rest).
TREE_DEPTH = 64
WHY_CHAINS = 20


@dataclass(frozen=True)
class TreeRow:
    """One line of the dependency tree, in the order printed.

    ``last``: the row is its parent's last child (the CLI draws the branches from it
    and the rows above). ``repeated``: its subtree was shown before and is left out
    here (cargo's ``(*)``). ``cut``: it is ``TREE_DEPTH`` deep and its dependencies
    are not shown.
    """

    name: str
    artifact: LockedArtifact | None  # None: required but not in the lock
    depth: int
    last: bool
    repeated: bool = False
    cut: bool = False


@dataclass
class LockTree:
    package: str
    lock: Lock
    rows: list[TreeRow]

    @property
    def roots(self) -> list[str]:
        return [r["name"] for r in self.lock.requirements]


def tree(project: Project, lock_: Lock | None = None) -> LockTree:
    """The locked dependency tree, from the requirements of ``simplex.toml`` down.

    Each artifact's dependencies are listed where it first appears; later appearances
    are marked ``repeated``. Rows are at most one per dependency edge.
    """
    current = lock_ if lock_ is not None else read_lock(project)
    arts = current.by_name()
    roots = [r["name"] for r in current.requirements]
    rows: list[TreeRow] = []
    shown: set[str] = set()
    # Depth first, without recursion (a chain may be thousands deep): (name, depth, last).
    todo = [(root, 0, i == len(roots) - 1) for i, root in enumerate(roots)][::-1]
    while todo:
        name, depth, last = todo.pop()
        art = arts.get(name)
        deps = list(art.dependencies) if art is not None else []
        repeated = bool(deps) and name in shown
        cut = bool(deps) and not repeated and depth + 1 >= TREE_DEPTH
        rows.append(TreeRow(name, art, depth, last, repeated, cut))
        if not deps or repeated or cut:
            continue
        shown.add(name)
        todo += [(dep, depth + 1, i == len(deps) - 1) for i, dep in enumerate(deps)][::-1]
    package = project.data.get("package", {}).get("name", project.root.name)
    return LockTree(str(package), current, rows)


@dataclass
class Why:
    """Chains from ``simplex.toml`` to ``name``, each step labelled with its version
    (``simplex.toml`` first), at most ``limit`` of them; ``more`` counts the others
    (None: uncounted, the graph has a cycle)."""

    name: str
    chains: list[list[str]]
    more: int | None = 0


def _ancestors(name: str, parents: dict[str, list[str]]) -> set[str]:
    seen = {name}
    todo = [name]
    while todo:
        for parent in parents.get(todo.pop(), []):
            if parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return seen


def _reached(lock_: Lock, roots: set[str]) -> set[str]:
    """Names the requirements reach through dependencies."""
    children = {a.name: a.dependencies for a in lock_.artifacts}
    todo = [r for r in roots if r in children]
    seen = set(todo)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return seen


def _count_chains(name: str, parents: dict[str, list[str]], roots: set[str],
                  useful: set[str]) -> int | None:
    """Chains from a root down to ``name``; None when a cycle makes that uncountable
    here. One pass over the ancestors (a diamond's 2^25 chains cost 52 steps)."""
    count: dict[str, int] = {}
    on_path: set[str] = set()
    todo: list[tuple[str, bool]] = [(name, False)]
    while todo:
        node, done = todo.pop()
        if done:
            on_path.discard(node)
            count[node] = int(node in roots) + sum(count[p] for p in parents.get(node, [])
                                                   if p in useful)
            continue
        if node in count:
            continue
        if node in on_path:
            return None
        on_path.add(node)
        todo.append((node, True))
        todo += [(p, False) for p in parents.get(node, []) if p in useful and p not in count]
    return count[name]


def why(project: Project, name: str, lock_: Lock | None = None, *,
        limit: int = WHY_CHAINS) -> Why:
    """Why ``name`` is locked: the first ``limit`` chains from ``simplex.toml`` to it
    (none: it is locked but nothing requires it); :class:`NotFoundError` when it is
    not in the lock."""
    current = lock_ if lock_ is not None else read_lock(project)
    arts = current.by_name()
    if name not in arts:
        raise NotFoundError(f"{name} is not in the lock", hint="`sxpm tree` shows the lock")
    parents: dict[str, list[str]] = {}
    for art in current.artifacts:
        for dep in art.dependencies:
            parents.setdefault(dep, []).append(art.name)
    roots = {r["name"] for r in current.requirements}
    # Only ancestors that a root reaches lead to simplex.toml: the walk skips the rest.
    useful = _ancestors(name, parents) & _reached(current, roots)
    chains: list[list[str]] = []
    finished = True
    if name in useful:
        # Depth first up the parents, without recursion; each node once per chain.
        path = [name]
        on_path = {name}
        if name in roots:
            chains.append(["simplex.toml", name])
        # Parents left to try at each step, in reverse: the next is popped off the end.
        stack = [[p for p in reversed(parents.get(name, [])) if p in useful]]
        while stack:
            if len(chains) >= limit:
                finished = False
                break
            if not stack[-1]:
                stack.pop()
                on_path.discard(path.pop())
                continue
            parent = stack[-1].pop()
            if parent in on_path:
                continue
            path.append(parent)
            on_path.add(parent)
            if parent in roots:
                chains.append(["simplex.toml", *reversed(path)])
            stack.append([p for p in reversed(parents.get(parent, [])) if p in useful])
    labelled = [[c if c == "simplex.toml" else f"{c} {arts[c].version}" for c in chain]
                for chain in chains]
    if finished:
        return Why(name, labelled, 0)
    total = _count_chains(name, parents, roots, useful)
    return Why(name, labelled, None if total is None else total - len(labelled))
