"""``sxpm serve``: many models, experts per request, OpenAI's and Ollama's HTTP APIs.

sxpm's own FastAPI app over a :class:`~sxpm.runner.residency.ResidencyManager` (models
load on first use, stay for a keep-alive, at most ``--max-loaded``, queued per model up
to ``--max-queue``) and a :class:`~sxpm.runner.catalog.Catalog` (which names a request
may use). Routes:

* OpenAI: ``GET /v1/models``, ``POST /v1/chat/completions``, ``/v1/completions``,
  ``/v1/embeddings``; ``stream: true`` sends server-sent events ending in ``[DONE]``.
* Ollama: ``POST /api/generate``, ``/api/chat`` (NDJSON streams, on by default),
  ``/api/embed``, ``/api/show``; ``GET /api/tags``, ``/api/ps``, ``/api/version``.
* ``GET /health``, ``GET /metrics`` (Prometheus text).

Every failure is the API's own error shape (OpenAI ``{"error": {...}}``, Ollama
``{"error": "..."}``) with 400/404/409/413/503, never a traceback. Generation runs
token by token in a worker thread; when the client goes away the stream is closed
after the token in progress. fastapi, uvicorn and prometheus-client are imported
only here, so ``sxpm --help`` stays fast.
"""

from __future__ import annotations

import errno
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sxpm.errors import (
    ContextOverflowError,
    IncompatibleExpertError,
    InputError,
    MissingExtraError,
    NotFoundError,
    PortInUseError,
    QueueFullError,
    SxpmError,
)
from sxpm.runner.catalog import Catalog, Target, generates, is_embedding, model_id
from sxpm.runner.chat import text_of
from sxpm.runner.fallback import Upstream
from sxpm.runner.residency import ResidencyManager

DEFAULT_MAX_TOKENS = 128
NS = 1_000_000_000


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


def parse_keep_alive(value: Any) -> float | None:
    """Seconds from a number or an Ollama duration ("5m", "30s", "1h", "-1"); None: unset."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise InputError(f"Invalid keep_alive {value!r}", hint='seconds, or "5m", "1h"')
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for suffix in ("ms", "s", "m", "h"):
        if text.endswith(suffix):
            try:
                return float(text[: -len(suffix)]) * units[suffix]
            except ValueError:
                break
    try:
        return float(text)
    except ValueError:
        raise InputError(f"Invalid keep_alive {value!r}", hint='seconds, or "5m", "1h"'
                         ) from None


# --- errors ---------------------------------------------------------------------------


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str,
                 headers: dict[str, str] | None = None, detail: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.headers = headers or {}
        self.detail = detail or message  # for the server's own log, never a client


# An absolute path (two components or more) in an error's text.
_PATH = re.compile(r"(?<![\w.:/])/(?:[^/\s'\"]+/)+([^/\s'\"]*)")


def hide_paths(text: str) -> str:
    """``text`` with each absolute path cut to its last component: where the home,
    the store and the models lie on the serving machine is no client's business."""
    return _PATH.sub(lambda m: m.group(1) or "/", text)


def api_error(exc: BaseException) -> ApiError:
    """The HTTP status of an sxpm error (anything else is a 503 that says what failed)."""
    if isinstance(exc, ApiError):
        return exc
    detail = exc.one_line() if isinstance(exc, SxpmError) else " ".join(str(exc).split())
    text = hide_paths(detail)
    if isinstance(exc, QueueFullError):
        return ApiError(503, text, "queue_full", {"Retry-After": str(exc.retry_after)})
    if isinstance(exc, NotFoundError):
        return ApiError(404, text, "model_not_found")
    if isinstance(exc, IncompatibleExpertError):
        return ApiError(409, text, "incompatible_expert")
    if isinstance(exc, ContextOverflowError):
        return ApiError(413, text, "context_length_exceeded")
    if isinstance(exc, InputError):
        return ApiError(400, text, "invalid_request_error")
    return ApiError(503, text or type(exc).__name__, "model_unavailable", {"Retry-After": "5"},
                    detail)


# --- one request ----------------------------------------------------------------------


@dataclass
class Job:
    """One request's record: what the JSONL log line and the metrics are made of."""

    endpoint: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    model: str | None = None
    expert: str | None = None
    started: float = field(default_factory=time.monotonic)
    queued: float = 0.0  # seconds waiting for the model (and loading it)
    loaded: bool = False
    load_seconds: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_token: float | None = None  # seconds after start
    generating: float = 0.0
    status: int = 200
    outcome: str = "ok"
    finish_reason: str | None = None
    error: str | None = None
    fallback: str | None = None  # the upstream that answered instead of this server

    @property
    def total(self) -> float:
        return time.monotonic() - self.started

    @property
    def tokens_per_second(self) -> float | None:
        if self.completion_tokens < 2 or self.first_token is None or self.generating <= 0:
            return None
        return (self.completion_tokens - 1) / self.generating

    def record(self) -> dict[str, Any]:
        return {"id": self.id, "time": time.time(), "endpoint": self.endpoint,
                "model": self.model, "expert": self.expert, "status": self.status,
                "outcome": self.outcome, "finish_reason": self.finish_reason,
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "loaded": self.loaded,
                "load_s": round(self.load_seconds, 6), "queue_s": round(self.queued, 6),
                "ttft_s": None if self.first_token is None else round(self.first_token, 6),
                "total_s": round(self.total, 6), "tokens_per_s": self.tokens_per_second,
                "error": self.error, "fallback": self.fallback}


