"""`sxpm serve` driven by real clients (openai, ollama, curl) on tiny real models."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from sxpm.home import Home

pytestmark = pytest.mark.llama
pytest.importorskip("llama_cpp")
pytest.importorskip("fastapi")
requests = pytest.importorskip("requests")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
import tiny_gguf  # noqa: E402


def installed_home(home: Path, sample_dir: Path, registry_dir: Path, tmp_path: Path) -> Home:
    """tiny-llama, chat-llama, embed-llama, other-llama and slow-llama installed, with
    sql-expert (for tiny-llama) and multi-expert (its other-llama variant)."""
    from sxpm.artifacts.pack import pack
    from sxpm.ops.install import install
    from sxpm.runner.locate import install_expert

    h = Home(home)
    reg = f"oci:{registry_dir}"
    slow = tmp_path / "slow-llama"
    # Wide enough that 200 tokens take a while: a client can leave mid-answer.
    tiny_gguf.make_model(slow / "model.gguf", seed=5, n_embd=256, n_layers=8,
                         name="slow-llama")
    for name, src in (("tiny-llama", sample_dir / "tiny-llama"),
                      ("chat-llama", sample_dir / "chat-llama"),
                      ("embed-llama", sample_dir / "embed-llama"),
                      ("other-llama", sample_dir / "other-llama"), ("slow-llama", slow)):
        ref = h.parse_ref(f"{reg}/{name}:1.0.0")
        pack(h, "model", src, ref)
        install(h, ref)
    pack(h, "expert", sample_dir / "sql-expert", h.parse_ref(f"{reg}/sql-expert:2.1.0"))
    install(h, h.parse_ref(f"{reg}/sql-expert:2.1.0"))
    pack(h, "expert", sample_dir / "multi-expert", h.parse_ref(f"{reg}/multi-expert:1.0.0"))
    install_expert(h, h.parse_ref(f"{reg}/multi-expert:1.0.0"), "other-llama")
    return h


@pytest.fixture
def ready(home: Path, sample_dir: Path, registry_dir: Path, tmp_path: Path) -> Home:
    return installed_home(home, sample_dir, registry_dir, tmp_path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(cli: Any, *args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "sxpm", "serve", *args, "--port", str(port),
                             "--threads", "2"], cwd=cli.cwd, env={**cli.env, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"server exited: {proc.stdout.read() if proc.stdout else ''}")
            try:
                if requests.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        yield base
        assert proc.poll() is None, "the server died"
    finally:
        proc.terminate()
        try:
            out = proc.communicate(timeout=20)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            out = proc.communicate()[0]
        assert "Traceback" not in (out or ""), out


def post(base: str, path: str, body: dict[str, Any], **kw: Any) -> Any:
    return requests.post(f"{base}{path}", json=body, timeout=60, **kw)


def ps(base: str) -> list[str]:
    return [m["name"] for m in requests.get(f"{base}/api/ps", timeout=10).json()["models"]]


def log_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


GREEDY = {"temperature": 0, "max_tokens": 8}


def test_openai_and_ollama_clients_and_curl(cli: Any, ready: Home, tmp_path: Path) -> None:
    openai = pytest.importorskip("openai")
    ollama = pytest.importorskip("ollama")
    log = tmp_path / "requests.jsonl"
    with serving(cli, "--log", str(log)) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused")
        listed = {m.id: m for m in client.models.list().data}
        assert {"tiny-llama@1.0.0", "chat-llama@1.0.0", "embed-llama@1.0.0"} <= set(listed)
        assert listed["embed-llama@1.0.0"].capabilities == ["embedding"]  # type: ignore[attr-defined]
        assert "chat" in listed["chat-llama@1.0.0"].capabilities  # type: ignore[attr-defined]
        assert str(ready.root) not in requests.get(f"{base}/v1/models", timeout=10).text

        chat = client.chat.completions.create(
            model="chat-llama", messages=[{"role": "user", "content": "hi"}], **GREEDY)
        text = chat.choices[0].message.content
        assert text and chat.usage and chat.usage.completion_tokens == 8
        streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="chat-llama", messages=[{"role": "user", "content": "hi"}], stream=True,
            **GREEDY))
        assert streamed == text
        done = client.completions.create(model="tiny-llama@1.0.0", prompt="list users", **GREEDY)
        assert done.choices[0].text.strip()
        vectors = client.embeddings.create(model="embed-llama", input=["a", "bc"])
        assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 64
        with pytest.raises(openai.BadRequestError):
            client.embeddings.create(model="tiny-llama", input="a")
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="ghost", messages=[
                {"role": "user", "content": "x"}], **GREEDY)

        oc = ollama.Client(host=base)
        gen = oc.generate(model="tiny-llama", prompt="list users", stream=False,
                          options={"num_predict": 8, "temperature": 0})
        assert gen.response and gen.done and gen.eval_count == 8
        pieces = [p.response for p in oc.generate(model="tiny-llama", prompt="list users",
                                                  stream=True,
                                                  options={"num_predict": 8, "temperature": 0})]
        assert "".join(pieces) == gen.response
        ochat = oc.chat(model="chat-llama", messages=[{"role": "user", "content": "hi"}],
                        options={"num_predict": 8, "temperature": 0})
        assert ochat.message.content == text  # one template, two APIs: the same answer
        assert len(oc.embed(model="embed-llama", input="hello").embeddings[0]) == 64
        assert {m.model for m in oc.list().models} >= {"tiny-llama@1.0.0", "chat-llama@1.0.0"}
        running = {m.model for m in oc.ps().models}
        assert {"tiny-llama@1.0.0", "chat-llama@1.0.0", "embed-llama@1.0.0"} <= running
        shown = oc.show("chat-llama")
        assert "<|assistant|>" in (shown.template or "")
        assert requests.get(f"{base}/api/version", timeout=10).json()["version"]

        # curl: a form-encoded body (curl -d without a content type), malformed JSON
        url = f"{base}/v1/chat/completions"
        r = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", url, "-d",
                            '{"model":"chat-llama","messages":[]}'],
                           capture_output=True, text=True, check=True)
        body, code = r.stdout.rsplit("\n", 1)
        assert code == "400" and "application/json" in json.loads(body)["error"]["message"]
        r = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", url, "-H",
                            "Content-Type: application/json", "-d", "{nope"],
                           capture_output=True, text=True, check=True)
        assert r.stdout.endswith("\n400") and "Malformed JSON" in r.stdout
        r = subprocess.run(["curl", "-s", f"{base}/metrics"], capture_output=True, text=True,
                           check=True)
        assert 'sxpm_generated_tokens_total{model="chat-llama@1.0.0"}' in r.stdout
        assert "sxpm_time_to_first_token_seconds" in r.stdout and "sxpm_queue_depth" in r.stdout
        assert "sxpm_loaded_models 3.0" in r.stdout

        # bad input, in each API's own shape; the server keeps serving
        msg = {"messages": [{"role": "user", "content": "x"}], **GREEDY}
        r = post(base, "/v1/chat/completions", {"model": "tiny-llama+ghost-expert", **msg})
        assert r.status_code == 404 and "ghost-expert" in r.json()["error"]["message"]
        r = post(base, "/v1/chat/completions", {"model": "chat-llama+sql-expert", **msg})
        assert r.status_code == 409, r.text
        r = post(base, "/api/chat", {"model": "tiny-llama", "expert": "multi-expert",
                                     "messages": msg["messages"]})
        assert r.status_code == 409 and isinstance(r.json()["error"], str)
        r = post(base, "/v1/completions", {"model": "tiny-llama", "prompt": "y" * 3000})
        assert r.status_code == 413, r.text
        r = post(base, "/api/generate", {"model": "ghost", "prompt": "x"})
        assert r.status_code == 404 and "ghost" in r.json()["error"]

        # sxpm ps / stop talk to the server
        port = base.rsplit(":", 1)[1]
        names = {m["name"] for m in cli("ps", "--port", port, "--json").json}
        assert "chat-llama@1.0.0" in names
        assert "unloaded chat-llama@1.0.0" in cli("stop", "chat-llama", "--port", port).stdout
        assert "chat-llama@1.0.0" not in ps(base)
    lines = log_lines(log)
    ok = [x for x in lines if x["status"] == 200 and x["endpoint"] == "/v1/chat/completions"]
    assert ok and ok[0]["model"] == "chat-llama@1.0.0" and ok[0]["completion_tokens"] == 8
    assert ok[0]["loaded"] and not ok[1]["loaded"]  # the second request loads nothing
    assert {x["status"] for x in lines} >= {200, 400, 404, 409, 413}
    assert all({"id", "model", "expert", "ttft_s", "total_s"} <= set(x) for x in lines)
    r = cli.fail("ps", "--port", str(free_port()), code=1)
    assert "No sxpm server" in r.stderr


def test_single_model_with_expert_switches_without_reloading(cli: Any, ready: Home,
                                                            tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    args = ["-p", "list users", "-n", "8", "--threads", "2", "--raw"]
    want_expert = cli("run", "tiny-llama", "--expert", "sql-expert", *args[:-1], "--json").json
    want_base = cli("run", "tiny-llama", *args).stdout.strip()
    with serving(cli, "tiny-llama", "--log", str(log)) as base:
        def complete(model: str, prompt: str) -> str:
            r = post(base, "/v1/completions", {"model": model, "prompt": prompt, **GREEDY})
            assert r.status_code == 200, r.text
            return str(r.json()["choices"][0]["text"])

        expert_prompt = want_expert["prompt"]
        assert complete("tiny-llama+sql-expert", expert_prompt) == want_expert["text"]
        assert complete("tiny-llama", "list users") == want_base
        assert complete("tiny-llama@1.0.0+sql-expert@2.1.0", expert_prompt) == want_expert["text"]
        r = post(base, "/v1/completions", {"model": "chat-llama", "prompt": "x"})
        assert r.status_code == 404  # only the named model is served
        models = requests.get(f"{base}/api/ps", timeout=10).json()["models"]
        assert len(models) == 1 and models[0]["expert"] == "sql-expert"
    loads = [x["loaded"] for x in log_lines(log) if x["status"] == 200]
    assert loads == [True, False, False]  # the expert switched on the resident base


def test_keep_alive_and_max_loaded(cli: Any, ready: Home) -> None:
    body = {"prompt": "x", "stream": False, "options": {"num_predict": 2}}
    with serving(cli, "--max-loaded", "1", "--keep-alive", "2s") as base:
        assert post(base, "/api/generate", {"model": "tiny-llama", **body}).status_code == 200
        assert ps(base) == ["tiny-llama@1.0.0"]
        assert post(base, "/api/generate", {"model": "chat-llama", **body}).status_code == 200
        assert ps(base) == ["chat-llama@1.0.0"]  # the least recently used went out
        deadline = time.monotonic() + 10
        while ps(base):
            assert time.monotonic() < deadline, "keep-alive did not expire"
            time.sleep(0.2)
        r = post(base, "/api/generate", {"model": "tiny-llama", "keep_alive": 0, **body})
        assert r.status_code == 200 and ps(base) == []  # 0: unloaded at once
        r = post(base, "/api/generate", {"model": "tiny-llama", "keep_alive": -1, **body})
        assert requests.get(f"{base}/api/ps", timeout=10).json()["models"][0][
            "expires_at"] is None


def test_queue_cap_and_arrival_order(cli: Any, ready: Home) -> None:
    body = {"model": "slow-llama", "prompt": "x", "stream": False,
            "options": {"num_predict": 60, "temperature": 0}}
    with serving(cli, "--max-queue", "1") as base:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            futures = []
            for _ in range(6):
                futures.append(pool.submit(post, base, "/api/generate", body))
                time.sleep(0.02)
            replies = [f.result() for f in futures]
        codes = [r.status_code for r in replies]
        assert codes.count(503) >= 1 and set(codes) == {200, 503}, codes
        full = next(r for r in replies if r.status_code == 503)
        assert int(full.headers["Retry-After"]) >= 1 and "waiting" in full.json()["error"]
        assert post(base, "/api/generate", body).status_code == 200  # still serving


def test_client_disconnect_stops_generation(cli: Any, ready: Home, tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    with serving(cli, "--log", str(log)) as base:
        body = {"model": "slow-llama", "prompt": "x", "max_tokens": 200, "stream": True,
                "temperature": 0}
        with requests.post(f"{base}/v1/completions", json=body, stream=True,
                           timeout=60) as r:
            lines = r.iter_lines()
            for _ in range(3):
                next(lines)
        deadline = time.monotonic() + 20
        while not log_lines(log):
            assert time.monotonic() < deadline, "no log line"
            time.sleep(0.1)
        line = log_lines(log)[0]
        assert line["outcome"] == "cancelled" and line["completion_tokens"] < 100, line
        # the model is free again at once
        r = post(base, "/v1/completions", {**body, "stream": False, "max_tokens": 4})
        assert r.status_code == 200


def test_api_key_guards_every_route_but_health_and_streams_with_it(cli: Any,
                                                                    ready: Home) -> None:
    with serving(cli, "--api-key", "s3cret") as base:
        body = {"model": "tiny-llama", "prompt": "list users", "stream": True, **GREEDY}
        r = post(base, "/v1/completions", body)
        assert r.status_code == 401 and r.json()["error"]["code"] == 401, r.text
        r = post(base, "/api/generate", body, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and "API key" in r.json()["error"], r.text
        assert requests.get(f"{base}/health", timeout=10).status_code == 200
        ok = post(base, "/v1/completions", body, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200, ok.text
        assert ok.text.count("data: ") >= 3 and ok.text.endswith("data: [DONE]\n\n")


def test_residency_manager_queue_is_fifo_and_capped() -> None:
    """The manager's own rules, with a loader that loads a plain object."""
    import threading

    from sxpm.errors import QueueFullError
    from sxpm.runner.residency import LoadSpec, ResidencyManager

    manager = ResidencyManager(keep_alive=-1, max_queue=8)
    spec = LoadSpec("m@1", Path("/m"), 16, 0, loader=lambda: object())
    order: list[int] = []
    first = manager.acquire(spec)
    threads = []
    for i in range(8):
        def use(i: int = i) -> None:
            with manager.lease(spec):
                order.append(i)
        t = threading.Thread(target=use)
        t.start()
        threads.append(t)
        deadline = time.monotonic() + 5
        while manager.queue_depth() < i + 1:
            assert time.monotonic() < deadline
            time.sleep(0.001)
    with pytest.raises(QueueFullError):
        manager.acquire(spec)
    first.release()
    for t in threads:
        t.join(5)
    assert order == list(range(8))
    other = LoadSpec("n@1", Path("/n"), 16, 0, loader=lambda: object())
    capped = ResidencyManager(max_loaded=1)
    with capped.lease(spec):
        pass
    with capped.lease(other):
        assert [m["name"] for m in capped.loaded()] == ["n@1"]
    assert ("evicted", "m@1") in capped.events


