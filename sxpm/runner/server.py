"""``sxpm serve``: llama-cpp-python's own OpenAI-compatible server over a Session.

sxpm only decides what to load (model file, adapter, ``n_gpu_layers``, context) and
hands it to ``llama_cpp.server.app.create_app``; the routes (``/v1/models``,
``/v1/completions``, ``/v1/chat/completions``, streaming as server-sent events) are
llama-cpp-python's. An expert's prompt template becomes the model's chat format,
so chat requests go through it; ``/v1/completions`` takes the prompt as given.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from sxpm.errors import MissingExtraError, PortInUseError
from sxpm.runner.session import Session, import_llama_cpp, register_template_chat_format


def check_port(host: str, port: int) -> None:
    """Fail at once, with one line, when ``host:port`` cannot be listened on."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise PortInUseError(host, port, f"unknown host ({exc.strerror})") from None
    family, kind, proto, _name, addr = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(addr)
        except OSError as exc:
            reason = "already in use" if exc.errno == errno.EADDRINUSE else (
                exc.strerror or str(exc))
            raise PortInUseError(host, port, reason) from None


def model_alias(session: Session) -> str:
    name = f"{session.model.name}@{session.model.version}"
    if session.expert is not None:
        name += f"+{session.expert.name}@{session.expert.version}"
    return name


def build_app(session: Session, host: str, port: int, *, api_key: str | None = None) -> Any:
    """The FastAPI app of llama-cpp-python's server, loaded with ``session``'s model."""
    llama_cpp = import_llama_cpp()
    try:
        from llama_cpp.server.app import create_app
        from llama_cpp.server.settings import ModelSettings, ServerSettings
    except ImportError as exc:
        raise MissingExtraError(exc.name or "llama_cpp.server", "run") from exc
    kwargs = session.llama_kwargs(llama_cpp)
    settings: dict[str, Any] = {
        "model": kwargs.pop("model_path"),
        "model_alias": model_alias(session),
        **kwargs,
    }
    chat_format = register_template_chat_format(llama_cpp, session.template,
                                                session.extras.system)
    if chat_format:
        settings["chat_format"] = chat_format
    server = ServerSettings(host=host, port=port, api_key=api_key)
    try:
        return create_app(server_settings=server, model_settings=[ModelSettings(**settings)])
    except (ValueError, RuntimeError, OSError) as exc:
        raise session.load_error(exc) from None


def serve(session: Session, host: str = "127.0.0.1", port: int = 8000, *,
          api_key: str | None = None, log_level: str = "info") -> None:
    """Serve until interrupted."""
    check_port(host, port)
    try:
        import uvicorn
    except ImportError as exc:
        raise MissingExtraError("uvicorn", "run") from exc
    app = build_app(session, host, port, api_key=api_key)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
