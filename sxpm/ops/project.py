"""A project's workflows for library users: lock, update, install, tree and why.

Each takes the :class:`~sxpm.project.manifest.Project` its caller loaded once and
returns typed results; the CLI only chooses flags and prints them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sxpm.core.humanize import with_article
from sxpm.core.progress import SILENT, Reporter
from sxpm.errors import IndexLocationError, InputError, LockStaleError, NotFoundError
from sxpm.home import Home
from sxpm.installed.records import Installed
from sxpm.ops.lock import (
    InstallReport,
    LockResult,
    RegistryProvider,
    check_fresh,
    install_lock,
)
from sxpm.ops.lock import lock as resolve_and_pin
from sxpm.project.lock import Lock, LockedArtifact
from sxpm.project.manifest import Project

if TYPE_CHECKING:
    from os import PathLike

    from sxpm.ops.fetch import Fetcher
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

        ours = tuple(m for m in as_option(project.mirrors) if m not in options.mirrors)
        options = replace(options, mirrors=ours + options.mirrors)  # once, however often
    return options


@dataclass(frozen=True)
class ProviderChoice:
    """Where candidates come from: an index (``index_source`` its location) or, with
    no index configured, the default registry's tag lists (``index_source`` empty)."""

    provider: Provider
    index_source: str = ""


def choose_provider(project: Project, home: Home, fetcher: Fetcher, *,
                    index: str | None = None) -> ProviderChoice:
    """The index when one is configured (``index``, ``SXPM_INDEX``, the project's
    ``[registries] index``, the home's config), else the project's default registry
    (``[registries] default``, else the home's), read through the command's
    ``fetcher``."""
    # Here, not at the top, as the index provider below: a no-op `install --frozen`
    # needs neither.
    from sxpm.index.location import find_index

    try:
        location = find_index(index, project=project)
    except IndexLocationError:
        registry = project.registries.get("default") or home.default_registry
        return ProviderChoice(RegistryProvider(registry, fetcher))
    # The index provider brings the version library: a no-op `install --frozen` must not.
    from sxpm.index.provider import IndexProvider

    return ProviderChoice(IndexProvider.open(location, offline=fetcher.offline,
                                             insecure=fetcher.options.insecure), location)


def command_fetcher(project: Project, home: Home, *, offline: bool = False,
                    options: TransportOptions | None = None,
                    insecure_skip_verify: bool = False) -> Fetcher:
    """The one fetcher of a project command: its trust policy from the home and the
    project's ``[trust]`` (loaded once), its manifests verified once."""
    # Loaded here, not at the top: a no-op `install --frozen` never needs it.
    from sxpm.ops.fetch import Fetcher

    return Fetcher.for_command(home, project, options=_options(options, project),
                               offline=offline,
                               skip_verify=insecure_skip_verify)


def load_project(path: str | PathLike[str] | Project | None = None) -> Project:
    """``path`` as a loaded project: a simplex.toml, a folder to search upwards from, or
    None for the current directory. A :class:`Project` is returned as it is."""
    if isinstance(path, Project):
        return path
    return Project.load(None if path is None else Path(path))


def lock_project(project: str | PathLike[str] | Project | None = None,
                 home: Home | None = None, *, index: str | None = None,
                 update: Sequence[str] | None = None, offline: bool = False,
                 options: TransportOptions | None = None,
                 insecure_skip_verify: bool = False,
                 fetcher: Fetcher | None = None, write: bool = True) -> LockResult:
    """Resolve the project's ``simplex.toml`` and write ``simplex.lock``.

    Keeps every version the lock has unless ``update`` names it (``[]``: move
    everything forward). The lock is written only when it changes (never when
    ``write`` is false). ``fetcher``: the command's, when it has one (see
    :func:`command_fetcher`). ``offline`` with a lock that matches ``simplex.toml``
    returns that lock unchanged, resolving nothing.
    """
    project = load_project(project)
    home = home or Home.from_env()
    if offline and update is None:
        # --offline means "what is on disk": a lock that matches simplex.toml is the
        # answer, without asking an index or a registry to confirm it.
        fresh = _fresh_lock(project)
        if fresh is not None:
            return LockResult(fresh, False)
    fetcher = fetcher or command_fetcher(project, home, offline=offline, options=options,
                                         insecure_skip_verify=insecure_skip_verify)
    choice = choose_provider(project, home, fetcher, index=index)
    from sxpm.core.detect import memory_budget  # as find_index: not for a no-op install

    return resolve_and_pin(project, home, choice.provider, index_source=choice.index_source,
                           update=update, memory_budget=memory_budget(), fetcher=fetcher,
                           write=write)


