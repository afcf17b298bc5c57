"""sxpm run / serve / load on the CPU with the real fixture model and expert."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sxpm.home import Home

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "list users"

llama = pytest.mark.llama


def packed(home: Path, sample_dir: Path, registry_dir: Path, *, install: bool = True) -> Home:
    """A home with tiny-llama (F32 + F16), sql-expert and multi-expert packed (and
    tiny-llama F32 and sql-expert installed)."""
    from sxpm.artifacts.pack import pack
    from sxpm.ops.install import install as do_install

    h = Home(home)
    reg = f"oci:{registry_dir}"
    pack(h, "model", sample_dir / "tiny-llama", h.parse_ref(f"{reg}/tiny-llama:1.0.0"),
         variant="F32")
    pack(h, "model", sample_dir / "tiny-llama-f16", h.parse_ref(f"{reg}/tiny-llama:1.0.0"),
         variant="F16")
    pack(h, "model", sample_dir / "other-llama", h.parse_ref(f"{reg}/other-llama:1.0.0"))
    pack(h, "expert", sample_dir / "sql-expert", h.parse_ref(f"{reg}/sql-expert:2.1.0"))
    pack(h, "expert", sample_dir / "multi-expert", h.parse_ref(f"{reg}/multi-expert:1.0.0"))
    if install:
        do_install(h, h.parse_ref(f"{reg}/tiny-llama:1.0.0"), variant="F32")
        do_install(h, h.parse_ref(f"{reg}/sql-expert:2.1.0"))
    return h


@pytest.fixture
def ready(home: Path, sample_dir: Path, registry_dir: Path) -> Home:
    return packed(home, sample_dir, registry_dir)


# --- the command line ----------------------------------------------------------------


@llama
def test_run_is_deterministic_and_the_expert_changes_the_output(cli, ready: Home,  # noqa: ANN001
                                                                 registry_dir: Path) -> None:
    pytest.importorskip("llama_cpp")
    args = ["-p", PROMPT, "--max-tokens", "12", "--threads", "2"]
    base = cli("run", "tiny-llama", *args).stdout
    assert base.strip() and cli("run", "tiny-llama@1.0.0", *args).stdout == base
    expert = cli("run", "tiny-llama", "--expert", "sql-expert", *args, "--json").json
    assert expert["prompt"] == f"### Question\n{PROMPT}\n### SQL\n"  # the template applied
    assert expert["text"].strip() and expert["text"] != base.strip()
    assert expert["expert"]["adapter"].endswith("adapter.gguf")
    assert expert["n_gpu_layers"] == 0 or expert["plan"]
    # The same greedy output from the Python API, and from a reference in the store.
    from sxpm.runner.session import load

    with load("tiny-llama", "sql-expert", home=ready, n_threads=2) as session:
        assert session.generate(PROMPT, max_tokens=12) == expert["text"]
        assert "".join(session.generate(PROMPT, max_tokens=12, stream=True)) == expert["text"]
    ref = f"oci:{registry_dir}/tiny-llama:1.0.0"
    store_run = cli("run", ref, "--variant", "F32", *args, "--json").json
    assert store_run["model"]["origin"] == "store" and store_run["text"] == base.strip()


@llama
def test_python_api_loads_lazily_and_releases(ready: Home, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    pytest.importorskip("llama_cpp")
    import sxpm

    monkeypatch.setenv("SIMPLEX_HOME", str(ready.root))
    session = sxpm.load("tiny-llama", expert="sql-expert", n_threads=2)
    assert not session.loaded and "not loaded" in repr(session)
    first = session.generate(PROMPT, max_tokens=8)
    assert session.loaded and first.strip()
    reply = session.chat(PROMPT, max_tokens=8)
    # chat goes through the expert's template as the chat format: same prompt, same text
    assert reply == first
    assert "".join(session.chat([{"role": "user", "content": PROMPT}], max_tokens=8,
                                stream=True)) == first
    session.close()
    assert not session.loaded
    assert session.generate(PROMPT, max_tokens=8) == first  # loads again
    session.close()
    plain = sxpm.load("tiny-llama", n_threads=2)
    with plain:
        assert plain.generate(PROMPT, max_tokens=8) != first
        assert plain.chat("hello", max_tokens=4).strip()


def test_help_imports_no_heavy_module() -> None:
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "import sxpm.cli.main as m\n"
        "for args in (['--help'], ['run', '--help'], ['serve', '--help'], ['expert', '--help']):\n"
        "    r = CliRunner().invoke(m.cli, args)\n"
        "    assert r.exit_code == 0, r.output\n"
        "heavy = [n for n in ('llama_cpp', 'numpy', 'gguf', 'pynvml', 'uvicorn', 'fastapi')"
        " if n in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)


FAKE_LLAMA = """\
def llama_supports_gpu_offload():
    return False

class Llama:
    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def create_completion(self, prompt, stream=False, **kw):
        return iter([{"choices": [{"text": "ok"}]}])

    def close(self):
        pass
