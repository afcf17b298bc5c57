"""sxpm model list|install|remove|info."""

from __future__ import annotations

from pathlib import Path

import click

from sxpm.cli._common import (
    emit_json,
    home,
    human_size,
    json_option,
    reporter,
    skip_verify_option,
    table,
    transfer_options,
    transport,
    warn_skip_verify,
)
from sxpm.errors import InputError


@click.group()
def model() -> None:
    """Install, list, inspect and remove models.

    \b
    Example:
      sxpm model install oci:./registry/tiny-llama:1.0.0
      sxpm model list
    """


@model.command(name="list")
@click.option("--root", type=click.Path(path_type=Path), help="Install root (default: home).")
@json_option
def list_models(root: Path | None, as_json: bool) -> None:
    """List installed models.

    \b
    Example:
      sxpm model list --json
    """
    from sxpm.install import list_installed

    h = home()
    items = list_installed(root or h.root, "model")
    rows = [{"name": i.name, "version": i.version, "variant": i.record.get("variant"),
             "digest": i.record.get("digest"), "ref": i.record.get("ref"), "path": str(i.path)}
            for i in items]
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no models installed (sxpm model install REF)")
        return
    table([[str(r["name"]), str(r["version"]), str(r["variant"] or "-"), str(r["path"])]
           for r in rows],
          ["NAME", "VERSION", "VARIANT", "PATH"])


@model.command(name="install")
@click.argument("ref_text", metavar="REF")
@click.option("--variant", help="Variant to install (default: the first).")
@click.option("--root", type=click.Path(path_type=Path), help="Install root (default: home).")
@transfer_options
@skip_verify_option
@json_option
def install_model(ref_text: str, variant: str | None, root: Path | None, quiet: bool,
                  insecure: bool, jobs: int, insecure_skip_verify: bool, as_json: bool) -> None:
    """Install the model REF (pulling what is missing) as hard links into the store.

    \b
    Example:
      sxpm model install oci:./registry/tiny-llama:1.0.0 --variant F16
    """
    from sxpm.install import install

    h = home()
    ref = h.parse_ref(ref_text)
    if insecure_skip_verify:
        warn_skip_verify(ref)
    installed = install(h, ref, variant=variant, root=root,
                        options=transport(insecure, jobs), reporter=reporter(quiet or as_json),
                        insecure_skip_verify=insecure_skip_verify)
    if installed.kind != "model":
        raise InputError(f"{ref_text} is {installed.kind!r}, not a model (installed anyway "
                         f"at {installed.path})", hint=f"use `sxpm {installed.kind}` commands")
    if as_json:
        emit_json({"name": installed.name, "version": installed.version,
                   "path": str(installed.path), **installed.record})
        return
    click.echo(f"installed model {installed.name} {installed.version} at {installed.path}")


@model.command(name="remove")
@click.argument("spec", metavar="NAME[@VERSION]")
@click.option("--root", type=click.Path(path_type=Path), help="Install root (default: home).")
def remove_model(spec: str, root: Path | None) -> None:
    """Remove an installed model (the store keeps its blobs until `sxpm gc`).

    \b
    Example:
      sxpm model remove tiny-llama@1.0.0
    """
    from sxpm.install import remove_installed

    name, _, version = spec.partition("@")
    for item in remove_installed(root or home().root, "model", name, version or None):
        click.echo(f"removed model {item.name} {item.version}")


@model.command(name="info")
@click.argument("spec", metavar="NAME[@VERSION]|REF")
@click.option("--variant", help="Variant to describe (default: the first).")
@json_option
def info_model(spec: str, variant: str | None, as_json: bool) -> None:
    """Describe a model: architecture, quantization, parameters, files, variants.

    \b
    Example:
      sxpm model info tiny-llama
    """
    from sxpm.distribution import resolve_local
    from sxpm.install import describe, find_installed
    from sxpm.oci import ANN_VARIANT, ImageIndex

    h = home()
    name, _, version = spec.partition("@")
    found = find_installed(h.root, "model", name, version or None) if "/" not in spec and \
        ":" not in spec else []
    if found:
        ref = h.parse_ref(found[-1].record["ref"])
        variant = variant or found[-1].record.get("variant")
    else:
        ref = h.parse_ref(spec)
    top = resolve_local(h, ref)
    info = describe(h.store, top, variant)
    if info.kind != "model":
        raise InputError(f"{spec} is {info.kind!r}, not a model")
    variants: list[str] = []
    if top.is_index:
        index = h.store.load_manifest(top)
        assert isinstance(index, ImageIndex)
        variants = [d.annotations.get(ANN_VARIANT, "") for d in index.manifests]
    cfg = info.config.get("config", {})
    data = {"name": info.name, "version": info.version, "ref": str(ref),
            "digest": str(top.digest), "variant": info.variant, "variants": variants,
            "architecture": cfg.get("architecture"), "format": cfg.get("format"),
            "quantization": cfg.get("quantization"), "paramSize": cfg.get("paramSize"),
            "size": info.size,
            "files": [{"path": layer.title, "mediaType": layer.media_type, "size": layer.size,
                       "digest": str(layer.digest)} for layer in info.manifest.layers],
            "installed": [str(i.path) for i in found]}
    if as_json:
        emit_json(data)
        return
    for key in ("name", "version", "ref", "digest", "architecture", "quantization",
                "paramSize"):
        click.echo(f"{key:13} {data[key]}")
    click.echo(f"{'size':13} {human_size(info.size)}")
    if variants:
        click.echo(f"{'variants':13} {', '.join(variants)} (showing {info.variant})")
    for f in data["files"]:
        click.echo(f"  {f['path']}  {human_size(f['size'])}  {f['digest'][:19]}")