def _fresh_lock(project: Project) -> Lock | None:
    """The project's lock when it matches ``simplex.toml``; None when there is none or
    it is stale."""
    if not project.lock_path.exists():
        return None
    current = Lock.read(project.lock_path)
    return current if current.requirements_hash == project.requirements_hash() else None


def check_lock(project: str | PathLike[str] | Project | None = None,
               home: Home | None = None, *, index: str | None = None,
               offline: bool = False, options: TransportOptions | None = None) -> Lock:
    """The project's lock when locking again would leave it as it is; else
    :class:`~sxpm.errors.LockStaleError` naming what changed. Writes nothing."""
    project = load_project(project)
    if not project.lock_path.exists():
        raise LockStaleError(f"{project.lock_path} does not exist")
    current = Lock.read(project.lock_path)
    try:
        check_fresh(project, current)
    except InputError as exc:
        raise LockStaleError(exc.message) from None
    result = lock_project(project, home, index=index, offline=offline, options=options,
                          write=False)
    if result.changed:
        what = "; ".join(result.updates) or "pinned digests changed"
        raise LockStaleError(f"{project.lock_path} is out of date: {what}")
    return current


def read_lock(project: Project) -> Lock:
    """The project's ``simplex.lock``; :class:`NotFoundError` when there is none."""
    if not project.lock_path.exists():
        raise NotFoundError(f"{project.lock_path} does not exist", hint="run `sxpm lock` first")
    return Lock.read(project.lock_path)


@dataclass(frozen=True)
class Features:
    """Which ``[features]`` to install: ``names``, plus ``default`` unless
    ``default_features`` is false; ``all_features``: every one."""

    names: tuple[str, ...] = ()
    all_features: bool = False
    default_features: bool = True


DEFAULT_FEATURES = Features()


def select(project: Project, lock_: Lock, features: Features = DEFAULT_FEATURES
           ) -> tuple[Lock, list[str]]:
    """The part of ``lock_`` that ``features`` install (the requirements that are not
    optional, the optional ones the features enable, and what they depend on), and the
    features enabled. The lock itself holds every optional requirement."""
    enabled, roots = project.enabled_names(features.names,
                                           all_features=features.all_features,
                                           default_features=features.default_features)
    # Left out: only what the optional requirements not chosen reach and nothing chosen
    # does. Every other record installs, so each still goes through the chain check
    # (a record the requirements do not name is refused there, not skipped here).
    off = project.optional_names() - set(roots)
    dropped = _reached(lock_, off) - _reached(lock_, set(roots))
    wanted = {a.name for a in lock_.artifacts} - dropped
    if not dropped:
        return lock_, enabled
    chosen = Lock(lock_.requirements_hash,
                  [r for r in lock_.requirements if r["name"] in roots],
                  [a for a in lock_.artifacts if a.name in wanted],
                  lock_.index_source, lock_.index_state, lock_.version)
    return chosen, enabled


@dataclass
class ProjectInstall:
    """What ``install_project`` did: the lock it installed (``locked`` when it wrote
    one first), the install report and the features enabled."""

    lock: Lock
    report: InstallReport
    locked: LockResult | None = None
    features: list[str] | None = None