"""


def test_run_by_name_imports_only_the_runner(ready: Home, tmp_path: Path) -> None:
    """`sxpm run NAME` finds the installed model from its install record: no store, OCI,
    schema, HTTP or version library is imported on the way to llama.cpp."""
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "llama_cpp.py").write_text(FAKE_LLAMA)
    code = (
        "import sys\n"
        "from sxpm.cli.main import main\n"
        "sys.argv = ['sxpm', 'run', 'tiny-llama', '-p', 'x', '--stream']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "heavy = sorted(n for n in sys.modules if n.split('.')[0] in ('jsonschema', 'requests',"
        " 'urllib3', 'cachecontrol', 'filelock', 'gguf', 'semantic_version', 'tomlkit',"
        " 'tarfile') or n in ('sxpm.core.oci', 'sxpm.store.layout', 'sxpm.installed.tree',"
        " 'sxpm.core.reference', 'sxpm.ops.transfer', 'sxpm.transport',"
        " 'sxpm.runner.templates'))\n"
        "assert not heavy, heavy\n"
    )
    env = {**os.environ, "SIMPLEX_HOME": str(ready.root),
           "PYTHONPATH": os.pathsep.join([str(fake), str(ROOT)])}
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, timeout=60,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_cli_lists_the_runner_commands(cli) -> None:  # noqa: ANN001
    top = cli("--help").stdout
    for name in ("run", "serve", "doctor", "expert"):
        assert name in top
        assert "Example:" in cli(name, "--help").stdout
    for sub in ("list", "install", "remove", "info"):
        assert "Example:" in cli("expert", sub, "--help").stdout


def test_doctor_json(cli) -> None:  # noqa: ANN001
    data = cli("doctor", "--json", env={"CUDA_VISIBLE_DEVICES": "0"}).json
    assert data["backend"] in ("cpu", "cuda", "rocm", "metal")
    assert data["cpu"]["cores"] >= 1
    assert data["visible_devices"] == {"CUDA_VISIBLE_DEVICES": "0"}
    assert set(data["llama_cpp"]) >= {"installed", "gpu_offload", "version"}
    assert "backend" in cli("doctor").stdout


# --- experts ---------------------------------------------------------------------------


def test_expert_group_installs_the_variant_for_a_model(cli, home: Path,  # noqa: ANN001
                                                        sample_dir: Path,
                                                        registry_dir: Path) -> None:
    packed(home, sample_dir, registry_dir, install=False)
    ref = f"oci:{registry_dir}/multi-expert:1.0.0"
    out = cli("expert", "install", ref, "--for", "other-llama", "--json").json
    assert out["variant"] == "other-llama"
    assert (Path(out["path"]) / "adapters" / "other-llama.gguf").is_file()
    assert cli("expert", "list", "--json").json[0]["name"] == "multi-expert"
    info = cli("expert", "info", "multi-expert", "--json").json
    assert info["base_models"] == ["tiny-llama", "other-llama"]
    assert info["base_model"] == "other-llama" and info["variants"] == ["tiny-llama",
                                                                          "other-llama"]
    r = cli.fail("expert", "install", ref, "--for", "ghost-llama", code=2)
    assert "no variant for it" in r.stderr
    cli("expert", "remove", "multi-expert")
    assert cli("expert", "list", "--json").json == []


def test_expert_for_another_base_model_is_refused_before_loading(
        cli, home: Path, sample_dir: Path, registry_dir: Path) -> None:  # noqa: ANN001
    packed(home, sample_dir, registry_dir)
    # manifest: sql-expert is built for tiny-llama only
    cli("model", "install", f"oci:{registry_dir}/other-llama:1.0.0")
    r = cli.fail("run", "other-llama", "--expert", "sql-expert", "-p", "x", code=2)
    assert "manifest names tiny-llama" in r.stderr and "sxpm run tiny-llama" in r.stderr
    # v2 expert installed for other-llama, run on tiny-llama: the wrong variant
    cli("expert", "install", f"oci:{registry_dir}/multi-expert:1.0.0", "--for", "other-llama")
    r = cli.fail("run", "tiny-llama", "--expert", "multi-expert", "-p", "x", code=2)
    assert "installed variant is built for other-llama" in r.stderr
    assert "--for tiny-llama" in r.stderr


def test_adapter_of_another_architecture_is_refused(cli, home: Path, tmp_path: Path,  # noqa: ANN001
                                                    sample_dir: Path,
                                                    registry_dir: Path) -> None:
    import samples

    h = packed(home, sample_dir, registry_dir)
    src = samples.write_foreign_expert(tmp_path / "gpt-expert")
    ref = f"oci:{registry_dir}/gpt-expert:1.0.0"
    cli("pack", "expert", src, "--ref", ref)
    # `sxpm expert install` refuses it too (tests/test_expert_compat.py): installed
    # behind its back, `sxpm run` must still refuse it
    from sxpm.ops.install import install as do_install

    do_install(h, h.parse_ref(ref))
    r = cli.fail("run", "tiny-llama", "--expert", "gpt-expert", "-p", "x", code=2)
    assert "'gpt2'" in r.stderr and "'llama'" in r.stderr


def test_template_with_unknown_variables(cli, home: Path, tmp_path: Path,  # noqa: ANN001
                                         sample_dir: Path, registry_dir: Path) -> None:
    import shutil

    packed(home, sample_dir, registry_dir)
    src = tmp_path / "bad-template"
    shutil.copytree(sample_dir / "sql-expert", src)
    (src / "template.txt").write_text("### {context}\n{prompt}\n{question}\n")
    manifest = json.loads((src / "manifest.json").read_text())
    manifest["name"] = "bad-template"
    (src / "manifest.json").write_text(json.dumps(manifest))
    ref = f"oci:{registry_dir}/bad-template:2.1.0"
    cli("pack", "expert", src, "--ref", ref)
    cli("expert", "install", ref)
    r = cli.fail("run", "tiny-llama", "--expert", "bad-template", "-p", "x", code=2)
    assert "{context}, {question}" in r.stderr and "template.txt" in r.stderr


# --- bad models and missing installs ---------------------------------------------------


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_or_truncated_gguf(cli, ready: Home, damage: str) -> None:  # noqa: ANN001
    path = ready.root / "models" / "tiny-llama" / "1.0.0" / "model.gguf"
    data = path.read_bytes()
    path.unlink()  # a hard link into the store: replace it, leave the blob alone
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"GGUF" + bytes(64))
    r = cli.fail("run", "tiny-llama", "-p", "x", code=1)
    assert str(path) in r.stderr and ("truncated" in r.stderr or "version" in r.stderr)


def test_not_installed_offers_the_install_command(cli, home: Path,  # noqa: ANN001
                                                  sample_dir: Path, registry_dir: Path) -> None:
    packed(home, sample_dir, registry_dir, install=False)
    r = cli.fail("run", "tiny-llama", "-p", "x", code=2)
    assert f"sxpm model install oci:{registry_dir}/tiny-llama:1.0.0" in r.stderr
    r = cli.fail("run", "ghost", "-p", "x", code=2)
    assert "No installed model 'ghost'" in r.stderr


@llama
def test_install_first_when_agreed(cli, home: Path, sample_dir: Path,  # noqa: ANN001
                                   registry_dir: Path) -> None:
    pytest.importorskip("llama_cpp")
    packed(home, sample_dir, registry_dir, install=False)
    out = cli("run", "tiny-llama", "--expert", "sql-expert", "-p", PROMPT, "-n", "4", "--json",
              env={"SXPM_AUTO_INSTALL": "1"}).json
    assert out["text"].strip() and out["model"]["origin"] == "installed"
    # no variant asked: the largest that fits here (F32 over F16)
    assert out["model"]["variant"] == "F32"
    assert [m["name"] for m in cli("model", "list", "--json").json] == ["tiny-llama"]
    assert [m["name"] for m in cli("expert", "list", "--json").json] == ["sql-expert"]


def test_run_without_llama_cpp_says_what_to_install(cli, ready: Home, tmp_path: Path  # noqa: ANN001
                                                    ) -> None:
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "llama_cpp.py").write_text("raise ImportError('blocked for the test')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(blocker), cli.env["PYTHONPATH"]])}
    r = cli.fail("run", "tiny-llama", "-p", "x", code=1, env=env)
    assert "pip install 'sxpm[run]'" in r.stderr


# --- serve -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_refuses_a_port_in_use(cli, ready: Home) -> None:  # noqa: ANN001
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = cli.fail("serve", "tiny-llama", "--port", str(port), code=1)
    assert f"127.0.0.1:{port}" in r.stderr and "already in use" in r.stderr


@llama
def test_serve_answers_openai_requests(cli, ready: Home) -> None:  # noqa: ANN001
    pytest.importorskip("llama_cpp.server.app")
    import requests

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sxpm", "serve", "tiny-llama", "--expert", "sql-expert",
         "--port", str(port), "--threads", "2"],
        cwd=cli.cwd, env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"server exited: {proc.stdout.read() if proc.stdout else ''}")
            try:
                models = requests.get(f"{base}/models", timeout=5)
                if models.status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        assert models.json()["data"][0]["id"] == "tiny-llama@1.0.0+sql-expert@2.1.0"
        body = {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 8,
                "temperature": 0}
        reply = requests.post(f"{base}/chat/completions", json=body, timeout=60)
        assert reply.status_code == 200, reply.text
        text = reply.json()["choices"][0]["message"]["content"]
        assert text.strip()
        pieces: list[str] = []
        with requests.post(f"{base}/chat/completions", json={**body, "stream": True},
                           stream=True, timeout=60) as streamed:
            assert streamed.headers["content-type"].startswith("text/event-stream")
            for line in streamed.iter_lines(decode_unicode=True):
                if not line or not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    break
                delta = json.loads(line[6:])["choices"][0]["delta"]
                pieces.append(delta.get("content") or "")
        assert "".join(pieces) == text
        completion = requests.post(f"{base}/completions", json={
            "prompt": f"### Question\n{PROMPT}\n### SQL\n", "max_tokens": 8,
            "temperature": 0}, timeout=60).json()
        # the chat format is the expert's template: same prompt, same greedy text
        assert completion["choices"][0]["text"] == text
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
