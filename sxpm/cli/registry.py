"""login, logout, referrers, tags: talking to a registry itself."""

from __future__ import annotations

import sys

import click

from sxpm.cli._common import descriptor_json, emit_json, home, json_option, table
from sxpm.errors import InputError


def _host(text: str) -> str:
    host = text.strip().removeprefix("https://").removeprefix("http://").split("/", 1)[0]
    if not host:
        raise InputError(f"Invalid registry {text!r}", hint="write HOST[:PORT]")
    return host


@click.command()
@click.argument("registry")
@click.option("--username", "-u", help="User name (asked for when not given).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--insecure", is_flag=True, help="Allow plain HTTP and unverified TLS.")
def login(registry: str, username: str | None, password_stdin: bool, insecure: bool) -> None:
    """Check credentials for REGISTRY and save them in Docker's config.json.

    The file is $DOCKER_CONFIG/config.json (default ~/.docker/config.json), or its
    credential helper, so docker and oras share the login.

    \b
    Example:
      echo "$TOKEN" | sxpm login ghcr.io -u me --password-stdin
    """
    from sxpm.transport import TransportOptions, credentials
    from sxpm.transport.remote import login as do_login

    host = _host(registry)
    if username is None:
        username = click.prompt("Username", err=True)
    if password_stdin:
        password = sys.stdin.read().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, err=True)
    if not username or not password:
        raise InputError("Empty user name or password", hint="give both")
    creds = credentials.Credentials(username, password)
    do_login(host, creds, TransportOptions(insecure=insecure))
    path = credentials.store(host, creds)
    click.echo(f"Login succeeded for {host} (saved in {path})")


@click.command()
@click.argument("registry")
def logout(registry: str) -> None:
    """Forget the saved credentials of REGISTRY.

    \b
    Example:
      sxpm logout ghcr.io
    """
    from sxpm.transport import credentials

    host = _host(registry)
    if credentials.erase(host):
        click.echo(f"Removed the credentials of {host}")
    else:
        click.echo(f"No credentials were saved for {host}")


@click.command()
@click.argument("ref_text", metavar="REF")
@click.option("--artifact-type", help="Only referrers of this artifact type.")
@click.option("--insecure", is_flag=True, help="Allow plain HTTP and unverified TLS.")
@json_option
def referrers(ref_text: str, artifact_type: str | None, insecure: bool, as_json: bool) -> None:
    """List the artifacts (signatures, SBOMs...) that refer to REF in its registry.

    Uses the referrers API, or the sha256-<hex> tag where the registry has none.

    \b
    Example:
      sxpm referrers localhost:5000/simplex/tiny-llama:1.0.0 --json
    """
    from sxpm.ops.transfer import list_referrers
    from sxpm.transport import TransportOptions

    ref = home().parse_ref(ref_text)
    found = list_referrers(ref, artifact_type, options=TransportOptions(insecure=insecure))
    if as_json:
        emit_json([descriptor_json(d) for d in found])
        return
    if not found:
        click.echo(f"no referrers of {ref}")
        return
    table([[str(d.digest), d.artifact_type or "-", str(d.size)] for d in found],
          ["DIGEST", "ARTIFACT TYPE", "SIZE"])


@click.command()
@click.argument("repository", metavar="REPOSITORY")
@click.option("--insecure", is_flag=True, help="Allow plain HTTP and unverified TLS.")
@json_option
def tags(repository: str, insecure: bool, as_json: bool) -> None:
    """List the tags REPOSITORY has in its registry (no index needed).

    \b
    Example:
      sxpm tags oci:./registry/tiny-llama
      sxpm tags localhost:5000/simplex/tiny-llama --json
    """
    from sxpm.transport import TransportOptions, open_repository

    ref = home().parse_ref(repository)
    if ref.tag or ref.digest:
        raise InputError(f"{repository} names a tag or digest, not a repository",
                         hint=f"sxpm tags {ref.repository_ref}")
    found = sorted(t for t in open_repository(ref, TransportOptions(insecure=insecure)).tags()
                   if not t.startswith(("sha256-", "sha512-")))  # referrers listings
    if as_json:
        emit_json({"repository": str(ref), "tags": found})
        return
    if not found:
        click.echo(f"no tags in {ref}")
    for tag in found:
        click.echo(tag)
