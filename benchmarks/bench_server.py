"""Server benchmark: ``sxpm serve`` against llama-cpp-python's own server, in one run.

Both servers run at once on loopback with the same GGUF file, threads and context
(``python -m llama_cpp.server --model FILE``, and ``sxpm serve`` with the file installed
as ``bench-llama`` in a temporary home, with a LoRA expert for it). Streaming
``/v1/completions`` requests alternate between the two (sxpm, llama, sxpm, ...) so that
load on the machine hits both alike; medians are reported:

* time to first token (request sent to first streamed token), target <= 1.05x;
* generation tokens/s after the first token, target >= 0.95x;
* a second request to the resident model loads nothing (``sxpm_model_load_seconds``
  count in /metrics stays 1, and /api/ps still lists it);
* switching the expert on the resident base (``queue_s`` of the request in the JSONL
  log: the adapter's first load, then later switches) against loading the base
  (``load_s``), target < 10%;
* 8 concurrent clients on one model, sent 50 ms apart: all complete, in arrival order.

    python benchmarks/bench_server.py --runs 5             # prints and updates docs
    python benchmarks/bench_server.py --runs 3 --no-write  # a quick check

The model is generated (``fixtures/tiny_gguf.py``): a llama with a vocabulary of
``--vocab`` tokens (default 128k, as recent real models), ``--layers`` blocks of
``--embd`` width, Q8_0: loading it takes about a second on 2 CPU cores, and the output
projection over the vocabulary dominates each token, as in a real small model.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "fixtures"))

START, END = "<!-- server:start -->", "<!-- server:end -->"
LOAD = os.getloadavg()  # the machine's state when the run began, for the docs
PROMPT = "Once upon a time there was a model server that kept its models resident"


def prepare(tmp: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    """A home with bench-llama and bench-expert installed; the model file and the home."""
    import tiny_gguf

    from sxpm.artifacts.pack import pack
    from sxpm.home import Home
    from sxpm.ops.install import install

    src = tmp / "src"
    model = tiny_gguf.make_model(src / "model" / "model.gguf", n_vocab=args.vocab,
                                 n_layers=args.layers, n_embd=args.embd, dtype="Q8_0",
                                 name="bench-llama")
    expert = src / "expert"
    expert.mkdir()
    tiny_gguf.make_lora(expert / "adapter.gguf", model, seed=1)
    (expert / "LICENSE").write_text("Apache-2.0\n")
    (expert / "manifest.json").write_text(json.dumps({
        "name": "bench-expert", "version": "1.0.0", "description": "benchmark adapter",
        "license": "Apache-2.0", "type": "lora", "weights": "adapter.gguf",
        "base_model": {"name": "bench-llama", "version": "^1.0", "architecture": "llama"}}))
    home = Home(tmp / "home")
    home.root.mkdir()
    reg = f"oci:{tmp / 'registry'}"
    for kind, name, path, version in (("model", "bench-llama", model.parent, "1.0.0"),
                                      ("expert", "bench-expert", expert, "1.0.0")):
        ref = home.parse_ref(f"{reg}/{name}:{version}")
        pack(home, kind, path, ref)
        install(home, ref)
    return model, home.root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running(cmd: list[str], env: dict[str, str], base: str, log: Path) -> Iterator[None]:
    import requests

    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"{cmd[:4]} exited: {log.read_text()[-2000:]}")
            try:
                if requests.get(f"{base}/v1/models", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"{cmd[:4]} did not start")
            time.sleep(0.2)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def stream(base: str, model: str, max_tokens: int) -> tuple[float, float, int]:
    """One streaming completion: seconds to the first token, tokens/s after it, tokens."""
    import requests

    body = {"model": model, "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0,
            "top_k": 1, "seed": 0, "stream": True}
    t0 = time.perf_counter()
    first = last = 0.0
    n = 0
    with requests.post(f"{base}/v1/completions", json=body, stream=True, timeout=300) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            choice = json.loads(line[6:])["choices"][0]
            if choice.get("finish_reason") or not choice.get("text"):
                continue
            n += 1
            last = time.perf_counter()
            if n == 1:
                first = last
    if n < 2:
        raise SystemExit(f"{base} generated {n} tokens")
    return first - t0, (n - 1) / (last - first), n


def load_count(base: str) -> float:
    import requests

    text = requests.get(f"{base}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("sxpm_model_load_seconds_count"))


def concurrent_order(base: str, clients: int, max_tokens: int) -> tuple[bool, bool, float]:
    """``clients`` requests sent 50 ms apart: all 200?, finished in arrival order?, wall."""
    import requests

    done: list[int] = []

    def one(i: int) -> int:
        r = requests.post(f"{base}/v1/completions", timeout=600, json={
            "model": "bench-llama", "prompt": PROMPT, "max_tokens": max_tokens,
            "temperature": 0})
        done.append(i)
        return r.status_code

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        futures = []
        for i in range(clients):
            futures.append(pool.submit(one, i))
            time.sleep(0.05)
        codes = [f.result() for f in futures]
    return all(c == 200 for c in codes), done == list(range(clients)), time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--vocab", type=int, default=128_000)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--embd", type=int, default=256)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="sxpm-bench-server-") as tmp_name:
        tmp = Path(tmp_name)
        model, home = prepare(tmp, args)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SXPM_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        env["SIMPLEX_HOME"] = str(home)
        sp, lp = free_port(), free_port()
        sxpm, llama = f"http://127.0.0.1:{sp}", f"http://127.0.0.1:{lp}"
        log = tmp / "requests.jsonl"
        sxpm_cmd = [sys.executable, "-m", "sxpm", "serve", "bench-llama", "--port", str(sp),
                    "--threads", str(args.threads), "--ctx", str(args.ctx), "--gpu-layers",
                    "0", "--keep-alive", "-1", "--log", str(log)]
        llama_cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model),
                     "--port", str(lp), "--n_threads", str(args.threads), "--n_ctx",
                     str(args.ctx), "--n_gpu_layers", "0", "--seed", "0"]
        with running(sxpm_cmd, env, sxpm, tmp / "sxpm.out"), \
                running(llama_cmd, env, llama, tmp / "llama.out"):
            stream(sxpm, "bench-llama", 4)  # the first request loads the model
            stream(llama, "bench-llama", 4)
            loads_before = load_count(sxpm)
            s_runs, l_runs = [], []
            for _ in range(args.runs):
                s_runs.append(stream(sxpm, "bench-llama", args.max_tokens))
                l_runs.append(stream(llama, "bench-llama", args.max_tokens))
            resident = load_count(sxpm) == loads_before == 1
            for _ in range(args.runs):  # alternate: every request switches the adapter
                stream(sxpm, "bench-llama+bench-expert", 4)
                stream(sxpm, "bench-llama", 4)
            all_ok, in_order, wall = concurrent_order(sxpm, args.clients, args.max_tokens)
        lines = [json.loads(x) for x in log.read_text().splitlines()]
        size = model.stat().st_size
    load_s = lines[0]["load_s"]
    # The log: the loading request, the timed runs, then base and expert alternating.
    alternating = lines[1 + args.runs:1 + 3 * args.runs]
    assert alternating[0]["expert"] and not alternating[1]["expert"]
    first_switch = alternating[0]["queue_s"]
    switch = statistics.median(x["queue_s"] for x in alternating[1:])
    reloaded = any(x["loaded"] for x in lines[1:])

    ttft_s, ttft_l = (statistics.median(r[0] for r in runs) for runs in (s_runs, l_runs))
    tps_s, tps_l = (statistics.median(r[1] for r in runs) for runs in (s_runs, l_runs))
    rows = [
        ("time to first token, sxpm serve (median)", f"{ttft_s * 1000:.0f} ms"),
        ("time to first token, llama_cpp.server (median)", f"{ttft_l * 1000:.0f} ms"),
        ("ratio sxpm / llama_cpp.server (target <= 1.05)", f"{ttft_s / ttft_l:.3f}"),
        ("generation, sxpm serve (median)", f"{tps_s:.1f} tokens/s"),
        ("generation, llama_cpp.server (median)", f"{tps_l:.1f} tokens/s"),
        ("ratio sxpm / llama_cpp.server (target >= 0.95)", f"{tps_s / tps_l:.3f}"),
        ("second request to the resident model loads nothing",
         "yes" if resident and not reloaded else "NO"),
        ("loading the base (`load_s`)", f"{load_s * 1000:.0f} ms"),
        ("first use of the expert on the resident base (adapter load)",
         f"{first_switch * 1000:.1f} ms ({first_switch / load_s:.1%} of the base load)"),
        ("switching base <-> expert afterwards (median, target < 10%)",
         f"{switch * 1000:.1f} ms ({switch / load_s:.1%} of the base load)"),
        (f"{args.clients} concurrent clients: all complete, in arrival order",
         f"{'yes' if all_ok else 'NO'}, {'yes' if in_order else 'NO'} ({wall:.1f} s)"),
    ]
    for label, value in rows:
        print(f"{label:64} {value}")
    ok = (ttft_s / ttft_l <= 1.05 and tps_s / tps_l >= 0.95 and resident and not reloaded
          and max(first_switch, switch) < 0.1 * load_s and all_ok and in_order)
    if not args.no_write:
        write_docs(rows, args, size)
    return 0 if ok else 1


def write_docs(rows: list[tuple[str, str]], args: argparse.Namespace, size: int) -> None:
    import llama_cpp
    from _doc import replace_block

    section = "\n".join([
        START,
        "## Server",
        "",
        f"`python benchmarks/bench_server.py {' '.join(sys.argv[1:])}` on "
        f"{platform.machine()} ({os.cpu_count()} cores, shared with other work), Python "
        f"{platform.python_version()}, llama-cpp-python {llama_cpp.__version__}, CPU only. "
        f"Model: generated llama, vocabulary {args.vocab}, {args.layers} layers x "
        f"{args.embd} wide, Q8_0 ({size / 1e6:.0f} MB GGUF); expert: a rank-4 LoRA for it. "
        f"Both servers: {args.threads} threads, n_ctx {args.ctx}; {args.runs} interleaved "
        f"streaming `/v1/completions` requests of {args.max_tokens} tokens each, greedy; "
        f"medians. Load average {LOAD[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at "
        "the end.",
        "",
        "| measure | value |",
        "| --- | --- |",
        *[f"| {label} | {value} |" for label, value in rows],
        "",
        "sxpm's own work per request is small next to the model's: resolving the name,",
        "the lease and tokenizing the prompt (once; the tokens go to llama.cpp as they",
        "are) take about 0.3 ms in process. Each token is stepped in the thread pool",
        "and sent before the next is computed, as llama_cpp.server does: a thread that",
        "ran the model ahead of the sender measured 0.4-0.5x the tokens/s here, its",
        "sending taking a core from llama.cpp's spinning threads. Both servers run",
        "2 llama.cpp threads on a 2-core machine that other work shares:",
        "when the load average passes the core count the spinning llama.cpp threads",
        "lose their cores and tokens/s drops from ~240 to ~10-50 for whichever server is",
        "unlucky, so single passes have measured either ratio from 0.5x to 3x. Compare",
        "ratios only from a pass whose load average (above) stayed under 2.",
        END,
    ])
    print(f"updated {replace_block(START, END, section)}")


if __name__ == "__main__":
    sys.exit(main())
