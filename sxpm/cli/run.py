"""sxpm run | serve | doctor: installed models on the local accelerator.

This module is imported on every ``sxpm run``, so it imports little: the runner's
modules and llama-cpp-python load inside the commands.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from sxpm.errors import ModelNotInstalledError

_common_options = [
    click.option("--expert", "-e", metavar="NAME[@VERSION]|REF",
                 help="Expert to apply: its LoRA adapter and prompt template."),
    click.option("--variant", help="Model variant (default: the installed one, or the "
                 "largest that fits in memory)."),
    click.option("--ctx", "n_ctx", type=click.IntRange(16, None),
                 help="Context size in tokens (default: 2048, capped by the model)."),
    click.option("--threads", "n_threads", type=click.IntRange(1, 1024),
                 help="CPU threads (default: llama.cpp's)."),
    click.option("--gpu-layers", "n_gpu_layers", type=click.IntRange(-1, None),
                 help="Layers to offload (default: as many as fit; -1 all)."),
    click.option("--install", "install", is_flag=True,
                 help="Install the model or expert first if it is not "
                      "(also SXPM_AUTO_INSTALL=1)."),
]


def _with_common(f: Any) -> Any:
    for option in reversed(_common_options):
        f = option(f)
    return f


def _open_session(model: str, expert: str | None, variant: str | None, n_ctx: int | None,
                  n_threads: int | None, n_gpu_layers: int | None, install: bool,
                  seed: int = 0, interactive: bool = False) -> Any:
    from sxpm.runner.session import auto_install_from_env, load

    wanted = install or auto_install_from_env()
    kw: dict[str, Any] = {"variant": variant, "n_ctx": n_ctx, "n_threads": n_threads, "seed": seed,
          "n_gpu_layers": n_gpu_layers}
    try:
        return load(model, expert, install=wanted, **kw)
    except ModelNotInstalledError as exc:
        # On a terminal, ask; scripts get the one-line error with the command to run.
        if wanted or not interactive or not sys.stdin.isatty():
            raise
        if not click.confirm(f"{exc.kind} {exc.spec!r} is not installed; install "
                             f"{exc.install_ref} now?", default=False, err=True):
            raise
        return load(model, expert, install=True, **kw)


@click.command()
@click.argument("model", metavar="MODEL[@VERSION]|REF")
@click.option("-p", "--prompt", help="Prompt to complete; without it, an interactive chat.")
@click.option("--system", default="", help="System message ({system} in a template).")
@click.option("--max-tokens", "-n", type=click.IntRange(1, None), default=128,
              show_default=True, help="Tokens to generate.")
@click.option("--temperature", type=click.FloatRange(0, None), default=0.0, show_default=True,
              help="0 is greedy (deterministic).")
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed.")
@_with_common
@click.option("--stream/--no-stream", default=None,
              help="Print tokens as they come (default: only on a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def run(model: str, prompt: str | None, system: str, max_tokens: int, temperature: float,
        seed: int, expert: str | None, variant: str | None, n_ctx: int | None,
        n_threads: int | None, n_gpu_layers: int | None, install: bool,
        stream: bool | None, as_json: bool) -> None:
    """Run an installed model (plus expert): complete -p PROMPT, or chat.

    MODEL is an installed model's NAME[@VERSION] (newest version by default) or a
    reference already in the store. Output is streamed on a terminal.

    \b
    Example:
      sxpm run tiny-llama -p "Hello" --max-tokens 16
      sxpm run tiny-llama --expert sql-expert -p "list users"
    """
    session = _open_session(model, expert, variant, n_ctx, n_threads, n_gpu_layers, install,
                            seed, interactive=not as_json)
    with session:
        if prompt is None:
            if as_json:
                raise click.UsageError("--json needs -p PROMPT (chat is interactive)")
            _chat_loop(session, system, max_tokens, temperature)
            return
        if as_json:
            text = session.generate(prompt, max_tokens=max_tokens, temperature=temperature,
                                    system=system)
            plan = session.plan()
            click.echo(json.dumps({
                "model": session.model.to_dict(),
                "expert": session.expert.to_dict() if session.expert else None,
                "prompt": session.render(prompt, system), "text": text,
                "n_gpu_layers": plan.n_gpu_layers, "plan": plan.reason,
            }, indent=2, sort_keys=True))
            return
        out = sys.stdout
        if out.isatty() if stream is None else stream:
            for piece in session.generate(prompt, max_tokens=max_tokens,
                                          temperature=temperature, system=system, stream=True):
                out.write(piece)
                out.flush()
            out.write("\n")
        else:
            click.echo(session.generate(prompt, max_tokens=max_tokens,
                                        temperature=temperature, system=system))


def _chat_loop(session: Any, system: str, max_tokens: int, temperature: float) -> None:
    messages: list[dict[str, str]] = []
    if system:
        messages.append({"role": "system", "content": system})
    tty = sys.stdin.isatty()
    if tty:
        click.echo(f"chatting with {session.model.name}"
                   f"{' + ' + session.expert.name if session.expert else ''}; "
                   "an empty line or Ctrl-D ends", err=True)
    out = sys.stdout
    while True:
        try:
            line = input("> " if tty else "")
        except EOFError:
            break
        if not line.strip() or line.strip() in ("/exit", "/quit"):
            break
        messages.append({"role": "user", "content": line})
        reply: list[str] = []
        for piece in session.chat(messages, max_tokens=max_tokens, temperature=temperature,
                                  stream=True):
            reply.append(piece)
            out.write(piece)
            out.flush()
        out.write("\n")
        out.flush()
        messages.append({"role": "assistant", "content": "".join(reply)})


@click.command()
@click.argument("model", metavar="MODEL[@VERSION]|REF")
@_with_common
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="Port to listen on.")
@click.option("--api-key", envvar="SXPM_API_KEY", help="Require this bearer token.")
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed.")
def serve(model: str, expert: str | None, variant: str | None, n_ctx: int | None,
          n_threads: int | None, n_gpu_layers: int | None, install: bool, host: str,
          port: int, api_key: str | None, seed: int) -> None:
    """Serve a model (plus expert) over an OpenAI-compatible HTTP API.

    llama-cpp-python's server: /v1/models, /v1/completions, /v1/chat/completions
    (stream=true sends server-sent events). An expert's template shapes chat prompts.

    \b
    Example:
      sxpm serve tiny-llama --expert sql-expert --port 8080
      curl -s localhost:8080/v1/chat/completions -d '{"messages":[{"role":"user","content":"hi"}]}'
    """
    from sxpm.runner.server import check_port
    from sxpm.runner.server import serve as serve_session

    check_port(host, port)  # before loading anything: a busy port fails in a moment
    session = _open_session(model, expert, variant, n_ctx, n_threads, n_gpu_layers, install,
                            seed, interactive=True)
    with session:
        click.echo(f"serving {model} on http://{host}:{port}/v1 "
                   f"({session.plan().reason})", err=True)
        serve_session(session, host, port, api_key=api_key)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def doctor(as_json: bool) -> None:
    """Show the accelerator sxpm would run on and what llama-cpp-python can use.

    \b
    Example:
      sxpm doctor --json
    """
    from sxpm.cli._common import emit_json
    from sxpm.core.detect import detect
    from sxpm.core.humanize import human_size

    report = detect()
    mirrors = _mirrors()
    if as_json:
        emit_json({**report.to_dict(), "mirrors": [m.to_dict() for m in mirrors]})
        return
    click.echo(f"backend       {report.backend}"
               f"{' (offload possible)' if report.can_offload else ''}")
    for d in report.devices:
        extra = ", ".join(x for x in (
            f"driver {d.driver_version}" if d.driver_version else "",
            f"CUDA {d.cuda_version}" if d.cuda_version else "") if x)
        click.echo(f"device {d.index}      {d.name}: {human_size(d.free_memory)} free of "
                   f"{human_size(d.total_memory)}{' (' + extra + ')' if extra else ''}")
    cpu = report.cpu
    mem = f", {human_size(cpu.available_memory)} of {human_size(cpu.total_memory)} RAM free" \
        if cpu.total_memory and cpu.available_memory is not None else ""
    click.echo(f"cpu           {cpu.cores} cores ({cpu.system} {cpu.machine}){mem}")
    build = report.llama_cpp
    if build is not None:
        if build.installed:
            click.echo(f"llama_cpp     {build.version}; GPU offload "
                       f"{'supported' if build.gpu_offload else 'not supported (CPU build)'}")
        else:
            click.echo("llama_cpp     not installed (pip install 'sxpm[run]')")
    for key, value in report.visible_devices.items():
        click.echo(f"{key}={value}")
    for note in report.notes:
        click.echo(f"note: {note}")
    for m in mirrors:
        click.echo(f"mirror        {m.mirror} for {m.registry}: "
                   f"{'answers' if m.answers else 'does not answer'} ({m.detail})")


def _mirrors() -> list[Any]:
    """The configured registry mirrors and whether each answers (home and project)."""
    from dataclasses import replace

    from sxpm.cli._common import home
    from sxpm.errors import SxpmError
    from sxpm.project.manifest import Project
    from sxpm.transport import TransportOptions
    from sxpm.transport.mirrors import as_option, check

    options = TransportOptions()
    try:
        options = replace(options, mirrors=as_option(Project.load(None).mirrors))
    except SxpmError:
        pass  # not in a project: the home's mirrors only
    return check(home(), options)
