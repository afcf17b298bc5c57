"""``list|install|remove|info`` for one kind of artifact, shared by ``sxpm model`` and
``sxpm expert``: the commands are the same, only a few details differ per kind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from sxpm.cli._common import (
    category_option,
    emit_json,
    home,
    json_option,
    reporter,
    skip_verify_option,
    table,
    traits_json,
    transfer_options,
    transport,
    warn_skip_verify,
)
from sxpm.cli.complete import installed, variant_names
from sxpm.core.detect import memory_budget
from sxpm.core.humanize import human_size, with_article
from sxpm.errors import InputError, NotFoundError


def kind_group(kind: str, *, example_ref: str, example_name: str) -> click.Group:
    """The command group of ``kind`` ("model" or "expert")."""
    plural = f"{kind}s"

    @click.group(name=kind, help=f"""Install, list, inspect and remove {plural}.

    \b
    Example:
      sxpm {kind} install {example_ref}
      sxpm {kind} list
    """)
    def group() -> None:
        pass

    @group.command(name="list", help=f"""List installed {plural}.

    \b
    Example:
      sxpm {kind} list --json
    """)
    @click.option("--root", type=click.Path(path_type=Path),
                  help="Install root (default: home, and the project found from here).")
    @json_option
    def list_cmd(root: Path | None, as_json: bool, category: str | None = None) -> None:
        from sxpm.installed.records import installed_traits, list_installed
        from sxpm.ops.project import PlacedInstall, installed_here

        items = ([PlacedInstall(i, None) for i in list_installed(root, kind)] if root
                 else installed_here(home(), kind))
        rows = []
        for p in items:
            row: dict[str, Any] = {
                "name": p.item.name, "version": p.item.version,
                "variant": p.item.record.get("variant"), "digest": p.item.record.get("digest"),
                "ref": p.item.record.get("ref"), "path": str(p.item.path),
                "project": p.project}
            if kind == "model":
                row.update(traits_json(installed_traits(p.item)))
                if category is not None and row["category"] != category:
                    continue
            rows.append(row)
        if as_json:
            emit_json(rows)
            return
        if not rows:
            click.echo(f"no {category + ' ' if category else ''}{plural} installed "
                       f"(sxpm {kind} install REF)")
            return
        table([[str(r["name"]), str(r["version"]), str(r["variant"] or "-"),
                str(r["project"] or "-"), str(r["path"])]
               for r in rows], ["NAME", "VERSION", "VARIANT", "PROJECT", "PATH"])

    if kind == "model":
        list_cmd = category_option(list_cmd)

    for_option = click.option(
        "--for", "for_model", metavar="MODEL",
        help="Install for this installed base model (default: the newest installed base "
             "the expert fits); for an expert with several bases, the variant built for it.")

    @group.command(name="install", help=f"""Install the {kind} NAME[@REQ] (the newest
    matching version the index lists, not yanked) or REF, pulling what is missing, as hard
    links into the store.{_SOURCE_HELP if kind == "expert" else ""}

    \b
    Example:
      sxpm {kind} install {example_name.split('@')[0]}@^1.0
      sxpm {kind} install {example_ref}{' --for tiny-llama' if kind == 'expert' else
                                        ' --variant F16'}
    """)
    @click.argument("spec", metavar="NAME[@REQ]|REF")
    @click.option("--variant", help="Variant to install (default for a model: the largest "
                  "that fits this machine's accelerator, or RAM; else the first).",
                  shell_complete=variant_names)
    @click.option("--root", type=click.Path(path_type=Path),
                  help="Install root (default: home).")
    @click.option("--index", "index", metavar="INDEX",
                  help="Index to look NAME up in (default: SXPM_INDEX, the project's, the "
                       "home's config).")
    @click.option("--repair", is_flag=True, help="Verify the stored blobs, fetch any that "
                  "changed, and re-link the installed files from them.")
    @transfer_options
    @skip_verify_option
    @json_option
    def install_cmd(spec: str, variant: str | None, root: Path | None, index: str | None,
                    repair: bool, quiet: bool, insecure: bool, jobs: int,
                    insecure_skip_verify: bool, as_json: bool, **extra: Any) -> None:
        from sxpm.ops.install import install
        from sxpm.ops.names import resolve_spec
        from sxpm.ops.sources import is_source_spec

        h = home()
        for_model = extra.get("for_model")
        if for_model and variant:
            raise click.UsageError("--for and --variant choose the same thing; give one")
        if kind == "expert" and is_source_spec(spec):
            # A git repository or a local path: packed into the store here, then
            # installed from there like any other reference.
            from sxpm.ops.fetch import policy_for
            from sxpm.ops.names import Resolved
            from sxpm.ops.sources import pack_source

            named = Resolved(pack_source(h, spec, policy=policy_for(h)).ref)
            extra["pull_missing"] = False
        else:
            named = resolve_spec(h, spec, kind, index=index, variant=variant,
                                 insecure=insecure)
        if insecure_skip_verify:
            warn_skip_verify(named.ref)
        kw: dict[str, Any] = {"root": root, "options": transport(insecure, jobs),
                              "reporter": reporter(quiet or as_json),
                              "insecure_skip_verify": insecure_skip_verify,
                              "expect": named.expect, "repair": repair,
                              "pull_missing": extra.get("pull_missing", True)}
        if kind == "expert" and variant is None:
            # Checked against the installed base it is for (--for, else the one that fits)
            # before anything is installed.
            from sxpm.runner.locate import install_expert

            installed = install_expert(h, named.ref, for_model, **kw)
        else:
            if kind == "model" and variant is None:
                kw["memory_budget"] = memory_budget  # measured only if it has variants
            installed = install(h, named.ref, variant=variant, **kw)
        if installed.kind != kind:
            raise InputError(f"{spec} is {installed.kind!r}, not {with_article(kind)} "
                             f"(installed anyway at {installed.path})",
                             hint=f"use `sxpm {installed.kind}` commands")
        if as_json:
            emit_json({"name": installed.name, "version": installed.version,
                       "path": str(installed.path), **installed.record})
            return
        base, missing = "", None
        if kind == "expert":  # which base it was installed for, chosen or given
            from sxpm.runner.locate import expert_base, missing_base_hint

            base = expert_base(h, installed) or ""
            # Installing the expert first is fine; `run` checks the base when there is one.
            missing = missing_base_hint(h, installed)
        click.echo(f"installed {kind} {installed.name} {installed.version}"
                   + (f" for {base}" if base else "") + f" at {installed.path}")
        if missing:
            click.echo(f"note: its base model {base} is not installed; {missing}", err=True)

    if kind == "expert":
        install_cmd = for_option(install_cmd)

    @group.command(name="remove", help=f"""Remove an installed {kind} (the store keeps its
    blobs until `sxpm gc`).

    \b
    Example:
      sxpm {kind} remove {example_name}
    """)
    @click.argument("spec", metavar="NAME[@VERSION]", shell_complete=installed(kind))
    @click.option("--root", type=click.Path(path_type=Path), help="Install root (default: home).")
    def remove_cmd(spec: str, root: Path | None, for_model: str | None = None) -> None:
        from sxpm.installed.tree import remove_installed, remove_trees

        name, _, version = spec.partition("@")
        if for_model is None:
            removed = remove_installed(root or home().root, kind, name, version or None)
        else:
            removed = remove_trees(_built_for(root or home().root, name, version or None,
                                              for_model))
        for item in removed:
            click.echo(f"removed {kind} {item.name} {item.version}"
                       + (f" for {for_model}" if for_model else ""))

    if kind == "expert":
        remove_cmd = click.option(
            "--for", "for_model", metavar="MODEL",
            help="Remove only the tree installed for this base model.")(remove_cmd)

    @group.command(name="info", help=f"""Describe {with_article(kind)}: {_INFO_WHAT[kind]}.

    \b
    Example:
      sxpm {kind} info {example_name.split('@')[0]}
    """)
    @click.argument("spec", metavar="NAME[@VERSION]|REF", shell_complete=installed(kind))
    @click.option("--variant", help="Variant to describe (default: the installed or first).",
                  shell_complete=variant_names)
    @json_option
    def info_cmd(spec: str, variant: str | None, as_json: bool,
                 for_model: str | None = None) -> None:
        if for_model and variant:
            raise click.UsageError("--for and --variant choose the same thing; give one")
        info_command(kind, spec, variant, as_json, for_model)

    if kind == "expert":
        info_cmd = click.option(
            "--for", "for_model", metavar="MODEL",
            help="Describe the tree installed for this base model.")(info_cmd)

    return group


_SOURCE_HELP = """ An expert can also come from its source, packed on the fly with
    every check of `sxpm pack`: git+https://HOST/REPO#TAG, git+file:///PATH#TAG,
    git+git://HOST/REPO#TAG, or file:///PATH (a directory or a legacy .expert)."""