class Generation:
    """A started generation: the lease on the model and the token stream."""

    def __init__(self, server: Server, job: Job, lease: Any, chunks: Iterator[Any]) -> None:
        self.server = server
        self.job = job
        self.lease = lease
        self.chunks = chunks
        self.cancel = threading.Event()
        self._done = False

    def _next(self) -> Any:
        if self.cancel.is_set():
            return None
        return next(self.chunks, None)

    async def pieces(self) -> AsyncIterator[str]:
        from starlette.concurrency import run_in_threadpool

        job = self.job
        t_first = 0.0
        try:
            while True:
                # The thread finishes its token even if this task is cancelled meanwhile
                # (anyio defers the cancellation), so the stream is never closed mid-step.
                chunk = await run_in_threadpool(self._next)
                if chunk is None:
                    break
                choice = chunk["choices"][0]
                text = choice.get("text") or ""
                if choice.get("finish_reason"):
                    # llama-cpp-python's last chunk ends the stream; it is no new token.
                    job.finish_reason = choice["finish_reason"]
                    if text:
                        yield text
                    continue
                job.completion_tokens += 1
                if job.first_token is None:
                    job.first_token = job.total
                    t_first = time.monotonic()
                else:
                    job.generating = time.monotonic() - t_first
                if text:
                    yield text
            if self.cancel.is_set():
                job.outcome = "cancelled"
        except BaseException:
            job.outcome = "cancelled"
            raise
        finally:
            self.finish()

    def finish(self) -> None:
        if self._done:
            return
        self._done = True
        if self.cancel.is_set() and self.job.outcome == "ok":
            self.job.outcome = "cancelled"
        close = getattr(self.chunks, "close", None)
        try:
            if close is not None:
                close()
        finally:
            self.lease.release()
            if self.job.finish_reason is None and self.job.outcome == "ok":
                self.job.finish_reason = "stop"
            self.server.finished(self.job)


# --- the server -----------------------------------------------------------------------


