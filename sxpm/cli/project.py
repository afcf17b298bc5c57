"""init, add, remove, lock, install, update, tree, why: a project and its lock."""

from __future__ import annotations

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
from sxpm.errors import InputError
from sxpm.ops.project import (
    Edit,
    Features,
    add_requirement,
    check_lock,
    install_project,
    lock_project,
    remove_requirement,
)
from sxpm.ops.project import tree as project_tree
from sxpm.ops.project import why as explain_why
from sxpm.project.manifest import Project

if TYPE_CHECKING:
    from sxpm.ops.lock import InstallReport, LockResult

F = TypeVar("F", bound=Callable[..., Any])


def _project_option(f: F) -> F:
    return click.option("--manifest-path", "manifest", type=click.Path(path_type=Path),
                        help="simplex.toml to use (default: found from the current "
                             "directory upwards).")(f)


def _index_option(f: F) -> F:
    return click.option("--index", "index", help="Registry index (URL or path); default: "
                        "SXPM_INDEX, [registries] index, the home's config.")(f)


def _features_options(f: F) -> F:
    f = click.option("--no-default-features", is_flag=True,
                     help="Leave out the features [features] default lists.")(f)
    f = click.option("--all-features", is_flag=True, help="Enable every feature.")(f)
    f = click.option("--features", "features", multiple=True, metavar="A,B",
                     help="Features to enable, comma-separated (repeatable).")(f)
    return f


def _features(features: tuple[str, ...], all_features: bool,
              no_default_features: bool) -> Features:
    names = tuple(n.strip() for text in features for n in text.split(",") if n.strip())
    if all_features and names:
        raise click.UsageError("--all-features enables every feature; drop --features")
    return Features(names, all_features, not no_default_features)


def _load(manifest: Path | None) -> Project:
    return Project.load(manifest)


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


def _sync_options(f: F) -> F:
    f = click.option("--no-sync", is_flag=True, help="Lock, but do not install.")(f)
    f = click.option("--no-lock", is_flag=True, help="Only edit simplex.toml.")(f)
    return f


def _print_edit(project: Project, edit: Edit) -> None:
    if edit.locked is not None:
        for line in edit.locked.updates:
            click.echo(line)
    if edit.installed is not None:
        _print_install(project, edit.installed.report)


@click.command()
@click.argument("spec", metavar="NAME[@REQ]")
@click.option("--model", "kind", flag_value="model",
              help="NAME is a model (only needed when the index has it as several kinds).")
@click.option("--expert", "kind", flag_value="expert", help="NAME is an expert.")
@click.option("--package", "kind", flag_value="package", help="NAME is a code package.")
@click.option("--variant", help="Model variant to require, e.g. Q4_K_M.")
@click.option("--base", help="Base model an expert must run on.")
@_project_option
@_index_option
@_sync_options
@click.option("--offline", is_flag=True, help="Use only the cached index and the store.")
@transfer_options
def add(spec: str, kind: str | None, variant: str | None, base: str | None,
        manifest: Path | None, index: str | None, no_sync: bool, no_lock: bool,
        offline: bool, quiet: bool, insecure: bool, jobs: int) -> None:
    """Add a requirement to simplex.toml (keeping its comments and order), then lock
    and install.

    NAME is looked up in the index (else the default registry): its kind comes from
    there, and without @REQ the requirement is ^ the newest version not yanked.

    \b
    Example:
      sxpm add cognitive-1b --variant Q4_K_M
      sxpm add sql-expert@~2.1 --base cognitive-1b
    """
    name, _, req = spec.partition("@")
    if base and kind not in (None, "expert"):
        raise click.UsageError("--base applies to experts only; add --expert")
    project = _load(manifest)
    edit = add_requirement(project, name, req or None, kind=kind, variant=variant, base=base,
                           home=home(), index=index, lock=not no_lock,
                           sync=not (no_sync or no_lock), offline=offline,
                           options=transport(insecure, jobs), reporter=reporter(quiet))
    click.echo(f"added {edit.kind} {name} {edit.text} to {project.path}")
    _print_edit(project, edit)


@click.command()
@click.argument("name")
@_project_option
@_index_option
@_sync_options
@click.option("--offline", is_flag=True, help="Use only the cached index and the store.")
@transfer_options
def remove(name: str, manifest: Path | None, index: str | None, no_sync: bool,
           no_lock: bool, offline: bool, quiet: bool, insecure: bool, jobs: int) -> None:
    """Remove a requirement from simplex.toml, then lock and remove what it installed.

    \b
    Example:
      sxpm remove sql-expert
    """
    project = _load(manifest)
    edit = remove_requirement(project, name, home=home(), index=index, lock=not no_lock,
                              sync=not (no_sync or no_lock), offline=offline,
                              options=transport(insecure, jobs), reporter=reporter(quiet))
    click.echo(f"removed {edit.kind} {name} from {project.path}")
    _print_edit(project, edit)


def _do_lock(project: Project, index: str | None, offline: bool, insecure: bool,
             jobs: int, update: list[str] | None) -> LockResult:
    return lock_project(project, home(), index=index, update=update, offline=offline,
                        options=transport(insecure, jobs))


@click.command(name="lock")
@_project_option
@_index_option
@click.option("--offline", is_flag=True, help="Use only the cached index and the store.")
@click.option("--check", is_flag=True, help="Exit 1 if simplex.lock is out of date; write "
                                            "nothing.")
