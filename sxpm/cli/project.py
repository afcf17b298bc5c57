"""init, add, remove, lock, install, update, tree, why: a project and its lock."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from sxpm.cli._common import (
    emit_json,
    home,
    json_option,
    reporter,
    skip_verify_option,
    transfer_options,
    transport,
)
from sxpm.errors import InputError, NotFoundError

if TYPE_CHECKING:
    from sxpm.home import Home
    from sxpm.ops.fetch import Fetcher
    from sxpm.ops.lock import LockResult
    from sxpm.project.lock import Lock
    from sxpm.project.manifest import Project
    from sxpm.resolver import Provider

F = TypeVar("F", bound=Callable[..., Any])


def _project_option(f: F) -> F:
    return click.option("--manifest-path", "manifest", type=click.Path(path_type=Path),
                        help="simplex.toml to use (default: found from the current "
                             "directory upwards).")(f)


def _index_option(f: F) -> F:
    return click.option("--index", "index", help="Registry index (URL or path); default: "
                        "SXPM_INDEX, [registries] index, the home's config.")(f)


def _load(manifest: Path | None) -> Project:
    from sxpm.project.manifest import Project

    return Project.load(manifest)


def _provider(project: Project, h: Home, index: str | None, fetcher: Fetcher
              ) -> tuple[Provider, str, str]:
    """The index when one is configured, else the default registry's tag lists."""
    from sxpm.errors import IndexLocationError
    from sxpm.index.location import find_index
    from sxpm.index.provider import IndexProvider
    from sxpm.ops.lock import RegistryProvider

    try:
        location = find_index(index, cwd=project.root,
                              project=(project.path, project.data.get("registries")))
    except IndexLocationError:
        registry = project.registries.get("default") or h.default_registry
        return RegistryProvider(registry, fetcher), "", ""
    return IndexProvider.open(location, offline=fetcher.offline,
                              insecure=fetcher.options.insecure), location, ""


def _memory_budget() -> int | None:
    """Bytes a model may use here: accelerator memory when one is found, else RAM."""
    pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    return int(pages * size * 0.75)


@click.command()
@click.argument("directory", type=click.Path(path_type=Path), default=".")
@click.option("--name", help="Package name (default: the directory's name).")
@click.option("--registry", help="Default registry, e.g. oci:./registry or host/namespace.")
@click.option("--index", help="Registry index URL or path.")
def init(directory: Path, name: str | None, registry: str | None, index: str | None) -> None:
    """Create simplex.toml in DIRECTORY.

    \b
    Example:
      sxpm init --registry localhost:5000/simplex
    """
    from sxpm.project.manifest import init as do_init

    path = do_init(directory, name, registry=registry, index=index)
    click.echo(f"created {path}")


@click.command()
@click.argument("spec", metavar="NAME[@REQ]")
@click.option("--model", "kind", flag_value="model", help="Add a model.")
@click.option("--expert", "kind", flag_value="expert", help="Add an expert.")
@click.option("--package", "kind", flag_value="package", default=True,
              help="Add a code package (the default).")
@click.option("--variant", help="Model variant to require, e.g. Q4_K_M.")
@click.option("--base", help="Base model an expert must run on.")
@_project_option
def add(spec: str, kind: str, variant: str | None, base: str | None,
        manifest: Path | None) -> None:
    """Add a requirement to simplex.toml, keeping its comments and order.

    \b
    Example:
      sxpm add cognitive-1b@^1.0 --model --variant Q4_K_M
      sxpm add sql-expert@~2.1 --expert --base cognitive-1b
    """
    from sxpm.project.manifest import add as do_add

    name, _, req = spec.partition("@")
    if base and kind != "expert":
        raise click.UsageError("--base applies to experts only; add --expert")
    project = _load(manifest)
    text = do_add(project, name, kind, req or None, variant=variant, base=base)
    click.echo(f"added {kind} {name} {text} to {project.path}")


@click.command()
@click.argument("name")
@_project_option
def remove(name: str, manifest: Path | None) -> None:
    """Remove a requirement from simplex.toml.

    \b
    Example:
      sxpm remove sql-expert
    """
    from sxpm.project.manifest import remove as do_remove

    project = _load(manifest)
    kind = do_remove(project, name)
    click.echo(f"removed {kind} {name} from {project.path}")