def unloadable_model(path: Path, name: str) -> Path:
    """A GGUF whose header reads well but that llama.cpp refuses (unknown architecture)."""
    import gguf
    import numpy as np

    path.mkdir(parents=True)
    w = gguf.GGUFWriter(path / "model.gguf", "nope")
    w.add_name(name)
    w.add_block_count(1)
    w.add_context_length(128)
    w.add_embedding_length(32)
    w.add_tensor("token_embd.weight", np.zeros((8, 32), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_fallback_to_an_upstream_server(cli: Any, cli2: Any, ready: Home, registry_dir: Path,
                                        tmp_path: Path) -> None:
    """A second `sxpm serve` (the home with the models) answers what the first one (a home
    without them, or with a model that cannot load) cannot, with the upstream's key."""
    openai = pytest.importorskip("openai")
    ollama = pytest.importorskip("ollama")
    from sxpm.artifacts.pack import pack
    from sxpm.ops.install import install

    h2 = Home(Path(cli2.env["SIMPLEX_HOME"]))
    ref = h2.parse_ref(f"oci:{registry_dir}/chat-llama:9.0.0")
    pack(h2, "model", unloadable_model(tmp_path / "broken", "chat-llama"), ref)
    install(h2, ref)  # chat-llama here cannot load; tiny-llama is not installed at all
    log = tmp_path / "fallback.jsonl"
    msg = [{"role": "user", "content": "hi"}]
    opts = {"num_predict": 8, "temperature": 0}
    with serving(cli, "--api-key", "up-key") as up:
        upstream = f"{up}/v1"
        direct = openai.OpenAI(base_url=upstream, api_key="up-key")
        want_chat = direct.chat.completions.create(model="chat-llama", messages=msg,
                                                   **GREEDY).choices[0].message.content
        want_text = direct.completions.create(model="tiny-llama", prompt="list users",
                                              **GREEDY).choices[0].text
        h2.save_config({"runner": {"fallback": upstream, "fallback_key_env": "UP_KEY"}})
        with serving(cli2, "--log", str(log), env={"UP_KEY": "up-key"}) as base:
            client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused")
            raw = client.chat.completions.with_raw_response.create(
                model="chat-llama", messages=msg, **GREEDY)
            assert raw.headers["X-Sxpm-Fallback"] == upstream
            assert raw.parse().choices[0].message.content == want_chat
            streamed = client.chat.completions.create(model="chat-llama", messages=msg,
                                                      stream=True, **GREEDY)
            assert "".join(c.choices[0].delta.content or "" for c in streamed) == want_chat
            raw = client.completions.with_raw_response.create(
                model="tiny-llama", prompt="list users", stream=True, **GREEDY)
            assert raw.headers["X-Sxpm-Fallback"] == upstream
            assert "".join(c.choices[0].text for c in raw.parse()) == want_text

            oc = ollama.Client(host=base)
            gen = oc.generate(model="tiny-llama", prompt="list users", raw=True, stream=False,
                              options=opts)
            assert gen.response == want_text and gen.eval_count == 8
            pieces = [p.message.content for p in oc.chat(model="chat-llama", messages=msg,
                                                         stream=True, options=opts)]
            assert "".join(pieces) == want_chat

            r = post(base, "/v1/chat/completions", {"model": "ghost", "messages": msg})
            assert r.status_code == 404, r.text
            text = r.json()["error"]["message"]
            assert "ghost" in text and f"fallback {upstream} answered 404" in text
            r = post(base, "/api/generate", {"model": "tiny-llama", "prompt": "x",
                                             "options": {"num_predict": "many"}})
            assert r.status_code == 400  # bad input is answered here, never forwarded
    lines = log_lines(log)
    assert [x["fallback"] for x in lines[:5]] == [upstream] * 5
    assert [x["status"] for x in lines[:5]] == [200] * 5
    assert lines[0]["model"] == "chat-llama" and lines[0]["completion_tokens"] == 8
    assert lines[5]["fallback"] == upstream and lines[5]["status"] == 404
    assert lines[6]["fallback"] is None and lines[6]["status"] == 400


def test_help_example_of_serve_sends_json() -> None:
    from click.testing import CliRunner

    from sxpm.cli.main import cli as main_cli

    out = CliRunner().invoke(main_cli, ["serve", "--help"]).output
    assert "Content-Type: application/json" in out




def test_an_error_reply_never_says_where_files_lie() -> None:
    """llama.cpp names the model file it failed to load; the client gets the file's
    name, the server's log the whole text."""
    from sxpm.errors import StoreError
    from sxpm.runner.server import api_error

    err = api_error(ValueError("Failed to load model from file: "
                               "/srv/simplex/models/tiny/1.0.0/model.gguf"))
    assert (err.status, err.kind) == (503, "model_unavailable")
    assert err.message == "Failed to load model from file: model.gguf"
    assert "/srv/simplex/models/tiny/1.0.0/model.gguf" in err.detail
    changed = api_error(StoreError("/home/u/.simplex/models/tiny/1.0.0/model.gguf changed"))
    assert "/home/u" not in changed.message and "model.gguf changed" in changed.message
    # References and URLs are not paths.
    assert "oci:/reg/tiny:1.0" in api_error(ValueError("pull oci:/reg/tiny:1.0")).message
