"""sxpm run | serve | doctor: installed models on the local accelerator.

This module is imported on every ``sxpm run``, so it imports little: the runner's
modules and llama-cpp-python load inside the commands.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from sxpm.cli.complete import installed_experts, installed_models, variant_names
from sxpm.errors import MissingExtraError, ModelNotInstalledError

_common_options = [
    click.option("--expert", "-e", metavar="NAME[@VERSION]|REF",
                 shell_complete=installed_experts,
                 help="Expert to apply: its LoRA adapter and prompt template."),
    click.option("--variant", shell_complete=variant_names,
                 help="Model variant (default: the installed one, or the largest that "
                      "fits in memory)."),
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
@click.argument("model", metavar="MODEL[@VERSION]|REF", shell_complete=installed_models)
@click.option("-p", "--prompt", help="Prompt to complete; without it, an interactive chat.")
@click.option("--system", default="", help="System message ({system} in a template).")
@click.option("--max-tokens", "-n", type=click.IntRange(1, None), default=128,
              show_default=True, help="Tokens to generate.")
@click.option("--temperature", type=click.FloatRange(0, None), default=0.0, show_default=True,
              help="0 is greedy (deterministic).")
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed.")
@_with_common
@click.option("--raw", is_flag=True,
              help="Complete -p as plain text: no chat template.")
@click.option("--stream/--no-stream", default=None,
              help="Print tokens as they come (default: only on a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def run(model: str, prompt: str | None, system: str, max_tokens: int, temperature: float,
        seed: int, expert: str | None, variant: str | None, n_ctx: int | None,
        n_threads: int | None, n_gpu_layers: int | None, install: bool, raw: bool,
        stream: bool | None, as_json: bool) -> None:
    """Run an installed model (plus expert): answer -p PROMPT, or chat.

    MODEL is an installed model's NAME[@VERSION] (newest version by default) or a
    reference already in the store. -p goes through the expert's template, else the
    model's own chat template (GGUF tokenizer.chat_template); --raw, or a model
    without a chat template, completes it as plain text. Output is streamed on a
    terminal. In a chat: /bye ends, /clear forgets, /system TEXT sets the system
    message, \"\"\" starts and ends multi-line input, Ctrl-C stops an answer.

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
        # An expert's or an Ollama model's template wraps -p itself; else the GGUF one chats.
        use_chat = not raw and session.template is None and session.chat_template is not None
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": prompt}]
        kw: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature}

        def answer(streamed: bool) -> Any:
            if use_chat:
                return session.chat(messages, stream=streamed, **kw)
            return session.generate(prompt, system=system, raw=raw, stream=streamed, **kw)

        if as_json:
            text = answer(False)
            plan = session.plan()
            click.echo(json.dumps({
                "model": session.model.to_dict(),
                "expert": session.expert.to_dict() if session.expert else None,
                "prompt": messages if use_chat else (
                    prompt if raw else session.render(prompt, system)),
                "template": "model" if use_chat else "raw" if raw else "expert"
                if session.expert is not None else "model" if session.template is not None
                else "raw", "text": text,
                "n_gpu_layers": plan.n_gpu_layers, "plan": plan.reason,
            }, indent=2, sort_keys=True))
            return
        out = sys.stdout
        if out.isatty() if stream is None else stream:
            for piece in answer(True):
                out.write(piece)
                out.flush()
            out.write("\n")
        else:
            click.echo(answer(False))
        for note in session.notes:
            click.echo(f"note: {note}", err=True)
        if not raw and not use_chat and session.template is None:
            click.echo(f"note: {session.model.name} has no chat template: -p was completed "
                       "as plain text", err=True)


CHAT_HELP = ("/bye ends, /clear forgets the conversation, /system TEXT sets the system "
             'message, """ starts and ends multi-line input, Ctrl-C stops an answer')


def _read_turn(prompt: str) -> str | None:
    """One user turn (several lines between \"\"\" marks); None at end of input."""
    try:
        line = input(prompt)
    except EOFError:
        return None
    if line.strip() != '"""' and not line.lstrip().startswith('"""'):
        return line
    lines = [line.lstrip()[3:]] if line.strip() != '"""' else []
    while True:
        try:
            more = input("... " if prompt else "")
        except EOFError:
            return "\n".join(lines)
        if more.rstrip().endswith('"""'):
            lines.append(more.rstrip()[:-3])
            return "\n".join(x for x in lines if x is not None).strip("\n")
        lines.append(more)


