"""The HTTP routes of ``sxpm serve`` (see :mod:`sxpm.runner.server`).

Imported only when a server starts: fastapi and starlette load here, at module level,
so that FastAPI can resolve the handlers' annotations.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from sxpm._version import __version__
from sxpm.errors import InputError, MissingExtraError
from sxpm.runner.catalog import capabilities
from sxpm.runner.fallback import falls_back
from sxpm.runner.server import (
    DEFAULT_MAX_TOKENS,
    NS,
    ApiError,
    Generation,
    Job,
    Server,
    _int,
    _messages,
    _opt_str,
    _sampling,
    api_error,
    check_port,
    parse_keep_alive,
)

# --- the app --------------------------------------------------------------------------


def build_app(server: Server) -> Any:
    """The FastAPI app of :class:`Server`."""
    app = FastAPI(title="sxpm", version=__version__, docs_url=None, redoc_url=None)

    def error_response(exc: BaseException, api: str, job: Job | None = None) -> Any:
        err = api_error(exc)
        if job is not None:
            job.status, job.outcome, job.error = err.status, "error", err.detail
            server.finished(job)
        if api == "ollama":
            content: dict[str, Any] = {"error": err.message}
        else:
            content = {"error": {"message": err.message, "type": err.kind,
                                 "param": None, "code": err.status}}
        return JSONResponse(content, status_code=err.status, headers=err.headers)

    class GenerationStream(StreamingResponse):
        """Closes the generation when the client goes away, whatever the ASGI version:
        a disconnect cancels the send loop, and the ``finally`` releases the model."""

        def __init__(self, body: AsyncIterator[str], generation: Generation,
                     media_type: str) -> None:
            super().__init__(body, media_type=media_type,
                             headers={"Cache-Control": "no-cache", "X-Request-Id":
                                      generation.job.id})
            self.generation = generation
            self.pieces = body

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            async def watch() -> None:
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        self.generation.cancel.set()
                        tg.cancel_scope.cancel()
                        return

            async def stream() -> None:
                await self.stream_response(send)
                tg.cancel_scope.cancel()

            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(watch)
                    tg.start_soon(stream)
            finally:
                aclose = getattr(self.pieces, "aclose", None)
                if aclose is not None:
                    await aclose()
                self.generation.finish()

    async def read_json(request: Request) -> dict[str, Any]:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            raise ApiError(400, f"Expected Content-Type: application/json, got "
                           f"{kind or 'none'!r} (send -H 'Content-Type: application/json')",
                           "invalid_request_error")
        raw = await request.body()
        try:
            body = json.loads(raw or b"null")
        except ValueError as exc:
            raise ApiError(400, f"Malformed JSON body: {exc}", "invalid_request_error"
                           ) from None
        if not isinstance(body, dict):
            raise ApiError(400, "The JSON body must be an object", "invalid_request_error")
        return body

    async def collect(request: Request, generation: Generation) -> str:
        """The whole answer; a client that leaves meanwhile stops it too."""
        parts: list[str] = []
        async with anyio.create_task_group() as tg:
            async def watch() -> None:
                while True:
                    message = await request.receive()
                    if message["type"] == "http.disconnect":
                        generation.cancel.set()
                        return

            tg.start_soon(watch)
            async for piece in generation.pieces():
                parts.append(piece)
            tg.cancel_scope.cancel()
        return "".join(parts)

    async def begin(request: Request, endpoint: str, api: str,
                    make: Callable[[Job, dict[str, Any]], Generation | None], *, chat: bool
                    ) -> tuple[Job, dict[str, Any], Any] | Any:
        job = Job(endpoint)
        body: dict[str, Any] | None = None
        try:
            body = await read_json(request)
            generation = await run_in_threadpool(make, job, body)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an API error
            if (body is not None and server.fallback is not None
                    and falls_back(exc, api_error(exc).kind)):
                return await forward(job, body, api, chat, exc)
            return error_response(exc, api, job)
        return job, body, generation

    # --- the upstream answers what this server cannot ----------------------------

    def upstream_request(body: dict[str, Any], api: str, chat: bool
                         ) -> tuple[str, dict[str, Any], bool]:
        """The upstream's path and body for a request, and whether it streams."""
        if api == "openai":
            payload = {k: v for k, v in body.items() if k != "keep_alive"}
            return ("/chat/completions" if chat else "/completions"), payload, bool(
                body.get("stream"))
        # Ollama's options in OpenAI's words; top_k has none in OpenAI's API.
        options = body.get("options") or {}
        if not isinstance(options, dict):
            raise InputError("'options' must be an object")
        sampling = {k: v for k, v in _sampling(options).items() if k != "top_k"}
        stream = bool(body.get("stream", True))
        payload = {"model": body.get("model"), "stream": stream,
                   "max_tokens": _int(options, "num_predict", DEFAULT_MAX_TOKENS), **sampling}
        if chat:
            payload["messages"] = _messages(body)
        elif body.get("raw"):
            payload["prompt"] = body.get("prompt")
            return "/completions", payload, stream
        else:  # Ollama applies the model's template to a prompt: a one-turn chat
            system = body.get("system")
            payload["messages"] = ([{"role": "system", "content": system}] if system else []
                                   ) + [{"role": "user", "content": body.get("prompt")}]
        return "/chat/completions", payload, stream

    def piece_text(choice: dict[str, Any]) -> str:
        """A choice's text, whether a chat message, a chat delta or a completion."""
        part = choice.get("delta") or choice.get("message") or {}
        text = part.get("content") if isinstance(part, dict) else None
        return str(text if text is not None else choice.get("text") or "")

    def upstream_detail(resp: Any) -> str:
        try:
            data = resp.json()
            error = data.get("error") if isinstance(data, dict) else None
            text = error.get("message") if isinstance(error, dict) else error
            return " ".join(str(text or data).split())[:300]
        except ValueError:
            return " ".join(resp.text.split())[:300] or resp.reason
        finally:
            resp.close()

    async def forward(job: Job, body: dict[str, Any], api: str, chat: bool,
                      local: BaseException) -> Any:
        """The upstream's answer, marked as such (``X-Sxpm-Fallback``, the log's
        ``fallback``); the local error and the upstream's reason when it has none."""
        upstream = server.fallback
        assert upstream is not None
        reason = api_error(local).message
        if api == "ollama" and not (body.get("messages") if chat else body.get("prompt")):
            return error_response(local, api, job)  # a load or an unload: nothing to answer
        model = body.get("model")
        # The name the upstream answered for, not a local model that failed to load.
        job.model = model if isinstance(model, str) else None
        job.expert = None
        job.fallback = upstream.url
        try:
            path, payload, stream = upstream_request(body, api, chat)
            resp = await run_in_threadpool(
                lambda: upstream.post(path, payload, stream=stream))
        except InputError as exc:
            return error_response(exc, api, job)
        except Exception as exc:  # noqa: BLE001 - network failures: one line, no traceback
            return error_response(ApiError(
                503, f"{reason}; the fallback {upstream.url} is unreachable "
                f"({type(exc).__name__})", "fallback_unavailable", {"Retry-After": "5"}),
                api, job)
        if resp.status_code != 200:
            detail = await run_in_threadpool(upstream_detail, resp)
            # The upstream's key or health is this server's problem, not the client's.
            status = resp.status_code if resp.status_code in (400, 404, 409, 413) else 503
            return error_response(ApiError(
                status, f"{reason}; the fallback {upstream.url} answered "
                f"{resp.status_code}: {detail}", "fallback_error"), api, job)
        headers = {"X-Sxpm-Fallback": upstream.url, "X-Request-Id": job.id}
        name = job.model or ""
        if not stream:
            try:
                data = await run_in_threadpool(resp.json)
            except ValueError:
                return error_response(ApiError(503, f"{reason}; the fallback {upstream.url} "
                                               "answered no JSON", "fallback_error"), api, job)
            finally:
                resp.close()
            usage = data.get("usage") or {}
            choice = (data.get("choices") or [{}])[0]
            job.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            job.completion_tokens = int(usage.get("completion_tokens") or 0)
            job.finish_reason = choice.get("finish_reason")
            server.finished(job)
            if api == "openai":
                return JSONResponse(data, headers=headers)
            return JSONResponse(ollama_final(job, name, chat, piece_text(choice)),
                                headers=headers)

        lines = resp.iter_lines()

        async def relay() -> AsyncIterator[str]:
            t_first = 0.0
            try:
                while True:
                    raw = await run_in_threadpool(next, lines, None)
                    if raw is None:
                        break
                    line = raw.decode("utf-8", "replace")
                    event: Any = None
                    if line.startswith("data:") and line[5:].strip() != "[DONE]":
                        try:
                            event = json.loads(line[5:])
                        except ValueError:
                            event = None
                    choice = (event.get("choices") or [{}])[0] if isinstance(
                        event, dict) else {}
                    text = piece_text(choice)
                    if choice.get("finish_reason"):
                        job.finish_reason = choice["finish_reason"]
                    elif text:
                        job.completion_tokens += 1
                        if job.first_token is None:
                            job.first_token, t_first = job.total, time.monotonic()
                        else:
                            job.generating = time.monotonic() - t_first
                    if api == "openai":
                        yield line + "\n"
                    elif text:
                        yield json.dumps(ollama_piece(name, chat, text)) + "\n"
                if api == "ollama":
                    yield json.dumps(ollama_final(job, name, chat, "")) + "\n"
            except BaseException:
                job.outcome = "cancelled"
                raise
            finally:
                resp.close()
                server.finished(job)

        return StreamingResponse(relay(), headers={**headers, "Cache-Control": "no-cache"},
                                 media_type="text/event-stream" if api == "openai"
                                 else "application/x-ndjson")

    # --- OpenAI --------------------------------------------------------------------

    def openai_params(body: dict[str, Any]) -> dict[str, Any]:
        return {"max_tokens": _int(body, "max_tokens", DEFAULT_MAX_TOKENS),
                "sampling": _sampling(body),
                "keep_alive": parse_keep_alive(body.get("keep_alive"))}

    async def openai_generate(request: Request, chat: bool) -> Any:
        endpoint = "/v1/chat/completions" if chat else "/v1/completions"

        def make(job: Job, body: dict[str, Any]) -> Generation:
            if chat:
                return server.start(job, body, chat=True, messages=_messages(body),
                                    **openai_params(body))
            prompt = body.get("prompt")
            if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
                prompt = prompt[0]
            if not isinstance(prompt, str):
                raise InputError("'prompt' must be a string")
            # OpenAI's completions take the prompt as given: no template.
            return server.start(job, body, chat=False, prompt=prompt, raw=True,
                                **openai_params(body))

        started = await begin(request, endpoint, "openai", make, chat=chat)
        if not isinstance(started, tuple):
            return started
        job, body, generation = started
        rid = ("chatcmpl-" if chat else "cmpl-") + job.id
        created = int(time.time())
        name = job.model if not job.expert else f"{job.model}+{job.expert}"

        def usage() -> dict[str, int]:
            return {"prompt_tokens": job.prompt_tokens,
                    "completion_tokens": job.completion_tokens,
                    "total_tokens": job.prompt_tokens + job.completion_tokens}

        if body.get("stream"):
            obj = "chat.completion.chunk" if chat else "text_completion"

            def chunk(content: str | None, finish: str | None, first: bool = False) -> str:
                if chat:
                    delta: dict[str, Any] = {"role": "assistant"} if first else {}
                    if content is not None:
                        delta["content"] = content
                    choice: dict[str, Any] = {"index": 0, "delta": delta,
                                              "finish_reason": finish}
                else:
                    choice = {"index": 0, "text": content or "", "finish_reason": finish,
                              "logprobs": None}
                data = {"id": rid, "object": obj, "created": created, "model": name,
                        "choices": [choice]}
                return f"data: {json.dumps(data)}\n\n"

            async def events() -> AsyncIterator[str]:
                if chat:
                    yield chunk(None, None, first=True)
                async for piece in generation.pieces():
                    yield chunk(piece, None)
                yield chunk(None if chat else "", job.finish_reason or "stop")
                yield "data: [DONE]\n\n"

            return GenerationStream(events(), generation, "text/event-stream")
        text = await collect(request, generation)
        if chat:
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant",
                                                              "content": text},
                                      "finish_reason": job.finish_reason, "logprobs": None}
        else:
            choice = {"index": 0, "text": text, "finish_reason": job.finish_reason,
                      "logprobs": None}
        return JSONResponse({"id": rid, "object": "chat.completion" if chat else
                             "text_completion", "created": created, "model": name,
                             "choices": [choice], "usage": usage()},
                            headers={"X-Request-Id": job.id})

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        return await openai_generate(request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        return await openai_generate(request, chat=False)

    @app.get("/v1/models")
    async def models() -> Any:
        entries = await run_in_threadpool(server.catalog.entries)
        return {"object": "list", "data": entries}

    async def embeddings(request: Request, api: str) -> Any:
        job = Job("/v1/embeddings" if api == "openai" else "/api/embed")
        try:
            body = await read_json(request)
            inputs = body.get("input")
            if isinstance(inputs, str):
                inputs = [inputs]
            if not isinstance(inputs, list) or not inputs or not all(
                    isinstance(i, str) for i in inputs):
                raise InputError("'input' must be a string or a list of strings")
            vectors = await run_in_threadpool(server.embed, job, body, inputs,
                                              parse_keep_alive(body.get("keep_alive")))
        except Exception as exc:  # noqa: BLE001 - every failure becomes an API error
            return error_response(exc, api, job)
        server.finished(job)
        if api == "ollama":
            return {"model": job.model, "embeddings": vectors,
                    "total_duration": int(job.total * NS),
                    "load_duration": int(job.load_seconds * NS),
                    "prompt_eval_count": job.prompt_tokens}
        return {"object": "list", "model": job.model,
                "data": [{"object": "embedding", "index": i, "embedding": v}
                         for i, v in enumerate(vectors)],
                "usage": {"prompt_tokens": job.prompt_tokens,
                          "total_tokens": job.prompt_tokens}}

    @app.post("/v1/embeddings")
    async def openai_embeddings(request: Request) -> Any:
        return await embeddings(request, "openai")

    # --- Ollama --------------------------------------------------------------------

    def ollama_params(body: dict[str, Any]) -> dict[str, Any]:
        options = body.get("options") or {}
        if not isinstance(options, dict):
            raise InputError("'options' must be an object")
        sampling = _sampling(options)
        return {"max_tokens": _int(options, "num_predict", DEFAULT_MAX_TOKENS),
                "sampling": sampling, "keep_alive": parse_keep_alive(body.get("keep_alive"))}

    def now_iso() -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def ollama_piece(name: str, chat: bool, text: str) -> dict[str, Any]:
        obj: dict[str, Any] = {"model": name, "created_at": now_iso(), "done": False}
        if chat:
            obj["message"] = {"role": "assistant", "content": text}
        else:
            obj["response"] = text
        return obj

    def ollama_final(job: Job, name: str, chat: bool, text: str) -> dict[str, Any]:
        obj = ollama_piece(name, chat, text)
        obj.update({"done": True, "done_reason": job.finish_reason or "stop",
                    "total_duration": int(job.total * NS),
                    "load_duration": int(job.load_seconds * NS),
                    "prompt_eval_count": job.prompt_tokens,
                    "prompt_eval_duration": int((job.first_token or 0) * NS),
                    "eval_count": job.completion_tokens,
                    "eval_duration": int(job.generating * NS)})
        return obj

    async def ollama_generate(request: Request, chat: bool) -> Any:
        endpoint = "/api/chat" if chat else "/api/generate"
        unloaded: list[str] = []

        def make(job: Job, body: dict[str, Any]) -> Generation | None:
            params = ollama_params(body)
            empty = not body.get("messages") if chat else not body.get("prompt")
            if empty and params["keep_alive"] == 0:
                # Ollama's way to unload: no prompt, keep_alive 0.
                target = server._target(job, body)
                path = str(target.model.path)
                unloaded.extend(server.manager.unload(lambda s: str(s.path) == path))
                return None
            if chat:
                return server.start(job, body, chat=True, messages=_messages(body), **params)
            prompt = body.get("prompt") or ""
            if not isinstance(prompt, str):
                raise InputError("'prompt' must be a string")
            return server.start(job, body, chat=False, prompt=prompt,
                                raw=bool(body.get("raw")), **params)

        started = await begin(request, endpoint, "ollama", make, chat=chat)
        if not isinstance(started, tuple):
            return started
        job, body, generation = started
        name = job.model if not job.expert else f"{job.model}+{job.expert}"
        if generation is None:
            server.finished(job)
            done: dict[str, Any] = {"model": name, "created_at": now_iso(), "done": True,
                                    "done_reason": "unload", "unloaded": unloaded}
            done["message" if chat else "response"] = {"role": "assistant", "content": ""} \
                if chat else ""
            return done

        if body.get("stream", True):
            async def lines() -> AsyncIterator[str]:
                async for piece in generation.pieces():
                    yield json.dumps(ollama_piece(name, chat, piece)) + "\n"
                yield json.dumps(ollama_final(job, name, chat, "")) + "\n"

            return GenerationStream(lines(), generation, "application/x-ndjson")
        text = await collect(request, generation)
        return JSONResponse(ollama_final(job, name, chat, text),
                            headers={"X-Request-Id": job.id})

    @app.post("/api/generate")
    async def api_generate(request: Request) -> Any:
        return await ollama_generate(request, chat=False)

    @app.post("/api/chat")
    async def api_chat(request: Request) -> Any:
        return await ollama_generate(request, chat=True)

    @app.post("/api/embed")
    async def api_embed(request: Request) -> Any:
        return await embeddings(request, "ollama")

    def details(entry: dict[str, Any]) -> dict[str, Any]:
        arch = entry.get("architecture") or ""
        return {"parent_model": "", "format": "gguf", "family": arch, "families": [arch],
                "parameter_size": "", "quantization_level": entry.get("variant") or ""}

    @app.get("/api/tags")
    async def api_tags() -> Any:
        entries = await run_in_threadpool(server.catalog.entries)
        return {"models": [{"name": e["id"], "model": e["id"], "modified_at": now_iso(),
                            "size": e["size"], "digest": "", "details": details(e),
                            "capabilities": e["capabilities"]} for e in entries]}

    @app.get("/api/ps")
    async def api_ps() -> Any:
        out = []
        for info in server.manager.loaded():
            expires = info["expires_at"]
            out.append({
                "name": info["name"], "model": info["name"], "size": info["memory"],
                "digest": "", "details": {"format": "gguf"},
                "expires_at": None if expires is None else time.strftime(
                    "%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires)),
                "size_vram": 0, "expert": info["expert"],
                "experts": [Path(p).name for p in info["experts"]],
                "embedding": info["embedding"], "busy": info["busy"],
                "queued": info["queued"]})
        return {"models": out}

    @app.post("/api/show")
    async def api_show(request: Request) -> Any:
        try:
            body = await read_json(request)
            target = await run_in_threadpool(server.catalog.find, _opt_str(body, "model"),
                                             _opt_str(body, "expert"))
        except Exception as exc:  # noqa: BLE001 - every failure becomes an API error
            return error_response(exc, "ollama")
        header = target.model.header
        info = {k: v for k, v in header.metadata.items()
                if isinstance(v, int | float | str) and not k.startswith("tokenizer.")}
        # The expert's template, else an Ollama model's own, else the GGUF chat template.
        own = target.session.template
        template = own.text if own is not None else target.session.chat_template or ""
        entry = {"architecture": header.architecture, "variant": target.model.variant}
        return {"modelfile": "", "parameters": "", "template": template,
                "details": details(entry), "model_info": info,
                "capabilities": capabilities(target.model),
                "expert": target.expert.name if target.expert else None}

    @app.get("/api/version")
    async def api_version() -> Any:
        return {"version": __version__}

    # --- operations ----------------------------------------------------------------

    @app.get("/health")
    async def health() -> Any:
        return {"status": "ok", "loaded": len(server.manager.loaded())}

    @app.get("/metrics")
    async def metrics() -> Any:
        return Response(server.metrics.text(),
                        media_type="text/plain; version=0.0.4; charset=utf-8")

    if server.api_key:
        # Plain ASGI, not ``@app.middleware("http")``: Starlette's BaseHTTPMiddleware relays
        # every streamed chunk through a memory stream and a task of its own, a cost on
        # each token; and without a key no middleware runs at all.
        app.add_middleware(BearerAuth, key=server.api_key, error_response=error_response)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Any:
        api = "ollama" if request.url.path.startswith("/api/") else "openai"
        return error_response(exc, api)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Any:
        api = "ollama" if request.url.path.startswith("/api/") else "openai"
        return error_response(ApiError(exc.status_code, str(exc.detail), "not_found"), api)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Any:
        api = "ollama" if request.url.path.startswith("/api/") else "openai"
        return error_response(ApiError(400, str(exc), "invalid_request_error"), api)

    return app


class BearerAuth:
    """Answers 401 unless a request (other than ``/health``) carries the bearer key."""

    def __init__(self, app: Any, key: str, error_response: Callable[..., Any]) -> None:
        self.app = app
        self.expected = f"Bearer {key}".encode()
        self.error_response = error_response

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] != "/health" and \
                dict(scope["headers"]).get(b"authorization") != self.expected:
            api = "ollama" if scope["path"].startswith("/api/") else "openai"
            response = self.error_response(
                ApiError(401, "Missing or wrong API key", "invalid_api_key"), api)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def serve(server: Server, host: str = "127.0.0.1", port: int = 8000, *,
          log_level: str = "warning") -> None:
    """Serve until interrupted."""
    check_port(host, port)
    try:
        import uvicorn
    except ImportError as exc:
        raise MissingExtraError("uvicorn", "run") from exc
    app = build_app(server)
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level)
    finally:
        server.manager.close()