def _fetcher(project: Project, h: Home, offline: bool, insecure: bool, jobs: int,
             skip_verify: bool = False) -> Fetcher:
    """The command's one way to get artifacts (and its trust policy, loaded once)."""
    from sxpm.ops.fetch import Fetcher

    return Fetcher.for_command(h, project, options=transport(insecure, jobs), offline=offline,
                               skip_verify=skip_verify)


def _do_lock(manifest: Path | None, index: str | None, offline: bool, insecure: bool,
             jobs: int, update: list[str] | None, skip_verify: bool = False, *,
             project: Project | None = None, fetcher: Fetcher | None = None
             ) -> tuple[Project, LockResult]:
    from sxpm.ops.lock import lock as do_lock

    project = project or _load(manifest)
    h = home()
    fetcher = fetcher or _fetcher(project, h, offline, insecure, jobs, skip_verify)
    provider, source, state = _provider(project, h, index, fetcher)
    return project, do_lock(project, h, provider, index_source=source,
                            update=update, memory_budget=_memory_budget(), fetcher=fetcher)


@click.command(name="lock")
@_project_option
@_index_option
@click.option("--offline", is_flag=True, help="Use only the cached index and the store.")
@transfer_options
@json_option
def lock_cmd(manifest: Path | None, index: str | None, offline: bool, quiet: bool,
             insecure: bool, jobs: int, as_json: bool) -> None:
    """Resolve simplex.toml and write simplex.lock (keeping locked versions).

    \b
    Example:
      sxpm lock
    """
    project, result = _do_lock(manifest, index, offline, insecure, jobs, None)
    _print_lock(project, result, as_json)


def _print_lock(project: Project, result: LockResult, as_json: bool) -> None:
    if as_json:
        emit_json({"lock": str(project.lock_path), "changed": result.changed,
                   "updates": result.updates,
                   "artifacts": {a.name: a.version for a in result.lock.artifacts}})
        return
    for line in result.updates:
        click.echo(line)
    state = "wrote" if result.changed else "unchanged:"
    click.echo(f"{state} {project.lock_path} ({len(result.lock.artifacts)} artifacts)")


@click.command()
@click.argument("names", nargs=-1)
@_project_option
@_index_option
@click.option("--offline", is_flag=True, help="Use only the cached index and the store.")
@transfer_options
@json_option
def update(names: tuple[str, ...], manifest: Path | None, index: str | None, offline: bool,
           quiet: bool, insecure: bool, jobs: int, as_json: bool) -> None:
    """Move NAMES (default: everything) to the newest versions simplex.toml allows.

    \b
    Example:
      sxpm update cognitive-1b
    """
    project, result = _do_lock(manifest, index, offline, insecure, jobs, list(names))
    _print_lock(project, result, as_json)


@click.command()
@_project_option
@_index_option
@click.option("--locked", is_flag=True, help="Fail if simplex.lock would change.")
@click.option("--frozen", is_flag=True, help="Install simplex.lock as it is, without "
                                             "resolving.")