def _chat_loop(session: Any, system: str, max_tokens: int, temperature: float) -> None:
    from sxpm.errors import ContextOverflowError

    tty = sys.stdin.isatty()
    if tty:
        try:
            import readline  # noqa: F401 - line editing and history for input()
        except ImportError:
            pass
        click.echo(f"chatting with {session.model.name}"
                   f"{' + ' + session.expert.name if session.expert else ''}; {CHAT_HELP}",
                   err=True)
    out = sys.stdout
    messages: list[dict[str, str]] = []
    seen_notes: set[str] = set()
    while True:
        try:
            line = _read_turn("> " if tty else "")
        except KeyboardInterrupt:
            click.echo("\n(/bye or Ctrl-D ends the chat)", err=True)
            continue
        if line is None:
            break
        text = line.strip()
        if not text:
            continue  # an empty line does not end the chat
        if text in ("/bye", "/exit", "/quit"):
            break
        if text == "/clear":
            messages.clear()
            click.echo("(conversation cleared)", err=True)
            continue
        if text == "/system" or text.startswith("/system "):
            system = text[len("/system"):].strip()
            click.echo(f"(system message {'set' if system else 'cleared'})", err=True)
            continue
        if text in ("/?", "/help"):
            click.echo(CHAT_HELP, err=True)
            continue
        turn = ([{"role": "system", "content": system}] if system else []) + messages + [
            {"role": "user", "content": line}]
        reply: list[str] = []
        try:
            pieces = session.chat(turn, max_tokens=max_tokens, temperature=temperature,
                                  stream=True)
        except ContextOverflowError as exc:
            click.echo(f"error: {exc.one_line()}", err=True)
            continue
        for note in session.notes:
            if note not in seen_notes or note.startswith("dropped"):
                seen_notes.add(note)
                click.echo(f"note: {note}", err=True)
        try:
            for piece in pieces:
                reply.append(piece)
                out.write(piece)
                out.flush()
        except KeyboardInterrupt:
            pieces.close()  # stops generating and frees the model for the next turn
            out.write(" [stopped]")
        out.write("\n")
        out.flush()
        messages.append({"role": "user", "content": line})
        messages.append({"role": "assistant", "content": "".join(reply)})


DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
_server_options = [
    click.option("--host", default=DEFAULT_HOST, show_default=True,
                 help="Address of the server."),
    click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT,
                 show_default=True, help="Port of the server."),
]


def _with_server(f: Any) -> Any:
    for option in reversed(_server_options):
        f = option(f)
    return f


@click.command()
@click.argument("models", nargs=-1, metavar="[MODEL[@VERSION]|REF]...",
                shell_complete=installed_models)
@_with_common
@_with_server
@click.option("--api-key", envvar="SXPM_API_KEY", help="Require this bearer token.")
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed.")
@click.option("--keep-alive", default="5m", show_default=True,
              help="How long an idle model stays loaded (seconds or 30s/5m/1h; -1 forever, "
                   "0 unload at once).")
@click.option("--max-loaded", type=click.IntRange(1, None),
              help="Most models loaded at once (default: as many as fit in memory).")
@click.option("--max-queue", type=click.IntRange(0, None), default=64, show_default=True,
              help="Requests that may wait per model; more get 503 with Retry-After.")
@click.option("--log", "log_path", type=click.Path(dir_okay=False, writable=True),
              help="Append one JSON line per request to this file.")