_INFO_WHAT = {
    "model": "architecture, quantization, parameters, files, variants",
    "expert": "base models, adapter, prompt template, files, variants",
}


_LABELS = {"param_size": "paramSize"}


def _built_for(root: Path, name: str, version: str | None, model: str) -> list[Any]:
    """The installed trees of expert ``name`` built for base ``model`` (one version of
    an expert may be installed for several bases, side by side)."""
    from sxpm.installed.records import find_installed
    from sxpm.runner.locate import expert_base

    h = home()
    found = [i for i in find_installed(root, "expert", name, version)
             if expert_base(h, i) == model]
    if not found:
        what = f"{name}@{version}" if version else name
        raise NotFoundError(f"No installed expert {what} for {model}",
                            hint="`sxpm expert list` shows each tree and its base (VARIANT)")
    return found


def info_command(kind: str, spec: str, variant: str | None, as_json: bool,
                 for_model: str | None = None) -> None:
    from sxpm.artifacts.describe import describe_held, model_traits
    from sxpm.core.oci import ANN_BASE_MODEL, ANN_VARIANT, ImageIndex
    from sxpm.ops.project import installed_here
    from sxpm.store.refs import resolve_local

    h = home()
    name, _, version = spec.partition("@")
    placed = [p for p in installed_here(h, kind) if p.item.name == name
              and (not version or p.item.version == version)] \
        if "/" not in spec and ":" not in spec else []
    if for_model is not None:
        from sxpm.runner.locate import expert_base

        placed = [p for p in placed if expert_base(h, p.item) == for_model]
        if not placed:
            raise NotFoundError(f"No installed expert {spec} for {for_model}",
                                hint=f"sxpm expert install {name} --for {for_model}")
    found = [p.item for p in placed]
    if found:
        ref = h.parse_ref(found[-1].record["ref"])
        variant = variant or found[-1].record.get("variant")
    else:
        ref = h.parse_ref(spec)
    top = resolve_local(h.store, ref)
    info = describe_held(h.store, top, variant)  # no variant asked: one the store holds
    if info.kind != kind:
        raise InputError(f"{spec} is {info.kind!r}, not {with_article(kind)}")
    variants: list[str] = []
    if top.is_index:
        index = h.store.load_manifest(top)
        assert isinstance(index, ImageIndex)
        variants = [d.annotations.get(ANN_VARIANT, "") for d in index.manifests]
    data: dict[str, Any] = {
        "name": info.name, "version": info.version, "ref": str(ref),
        "digest": str(top.digest), "variant": info.variant, "variants": variants,
        "size": info.size,
        "files": [{"path": layer.title, "media_type": layer.media_type, "size": layer.size,
                   "digest": str(layer.digest)} for layer in info.manifest.layers],
        "installed": [str(i.path) for i in found],
        "project": placed[-1].project if placed else None}
    if kind == "model":
        cfg = info.config.get("config", {})
        data.update({"architecture": cfg.get("architecture"), "format": cfg.get("format"),
                     "quantization": cfg.get("quantization"),
                     "param_size": cfg.get("paramSize"),
                     **traits_json(model_traits(h.store, info))})
        keys = ["name", "version", "ref", "digest", "architecture", "quantization", "param_size"]
    else:
        from sxpm.runner.locate import base_model_names

        data.update({
            "base_models": list(base_model_names(info.config)),
            "base_model": info.manifest.annotations.get(ANN_BASE_MODEL),
            "adapter_architecture": info.manifest.annotations.get(
                "org.simplex.adapter.architecture"),
            "description": info.config.get("description"),
            "license": info.config.get("license"),
        })
        keys = ["name", "version", "ref", "digest", "base_model", "adapter_architecture",
                "license", "description"]
    if as_json:
        emit_json(data)
        return
    for key in keys:
        # The text labels predate the JSON keys' one style; the text output stays as it was.
        click.echo(f"{_LABELS.get(key, key):13} {data[key]}")
    if data["project"]:
        click.echo(f"{'project':13} {data['project']} ({found[-1].path})")
    click.echo(f"{'size':13} {human_size(info.size)}")
    if variants:
        click.echo(f"{'variants':13} {', '.join(variants)} (showing {info.variant})")
    for f in data["files"]:
        click.echo(f"  {f['path']}  {human_size(f['size'])}  {f['digest'][:19]}")
