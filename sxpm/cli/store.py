"""store serve: this home's store as a read-only OCI registry for other machines."""

from __future__ import annotations

import click

from sxpm.cli._common import home
from sxpm.errors import PortInUseError


@click.group(name="store")
def store_group() -> None:
    """Share this home's store with other machines."""


@store_group.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 for the whole LAN).")
@click.option("--port", type=click.IntRange(0, 65535), default=5000, show_default=True,
              help="Port to listen on (0 picks a free one).")
@click.option("--log", "log_requests", is_flag=True, help="Print one line per request.")
def serve(host: str, port: int, log_requests: bool) -> None:
    """Serve the store read-only as an OCI distribution registry.

    Other homes pull from it as HOST:PORT/REPOSITORY:TAG, where REPOSITORY is the
    repository path of a stored ref (``simplex/tiny-llama`` for
    ``registry.example/simplex/tiny-llama:1.0``), or use it as a mirror of that
    registry. Only what the store's refs reach is served; writes are refused.

    \b
    Example:
      sxpm store serve --host 0.0.0.0 --port 5000
    """
    from sxpm.store.serve import StoreServer

    h = home()
    try:
        server = StoreServer(h.store, host, port,
                             log=(lambda line: click.echo(line, err=True)) if log_requests
                             else None)
    except OSError as exc:
        raise PortInUseError(host, port, exc.strerror or "cannot listen") from None
    click.echo(f"Serving {h.store.root} read-only at http://{server.address}/v2/ "
               "(Ctrl-C stops)", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