def serve(models: tuple[str, ...], expert: str | None, variant: str | None,
          n_ctx: int | None, n_threads: int | None, n_gpu_layers: int | None, install: bool,
          host: str, port: int, api_key: str | None, seed: int, keep_alive: str,
          max_loaded: int | None, max_queue: int, log_path: str | None) -> None:
    """Serve installed models over OpenAI's and Ollama's HTTP APIs.

    Without MODEL, every installed model is served by name; a request's "model" picks
    one (NAME, NAME@VERSION, NAME+EXPERT). Models load on first use and stay loaded
    for --keep-alive. Routes: /v1/models, /v1/chat/completions, /v1/completions,
    /v1/embeddings; /api/generate, /api/chat, /api/embed, /api/tags, /api/ps,
    /api/show, /api/version; /health, /metrics. A model not served here, or that cannot
    load, is answered by the `[runner] fallback` upstream when one is configured.

    \b
    Example:
      sxpm serve tiny-llama --expert sql-expert --port 8080
      curl -s localhost:8080/v1/chat/completions -H 'Content-Type: application/json' \\
        -d '{"messages":[{"role":"user","content":"hi"}]}'
    """
    from pathlib import Path

    from sxpm.home import Home
    from sxpm.project.manifest import Project
    from sxpm.runner.catalog import Catalog
    from sxpm.runner.fallback import fallback_config
    from sxpm.runner.residency import ResidencyManager
    from sxpm.runner.server import Server, check_port, parse_keep_alive
    from sxpm.runner.session import auto_install_from_env, memory_budget

    try:
        keep = parse_keep_alive(keep_alive)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--keep-alive") from None
    check_port(host, port)  # before loading anything: a busy port fails in a moment
    home = Home.from_env()
    fallback = fallback_config(home, Project.nearest())
    if install or auto_install_from_env():
        for model in models:  # install what is missing first, as `sxpm run --install` does
            _open_session(model, expert, variant, n_ctx, n_threads, n_gpu_layers, True, seed)
    manager = ResidencyManager(keep_alive=300.0 if keep is None else keep,
                               max_loaded=max_loaded, max_queue=max_queue,
                               memory_budget=memory_budget())
    catalog = Catalog(home, manager, models, expert, n_ctx=n_ctx,
                      n_threads=n_threads, n_gpu_layers=n_gpu_layers, seed=seed,
                      variant=variant)
    served = ", ".join(e["id"] for e in catalog.entries()) or "no installed model yet"
    click.echo(f"serving {served} on http://{host}:{port} (/v1 and /api)", err=True)
    if fallback is not None:
        click.echo(f"models not served here go to {fallback.url}", err=True)
    try:
        from sxpm.runner.api import serve as run_server  # fastapi: only when serving
    except ImportError as exc:
        raise MissingExtraError(exc.name or "fastapi", "run") from exc
    run_server(Server(catalog, manager, log=Path(log_path) if log_path else None,
                      api_key=api_key, fallback=fallback), host, port)


def _server_call(host: str, port: int, method: str, path: str,
                 body: dict[str, Any] | None = None) -> Any:
    import urllib.error
    import urllib.request

    from sxpm.errors import RunnerError

    url = f"http://{host}:{port}{path}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - http only
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error")
        except ValueError:
            message = None
        raise RunnerError(f"The server at {host}:{port} answered {exc.code}: "
                          f"{message or exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RunnerError(f"No sxpm server at {host}:{port} ({reason})",
                          hint="start one with `sxpm serve`, or pass --host/--port") from None


@click.command()
@_with_server
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def ps(host: str, port: int, as_json: bool) -> None:
    """Show the models a running `sxpm serve` holds: expert(s), memory, until when.

    \b
    Example:
      sxpm ps --port 8080
    """
    from sxpm.cli._common import emit_json
    from sxpm.core.humanize import human_size

    models = _server_call(host, port, "GET", "/api/ps")["models"]
    if as_json:
        emit_json(models)
        return
    if not models:
        click.echo("no model loaded")
        return
    click.echo(f"{'NAME':<32} {'EXPERT':<20} {'SIZE':>10}  UNTIL")
    for m in models:
        until = m.get("expires_at") or ("in use" if m.get("busy") else "forever")
        click.echo(f"{m['name']:<32} {m.get('expert') or '-':<20} "
                   f"{human_size(m.get('size') or 0):>10}  {until}")


@click.command()
@click.argument("model", metavar="NAME[@VERSION]")
@_with_server
def stop(model: str, host: str, port: int) -> None:
    """Unload a model from a running `sxpm serve` now (when idle, if busy).

    \b
    Example:
      sxpm stop tiny-llama --port 8080
    """
    reply = _server_call(host, port, "POST", "/api/generate", {"model": model, "keep_alive": 0})
    names = reply.get("unloaded") or []
    click.echo(f"unloaded {', '.join(names)}" if names else f"{model} was not loaded")


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
