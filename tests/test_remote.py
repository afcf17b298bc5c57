"""Push, pull and copy against a real OCI registry (docker-registry), faults injected
by a real proxy in front of it (tests/faultproxy.py)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REGISTRY_USERS

pytestmark = pytest.mark.registry

TEST_TYPE = "application/vnd.simplex.test.v1+json"


def make_artifact(home: Path, ref_text: str, files: dict[str, bytes]) -> str:
    """Put a manifest with one layer per file in ``home``'s store under ``ref_text``."""
    from sxpm.core.oci import ANN_TITLE, Manifest
    from sxpm.home import Home
    from sxpm.store.refs import store_name

    h = Home(home)
    store = h.store
    store.ensure()
    config = store.put_bytes(b"{}", "application/vnd.simplex.test.config.v1+json")
    layers = tuple(store.put_bytes(data, "application/octet-stream",
                                   annotations={ANN_TITLE: name})
                   for name, data in files.items())
    desc = store.put_manifest(Manifest(config, layers, artifact_type=TEST_TYPE))
    store.set_ref(store_name(h.parse_ref(ref_text)), desc)
    return str(desc.digest)


def blob_path(digest: str) -> str:
    return f"/blobs/{digest}"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def stored(home: Path, digest: str) -> bool:
    return (home / "store" / "blobs" / "sha256" / digest.split(":")[1]).exists()


# --- push, pull, variants, delta, dedup -------------------------------------------------


def test_push_pull_variants_and_dedup(cli, cli2, sample_dir: Path, oci_registry) -> None:  # noqa: ANN001
    ref = f"{oci_registry.host}/t1/tiny-llama:1.0.0"
    cli("pack", "model", sample_dir / "tiny-llama", "--ref", ref, "--variant", "F32")
    cli("pack", "model", sample_dir / "tiny-llama-f16", "--ref", ref, "--variant", "F16")
    pushed = cli("push", ref, "--json").json
    assert pushed["blobs_transferred"] == 5
    assert cli("push", ref, "--json").json["blobs_transferred"] == 0  # HEAD before upload

    pulled = cli2("pull", ref, "--json").json
    assert pulled["digest"] == pushed["digest"] and pulled["variants"] == ["F32"]
    f16 = cli2("pull", ref, "--variant", "F16", "--json").json
    assert f16["blobs_transferred"] == 2 and f16["blobs_skipped"] == 1
    installed = cli2("model", "install", ref, "--json").json
    model = Path(installed["path"]) / "model.gguf"
    assert model.read_bytes() == (sample_dir / "tiny-llama" / "model.gguf").read_bytes()

    # One variant alone, to another repository: a manifest, not an index.
    one = f"{oci_registry.host}/t1/tiny-f16:1.0.0"
    out = cli("push", ref, "--to", one, "--variant", "F16", "--json").json
    assert out["blobs_transferred"] == 0  # every blob mounted from t1/tiny-llama
    manifest = cli2("inspect", "--remote", one, "--json").json["manifest"]
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert cli2("verify").returncode == 0


def test_delta_pull_fetches_only_the_changed_layer(cli, cli2, oci_registry,  # noqa: ANN001
                                                   fault_proxy) -> None:  # noqa: ANN001
    files = {f"part-{i}.bin": os.urandom(256 * 1024) for i in range(8)}
    v1 = f"{oci_registry.host}/t2/shards:1"
    make_artifact(cli.home, v1, files)
    cli("push", v1)
    changed = dict(files, **{"part-3.bin": os.urandom(256 * 1024)})
    v2 = f"{oci_registry.host}/t2/shards:2"
    make_artifact(cli.home, v2, changed)
    cli("push", v2)

    via = fault_proxy.host
    cli2("pull", f"{via}/t2/shards:1")
    fault_proxy.clear()
    out = cli2("pull", f"{via}/t2/shards:2", "--json").json
    assert out["blobs_transferred"] == 1 and out["blobs_skipped"] == 8
    blob_bytes = fault_proxy.bytes_sent("/blobs/")
    assert blob_bytes <= 1.01 * 256 * 1024
    assert fault_proxy.bytes_sent(blob_path(sha(changed["part-3.bin"]))) == 256 * 1024