@transfer_options
@json_option
def lock_cmd(manifest: Path | None, index: str | None, offline: bool, check: bool,
             quiet: bool, insecure: bool, jobs: int, as_json: bool) -> None:
    """Resolve simplex.toml and write simplex.lock (keeping locked versions).

    \b
    Example:
      sxpm lock
      sxpm lock --check
    """
    project = _load(manifest)
    if check:
        current = check_lock(project, home(), index=index, offline=offline,
                             options=transport(insecure, jobs))
        if as_json:
            emit_json({"lock": str(project.lock_path), "fresh": True,
                       "artifacts": {a.name: a.version for a in current.artifacts}})
        else:
            click.echo(f"{project.lock_path} is up to date ({len(current.artifacts)} "
                       "artifacts)")
        return
    _print_lock(project, _do_lock(project, index, offline, insecure, jobs, None), as_json)


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
    project = _load(manifest)
    _print_lock(project, _do_lock(project, index, offline, insecure, jobs, list(names)),
                as_json)


@click.command()
@_project_option
@_index_option
@click.option("--locked", is_flag=True, help="Fail if simplex.lock would change.")
@click.option("--frozen", is_flag=True, help="Install simplex.lock as it is, without "
                                             "resolving.")
@click.option("--offline", is_flag=True, help="Never touch the network; use the store.")
@_features_options
@transfer_options
@skip_verify_option
@json_option
def install(manifest: Path | None, index: str | None, locked: bool, frozen: bool,
            offline: bool, features: tuple[str, ...], all_features: bool,
            no_default_features: bool, quiet: bool, insecure: bool, jobs: int,
            insecure_skip_verify: bool, as_json: bool) -> None:
    """Install the project's artifacts, exactly as simplex.lock pins them, into .simplex/.

    Writes or updates the lock first unless --frozen (or --locked, which fails instead).

    \b
    Example:
      sxpm install --locked
    """
    project = _load(manifest)
    if insecure_skip_verify:
        click.echo("warning: --insecure-skip-verify: signatures are not checked against the "
                   "trust policy", err=True)
    done = install_project(project, home(), frozen=frozen, locked=locked, index=index,
                          offline=offline, options=transport(insecure, jobs),
                          reporter=reporter(quiet or as_json),
                          insecure_skip_verify=insecure_skip_verify,
                          features=_features(features, all_features, no_default_features))
    report = done.report
    if as_json:
        emit_json({"features": done.features or [],
                   "installed": [a.name for a in report.installed],
                   "unchanged": [a.name for a in report.unchanged],
                   "removed": report.removed, "blobs_fetched": report.blobs_fetched,
                   "bytes_fetched": report.bytes_fetched,
                   "root": str(project.install_root)})
        return
    _print_install(project, report)


def _print_install(project: Project, report: InstallReport) -> None:
    for art in report.installed:
        click.echo(f"installed {art.kind} {art.name} {art.version}"
                   + (f" ({art.variant})" if art.variant else ""))
    for name in report.removed:
        click.echo(f"removed {name}")
    click.echo(f"{len(report.installed)} installed, {len(report.unchanged)} up to date "
               f"in {project.install_root}")


@click.command()
@_project_option
@_features_options
@json_option
def tree(manifest: Path | None, features: tuple[str, ...], all_features: bool,
         no_default_features: bool, as_json: bool) -> None:
    """Show the locked dependency tree: what `sxpm install` with the same feature flags
    installs.

    \b
    Example:
      sxpm tree
      sxpm tree --features gpu
    """
    found = project_tree(_load(manifest), features=_features(features, all_features,
                                                             no_default_features))
    if as_json:
        emit_json({"roots": found.roots, "features": found.features, "artifacts": {
            a.name: {"kind": a.kind, "version": a.version, "variant": a.variant,
                     "variants": [v.name for v in a.variants],
                     "dependencies": list(a.dependencies)} for a in found.lock.artifacts}})
        return
    click.echo(found.package + (f" (features: {', '.join(found.features)})"
                                if found.features else ""))
    lasts: list[bool] = []  # for each level above the row: was that row a last child
    cut = False
    for row in found.rows:
        del lasts[row.depth:]
        prefix = "".join("    " if last else "│   " for last in lasts)
        art = row.artifact
        label = (f"{row.name} {art.version} ({art.kind}"
                 + (f", {art.variant}" if art.variant else "")
                 + (f", variant per machine: {'|'.join(v.name for v in art.variants)}"
                    if art.variants else "") + ")"
                 if art else f"{row.name} (not locked)")
        mark = " (*)" if row.repeated else " (...)" if row.cut else ""
        click.echo(f"{prefix}{'└── ' if row.last else '├── '}{label}{mark}")
        lasts.append(row.last)
        cut = cut or row.cut
    if any(row.repeated for row in found.rows):
        click.echo("(*) dependencies shown above")
    if cut:
        click.echo("(...) deeper dependencies not shown; `sxpm tree --json` lists them all")


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
    found = explain_why(_load(manifest), name)
    if as_json:
        emit_json({"name": name, "chains": found.chains,
                   **({"more": found.more} if found.more != 0 else {})})
        return
    for chain in found.chains:
        click.echo(" -> ".join(chain))
    if found.more is None:
        click.echo("... and more chains (the lock has a cycle; they are not counted)")
    elif found.more:
        click.echo(f"... and {found.more} more chains")
    if not found.chains:
        raise InputError(f"{name} is locked but nothing requires it",
                         hint="run `sxpm lock` to drop it")