def install_project(project: str | PathLike[str] | Project | None = None,
                    home: Home | None = None, *, frozen: bool = False, locked: bool = False,
                    index: str | None = None, offline: bool = False,
                    options: TransportOptions | None = None, reporter: Reporter = SILENT,
                    insecure_skip_verify: bool = False,
                    features: Features = DEFAULT_FEATURES,
                    memory_budget: Callable[[], int | None] | None = None) -> ProjectInstall:
    """Install what ``simplex.lock`` pins into the project's ``.simplex/``: the part
    ``features`` choose (trees of the rest are removed). Where the lock lets each
    machine choose a model's variant, ``memory_budget()`` (default: this machine's usable
    memory) decides among the locked variants.

    Locks first unless ``frozen`` (install the lock as it is) or ``locked`` (raise
    :class:`~sxpm.ops.lock.LockMismatchError` if the lock is stale).
    """
    project = load_project(project)
    home = home or Home.from_env()
    options = _options(options, project)
    result: LockResult | None = None
    fetcher: Fetcher | None = None  # a frozen no-op install needs none
    if frozen or locked:
        current = read_lock(project)
        if locked:
            check_fresh(project, current)
    else:
        fetcher = command_fetcher(project, home, offline=offline, options=options,
                                  insecure_skip_verify=insecure_skip_verify)
        result = lock_project(project, home, index=index, offline=offline, fetcher=fetcher)
        current = result.lock
    chosen, enabled = select(project, current, features)
    report = install_lock(home, chosen, project.install_root, offline=offline,
                          options=options, reporter=reporter,
                          insecure_skip_verify=insecure_skip_verify, project=project,
                          fetcher=fetcher, memory_budget=memory_budget)
    return ProjectInstall(current, report, result, enabled)


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
    features: list[str] = field(default_factory=list)

    @property
    def roots(self) -> list[str]:
        return [r["name"] for r in self.lock.requirements]


def tree(project: Project, lock_: Lock | None = None,
         features: Features = DEFAULT_FEATURES) -> LockTree:
    """The locked dependency tree, from the requirements of ``simplex.toml`` down: the
    part ``features`` install (by default the default features).

    Each artifact's dependencies are listed where it first appears; later appearances
    are marked ``repeated``. Rows are at most one per dependency edge.
    """
    current, enabled = select(project, lock_ if lock_ is not None else read_lock(project),
                              features)
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
    return LockTree(str(package), current, rows, enabled)


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


# --- add and remove -----------------------------------------------------------------


@dataclass(frozen=True)
class Lookup:
    """What the index (or the registry) says about a name: its kind and newest version
    not yanked (None: every version is yanked)."""

    name: str
    kind: str
    newest: str | None


def look_up(project: Project, home: Home, name: str, kind: str | None = None, *,
            index: str | None = None, fetcher: Fetcher) -> Lookup:
    """The kind and newest version of ``name`` where the project resolves from.

    ``kind`` only chooses between kinds the name is published as; a kind it is not
    published as is an :class:`InputError` that names the right flag.
    """
    # The resolver's unknown-name error: the same message and suggestions as `sxpm lock`.
    from difflib import get_close_matches

    from sxpm.resolver.resolve import UnknownNameError

    provider = choose_provider(project, home, fetcher, index=index).provider
    found = list(provider.candidates(name))
    if not found:
        close = get_close_matches(name, list(provider.known_names()), n=3)
        raise UnknownNameError(name, close, f"sxpm add {name}")
    kinds = sorted({c.kind for c in found})
    if kind is None and len(kinds) > 1:
        raise InputError(f"{name} is published as {' and '.join(kinds)}",
                         hint="choose one with " + " or ".join(f"--{k}" for k in kinds))
    if kind is not None and kind not in kinds:
        raise InputError(f"{name} is {with_article(kinds[0])}, not {with_article(kind)}",
                         hint=f"use --{kinds[0]} (or leave the flag out)")
    chosen = kind or kinds[0]
    live = [c for c in found if c.kind == chosen and not c.yanked]
    newest = max(live, key=lambda c: c.version).version if live else None
    return Lookup(name, chosen, None if newest is None else str(newest))


@dataclass
class Edit:
    """What ``add_requirement`` or ``remove_requirement`` did: the requirement text
    written (empty for a removal), and the lock and install that followed, if any."""

    name: str
    kind: str
    text: str = ""
    locked: LockResult | None = None
    installed: ProjectInstall | None = None


