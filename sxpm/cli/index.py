"""search, info, publish, yank and `index build|verify`: the registry index.

Imports stay light at module level (click only): `sxpm search` on a warm index
must finish in well under 150 ms, so the store, requests and jsonschema load only
in the commands that need them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from sxpm.cli._common import category_option, entry_json, pack_traits_options
from sxpm.core.http import strip_userinfo

F = TypeVar("F", bound=Callable[..., Any])

if TYPE_CHECKING:
    from sxpm.ops.publish import Pushed
KIND = click.Choice(["model", "expert", "package"])


def index_option(f: F) -> F:
    return click.option(
        "--index", "index", metavar="URL_OR_PATH",
        help="The index (default: SXPM_INDEX, [registries] index in simplex.toml, "
             "else \"index\" in $SIMPLEX_HOME/config.json).")(f)


def read_options(f: F) -> F:
    f = click.option("--insecure", is_flag=True,
                     help="Allow plain HTTP and unverified TLS (loopback never needs it).")(f)
    f = click.option("--offline", is_flag=True,
                     help="Use the cached copy of an HTTP index; make no request.")(f)
    return index_option(f)


def _local_index(index: str | None, directory: Path | None) -> Path:
    from sxpm.errors import IndexLocationError
    from sxpm.index.client import is_url
    from sxpm.index.location import find_index

    location = str(directory) if directory is not None else find_index(index)
    if is_url(location):
        raise IndexLocationError(f"{strip_userinfo(location)} is a URL; this command needs "
                                 "a local checkout",
                                 hint="git clone the index and pass its directory")
    return Path(location.removeprefix("file://"))


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False))


@click.command()
@click.argument("query", nargs=-1)
@click.option("--kind", type=KIND, help="Only this kind of artifact.")
@category_option
@click.option("--limit", type=click.IntRange(1), default=20, show_default=True,
              help="Show at most this many results.")
@read_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def search(query: tuple[str, ...], kind: str | None, category: str | None, limit: int,
           index: str | None, offline: bool, insecure: bool, as_json: bool) -> None:
    """Search the index for QUERY (names first, then descriptions and tags).

    \b
    Example:
      sxpm search sql
      sxpm search llama --kind model --json
      sxpm search --category mnemonic
    """
    from sxpm.core.humanize import human_size
    from sxpm.ops.query import search as do_search

    result = do_search(" ".join(query), kind=kind, limit=limit, index=index,
                       offline=offline, insecure=insecure, category=category)
    hits = result.hits
    if as_json:
        _echo_json([h.to_dict() for h in hits])
        return
    if not hits:
        click.echo("no match" + (" (the index has no search.json; run `sxpm index build`)"
                                 if not result.has_catalog else ""))
        return
    rows = [[h.name, h.kind, h.vers, human_size(h.size), h.description] for h in hits]
    header = ["NAME", "KIND", "VERSION", "SIZE", "DESCRIPTION"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        head = "  ".join(c.ljust(w) for c, w in zip(row[:4], widths, strict=True))
        desc = row[4] if len(row[4]) <= 60 else row[4][:57] + "..."
        click.echo(f"{head}  {desc}".rstrip())


@click.command()
@click.argument("spec", metavar="NAME[@VERSION]")
@read_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(spec: str, index: str | None, offline: bool, insecure: bool, as_json: bool) -> None:
    """Show a name's versions, variants, dependencies, license and digest.

    \b
    Example:
      sxpm info sql-expert
      sxpm info tiny-llama@1.0.0 --json
    """
    from sxpm.core.humanize import human_size
    from sxpm.ops.query import info as do_info

    name, _, version = spec.partition("@")
    found = do_info(name, version or None, index=index, offline=offline, insecure=insecure)
    entry, versions = found.entry, found.versions
    if as_json:
        _echo_json({"name": entry.name, "kind": entry.kind,
                    "versions": [{"version": e.vers, "yanked": e.yanked} for e in versions],
                    "selected": {**entry_json(entry), "reference": entry.reference}})
        return
    click.echo(f"{entry.name} {entry.vers} ({entry.kind})"
               + ("  YANKED" if entry.yanked else ""))
    if entry.description:
        click.echo(f"  {entry.description}")
    click.echo(f"license:  {entry.license or '-'}")
    click.echo(f"size:     {human_size(entry.size)}")
    click.echo(f"ref:      {entry.ref}")
    click.echo(f"digest:   {entry.digest}")
    if entry.tags:
        click.echo(f"tags:     {', '.join(entry.tags)}")
    click.echo("versions: " + ", ".join(e.vers + (" (yanked)" if e.yanked else "")
                                        for e in reversed(versions)))
    if entry.variants:
        click.echo("variants:")
        for v in entry.variants:
            extra = f", needs {human_size(v.memory)}" if v.memory is not None else ""
            base = f", base model {v.base_model}" if v.base_model else ""
            click.echo(f"  {v.name}: {human_size(v.size)}{extra}{base}  {v.digest}")
    label = "base models" if entry.kind == "expert" else "dependencies"
    if entry.deps:
        click.echo(f"{label}:")
        for d in entry.deps:
            click.echo(f"  {d.name} {d.req} ({d.kind})")
    else:
        click.echo(f"{label}: none")


def _push_options(f: F) -> F:
    f = click.option("--open-pr", is_flag=True,
                     help="Also open the pull request with GitHub's `gh` (implies --push).")(f)
    f = click.option("--push", is_flag=True, help="Push the branch to the index checkout's "
                     "remote and print where to open the pull request.")(f)
    return f


def _push(index: Path, branch: str, base: str, title: str, push: bool,
          open_pr: bool) -> Pushed | None:
    if not (push or open_pr):
        return None
    from sxpm.ops.publish import push_branch

    return push_branch(index, branch, base, title=title, open_pr=open_pr)


def _pushed_json(pushed: Pushed | None) -> dict[str, Any]:
    if pushed is None:
        return {}
    return {"pushed_to": pushed.remote, "pr_url": pushed.pr_url, "pr_opened": pushed.opened}


def _print_pushed(branch: str, pushed: Pushed) -> None:
    click.echo(f"pushed {branch} to {pushed.remote} ({pushed.url})")
    if pushed.opened:
        click.echo(f"opened the pull request: {pushed.opened}")
        return
    if pushed.gh_missing:
        click.echo("gh is not installed, so the pull request was not opened", err=True)
    if pushed.pr_url:
        click.echo(f"open the pull request: {pushed.pr_url}")
    else:
        click.echo(f"open a pull request of {branch} on the index repository's host")


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path),
                metavar="PATH...")
@click.option("--index", "index", required=True, type=click.Path(path_type=Path),
              metavar="INDEX_CHECKOUT", help="A local git checkout of the index.")
@click.option("--registry", help="Registry to push to (default: the index's default).")
@click.option("--kind", type=KIND, help="Kind of artifact (default: guessed from PATH).")
@click.option("--name", help="Name (models; others take it from their metadata).")
@click.option("--version", "version", help="Version (models; others declare theirs).")
@click.option("--variant", "variants", multiple=True,
              help="Variant name of each PATH, in order (e.g. Q4_K_M).")
@click.option("--description", help="Description for the index line.")
@click.option("--license", "license_", help="License for the index line.")
@click.option("--tag", "tags", multiple=True, help="Search tag for the index line.")
@pack_traits_options
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.option("--insecure", is_flag=True, help="Allow plain HTTP to the registry.")
@_push_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def publish(paths: tuple[Path, ...], index: Path, registry: str | None, kind: str | None,
            name: str | None, version: str | None, variants: tuple[str, ...],
            description: str | None, license_: str | None, tags: tuple[str, ...],
            category: str | None, capabilities: tuple[str, ...],
            quiet: bool, insecure: bool, push: bool, open_pr: bool, as_json: bool) -> None:
    """Pack PATH, push it and commit its index line on a new branch for a pull request.

    Re-running after a failure finishes the job without writing the line twice; a
    version already in the index is refused (versions are immutable).

    \b
    Example:
      sxpm publish ./sql-expert --index ./registry-index --registry ghcr.io/simplex
      sxpm publish ./q4 ./q8 --variant Q4_K_M --variant Q8_0 --name tiny --version 1.0.0 \\
          --index ./registry-index
    """
    from sxpm.cli._common import home, reporter, transport
    from sxpm.ops.publish import publish as do_publish

    result = do_publish(home(), list(paths), index_dir=index, registry=registry, kind=kind,
                        name=name, version=version, variants=list(variants),
                        description=description, license=license_, tags=tags,
                        options=transport(insecure, 4), reporter=reporter(quiet or as_json),
                        category=category, capabilities=capabilities)
    pushed = _push(index, result.branch, result.base,
                   f"Publish {result.entry.name} {result.entry.vers}", push, open_pr)
    if as_json:
        _echo_json({"entry": entry_json(result.entry), "file": str(result.file),
                    "branch": result.branch, "commit": result.commit,
                    "pushed_blobs": result.pushed_blobs, "resumed": result.resumed,
                    "signer": result.signer, "pr_command": result.pr_command,
                    **_pushed_json(pushed)})
        return
    e = result.entry
    click.echo(f"published {e.kind} {e.name} {e.vers} to {e.reference}"
               + (f", signed by {result.signer}" if result.signer else ""))
    click.echo(f"index line committed on branch {result.branch} ({result.commit[:12]})"
               + (" (finished an interrupted publish)" if result.resumed else ""))
    if pushed is None:
        click.echo("open the pull request with:")
        click.echo(f"  cd {index} && {result.pr_command}")
    else:
        _print_pushed(result.branch, pushed)


@click.command()
@click.argument("spec", metavar="NAME@VERSION")
@click.option("--undo", is_flag=True, help="Un-yank the version.")
@click.option("--index", "index", metavar="INDEX_CHECKOUT",
              help="A local git checkout of the index (default: as for search).")
@_push_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def yank(spec: str, undo: bool, index: str | None, push: bool, open_pr: bool,
         as_json: bool) -> None:
    """Mark NAME@VERSION yanked (or not, with --undo), as a commit on a new branch.

    A yanked version stays installable from a lockfile but is never chosen anew.

    \b
    Example:
      sxpm yank sql-expert@2.1.0 --index ./registry-index
    """
    from sxpm.ops.publish import yank as do_yank

    name, sep, version = spec.partition("@")
    if not sep or not version:
        raise click.UsageError(f"{spec!r} has no version; write NAME@VERSION")
    checkout = _local_index(index, None)
    result = do_yank(checkout, name, version, undo=undo)
    verb = "yanked" if result.entry.yanked else "un-yanked"
    pushed = _push(checkout, result.branch, result.base,
                   f"{verb.capitalize()} {result.entry.name} {result.entry.vers}", push,
                   open_pr)
    if as_json:
        _echo_json({"name": result.entry.name, "version": result.entry.vers,
                    "yanked": result.entry.yanked, "branch": result.branch,
                    "commit": result.commit, **_pushed_json(pushed)})
        return
    click.echo(f"{verb} {result.entry.name} {result.entry.vers} on branch {result.branch} "
               f"({result.commit[:12]})"
               + ("; push it and open a pull request" if pushed is None else ""))
    if pushed is not None:
        _print_pushed(result.branch, pushed)


@click.group(name="index")
def index_group() -> None:
    """Build and verify a checkout of a registry index.

    \b
    Example:
      sxpm index verify ./registry-index
      sxpm index build ./registry-index
    """


@index_group.command(name="build")
@click.argument("directory", required=False, type=click.Path(path_type=Path))
@index_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def build_cmd(directory: Path | None, index: str | None, as_json: bool) -> None:
    """Regenerate search.json of the index checkout DIRECTORY.

    \b
    Example:
      sxpm index build ./registry-index
    """
    from sxpm.index.build import build

    result = build(_local_index(index, directory))
    if as_json:
        _echo_json({"path": str(result.path), "names": result.names,
                    "versions": result.versions, "seconds": round(result.seconds, 3)})
        return
    click.echo(f"wrote {result.path}: {result.names} names, {result.versions} versions "
               f"in {result.seconds:.2f} s")


@index_group.command(name="verify")
@click.argument("directory", required=False, type=click.Path(path_type=Path))
@index_option
@click.option("--check-registry", is_flag=True,
              help="Also check that every digest exists in its registry.")
@click.option("--insecure", is_flag=True, help="Allow plain HTTP to registries.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def verify_cmd(directory: Path | None, index: str | None, check_registry: bool,
               insecure: bool, as_json: bool) -> None:
    """Check every line of the index checkout DIRECTORY; list every problem.

    Lines must be valid JSON and valid against the schema, in registries the index
    allows, sorted by version with no duplicates, with no name collisions.

    \b
    Example:
      sxpm index verify ./registry-index --check-registry
    """
    from sxpm.errors import IndexFormatError
    from sxpm.index.build import verify

    root = _local_index(index, directory)
    report = verify(root, check_registry=check_registry, insecure=insecure)
    if as_json:
        _echo_json({"files": report.files, "lines": report.lines,
                    "problems": [{"file": p.file, "line": p.line, "message": p.message}
                                 for p in report.problems]})
    else:
        for problem in report.problems:
            click.echo(str(problem))
        if report.ok:
            click.echo(f"verified {report.files} file(s), {report.lines} line(s): no problems")
    if not report.ok:
        first = report.problems[0]
        raise IndexFormatError(first.file, first.line,
                               f"{first.message} ({len(report.problems)} problem(s) in all)")