class Server:
    def __init__(self, catalog: Catalog, manager: ResidencyManager, *,
                 log: Path | None = None, api_key: str | None = None,
                 fallback: Upstream | None = None) -> None:
        self.api_key = api_key
        self.fallback = fallback
        self.catalog = catalog
        self.manager = manager
        self.log_path = log
        self._log_lock = threading.Lock()
        self.metrics = Metrics(manager)
        manager.on_load = self.metrics.loaded

    def finished(self, job: Job) -> None:
        self.metrics.observe(job)
        if self.log_path is not None:
            line = json.dumps(job.record(), sort_keys=True)
            with self._log_lock, open(self.log_path, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")

    # --- requests to generations ---------------------------------------------------

    def _target(self, job: Job, body: dict[str, Any]) -> Target:
        target = self.catalog.find(_opt_str(body, "model"), _opt_str(body, "expert"))
        job.model = model_id(target.model)
        job.expert = target.expert.name if target.expert else None
        return target

    def start(self, job: Job, body: dict[str, Any], *, chat: bool, prompt: str | None = None,
              messages: list[dict[str, Any]] | None = None, max_tokens: int,
              sampling: dict[str, Any], keep_alive: float | None,
              raw: bool = False) -> Generation:
        """Resolve, wait for the model, build the prompt and start the token stream.

        Runs in a worker thread; every error here comes before the response starts.
        """
        target = self._target(job, body)
        if not generates(target.model):
            raise InputError(f"{job.model} is an embedding model",
                             hint="POST /v1/embeddings or /api/embed")
        session = target.session
        lease = session.lease(keep_alive)
        job.queued = lease.waited
        job.loaded = lease.loaded
        job.load_seconds = lease.resident.load_seconds if lease.loaded else 0.0
        try:
            llm = lease.llama
            # The request's options over the model's own (an Ollama model's parameters).
            options = session._sampling(float(sampling.pop("temperature", 0.8)), sampling)
            stop = list(options.pop("stop", None) or [])
            if chat:
                fitted = session.fit(llm, messages or [], max_tokens)
                job.prompt_tokens = len(fitted.tokens)
                source: Any = fitted.tokens
                stop += fitted.stop
            else:
                source = prompt or ""
                if not raw:
                    source = session.render(source, str(body.get("system") or ""))
                # Tokenized once: counted and checked here, and handed to llama.cpp as tokens
                # (the ones it would make of the text: BOS, special tokens). An empty prompt
                # stays text, which llama-cpp-python starts from BOS in its own way.
                tokens = list(llm.tokenize(source.encode("utf-8"), special=True))
                job.prompt_tokens = len(tokens)
                if source:
                    source = tokens
                if job.prompt_tokens >= session.n_ctx:
                    raise ContextOverflowError(job.prompt_tokens, session.n_ctx)
            chunks = llm.create_completion(source, max_tokens=max_tokens, stream=True,
                                           stop=stop or None, **options)
        except BaseException:
            lease.release()
            raise
        return Generation(self, job, lease, iter(chunks))

    def embed(self, job: Job, body: dict[str, Any], inputs: list[str],
              keep_alive: float | None) -> list[list[float]]:
        target = self._target(job, body)
        if not is_embedding(target.model):
            raise InputError(f"{job.model} has no embedding capability",
                             hint="use a model whose /v1/models entry lists 'embedding'")
        spec = self.catalog.embedding_spec(target)
        with self.manager.lease(spec, keep_alive=keep_alive) as lease:
            job.queued, job.loaded = lease.waited, lease.loaded
            llm = lease.llama
            for text in inputs:
                n = len(llm.tokenize(text.encode("utf-8"), special=True))
                if n > target.session.n_ctx:
                    raise ContextOverflowError(n, target.session.n_ctx)
                job.prompt_tokens += n
            vectors = llm.embed(inputs, normalize=True)
        return [list(map(float, v)) for v in vectors]


def _opt_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(f"{key!r} must be a string")
    return value


def _int(body: dict[str, Any], key: str, default: int, lo: int = 1) -> int:
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise InputError(f"{key!r} must be an integer >= {lo}")
    return value


def _sampling(src: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("temperature", "top_p"):
        if src.get(key) is not None:
            if not isinstance(src[key], int | float) or isinstance(src[key], bool):
                raise InputError(f"{key!r} must be a number")
            out[key] = float(src[key])
    if src.get("top_k") is not None:
        out["top_k"] = _int(src, "top_k", 40, 0)
    if src.get("seed") is not None:
        out["seed"] = _int(src, "seed", 0, -(2**63))
    stop = src.get("stop")
    if stop is not None:
        stop = [stop] if isinstance(stop, str) else stop
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise InputError("'stop' must be a string or a list of strings")
        out["stop"] = stop
    return out


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and m.get("role") in ("system", "user", "assistant", "tool")
            for m in messages):
        raise InputError("'messages' must be a non-empty list of {role, content} objects")
    return [{"role": m["role"], "content": text_of(m)} for m in messages]


# --- metrics --------------------------------------------------------------------------


class Metrics:
    def __init__(self, manager: ResidencyManager) -> None:
        try:
            import prometheus_client as prom
        except ImportError as exc:
            raise MissingExtraError("prometheus_client", "run") from exc
        self.prom = prom
        self.registry = prom.CollectorRegistry()
        r = self.registry
        self.requests = prom.Counter("sxpm_requests", "Requests answered.",
                                     ["endpoint", "status"], registry=r)
        self.prompt = prom.Counter("sxpm_prompt_tokens", "Prompt tokens evaluated.",
                                   ["model"], registry=r)
        self.generated = prom.Counter("sxpm_generated_tokens", "Tokens generated.",
                                      ["model"], registry=r)
        self.ttft = prom.Histogram("sxpm_time_to_first_token_seconds",
                                   "From request to first token.", ["model"], registry=r)
        self.speed = prom.Histogram("sxpm_generation_tokens_per_second",
                                    "Generation speed after the first token.", ["model"],
                                    buckets=(1, 5, 10, 20, 50, 100, 200, 500, 1000, 5000),
                                    registry=r)
        self.load = prom.Histogram("sxpm_model_load_seconds", "Time to load a model.",
                                   ["model"], registry=r)
        queue = prom.Gauge("sxpm_queue_depth", "Requests waiting for a model.", registry=r)
        queue.set_function(lambda: float(manager.queue_depth()))
        loaded = prom.Gauge("sxpm_loaded_models", "Models resident now.", registry=r)
        loaded.set_function(lambda: float(len(manager.loaded())))

    def loaded(self, name: str, seconds: float) -> None:
        self.load.labels(name).observe(seconds)

    def observe(self, job: Job) -> None:
        self.requests.labels(job.endpoint, str(job.status)).inc()
        if job.model is None:
            return
        self.prompt.labels(job.model).inc(job.prompt_tokens)
        self.generated.labels(job.model).inc(job.completion_tokens)
        if job.first_token is not None:
            self.ttft.labels(job.model).observe(job.first_token)
        if job.tokens_per_second is not None:
            self.speed.labels(job.model).observe(job.tokens_per_second)

    def text(self) -> bytes:
        data: bytes = self.prom.generate_latest(self.registry)
        return data
