"""pack, push, pull, copy, inspect, list, rm, gc, verify: the store and registries."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click

from sxpm.cli._common import (
    emit_json,
    home,
    json_option,
    pack_traits_options,
    reporter,
    skip_verify_option,
    table,
    traits_json,
    transfer_options,
    transport,
    warn_skip_verify,
)
from sxpm.cli.complete import store_refs, variant_names
from sxpm.core.detect import memory_budget
from sxpm.core.humanize import human_size
from sxpm.core.names import is_name_spec
from sxpm.errors import StoreError, SxpmError
from sxpm.home import Home

_REFERRERS_TAG = re.compile(r":sha(256|512)-[0-9a-f]{64,128}$")


@click.command()
@click.argument("kind", type=click.Choice(["model", "expert", "package"]))
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--ref", "ref_text", required=True,
              help="Where the artifact will live, e.g. oci:./registry/NAME:1.0.0 or "
                   "host/repo:TAG.")
@click.option("--variant", help="Add as this variant (e.g. Q4_K_M) of an image index at REF.")
@click.option("--version", "version", help="Version, when neither the metadata nor the tag "
                                             "gives one.")
@pack_traits_options
@json_option
def pack(kind: str, path: Path, ref_text: str, variant: str | None, version: str | None,
         category: str | None, capabilities: tuple[str, ...], as_json: bool) -> None:
    """Pack PATH as an artifact of KIND into the store.

    The last line printed is the digest REF now points at.

    \b
    Example:
      sxpm pack model ./tiny-llama --ref oci:./registry/tiny-llama:1.0.0 --variant F32
      sxpm pack model ./embed --ref oci:./registry/embed:1.0.0 --category mnemonic
      sxpm pack expert ./sql-expert --ref oci:./registry/sql-expert:2.1.0
    """
    from sxpm.artifacts.pack import pack as do_pack
    from sxpm.ops.fetch import policy_for

    h = home()
    # Only a legacy .expert archive is checked against the policy on import.
    policy = policy_for(h) if kind == "expert" and path.is_file() else None
    result = do_pack(h, kind, path, h.parse_ref(ref_text), variant=variant, version=version,
                     policy=policy, category=category, capabilities=capabilities)
    if as_json:
        emit_json({"ref": str(result.ref), "kind": result.kind, "name": result.name,
                   "version": result.version, "digest": str(result.descriptor.digest),
                   "manifest": str(result.manifest.digest), "variants": list(result.variants),
                   "media_type": result.descriptor.media_type,
                   **traits_json(result.traits)})
        return
    click.echo(f"packed {result.kind} {result.name} {result.version} as {result.ref}"
               + (f" (variants: {', '.join(result.variants)})" if result.variants else ""))
    click.echo(str(result.descriptor.digest))


@click.command()
@click.argument("ref_text", metavar="REF", shell_complete=store_refs)
@click.option("--to", "target", help="Push to this reference instead of REF's own registry.")
@click.option("--variant", help="Push only this variant of an image index.",
              shell_complete=variant_names)
@transfer_options
@json_option
def push(ref_text: str, target: str | None, variant: str | None, quiet: bool, insecure: bool,
         jobs: int, as_json: bool) -> None:
    """Push REF from the store to its registry (only the blobs the registry lacks).

    \b
    Example:
      sxpm push oci:./registry/tiny-llama:1.0.0
      sxpm push localhost:5000/simplex/tiny-llama:1.0.0
    """
    from sxpm.ops.transfer import push as do_push

    h = home()
    ref = h.parse_ref(ref_text)
    dest = h.parse_ref(target) if target else None
    result = do_push(h, ref, target=dest, variant=variant, options=transport(insecure, jobs),
                     reporter=reporter(quiet or as_json))
    _report(result, "pushed", as_json)


def _report(result: object, verb: str, as_json: bool, moved: str = "sent") -> None:
    from sxpm.ops.transfer import TransferResult

    assert isinstance(result, TransferResult)
    data = {"ref": str(result.ref), "digest": str(result.descriptor.digest),
            "blobs_transferred": result.blobs_transferred,
            "bytes_transferred": result.bytes_transferred,
            "blobs_skipped": result.blobs_skipped, "variants": result.variants,
            "signer": result.signer.to_dict() if result.signer else None}
    if as_json:
        emit_json(data)
        return
    click.echo(f"{verb} {result.ref}: {result.blobs_transferred} blob(s), "
               f"{human_size(result.bytes_transferred)} {moved}, "
               f"{result.blobs_skipped} already there"
               + (f"; signed by {result.signer}" if result.signer else ""))
    click.echo(str(result.descriptor.digest))


@click.command()
@click.argument("ref_text", metavar="NAME[@REQ]|REF")
@click.option("--variant", help="Fetch the layers of this variant (default: the largest "
              "that fits this machine's accelerator, or RAM).", shell_complete=variant_names)
@click.option("--all-variants", is_flag=True, help="Fetch the layers of every variant.")
@click.option("--index", "index", metavar="INDEX",
              help="Index to look NAME up in (default: SXPM_INDEX, the project's, the home's "
                   "config).")
@transfer_options
@skip_verify_option
@json_option
def pull(ref_text: str, variant: str | None, all_variants: bool, index: str | None,
         quiet: bool, insecure: bool, jobs: int, insecure_skip_verify: bool,
         as_json: bool) -> None:
    """Pull NAME[@REQ] (the newest matching version the index lists, not yanked) or REF
    into the store, fetching only blobs the store lacks.

    \b
    Example:
      sxpm pull tiny-llama@^1.0
      sxpm pull oci:./registry/tiny-llama:1.0.0
      sxpm pull localhost:5000/simplex/tiny-llama:1.0.0 --variant Q4_K_M
      sxpm pull hf://bartowski/Llama-3.2-1B-Instruct-GGUF --variant Q4_K_M
    """
    from sxpm.ops.transfer import pull as do_pull

    if variant and all_variants:
        raise click.UsageError("--variant and --all-variants exclude each other; "
                               "give one of them")
    h = home()
    if ref_text.startswith("hf://"):
        _pull_hf(h, ref_text, variant, all_variants, as_json)
        return
    if is_name_spec(ref_text):
        # Imported here: only a NAME needs the index (its client, its config, difflib);
        # a REF is read as it is, as resolve_spec would, and the pull starts ~35 ms sooner.
        from sxpm.ops.names import resolve_spec

        named = resolve_spec(h, ref_text, None, index=index, variant=variant,
                             insecure=insecure)
        ref, expect = named.ref, named.expect
    else:
        ref, expect = h.parse_ref(ref_text), None
    if insecure_skip_verify:
        warn_skip_verify(ref)
    result = do_pull(h, ref, variant=variant, all_variants=all_variants,
                     options=transport(insecure, jobs), reporter=reporter(quiet or as_json),
                     insecure_skip_verify=insecure_skip_verify, expect=expect,
                     memory_budget=None if variant or all_variants else memory_budget)
    _report(result, "pulled", as_json, moved="fetched")


def _pull_hf(h: Home, text: str, variant: str | None, all_variants: bool,
             as_json: bool) -> None:
    from sxpm.ops.hf import pull_hf
    from sxpm.ops.importer import describe_imported

    done = pull_hf(h, text, variant=variant, all_files=all_variants)
    if as_json:
        emit_json(describe_imported(done))
        return
    for item in done:
        click.echo(f"pulled {item.installed.name}@{item.installed.version} as {item.ref} "
                   f"from {text} ({item.linked} linked, {item.copied} copied)")


@click.command()
@click.argument("src")
@click.argument("dst")
@transfer_options
@json_option
def copy(src: str, dst: str, quiet: bool, insecure: bool, jobs: int, as_json: bool) -> None:
    """Copy SRC to DST (any two registries), every variant, blobs deduplicated.

    \b
    Example:
      sxpm copy oci:./registry/tiny-llama:1.0.0 localhost:5000/simplex/tiny-llama:1.0.0
    """
    from sxpm.ops.transfer import copy as do_copy

    h = home()
    result = do_copy(h, h.parse_ref(src), h.parse_ref(dst),
                     options=transport(insecure, jobs), reporter=reporter(quiet or as_json))
    _report(result, "copied to", as_json)


@click.command()
@click.argument("ref_text", metavar="REF", shell_complete=store_refs)
@click.option("--remote", is_flag=True, help="Read the manifest from the registry, not the "
                                            "store.")
@click.option("--insecure", is_flag=True, help="Allow plain HTTP to a non-loopback host.")
@json_option
def inspect(ref_text: str, remote: bool, insecure: bool, as_json: bool) -> None:
    """Print the raw manifest (or image index) REF names.

    \b
    Example:
      sxpm inspect oci:./registry/tiny-llama:1.0.0 --json
    """
    from sxpm.store.refs import resolve_local
    from sxpm.transport import TransportOptions, open_repository

    h = home()
    ref = h.parse_ref(ref_text)
    if remote:
        repo = open_repository(ref, TransportOptions(insecure=insecure))
        desc, data = repo.get_manifest(str(ref.digest) if ref.digest else (ref.tag or "latest"))
    else:
        desc = resolve_local(h.store, ref)
        data = h.store.read_blob(desc)
    manifest = json.loads(data)
    if as_json:
        emit_json({"ref": str(ref), "digest": str(desc.digest), "media_type": desc.media_type,
                   "size": len(data), "manifest": manifest})
        return
    click.echo(f"# {ref} {desc.digest}")
    click.echo(json.dumps(manifest, indent=2, sort_keys=True))


@click.command(name="list")
@json_option
def list_(as_json: bool) -> None:
    """List the refs in the store with kind, version, size and digest.

    \b
    Example:
      sxpm list --json
    """
    from sxpm.artifacts.describe import bytes_held, describe_held, model_traits
    from sxpm.core.oci import ANN_VARIANT, ImageIndex

    h = home()
    rows = []
    store = h.store
    if store.exists():
        for name, desc in sorted(store.refs().items()):
            if _REFERRERS_TAG.search(name):
                continue  # a signature listing (referrers tag schema), not an artifact
            entry: dict[str, Any] = {
                "ref": name, "digest": str(desc.digest), "media_type": desc.media_type,
                "kind": None, "name": None, "version": None, "size": None, "variants": [],
                **traits_json(None)}
            try:
                # Whatever variants were pulled: the row describes one the store holds
                # and counts the bytes it holds.
                info = describe_held(store, desc)
                entry.update(kind=info.kind, name=info.name, version=info.version,
                             size=bytes_held(store, desc),
                             **traits_json(model_traits(store, info)))
                if desc.is_index:
                    index = store.load_manifest(desc)
                    assert isinstance(index, ImageIndex)
                    entry["variants"] = [d.annotations.get(ANN_VARIANT, str(d.digest))
                                         for d in index.manifests]
            except (SxpmError, ValueError, RecursionError) as exc:
                # One bad artifact never hides the others: a warning, and its row.
                entry["error"] = exc.one_line() if isinstance(exc, SxpmError) else str(exc)
                click.echo(f"warning: {name}: {entry['error']}", err=True)
            rows.append(entry)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("the store is empty (pack or pull an artifact)")
        return
    table([[r["ref"], r["kind"] or "?", r["version"] or "?",
            human_size(r["size"]) if r["size"] is not None else "?",
            ",".join(r["variants"]) or "-", str(r["digest"])[:19]] for r in rows],
          ["REF", "KIND", "VERSION", "SIZE", "VARIANTS", "DIGEST"])


@click.command()
@click.argument("specs", nargs=-1, required=True, metavar="NAME[@VERSION]|REF...",
                shell_complete=store_refs)
@click.option("--keep-blobs", is_flag=True, help="Keep the blobs (the next `sxpm gc` "
                                                 "removes them).")
@click.option("--force", is_flag=True, help="Remove it even if a project's lock pins it.")
@json_option
def rm(specs: tuple[str, ...], keep_blobs: bool, force: bool, as_json: bool) -> None:
    """Remove artifacts: their refs and installed trees, then the blobs nothing else holds.

    \b
    Example:
      sxpm rm tiny-llama@1.0.0
      sxpm rm oci:./registry/tiny-llama:1.0.0 --keep-blobs
    """
    from sxpm.ops.lifecycle import remove

    h = home()
    results = []
    for spec in specs:
        out = remove(h, spec, keep_blobs=keep_blobs, force=force)
        results.append({"spec": spec, "refs": out.refs,
                        "installed": [str(i.path) for i in out.installed],
                        "blobs": out.blobs, "bytes_freed": out.bytes_freed})
        if not as_json:
            for ref in out.refs:
                click.echo(f"removed {ref}")
            for item in out.installed:
                click.echo(f"removed {item.kind} {item.name} {item.version} ({item.path})")
            if not keep_blobs:
                click.echo(f"freed {out.blobs} blob(s), {human_size(out.bytes_freed)}")
    if as_json:
        emit_json(results)


@click.command()
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
@json_option
def gc(dry_run: bool, as_json: bool) -> None:
    """Delete blobs nothing uses (not a ref, an installed tree, a project's lock, or the
    signature of one of those), and trees killed installs left behind.

    \b
    Example:
      sxpm gc --dry-run
    """
    # Imported here, not with the module: pull and push never remove trees, and loading
    # the install code (tarfile, records) costs them ~20 ms before their first request.
    from sxpm.installed.tree import remove_all_stale_trees
    from sxpm.ops.lifecycle import collect

    h = home()
    count, freed = collect(h, dry_run=dry_run)
    trees = 0 if dry_run else remove_all_stale_trees(h.root)
    if trees and not as_json:
        click.echo(f"removed {trees} unfinished install tree(s)")
    if as_json:
        emit_json({"blobs": count, "bytes_freed": freed, "dry_run": dry_run, "trees": trees})
        return
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{verb} {count} blob(s), {human_size(freed)}")


@click.command()
@json_option
def du(as_json: bool) -> None:
    """Disk usage per artifact: bytes on disk, shared with others, freed by `sxpm rm`.

    \b
    Example:
      sxpm du --json
    """
    from sxpm.ops.lifecycle import disk_usage

    usage = disk_usage(home())
    rows = [{"ref": u.ref, "kind": u.kind, "size": u.size, "shared": u.shared,
             "reclaimable": u.reclaimable} for u in usage.artifacts]
    if as_json:
        emit_json({"artifacts": rows, "total": usage.total})
        return
    table([[u.ref, u.kind or "-", human_size(u.size), human_size(u.shared),
            human_size(u.reclaimable)] for u in usage.artifacts],
          ["REF", "KIND", "SIZE", "SHARED", "RECLAIMABLE"])
    click.echo(f"store total: {human_size(usage.total)}")


@click.command()
@click.argument("ref_text", metavar="[REF]", required=False)
@click.option("--fix", is_flag=True, help="Delete corrupt blobs so the next pull fetches "
                                          "them again.")
@click.option("--key", "keys", multiple=True,
              help="With REF: trust this key (ed25519:... or a .pub file) instead of the "
                   "policy.")
@click.option("--identity", help="With REF: trust this Sigstore identity instead of the "
                                 "policy (with --issuer).")
@click.option("--issuer", help="With REF: the OIDC issuer of --identity.")
@click.option("--insecure", is_flag=True, help="Allow plain HTTP to a non-loopback host.")
@json_option
def verify(ref_text: str | None, fix: bool, keys: tuple[str, ...], identity: str | None,
           issuer: str | None, insecure: bool, as_json: bool) -> None:
    """Re-hash every blob in the store; with REF, check REF's signatures instead.

    Without REF: exit 1 naming each blob that does not match. With REF: exit 1
    unless REF (in the store, else in its registry) has a valid signature from a
    signer the trust policy (or --key / --identity) trusts.

    \b
    Example:
      sxpm verify
      sxpm verify --fix && sxpm pull REF
      sxpm verify oci:./registry/tiny-llama:1.0.0
    """
    from sxpm.core.reference import Digest

    if ref_text is not None:
        if fix:
            raise click.UsageError("--fix checks the whole store; give it without REF")
        from sxpm.cli.trust import verify_ref

        verify_ref(ref_text, keys, identity, issuer, insecure, as_json)
        return
    if keys or identity or issuer:
        raise click.UsageError("--key, --identity and --issuer need a REF")
    h = home()
    if not h.store.exists():
        report_checked, bad = 0, []
    else:
        report = h.store.verify()
        report_checked, bad = report.checked, report.bad
    removed = []
    if fix:
        for digest, problem in bad:
            if not problem.startswith("missing"):
                h.store.remove_blob(Digest.parse(digest))
                removed.append(digest)
    if as_json:
        emit_json({"checked": report_checked, "removed": removed,
                   "bad": [{"digest": d, "problem": p} for d, p in bad]})
    else:
        for digest, problem in bad:
            click.echo(f"bad blob {digest}: {problem}"
                       + (" (removed)" if digest in removed else ""))
        if not bad:
            click.echo(f"verified {report_checked} blob(s): all intact")
    if bad and not fix:
        raise StoreError(f"{len(bad)} blob(s) in the store are corrupt or missing "
                         f"(first: {bad[0][0]})",
                         hint="run `sxpm verify --fix`, then pull the affected artifacts again")
