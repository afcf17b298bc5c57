"""Options and output helpers shared by the command modules."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from sxpm.core.categories import CAPABILITIES, CATEGORIES, Traits
from sxpm.core.progress import Reporter, TqdmReporter
from sxpm.home import Home

if TYPE_CHECKING:
    from sxpm.core.oci import Descriptor
    from sxpm.core.reference import Reference
    from sxpm.index.format import IndexEntry
    from sxpm.transport import TransportOptions

F = TypeVar("F", bound=Callable[..., Any])


def home() -> Home:
    return Home.from_env()


def parse_ref(h: Home, text: str) -> Reference:
    return h.parse_ref(text)


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(f)


def transfer_options(f: F) -> F:
    f = click.option("--quiet", "-q", is_flag=True, help="No progress bars.")(f)
    f = click.option("--insecure", is_flag=True,
                     help="Allow plain HTTP and unverified TLS (loopback never needs it).")(f)
    f = click.option("--jobs", "-j", type=click.IntRange(1, 64), default=4, show_default=True,
                     help="Parallel transfers.")(f)
    return f


_TRANSPORT_ENV = {"SXPM_RETRIES": "retries", "SXPM_RANGE_MIN": "range_min_bytes",
                  "SXPM_RANGE_PIECE": "range_piece_bytes",
                  "SXPM_RANGE_STREAMS": "range_streams", "SXPM_CHUNK": "chunk_bytes",
                  "SXPM_STALL_BYTES": "stall_bytes"}
# Seconds: the read timeout, the stall window, the deadline of a body read whole.
_TRANSPORT_SECONDS = {"SXPM_TIMEOUT": "timeout_s", "SXPM_STALL_WINDOW": "stall_window_s",
                      "SXPM_DEADLINE": "deadline_s"}


def transport(insecure: bool, jobs: int) -> TransportOptions:
    """Options from the command line, and tuning from ``SXPM_*`` variables (integers)."""
    import os

    from sxpm.transport import TransportOptions

    tuning: dict[str, Any] = {field: int(value) for name, field in _TRANSPORT_ENV.items()
              if (value := os.environ.get(name, "")).isdigit() and int(value) > 0}
    seconds: dict[str, Any] = {}
    for name, field in _TRANSPORT_SECONDS.items():
        try:
            if float(os.environ.get(name, "")) > 0:
                seconds[field] = float(os.environ[name])
        except ValueError:
            pass
    return TransportOptions(insecure=insecure, jobs=jobs, **tuning, **seconds)


def reporter(quiet: bool) -> Reporter:
    return Reporter() if quiet else TqdmReporter()


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


# --json prints one key style (snake_case) and one word for one thing across commands
# (docs/store.md, "JSON keys"); the file formats (OCI documents, index lines) keep theirs.
_JSON_KEYS = {"mediaType": "media_type", "artifactType": "artifact_type", "vers": "version",
              "deps": "dependencies"}


def descriptor_json(desc: Descriptor) -> dict[str, Any]:
    """An OCI descriptor as --json prints it; annotations keep their own names."""
    return {_JSON_KEYS.get(k, k): v for k, v in desc.to_dict().items()}


def entry_json(entry: IndexEntry) -> dict[str, Any]:
    """An index line as --json prints it (the line itself keeps cargo's `vers`/`deps`);
    like the line, it has a ``category`` and ``capabilities`` when the line has them."""
    return {_JSON_KEYS.get(k, k): v for k, v in entry.to_dict().items()}


def traits_json(traits: Traits | None) -> dict[str, Any]:
    """A model's ``category`` and ``capabilities`` as every --json prints them."""
    return traits.to_dict() if traits else {"category": None, "capabilities": []}


def pack_traits_options(f: F) -> F:
    """``--category`` and ``--capability`` of pack and publish (models only)."""
    f = click.option("--capability", "capabilities", type=click.Choice(CAPABILITIES),
                     multiple=True,
                     help="A model's capability, repeatable (default: read from the GGUF).")(f)
    return click.option("--category", type=click.Choice(CATEGORIES),
                        help="A model's category (default: mnemonic for an embedding model, "
                             "else cognitive).")(f)


category_option = click.option(
    "--category", type=click.Choice(CATEGORIES),
    help="Only models of this category (cognitive, mnemonic, specialist).")


def table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def stdout_is_tty() -> bool:
    return sys.stdout.isatty()


def skip_verify_option(f: F) -> F:
    return click.option(
        "--insecure-skip-verify", is_flag=True,
        help="Do not check signatures against the trust policy (prints a warning).")(f)


def warn_skip_verify(ref: Reference) -> None:
    click.echo(f"warning: --insecure-skip-verify: the signatures of {ref} are not checked "
               "against the trust policy", err=True)
