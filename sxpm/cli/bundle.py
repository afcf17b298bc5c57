"""bundle create / import: a project's artifacts in one OCI layout tarball."""

from __future__ import annotations

from pathlib import Path

import click

from sxpm.cli._common import emit_json, home, json_option, transfer_options
from sxpm.errors import InputError


@click.group(name="bundle")
def bundle_group() -> None:
    """Carry artifacts to a machine without network."""


@bundle_group.command()
@click.argument("refs", nargs=-1, metavar="[REF]...")
@click.option("--lock", "lock_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Bundle what this simplex.lock pins.")
@click.option("--output", "-o", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="The tar file to write.")
@transfer_options
@json_option
def create(refs: tuple[str, ...], lock_path: Path | None, output: Path, quiet: bool,
           insecure: bool, jobs: int, as_json: bool) -> None:
    """Write the artifacts of a lock (or REFs) as one OCI image layout tar file.

    It holds the artifacts, the blobs of their locked variants, the signatures the
    store keeps and the index lines they came from; skopeo and oras read it as an
    OCI layout.

    \b
    Example:
      sxpm bundle create --lock simplex.lock -o project.tar
    """
    from sxpm.ops.bundle import create as do_create
    from sxpm.project.lock import Lock
    from sxpm.transport import TransportOptions

    if bool(lock_path) == bool(refs):
        raise click.UsageError("give --lock simplex.lock or one or more REFs")
    h = home()
    lock = None
    if lock_path is not None:
        if not lock_path.is_file():
            raise InputError(f"{lock_path} does not exist", hint="run `sxpm lock` first")
        lock = Lock.read(lock_path)
    result = do_create(h, output, lock=lock, refs=[h.parse_ref(r) for r in refs],
                       options=TransportOptions(insecure=insecure, jobs=jobs))
    if as_json:
        emit_json({"path": str(result.path), "refs": result.refs, "blobs": result.blobs,
                   "size": result.bytes, "index_lines": result.index_lines})
        return
    click.echo(f"Wrote {result.path}: {len(result.refs)} ref(s), {result.blobs} blob(s), "
               f"{result.bytes} bytes, {result.index_lines} index line(s)")


@bundle_group.command(name="import")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--insecure-skip-verify", is_flag=True,
              help="Import without checking signatures under the trust policy.")
@json_option
def import_(path: Path, insecure_skip_verify: bool, as_json: bool) -> None:
    """Verify a bundle (every digest, and signatures under the trust policy) and add
    its artifacts to the store. Nothing enters the store unless all of it checks.

    \b
    Example:
      sxpm bundle import project.tar && sxpm install --frozen --offline
    """
    from sxpm.ops.bundle import import_bundle

    if insecure_skip_verify:
        click.echo("warning: --insecure-skip-verify: signatures are not checked", err=True)
    result = import_bundle(home(), path, cwd=Path.cwd(),
                           insecure_skip_verify=insecure_skip_verify)
    if as_json:
        emit_json({"path": str(result.path), "refs": result.refs, "blobs": result.blobs,
                   "size": result.bytes, "index_lines": result.index_lines})
        return
    click.echo(f"Imported {result.path}: {len(result.refs)} ref(s), {result.blobs} new "
               f"blob(s), {result.bytes} bytes")