def _sync(project: Project, home: Home, edit: Edit, before: bytes, *, lock: bool,
          sync: bool, index: str | None, offline: bool, options: TransportOptions | None,
          reporter: Reporter) -> Edit:
    """Lock (and install) the edited project; when the lock cannot be made, put
    ``simplex.toml`` back as it was (``before``), as uv does: an edit that cannot
    resolve is not left behind for the next command to trip on."""
    if not lock:
        return edit
    edited = Project.load(project.path)
    try:
        edit.locked = lock_project(edited, home, index=index, offline=offline,
                                   options=options)
    except BaseException:
        from sxpm.store.layout import write_atomic

        write_atomic(project.path, before)
        raise
    if sync:
        edit.installed = install_project(edited, home, frozen=True, offline=offline,
                                         options=options, reporter=reporter)
    return edit


def add_requirement(project: str | PathLike[str] | Project | None, name: str,
                    req: str | None = None, *, kind: str | None = None,
                    variant: str | None = None, base: str | None = None,
                    home: Home | None = None, index: str | None = None, lock: bool = True,
                    sync: bool = True, offline: bool = False,
                    options: TransportOptions | None = None,
                    reporter: Reporter = SILENT) -> Edit:
    """Add (or change) a requirement, then lock and install, as ``uv add`` does.

    The name is looked up where the project resolves from: its kind comes from there
    (``kind`` only to choose or to check), and with no ``req`` the requirement is a
    caret range from the newest version not yanked (``^1.2.0``). ``lock=False`` only
    edits ``simplex.toml`` (and looks nothing up when ``kind`` and ``req`` are both
    given); ``sync=False`` stops after the lock.
    """
    from sxpm.project.manifest import add as edit_add

    project = load_project(project)
    home = home or Home.from_env()
    if lock or kind is None or req is None:
        fetcher = command_fetcher(project, home, offline=offline, options=options)
        found = look_up(project, home, name, kind, index=index, fetcher=fetcher)
        kind = found.kind
        if req is None:
            if found.newest is None:
                raise InputError(f"every version of {name} is yanked",
                                 hint="ask its publisher, or give a requirement to pin "
                                      f"one anyway: `sxpm add {name}@=VERSION`")
            req = f"^{found.newest}"
    if base and kind != "expert":
        raise InputError(f"--base applies to experts only; {name} is {with_article(kind)}")
    before = project.path.read_bytes()
    text = edit_add(project, name, kind, req, variant=variant, base=base)
    return _sync(project, home, Edit(name, kind, text), before, lock=lock, sync=sync,
                 index=index, offline=offline, options=options, reporter=reporter)


def remove_requirement(project: str | PathLike[str] | Project | None, name: str, *,
                       home: Home | None = None, index: str | None = None,
                       lock: bool = True, sync: bool = True, offline: bool = False,
                       options: TransportOptions | None = None,
                       reporter: Reporter = SILENT) -> Edit:
    """Remove a requirement, then lock and install (which removes the trees no longer
    locked); ``lock=False`` only edits, ``sync=False`` stops after the lock."""
    from sxpm.project.manifest import remove as edit_remove

    project = load_project(project)
    home = home or Home.from_env()
    before = project.path.read_bytes()
    kind = edit_remove(project, name)
    return _sync(project, home, Edit(name, kind), before, lock=lock, sync=sync, index=index,
                 offline=offline, options=options, reporter=reporter)


# --- installs and the project they belong to ----------------------------------------


@dataclass(frozen=True)
class PlacedInstall:
    """An installed tree and the project it belongs to (None: the home's)."""

    item: Installed
    project: str | None


def installed_here(home: Home, kind: str, start: Path | None = None
                   ) -> list[PlacedInstall]:
    """The home's installs of ``kind``, then those of the project found from ``start``
    (default: the current directory) upwards."""
    from sxpm.installed.records import list_installed

    out = [PlacedInstall(i, None) for i in list_installed(home.root, kind)]
    found = Project.nearest(start)
    if found is not None:
        name = str(found.data.get("package", {}).get("name", found.root.name))
        out += [PlacedInstall(i, name) for i in list_installed(found.install_root, kind)]
    return out
