"""Shell completion: `sxpm completion bash|zsh|fish` and the callbacks that complete names.

Click completes commands and flags by itself; the callbacks here add what only sxpm
knows: installed models and experts (of the home, and of the project found from the
current directory), the refs in the store, and variant names. A callback runs on every
Tab press, so each reads only install records and the store's refs, and never raises:
whatever goes wrong (no home yet, a broken record) completes nothing rather than
printing a traceback into the user's shell.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from click.shell_completion import CompletionItem, get_completion_class

Completer = Callable[[click.Context, click.Parameter, str], list[CompletionItem]]

SHELLS = ("bash", "zsh", "fish")


@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the shell completion script for SHELL.

    \b
    Example:
      eval "$(sxpm completion bash)"     # in ~/.bashrc
      eval "$(sxpm completion zsh)"      # in ~/.zshrc
      sxpm completion fish > ~/.config/fish/completions/sxpm.fish
    """
    root = click.get_current_context().find_root().command
    cls = get_completion_class(shell)
    assert cls is not None  # the Choice above holds only shells click knows
    click.echo(cls(root, {}, "sxpm", "_SXPM_COMPLETE").source())


def _quiet(find: Callable[[click.Context, str], list[str]]) -> Completer:
    def complete(ctx: click.Context, param: click.Parameter, incomplete: str
                 ) -> list[CompletionItem]:
        try:
            names = find(ctx, incomplete)
        except Exception:  # noqa: BLE001 - completion must never break the shell
            return []
        return [CompletionItem(n) for n in sorted(set(names)) if n.startswith(incomplete)]
    return complete


def _home() -> Any:
    from sxpm.home import Home

    return Home.from_env()


def _installed(kind: str, incomplete: str) -> list[str]:
    from sxpm.ops.project import installed_here

    items = installed_here(_home(), kind)
    if "@" in incomplete:  # NAME@VERSION once the user asks for a version
        return [f"{p.item.name}@{p.item.version}" for p in items]
    return [p.item.name for p in items]


def installed(kind: str) -> Completer:
    """Names of installed ``kind``s (``NAME@VERSION`` after an ``@``)."""
    return _quiet(lambda _ctx, incomplete: _installed(kind, incomplete))


installed_models = installed("model")
installed_experts = installed("expert")


def _store_refs(_ctx: click.Context, _incomplete: str) -> list[str]:
    store = _home().store
    if not store.exists():
        return []
    # Signature listings (the referrers tag schema) are not artifacts to name.
    return [name for name in store.refs() if "sha256-" not in name.rpartition(":")[2]]


store_refs = _quiet(_store_refs)


def _variants(ctx: click.Context, _incomplete: str) -> list[str]:
    """Variants of what the command names so far (a ref in the store, or an installed
    name), else of every image index in the store."""
    from sxpm.core.oci import ANN_VARIANT, ImageIndex

    named = [str(v) for k, v in ctx.params.items() if k in ("model", "ref_text", "spec")
             and isinstance(v, str)]
    home = _home()
    out: list[str] = []
    for kind in ("model", "expert"):
        from sxpm.ops.project import installed_here

        for placed in installed_here(home, kind):
            if not named or placed.item.name in named:
                out.append(str(placed.item.record.get("variant") or ""))
    store = home.store
    if store.exists():
        for ref, desc in store.refs().items():
            if not desc.is_index or (named and not any(n in ref for n in named)):
                continue
            index = store.load_manifest(desc)
            if isinstance(index, ImageIndex):
                out += [d.annotations.get(ANN_VARIANT, "") for d in index.manifests]
    return [v for v in out if v]


variant_names = _quiet(_variants)