def test_chunked_upload_and_mount(lib_home, oci_registry, fault_proxy) -> None:  # noqa: ANN001
    from sxpm.ops.transfer import push
    from sxpm.transport import TransportOptions

    big = os.urandom(5 * 1024 * 1024 + 123)
    src = f"{fault_proxy.host}/t3/big:1"
    make_artifact(lib_home.root, src, {"big.bin": big})
    options = TransportOptions(chunk_bytes=1024 * 1024)
    result = push(lib_home, lib_home.parse_ref(src), options=options)
    assert result.blobs_transferred == 2
    patches = [p for m, p, _, _ in fault_proxy.log if m == "PATCH"]
    assert len(patches) == 6  # 5 MiB + 123 bytes in 1 MiB chunks
    # The same blob to another repository of the registry: mounted, not sent.
    fault_proxy.clear()
    dst = lib_home.parse_ref(f"{fault_proxy.host}/t3/other:1")
    result = push(lib_home, lib_home.parse_ref(src), target=dst, options=options)
    assert result.blobs_transferred == 0
    mounts = [p for m, p, _, _ in fault_proxy.log if m == "POST" and "mount=" in p]
    assert mounts and "from=t3%2Fbig" in mounts[0]
    assert not [p for m, p, _, _ in fault_proxy.log if m in ("PATCH", "PUT") and "/blobs/" in p]


def test_copy_between_layout_and_remote(cli, cli2, sample_dir: Path, registry_dir: Path,  # noqa: ANN001
                                        oci_registry) -> None:  # noqa: ANN001
    layout = f"oci:{registry_dir}/sql-expert:2.1.0"
    remote = f"{oci_registry.host}/t4/sql-expert:2.1.0"
    cli("pack", "expert", sample_dir / "sql-expert", "--ref", layout)
    cli("push", layout)
    first = cli2("copy", layout, remote, "--json").json
    back = cli2("copy", remote, f"oci:{registry_dir}/copy/sql-expert:2.1.0", "--json").json
    assert first["digest"] == back["digest"]
    assert back["blobs_skipped"] == 0  # a fresh layout: everything sent, nothing fetched twice
    assert cli("pull", remote, "--json").json["blobs_transferred"] == 0


# --- resume, retries -----------------------------------------------------------------------