@click.option("--offline", is_flag=True, help="Never touch the network; use the store.")
@transfer_options
@skip_verify_option
@json_option
def install(manifest: Path | None, index: str | None, locked: bool, frozen: bool,
            offline: bool, quiet: bool, insecure: bool, jobs: int, insecure_skip_verify: bool,
            as_json: bool) -> None:
    """Install the project's artifacts, exactly as simplex.lock pins them, into .simplex/.

    Writes or updates the lock first unless --frozen (or --locked, which fails instead).

    \b
    Example:
      sxpm install --locked
    """
    from sxpm.ops.lock import check_fresh, install_lock
    from sxpm.project.lock import Lock

    project = _load(manifest)
    h = home()
    options = transport(insecure, jobs)
    if insecure_skip_verify:
        click.echo("warning: --insecure-skip-verify: signatures are not checked against the "
                   "trust policy", err=True)
    fetcher = None
    if frozen or locked:
        if not project.lock_path.exists():
            raise NotFoundError(f"{project.lock_path} does not exist",
                                hint="run `sxpm lock` first")
        current = Lock.read(project.lock_path)
        if locked:
            check_fresh(project, current)
    else:
        fetcher = _fetcher(project, h, offline, insecure, jobs, insecure_skip_verify)
        _, result = _do_lock(manifest, index, offline, insecure, jobs, None,
                             insecure_skip_verify, project=project, fetcher=fetcher)
        current = result.lock
    report = install_lock(h, current, project.install_root, offline=offline, options=options,
                          reporter=reporter(quiet or as_json),
                          insecure_skip_verify=insecure_skip_verify, project=project,
                          fetcher=fetcher)
    if as_json:
        emit_json({"installed": [a.name for a in report.installed],
                   "unchanged": [a.name for a in report.unchanged],
                   "removed": report.removed, "blobs_fetched": report.blobs_fetched,
                   "bytes_fetched": report.bytes_fetched,
                   "root": str(project.install_root)})
        return
    for art in report.installed:
        click.echo(f"installed {art.kind} {art.name} {art.version}"
                   + (f" ({art.variant})" if art.variant else ""))
    for name in report.removed:
        click.echo(f"removed {name}")
    click.echo(f"{len(report.installed)} installed, {len(report.unchanged)} up to date "
               f"in {project.install_root}")


def _read_lock(manifest: Path | None) -> tuple[Project, Lock]:
    from sxpm.project.lock import Lock

    project = _load(manifest)
    if not project.lock_path.exists():
        raise NotFoundError(f"{project.lock_path} does not exist", hint="run `sxpm lock`")
    return project, Lock.read(project.lock_path)


@click.command()
@_project_option
@json_option
def tree(manifest: Path | None, as_json: bool) -> None:
    """Show the locked dependency tree.

    \b
    Example:
      sxpm tree
    """
    project, current = _read_lock(manifest)
    arts = current.by_name()
    roots = [r["name"] for r in current.requirements]
    if as_json:
        emit_json({"roots": roots, "artifacts": {
            a.name: {"kind": a.kind, "version": a.version, "variant": a.variant,
                     "dependencies": list(a.dependencies)} for a in current.artifacts}})
        return
    click.echo(f"{project.data.get('package', {}).get('name', project.root.name)}")

    def show(name: str, prefix: str, last: bool, seen: frozenset[str]) -> None:
        art = arts.get(name)
        label = f"{name} {art.version} ({art.kind}" + (f", {art.variant}" if art and
                                                       art.variant else "") + ")" \
            if art else f"{name} (not locked)"
        click.echo(f"{prefix}{'└── ' if last else '├── '}{label}")
        if art is None or name in seen:
            return
        deps = list(art.dependencies)
        for i, dep in enumerate(deps):
            show(dep, prefix + ("    " if last else "│   "), i == len(deps) - 1, seen | {name})

    for i, root in enumerate(roots):
        show(root, "", i == len(roots) - 1, frozenset())


@click.command()
@click.argument("name")
@_project_option
@json_option
def why(name: str, manifest: Path | None, as_json: bool) -> None:
    """Explain why NAME is in the lock: every chain from simplex.toml to it.

    \b
    Example:
      sxpm why cognitive-1b
    """
    _, current = _read_lock(manifest)
    arts = current.by_name()
    if name not in arts:
        raise NotFoundError(f"{name} is not in the lock", hint="`sxpm tree` shows the lock")
    parents: dict[str, list[str]] = {}
    for art in current.artifacts:
        for dep in art.dependencies:
            parents.setdefault(dep, []).append(art.name)
    roots = {r["name"]: r for r in current.requirements}
    chains: list[list[str]] = []

    def walk(node: str, chain: list[str]) -> None:
        if node in chain:
            return
        chain = [node, *chain]
        if node in roots:
            chains.append(["simplex.toml", *chain])
        for parent in parents.get(node, []):
            walk(parent, chain)

    walk(name, [])
    labelled = [[c if c == "simplex.toml" else f"{c} {arts[c].version}" for c in chain]
                for chain in chains]
    if as_json:
        emit_json({"name": name, "chains": labelled})
        return
    for chain in labelled:
        click.echo(" -> ".join(chain))
    if not labelled:
        raise InputError(f"{name} is locked but nothing requires it",
                         hint="run `sxpm lock` to drop it")
