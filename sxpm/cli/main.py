"""Entry point: the command group, lazy loading of commands and error reporting.

Commands live one group per module and are imported only when invoked, so
``sxpm --help`` and ``sxpm --version`` stay fast.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from typing import Any

import click

from sxpm._version import __version__
from sxpm.errors import EXIT_FAILURE, EXIT_USAGE, SxpmError

# command name -> (module, attribute, one-line help for the listing)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "pack": ("sxpm.cli.artifacts", "pack", "Pack a model, expert or package into the store."),
    "push": ("sxpm.cli.artifacts", "push", "Push an artifact from the store to its registry."),
    "pull": ("sxpm.cli.artifacts", "pull", "Pull an artifact from a registry into the store."),
    "copy": ("sxpm.cli.artifacts", "copy", "Copy an artifact between two registries."),
    "inspect": ("sxpm.cli.artifacts", "inspect", "Show an artifact's manifest."),
    "list": ("sxpm.cli.artifacts", "list_", "List the artifacts in the store."),
    "rm": ("sxpm.cli.artifacts", "rm", "Remove an artifact: refs, installed trees, blobs."),
    "gc": ("sxpm.cli.artifacts", "gc", "Delete blobs that nothing refers to."),
    "du": ("sxpm.cli.artifacts", "du", "Show the disk space each artifact takes."),
    "verify": ("sxpm.cli.artifacts", "verify",
               "Re-hash the store's blobs, or check REF's signatures."),
    "keygen": ("sxpm.cli.trust", "keygen", "Create an Ed25519 signing key."),
    "sign": ("sxpm.cli.trust", "sign", "Sign an artifact (key or Sigstore keyless)."),
    "model": ("sxpm.cli.model", "model", "Install, list, inspect and remove models."),
    "import": ("sxpm.cli.importing", "import_",
               "Import models on disk, from Ollama or the HF cache."),
    "init": ("sxpm.cli.project", "init", "Create simplex.toml."),
    "add": ("sxpm.cli.project", "add", "Add a requirement to simplex.toml."),
    "remove": ("sxpm.cli.project", "remove", "Remove a requirement from simplex.toml."),
    "lock": ("sxpm.cli.project", "lock_cmd", "Resolve simplex.toml into simplex.lock."),
    "install": ("sxpm.cli.project", "install", "Install the project's locked artifacts."),
    "update": ("sxpm.cli.project", "update", "Move locked versions forward."),
    "tree": ("sxpm.cli.project", "tree", "Show the locked dependency tree."),
    "why": ("sxpm.cli.project", "why", "Explain why an artifact is locked."),
    "login": ("sxpm.cli.registry", "login", "Save credentials for a registry."),
    "logout": ("sxpm.cli.registry", "logout", "Forget the credentials of a registry."),
    "referrers": ("sxpm.cli.registry", "referrers", "List the artifacts that refer to one."),
    "tags": ("sxpm.cli.registry", "tags", "List a repository's tags in its registry."),
    "expert": ("sxpm.cli.expert", "expert", "Install, list, inspect and remove experts."),
    "run": ("sxpm.cli.run", "run", "Run an installed model (plus expert): a prompt or a chat."),
    "serve": ("sxpm.cli.run", "serve", "Serve models over OpenAI's and Ollama's HTTP APIs."),
    "ps": ("sxpm.cli.run", "ps", "Show what a running `sxpm serve` holds in memory."),
    "stop": ("sxpm.cli.run", "stop", "Unload a model from a running `sxpm serve`."),
    "doctor": ("sxpm.cli.run", "doctor", "Show the accelerator and what the runner can use."),
    "search": ("sxpm.cli.index", "search", "Search the registry index."),
    "info": ("sxpm.cli.index", "info", "Show a name's versions, variants and dependencies."),
    "publish": ("sxpm.cli.index", "publish", "Push an artifact and add it to the index."),
    "yank": ("sxpm.cli.index", "yank", "Mark a published version yanked (or not)."),
    "index": ("sxpm.cli.index", "index_group", "Build and verify a registry index checkout."),
    "completion": ("sxpm.cli.complete", "completion",
                   "Print the shell completion script (bash, zsh, fish)."),
    "store": ("sxpm.cli.store", "store_group", "Serve the store read-only as an OCI registry."),
    "bundle": ("sxpm.cli.bundle", "bundle_group",
               "Carry artifacts to a machine without network, in one tar file."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        command = getattr(importlib.import_module(entry[0]), entry[1])
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # List from the table so --help imports no command module.
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="sxpm")
@click.option("--debug", is_flag=True, envvar="SXPM_DEBUG", help="Show tracebacks on errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """sxpm: models, experts and code packages as OCI artifacts.

    \b
    Example:
      sxpm pack model ./tiny-llama --ref oci:./registry/tiny-llama:1.0.0
      sxpm push oci:./registry/tiny-llama:1.0.0
    """
    ctx.obj = {"debug": debug}


def main(argv: list[str] | None = None) -> Any:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:]) or bool(
        os.environ.get("SXPM_DEBUG"))
    try:
        return cli.main(args=argv, prog_name="sxpm", standalone_mode=False)
    except SxpmError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"error: {exc.one_line()}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):  # click turns Ctrl-C into Abort
            click.echo("error: interrupted; partial downloads are kept and resume next time",
                       err=True)
        else:
            click.echo("error: aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else "sxpm"
        message = " ".join(exc.format_message().split())
        click.echo(f"error: {message} (see `{where} --help`)", err=True)
        sys.exit(EXIT_USAGE)
    except click.ClickException as exc:
        click.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
        sys.exit(exc.exit_code if exc.exit_code else EXIT_USAGE)
    except KeyboardInterrupt:
        click.echo("error: interrupted; partial downloads are kept and resume next time",
                   err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    except OSError as exc:
        if debug:
            traceback.print_exc()
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        click.echo(f"error: {exc.strerror or exc}{where} (check the path, its permissions "
                   "and free disk space)", err=True)
        sys.exit(EXIT_FAILURE)


if __name__ == "__main__":
    main()