def test_resume_after_kill_9(cli, cli2, oci_registry, fault_proxy) -> None:  # noqa: ANN001
    size = 48 * 1024 * 1024
    data = os.urandom(size)
    digest = sha(data)
    make_artifact(cli.home, f"{oci_registry.host}/t5/big:1", {"big.bin": data})
    cli("push", f"{oci_registry.host}/t5/big:1")
    fault_proxy.rate = 8 * 1024 * 1024
    ref = f"{fault_proxy.host}/t5/big:1"
    proc = subprocess.Popen([sys.executable, "-m", "sxpm", "pull", ref, "-q"], env=cli2.env,
                            cwd=cli2.cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = cli2.home / "store" / "blobs" / ".partial" / digest.replace(":", "-")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if partial.exists() and partial.stat().st_size > 8 * 1024 * 1024:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = partial.stat().st_size
    assert 8 * 1024 * 1024 < kept < size
    time.sleep(1)  # let the proxy notice the dead client before counting afresh
    fault_proxy.clear()
    out = cli2("pull", ref, "--json").json
    assert out["blobs_transferred"] == 1
    assert stored(cli2.home, digest) and not partial.exists()
    assert fault_proxy.bytes_sent(blob_path(digest)) == size - kept  # only the remainder
    ranges = [h.get("Range") for m, p, h, _ in fault_proxy.log
              if m == "GET" and p.endswith(blob_path(digest))]
    assert ranges == [f"bytes={kept}-"]


def test_dropped_connection_resumes_with_range(cli, cli2, oci_registry,  # noqa: ANN001
                                               fault_proxy) -> None:  # noqa: ANN001
    data = os.urandom(4 * 1024 * 1024)
    make_artifact(cli.home, f"{oci_registry.host}/t6/cut:1", {"x.bin": data})
    cli("push", f"{oci_registry.host}/t6/cut:1")
    fault_proxy.add(blob_path(sha(data)), cut_after=1024 * 1024)
    out = cli2("pull", f"{fault_proxy.host}/t6/cut:1", "--json").json
    assert out["blobs_transferred"] == 2 and stored(cli2.home, sha(data))
    gets = [h.get("Range") for m, p, h, _ in fault_proxy.log
            if m == "GET" and p.endswith(blob_path(sha(data)))]
    assert gets[0] is None and gets[1] is not None and gets[1].startswith("bytes=")
    assert fault_proxy.bytes_sent(blob_path(sha(data))) == len(data)


def test_retries_honour_retry_after(cli, cli2, oci_registry, fault_proxy) -> None:  # noqa: ANN001
    data = os.urandom(100_000)
    make_artifact(cli.home, f"{oci_registry.host}/t7/r:1", {"x.bin": data})
    cli("push", f"{oci_registry.host}/t7/r:1")
    fault_proxy.add("/manifests/", status=503, times=2, headers={"Retry-After": "1"})
    fault_proxy.add(blob_path(sha(data)), status=429, headers={"Retry-After": "1"})
    start = time.monotonic()
    cli2("pull", f"{fault_proxy.host}/t7/r:1")
    assert time.monotonic() - start >= 3  # three waits of one second, as asked
    statuses = [s for _, _, _, s in fault_proxy.log]
    assert statuses.count(503) == 2 and statuses.count(429) == 1
    # A registry that keeps failing: a bounded number of attempts, then a clear error.
    fault_proxy.clear()
    fault_proxy.add("/manifests/", status=500, times=100)
    r = cli2.fail("pull", f"{fault_proxy.host}/t7/r:1", code=1,
                  env={"SXPM_RETRIES": "2"})
    assert "HTTP 500" in r.stderr and "t7/r" in r.stderr


def test_retry_after_http_date() -> None:
    import email.utils

    from sxpm.transport.remote import RegistryClient

    class Resp:
        def __init__(self, value: str) -> None:
            self.headers = {"Retry-After": value}

    when = email.utils.formatdate(time.time() + 5, usegmt=True)
    assert 3 <= (RegistryClient.retry_after(Resp(when)) or 0) <= 5.5  # type: ignore[arg-type]
    assert RegistryClient.retry_after(Resp("2")) == 2.0  # type: ignore[arg-type]


# --- bad input from the registry: clear errors, nothing stored -------------------------------


def test_corrupt_blob_is_refused(cli, cli2, oci_registry, fault_proxy) -> None:  # noqa: ANN001
    data = os.urandom(300_000)
    make_artifact(cli.home, f"{oci_registry.host}/t8/c:1", {"x.bin": data})
    cli("push", f"{oci_registry.host}/t8/c:1")
    fault_proxy.add(blob_path(sha(data)), flip_at=1234)
    r = cli2.fail("pull", f"{fault_proxy.host}/t8/c:1", code=1)
    assert sha(data) in r.stderr and "mismatch" in r.stderr.lower() and "t8/c" in r.stderr
    assert not stored(cli2.home, sha(data))
    assert not list((cli2.home / "store" / "blobs" / ".partial").glob("*"))
    assert cli2("list", "--json").json == []


def _manifest_with(home: Path, host: str, repo: str, mutate) -> tuple[bytes, str]:  # noqa: ANN001
    from sxpm.home import Home

    data = os.urandom(1000)
    digest = make_artifact(home, f"{host}/{repo}:1", {"x.bin": data})
    raw = Home(home).store.blob_path(
        __import__("sxpm.core.reference").core.reference.Digest.parse(digest)).read_bytes()
    obj = json.loads(raw)
    mutate(obj)
    return json.dumps(obj).encode(), digest


# --quiet, not -q: click's parser tries a short option as a long one first, and the
# NoSuchOption it builds (and drops) imports difflib for its suggestions.
PULL_IMPORTS = """\
import sys
from sxpm.cli.main import main
ref, forbidden = sys.argv[1], sys.argv[2].split(",")
sys.argv = ["sxpm", "pull", ref, "--quiet"]
try:
    main()
except SystemExit as exc:
    assert not exc.code, exc.code
loaded = sorted(n for n in sys.modules if n in forbidden or n.split(".")[0] in forbidden)
assert not loaded, loaded
"""


def _pull_loads_none_of(cli, cli2, oci_registry, repo: str,  # noqa: ANN001
                        forbidden: list[str]) -> None:
    """``sxpm pull`` of a fresh artifact in a process that then has none of ``forbidden``
    (packages, or modules by their full names) imported."""
    import subprocess
    import sys

    ref = f"{oci_registry.host}/t9/{repo}:1"
    data = os.urandom(1024)
    make_artifact(cli.home, ref, {"a.bin": data})
    cli("push", ref)
    r = subprocess.run([sys.executable, "-c", PULL_IMPORTS, ref, ",".join(forbidden)],
                       env=cli2.env, cwd=cli2.cwd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert stored(cli2.home, sha(data))


def test_pull_without_a_policy_loads_no_crypto_or_schema_library(cli, cli2,  # noqa: ANN001
                                                                 oci_registry) -> None:  # noqa: ANN001
    """The pull path stays lean: keys and schemas load only where a policy or a
    check needs them."""
    _pull_loads_none_of(cli, cli2, oci_registry, "lean", [
        "cryptography", "sigstore", "jsonschema", "llama_cpp", "numpy", "oras", "tqdm",
        "pynvml"])  # a single manifest has no variant to choose: the machine is not measured


def test_pull_of_a_registry_ref_loads_no_index_or_install_code(cli, cli2,  # noqa: ANN001
                                                              oci_registry) -> None:  # noqa: ANN001
    """A pull of HOST/REPO:TAG starts its first request without loading what only a
    NAME (the index client, near-match suggestions) or an install needs: ~50 ms of
    the time before the first byte on a loopback registry."""
    _pull_loads_none_of(cli, cli2, oci_registry, "lean-ref", [
        "sxpm.ops.names", "sxpm.index.client", "sxpm.index.location", "difflib",  # a REF
        "sxpm.installed.tree", "sxpm.installed.records", "tarfile"])  # installs nothing


@pytest.mark.parametrize("case", ["size", "algorithm", "media-type", "huge"])
def test_bad_manifests_are_refused(case: str, cli, cli2, oci_registry,  # noqa: ANN001
                                   fault_proxy) -> None:  # noqa: ANN001
    repo = f"t9/{case}"
    host = oci_registry.host

    def mutate(obj: dict) -> None:
        if case == "size":
            obj["layers"][0]["size"] += 7
        elif case == "algorithm":
            obj["layers"][0]["digest"] = "md5:" + "0" * 32
        elif case == "media-type":
            obj["mediaType"] = "application/vnd.example.unknown+json"

    body, _ = _manifest_with(cli.home, host, repo, mutate)
    cli("push", f"{host}/{repo}:1")
    if case == "huge":
        body = b" " * (5 * 1024 * 1024)
    fault_proxy.add(f"/{repo}/manifests/1", body=body, headers={"Docker-Content-Digest": ""})
    r = cli2.fail("pull", f"{fault_proxy.host}/{repo}:1")
    message = r.stderr.lower()
    assert repo in r.stderr
    if case == "size":
        assert "size mismatch" in message and "sha256:" in message
    elif case == "algorithm":
        assert "md5" in message
    elif case == "media-type":
        assert "media type" in message
    else:
        assert "4 mib" in message and "not read" in message
    # No ref, no partial file, and the offending layer is not in the store.
    layer = json.loads(body)["layers"][0]["digest"] if case != "huge" else "sha256:0"
    assert not layer.startswith("sha256:") or not stored(cli2.home, layer)
    assert not list((cli2.home / "store" / "blobs" / ".partial").glob("*"))
    assert not (cli2.home / "store" / "index.json").exists() or \
        cli2("list", "--json").json == []


def test_unreachable_registry_names_the_url(cli) -> None:  # noqa: ANN001
    from registry import free_port

    port = free_port()
    r = cli.fail("pull", f"127.0.0.1:{port}/x/y:1", code=1)
    assert f"http://127.0.0.1:{port}/v2/x/y/manifests/1" in r.stderr


def test_loopback_detection() -> None:
    from sxpm.transport.remote import is_loopback

    for host in ["localhost:5000", "127.0.0.1", "127.1.2.3:80", "[::1]:5000", "::1"]:
        assert is_loopback(host), host
    for host in ["ghcr.io", "10.0.0.1:5000", "example.com:443", "[2001:db8::1]:5000"]:
        assert not is_loopback(host), host


# --- authentication ---------------------------------------------------------------------------


def test_login_push_pull_logout(cli, cli2, sample_dir: Path, auth_registry) -> None:  # noqa: ANN001
    host = auth_registry.host
    user, password = next(iter(REGISTRY_USERS.items()))
    ref = f"{host}/t10/tiny-llama:1.0.0"
    cli("pack", "model", sample_dir / "tiny-llama", "--ref", ref)
    r = cli.fail("push", ref, code=1)
    assert f"sxpm login {host}" in r.stderr

    bad = cli.fail("login", host, "-u", user, "--password-stdin", input="wrong\n", code=1)
    assert "wrong" not in bad.stderr
    config = cli.home.parent / "userhome" / ".docker" / "config.json"
    assert not config.exists()
    ok = cli("login", host, "-u", user, "--password-stdin", input=password + "\n")
    saved = json.loads(config.read_text())
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    assert saved["auths"][host] == {"auth": token}
    assert oct(config.stat().st_mode & 0o777) == "0o600"

    outputs = [ok.stdout + ok.stderr]
    for args in (["push", ref, "--json"], ["--debug", "push", ref], ["inspect", "--remote", ref]):
        res = cli(*args)
        outputs.append(res.stdout + res.stderr)
    # Another home, same Docker config: pulls with the shared login.
    cli2.env["HOME"] = cli.env["HOME"]
    res = cli2("pull", ref, "--json")
    outputs.append(res.stdout + res.stderr)
    res = cli2("--debug", "pull", f"{host}/t10/missing:1", ok=False)
    outputs.append(res.stdout + res.stderr)
    for text in outputs:
        assert password not in text and token not in text

    cli("logout", host)
    assert host not in json.loads(config.read_text()).get("auths", {})
    r = cli2.fail("pull", ref, code=1)
    assert f"sxpm login {host}" in r.stderr


def test_docker_config_env_and_credential_helper(cli, auth_registry, tmp_path: Path) -> None:  # noqa: ANN001
    host = auth_registry.host
    user, password = next(iter(REGISTRY_USERS.items()))
    bindir = tmp_path / "bin"
    bindir.mkdir()
    helper = bindir / "docker-credential-sxpmtest"
    helper.write_text("#!/bin/sh\n"
                      f"[ \"$1\" = get ] && echo '{{\"Username\":\"{user}\","
                      f"\"Secret\":\"{password}\"}}'\n")
    helper.chmod(0o755)
    docker = tmp_path / "dockercfg"
    docker.mkdir()
    (docker / "config.json").write_text(json.dumps({"credHelpers": {host: "sxpmtest"}}))
    env = {"DOCKER_CONFIG": str(docker), "PATH": f"{bindir}:{os.environ['PATH']}"}
    ref = f"{host}/t11/x:1"
    make_artifact(cli.home, ref, {"a": b"hello"})
    out = cli("push", ref, "--json", env=env)
    assert out.json["blobs_transferred"] == 2 and password not in out.stdout + out.stderr


# --- referrers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["remote", "layout"])
def test_referrers_tag_fallback(where: str, cli, lib_home, oci_registry,  # noqa: ANN001
                                registry_dir: Path) -> None:
    from sxpm.core.oci import OCI_EMPTY, Manifest
    from sxpm.ops.transfer import attach, list_referrers, push
    from sxpm.transport import open_repository, referrers_tag

    base = f"{oci_registry.host}/t12" if where == "remote" else f"oci:{registry_dir}"
    ref = lib_home.parse_ref(f"{base}/signed:1")
    subject = make_artifact(lib_home.root, str(ref), {"w.bin": b"weights"})
    push(lib_home, ref)
    empty = lib_home.store.put_bytes(b"{}", OCI_EMPTY)
    sig = lib_home.store.put_bytes(b"signature-bytes", "application/vnd.example.sig")
    for kind in ("application/vnd.example.signature", "application/vnd.example.sbom"):
        attach(lib_home, ref, Manifest(empty, (sig,), artifact_type=kind,
                                       annotations={"n": kind}))
    found = list_referrers(ref)
    assert sorted(d.artifact_type or "" for d in found) == [
        "application/vnd.example.sbom", "application/vnd.example.signature"]
    only = list_referrers(ref, "application/vnd.example.signature")
    assert len(only) == 1 and only[0].annotations == {"n": "application/vnd.example.signature"}
    from sxpm.core.reference import Digest

    assert referrers_tag(Digest.parse(subject)) in open_repository(ref).tags()
    listed = cli("referrers", str(ref), "--json").json
    assert {d["digest"] for d in listed} == {str(d.digest) for d in found}
