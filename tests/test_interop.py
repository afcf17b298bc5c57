"""What other tools write, read by sxpm: Ollama models, files on disk, caches.

Ollama-shaped manifests are built by hand here (the layout Ollama's own
``server/images.go`` reads) with real GGUF files and pushed to the real registry on
loopback; the Ollama and Hugging Face caches are real directory trees in temp dirs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import requests
import tiny_gguf

from sxpm.runner.ollama import GoTemplate

OLLAMA = "application/vnd.ollama.image."
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
TEMPLATE = "{{ if .System }}<<{{ .System }}>>\n{{ end }}Q: {{ .Prompt }}\nA: {{ .Response }}"
PARAMS = {"num_ctx": 128, "stop": ["@@@"], "top_p": 0.9}


def _descriptor(media_type: str, data: bytes) -> dict[str, object]:
    return {"mediaType": media_type, "size": len(data),
            "digest": "sha256:" + hashlib.sha256(data).hexdigest()}


def ollama_manifest(parts: list[tuple[str, bytes]]) -> tuple[bytes, dict[str, bytes]]:
    """An Ollama manifest of ``(part, bytes)`` layers, and its blobs by digest."""
    layers = [_descriptor(OLLAMA + part, data) for part, data in parts]
    config = json.dumps({"model_format": "gguf", "model_family": "llama",
                         "model_families": ["llama"], "model_type": "1M", "file_type": "F32",
                         "architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers",
                                    "diff_ids": [d["digest"] for d in layers]}}).encode()
    manifest = {"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
                "config": _descriptor(DOCKER_CONFIG, config), "layers": layers}
    blobs = {str(_descriptor("", data)["digest"]): data for _, data in parts}
    blobs[str(_descriptor("", config)["digest"])] = config
    return json.dumps(manifest).encode(), blobs


def push_ollama(host: str, repo: str, tag: str, parts: list[tuple[str, bytes]]) -> str:
    """Push as Ollama does: blobs by monolithic upload, then the manifest; its digest."""
    manifest, blobs = ollama_manifest(parts)
    return push_raw(host, repo, tag, manifest, blobs, DOCKER_MANIFEST)


def push_raw(host: str, repo: str, tag: str, manifest: bytes, blobs: dict[str, bytes],
             media_type: str) -> str:
    for digest, data in blobs.items():
        start = requests.post(f"http://{host}/v2/{repo}/blobs/uploads/", timeout=30)
        assert start.status_code == 202, start.text
        location = start.headers["Location"]
        if location.startswith("/"):
            location = f"http://{host}{location}"
        sep = "&" if "?" in location else "?"
        put = requests.put(f"{location}{sep}digest={digest}", data=data, timeout=30,
                           headers={"Content-Type": "application/octet-stream"})
        assert put.status_code == 201, put.text
    put = requests.put(f"http://{host}/v2/{repo}/manifests/{tag}", data=manifest, timeout=30,
                       headers={"Content-Type": media_type})
    assert put.status_code == 201, put.text
    return "sha256:" + hashlib.sha256(manifest).hexdigest()


@pytest.fixture(scope="module")
def gguf_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("gguf")
    model = tiny_gguf.make_model(out / "model.gguf", seed=0, name="tiny-llama")
    lora = tiny_gguf.make_lora(out / "lora.gguf", model, seed=1)
    return {"model": model, "lora": lora}


# --- Ollama templates ---------------------------------------------------------------


def test_go_template_subset_renders_like_ollama() -> None:
    template = GoTemplate.parse_go(TEMPLATE, "t")
    assert template is not None
    assert template.render("hi", "be brief") == "<<be brief>>\nQ: hi\nA: "
    assert template.render("hi") == "Q: hi\nA: "
    trimmed = GoTemplate.parse_go("[INST] {{- if .System }} {{ .System }}{{ else }} none"
                                  "{{- end }} {{ .Prompt }} [/INST]", "t")
    assert trimmed is not None
    assert trimmed.render("x", "s") == "[INST] s x [/INST]"
    assert trimmed.render("x") == "[INST] none x [/INST]"
    assert trimmed.variables == ("prompt", "system")
    # Beyond the subset: not guessed at (the GGUF's own chat template is used).
    assert GoTemplate.parse_go("{{ range .Messages }}{{ .Content }}{{ end }}", "t") is None
    assert GoTemplate.parse_go("{{ if .System }}unclosed", "t") is None


# --- Ollama models from a registry --------------------------------------------------


@pytest.mark.registry
def test_ollama_model_from_a_registry_installs_and_runs_with_its_parts(
        cli, home: Path, oci_registry, gguf_files: dict[str, Path],  # noqa: ANN001
        monkeypatch: pytest.MonkeyPatch) -> None:
    host = oci_registry.host
    model = gguf_files["model"].read_bytes()
    parts = [("model", model), ("template", TEMPLATE.encode()), ("system", b"be brief"),
             ("params", json.dumps(PARAMS).encode()), ("license", b"MIT\n")]
    push_ollama(host, "library/tinyo", "plain", parts)
    push_ollama(host, "library/tinyo", "latest",
                [*parts, ("adapter", gguf_files["lora"].read_bytes())])
    cli("model", "install", f"{host}/library/tinyo:latest")
    cli("model", "install", f"{host}/library/tinyo:plain")

    tree = home / "models" / "tinyo" / "latest"
    record = json.loads((tree / ".sxpm-install.json").read_text())
    blob = home / "store" / "blobs" / "sha256" / hashlib.sha256(model).hexdigest()
    assert (tree / "model.gguf").stat().st_ino == blob.stat().st_ino  # a link, not a copy
    assert (tree / "ollama" / "template").read_text() == TEMPLATE
    assert (tree / "ollama" / "adapter.gguf").read_bytes() == gguf_files["lora"].read_bytes()
    assert record["name"] == "tinyo" and record["version"] == "latest"

    from sxpm.home import Home
    from sxpm.runner.session import load

    monkeypatch.setenv("SIMPLEX_HOME", str(home))
    session = load("tinyo@latest", home=Home(home), install=False)
    assert session.n_ctx == 128  # params: num_ctx
    assert session.adapter == tree / "ollama" / "adapter.gguf"
    assert session._sampling(0.0, {})["stop"] == ["@@@"]
    assert session.render("hi") == "<<be brief>>\nQ: hi\nA: "  # the model's system prompt
    assert session.render("hi", "other") == "<<other>>\nQ: hi\nA: "
    assert load("tinyo@plain", home=Home(home), install=False).adapter is None

    # A full reference runs straight from the store, with the same parts.
    by_ref = load(f"{host}/library/tinyo:latest", home=Home(home), install=False)
    assert by_ref.adapter is not None and by_ref.render("hi") == session.render("hi")


@pytest.mark.registry
@pytest.mark.llama
def test_ollama_adapter_changes_the_greedy_output(
        cli, oci_registry, gguf_files: dict[str, Path]) -> None:  # noqa: ANN001
    pytest.importorskip("llama_cpp")
    host = oci_registry.host
    parts = [("model", gguf_files["model"].read_bytes()), ("template", TEMPLATE.encode())]
    push_ollama(host, "library/tinyg", "base", parts)
    push_ollama(host, "library/tinyg", "tuned",
                [*parts, ("adapter", gguf_files["lora"].read_bytes())])
    out = {}
    for tag in ("base", "tuned"):
        cli("model", "install", f"{host}/library/tinyg:{tag}")
        out[tag] = cli("run", f"tinyg@{tag}", "-p", "hello", "-n", "8", "--json").json
    assert out["base"]["prompt"] == out["tuned"]["prompt"] == "Q: hello\nA: "
    assert out["base"]["text"] and out["tuned"]["text"]
    assert out["base"]["text"] != out["tuned"]["text"]


@pytest.mark.registry
@pytest.mark.llama
def test_ollama_chat_uses_its_template_system_prompt_stop_and_adapter(
        cli, home: Path, oci_registry, gguf_files: dict[str, Path]) -> None:  # noqa: ANN001
    pytest.importorskip("llama_cpp")
    from sxpm.home import Home
    from sxpm.runner.residency import ResidencyManager
    from sxpm.runner.session import Session, load

    parts = [("model", gguf_files["model"].read_bytes()), ("template", TEMPLATE.encode()),
             ("system", b"be brief"), ("params", json.dumps(PARAMS).encode()),
             ("adapter", gguf_files["lora"].read_bytes())]
    push_ollama(oci_registry.host, "library/tinyc", "latest", parts)
    cli("model", "install", f"{oci_registry.host}/library/tinyc:latest")
    found = load("tinyc", home=Home(home), install=False)
    manager = ResidencyManager()
    session = Session(found.model, manager=manager)
    try:
        with session.lease() as lease:
            # The model's adapter is switched onto the resident base like an expert's.
            assert lease.resident.active_adapter == str(session.adapter)
            prompt = session.fit(lease.llama, [{"role": "user", "content": "hi"}], 8)
            expected = lease.llama.tokenize(b"<<be brief>>\nQ: hi\nA: ", add_bos=True,
                                            special=True)
        assert prompt.tokens == list(expected) and prompt.source == "template"
        # params' stop goes with the template's stops, not as a second keyword.
        assert session.chat("hi", max_tokens=4) == session.chat(
            [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
            max_tokens=4)
    finally:
        manager.close()


@pytest.mark.registry
def test_ollama_safetensors_model_is_refused_with_what_it_is(
        cli, oci_registry) -> None:  # noqa: ANN001
    push_ollama(oci_registry.host, "library/tinyt", "latest",
                [("tensor", b"\x00" * 64), ("template", b"{{ .Prompt }}")])
    result = cli.fail("model", "install", f"{oci_registry.host}/library/tinyt:latest", code=2)
    assert "safetensors" in result.stderr


# --- files on disk, Ollama's store, the Hugging Face cache --------------------------


def _blob(home: Path, data_or_path: bytes | Path) -> Path:
    data = data_or_path.read_bytes() if isinstance(data_or_path, Path) else data_or_path
    return home / "store" / "blobs" / "sha256" / hashlib.sha256(data).hexdigest()


def test_import_a_gguf_file_hard_links_it(cli, home: Path, tmp_path: Path) -> None:  # noqa: ANN001
    model = tiny_gguf.make_model(tmp_path / "disk" / "model.gguf", seed=0, name="Tiny Llama")
    out = cli("import", str(model), "--version", "2024-06-01", "--json").json
    assert [(o["name"], o["version"], o["linked"], o["copied"]) for o in out] == [
        ("tiny-llama", "2024-06-01", 1, 0)]  # name from general.name, a local version
    assert _blob(home, model).stat().st_ino == model.stat().st_ino
    tree = home / "models" / "tiny-llama" / "2024-06-01"
    assert (tree / "model.gguf").stat().st_ino == model.stat().st_ino
    assert model.stat().st_mode & 0o200  # the user's file keeps its mode
    cli("verify")
    again = cli("import", str(model), "--name", "other", "--json").json
    assert again[0]["name"] == "other" and again[0]["version"] == "local"
    missing = cli.fail("import", str(tmp_path / "nope.gguf"), code=2)
    assert "does not exist" in missing.stderr
    (tmp_path / "empty").mkdir()
    assert "no .gguf" in cli.fail("import", str(tmp_path / "empty"), code=2).stderr


def test_import_from_ollamas_store_links_its_blobs(cli, home: Path, tmp_path: Path,  # noqa: ANN001
                                                   gguf_files: dict[str, Path]) -> None:
    root = tmp_path / "ollama-models"
    manifest, blobs = ollama_manifest([("model", gguf_files["model"].read_bytes()),
                                       ("template", TEMPLATE.encode()),
                                       ("system", b"be brief")])
    for digest, data in blobs.items():
        path = root / "blobs" / digest.replace(":", "-")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    where = root / "manifests" / "registry.ollama.ai" / "library" / "tinyo" / "1b"
    where.parent.mkdir(parents=True)
    where.write_bytes(manifest)
    env = {"OLLAMA_MODELS": str(root)}
    out = cli("import", "--ollama", "tinyo:1b", "--json", env=env).json
    assert [(o["ref"], o["name"], o["version"]) for o in out] == [
        ("registry.ollama.ai/library/tinyo:1b", "tinyo", "1b")]
    assert out[0]["linked"] == len(blobs) and out[0]["copied"] == 0
    tree = home / "models" / "tinyo" / "1b"
    model_blob = root / "blobs" / ("sha256-" + hashlib.sha256(
        gguf_files["model"].read_bytes()).hexdigest())
    assert (tree / "model.gguf").stat().st_ino == model_blob.stat().st_ino
    assert (tree / "ollama" / "system").read_text() == "be brief"
    # The manifest is kept byte for byte: the same digest Ollama's registry gives it.
    inspect = cli("inspect", "registry.ollama.ai/library/tinyo:1b", "--json").json
    assert json.dumps(inspect).find(hashlib.sha256(manifest).hexdigest()) >= 0
    result = cli.fail("import", "--ollama", "nosuch", env=env, code=2)
    assert "No Ollama model" in result.stderr
    # A blob whose bytes do not match its name is refused, nothing installed.
    damaged = next(p for p in (root / "blobs").iterdir() if p.read_bytes() == b"be brief")
    damaged.write_bytes(b"tampered")
    where.rename(where.with_name("2b"))
    assert "does not match" in cli.fail("import", "--ollama", "tinyo:2b", env=env,
                                        code=2).stderr
    assert not (home / "models" / "tinyo" / "2b").exists()


def test_import_from_the_hugging_face_cache(cli, home: Path, tmp_path: Path,  # noqa: ANN001
                                            gguf_files: dict[str, Path]) -> None:
    cache = tmp_path / "hf-hub"
    repo = cache / "models--acme--Tiny-GGUF"
    data = gguf_files["model"].read_bytes()
    blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True)
    blob.write_bytes(data)
    rev = "0123456789abcdef0123456789abcdef01234567"
    snap = repo / "snapshots" / rev
    snap.mkdir(parents=True)
    (snap / "tiny.Q8_0.gguf").symlink_to(Path("../..") / "blobs" / blob.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(rev)
    out = cli("import", "--hf", "acme/Tiny-GGUF", "--json",
              env={"HF_HUB_CACHE": str(cache)}).json
    assert [(o["name"], o["version"], o["linked"]) for o in out] == [
        ("tiny.q8-0", rev[:12], 1)]
    tree = home / "models" / "tiny.q8-0" / rev[:12]
    assert (tree / "tiny.Q8_0.gguf").stat().st_ino == blob.stat().st_ino
    result = cli.fail("import", "--hf", "acme/none", env={"HF_HUB_CACHE": str(cache)}, code=2)
    assert "not in the Hugging Face cache" in result.stderr


@pytest.mark.llama
def test_run_a_gguf_file_directly(cli, home: Path, gguf_files: dict[str, Path]) -> None:  # noqa: ANN001
    pytest.importorskip("llama_cpp")
    out = cli("run", str(gguf_files["model"]), "-p", "hello", "-n", "4", "--json").json
    assert out["model"]["origin"] == "file" and out["text"]
    assert not (home / "store" / "index.json").exists()  # nothing stored


# --- containers auth.json -----------------------------------------------------------


@pytest.mark.registry
def test_logins_of_skopeo_and_podman_are_used(cli, sample_dir: Path, auth_registry,  # noqa: ANN001
                                              tmp_path: Path) -> None:
    import base64

    from conftest import REGISTRY_USERS

    host = auth_registry.host
    user, password = next(iter(REGISTRY_USERS.items()))
    ref = f"{host}/interop/tiny-llama:1.0.0"
    cli("pack", "model", sample_dir / "tiny-llama", "--ref", ref)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    auth = {"auths": {host: {"auth": token}}}
    # podman's default place: $XDG_RUNTIME_DIR/containers/auth.json
    runtime = tmp_path / "run-user"
    (runtime / "containers").mkdir(parents=True)
    (runtime / "containers" / "auth.json").write_text(json.dumps(auth))
    assert "sxpm login" in cli.fail("push", ref, code=1).stderr  # none of them set
    cli("push", ref, env={"XDG_RUNTIME_DIR": str(runtime)})
    # skopeo's REGISTRY_AUTH_FILE, which replaces the default places
    other = tmp_path / "skopeo-auth.json"
    other.write_text(json.dumps(auth))
    cli("inspect", "--remote", ref, env={"REGISTRY_AUTH_FILE": str(other)})
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"auths": {host: {"auth": base64.b64encode(
        f"{user}:nope".encode()).decode()}}}))
    cli.fail("inspect", "--remote", ref, env={"REGISTRY_AUTH_FILE": str(wrong),
                                              "XDG_RUNTIME_DIR": str(runtime)}, code=1)


# --- ModelPack artifacts as other tools push them -----------------------------------


@pytest.mark.registry
def test_modelpack_without_a_version_takes_the_tag(cli, home: Path, oci_registry,  # noqa: ANN001
                                                   gguf_files: dict[str, Path]) -> None:
    """modctl never sets descriptor.version; a plain push has no sxpm annotations."""
    model = gguf_files["model"].read_bytes()
    config = json.dumps({"descriptor": {"name": "tiny"}, "config": {"format": "gguf"},
                         "modelfs": {"type": "layers", "diffIds": []}}).encode()
    layer = {**_descriptor("application/vnd.cncf.model.weight.v1.raw", model),
             "annotations": {"org.cncf.model.filepath": "weights/tiny.gguf"}}
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.cncf.model.manifest.v1+json",
        "config": _descriptor("application/vnd.cncf.model.config.v1+json", config),
        "layers": [layer]}).encode()
    blobs = {str(_descriptor("", model)["digest"]): model,
             str(_descriptor("", config)["digest"]): config}
    push_raw(oci_registry.host, "mp/tiny", "v0.3", manifest, blobs,
             "application/vnd.oci.image.manifest.v1+json")
    cli("model", "install", f"{oci_registry.host}/mp/tiny:v0.3")
    tree = home / "models" / "tiny" / "v0.3"
    assert (tree / "weights" / "tiny.gguf").stat().st_ino == _blob(home, model).stat().st_ino
