"""Fleets: a home's store served to others (`sxpm store serve`), offline bundles,
mirrors and pull-through caches, against real servers on loopback."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from fleethelp import http, store_server

UPSTREAM = "registry.example.org/simplex"


def _packed(cli, sample_dir: Path, signed: bool = False) -> str:  # noqa: ANN001
    ref = f"{UPSTREAM}/tiny-llama:1.0.0"
    cli("pack", "model", sample_dir / "tiny-llama", "--ref", ref, "--variant", "F32")
    cli("pack", "model", sample_dir / "tiny-llama-f16", "--ref", ref, "--variant", "F16")
    return ref


def test_store_serve_is_a_read_only_registry(cli, cli2, sample_dir: Path,  # noqa: ANN001
                                            tmp_path: Path) -> None:
    ref = _packed(cli, sample_dir)
    key = tmp_path / "keys" / "k.pem"
    kid = cli("keygen", "--out", key, "--json").json["key_id"]
    cli("sign", ref, "--key", key, "--no-push")
    stored = cli("inspect", ref, "--json").json
    with store_server(cli.home, cli.env) as host:
        base = f"http://{host}/v2/simplex/tiny-llama"
        assert http("GET", f"http://{host}/v2/")[0] == 200
        status, _, body = http("GET", f"{base}/tags/list")
        assert status == 200 and "1.0.0" in json.loads(body)["tags"]
        # A second home that trusts the key pulls every variant from it (the signature
        # found through the referrers API) and installs one.
        (cli2.home / "config.json").write_text(json.dumps({"trust": {"keys": [kid]}}))
        served = f"{host}/simplex/tiny-llama:1.0.0"
        cli2("pull", served, "--all-variants")
        cli2("model", "install", served, "--variant", "F16")
        assert (cli2.home / "models" / "tiny-llama" / "1.0.0" / "model.gguf").is_file()
        top = json.loads(http("GET", f"{base}/manifests/1.0.0")[2])
        digest = top["manifests"][0]["digest"]
        child = json.loads(http("GET", f"{base}/manifests/{digest}")[2])
        layer = max(child["layers"], key=lambda d: d["size"])
        # Blobs with Range: a middle slice, a suffix, and an unsatisfiable one.
        blob = f"{base}/blobs/{layer['digest']}"
        whole = http("GET", blob)[2]
        assert hashlib.sha256(whole).hexdigest() == layer["digest"].split(":")[1]
        status, headers, part = http("GET", blob, {"Range": "bytes=10-99"})
        assert status == 206 and part == whole[10:100]
        assert headers["Content-Range"] == f"bytes 10-99/{len(whole)}"
        assert http("GET", blob, {"Range": "bytes=-5"})[2] == whole[-5:]
        assert http("GET", blob, {"Range": f"bytes={len(whole)}-"})[0] == 416
        # The referrers API lists the signature the store keeps.
        status, _, body = http("GET", f"{base}/referrers/{stored['digest']}")
        assert status == 200 and len(json.loads(body)["manifests"]) == 1
        # Every write verb is refused; nothing outside the refs is reachable.
        for verb in ("POST", "PUT", "PATCH", "DELETE"):
            assert http(verb, f"{base}/blobs/uploads/")[0] == 405
        assert http("GET", f"http://{host}/v2/nothing/here/tags/list")[0] == 404
        assert http("GET", f"{base}/blobs/sha256:{'0' * 64}")[0] == 404
        assert http("GET", f"{base}/blobs/..%2F..%2Fconfig.json")[0] in (400, 404)
        assert http("GET", f"http://{host}/v2/simplex/tiny-llama/../../etc/passwd")[0] == 404
        # skopeo reads it as any registry.
        if shutil.which("skopeo"):
            out = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                                  f"docker://{served}"], capture_output=True, text=True,
                                 timeout=60)
            assert out.returncode == 0, out.stderr
            assert json.loads(out.stdout)["manifests"][0]["digest"] == digest
            tags = subprocess.run(["skopeo", "list-tags", "--tls-verify=false",
                                   f"docker://{host}/simplex/tiny-llama"], capture_output=True,
                                  text=True, timeout=60)
            assert tags.returncode == 0 and "1.0.0" in tags.stdout, tags.stderr


def _project(tmp_path: Path, registry: str, name: str = "proj") -> Path:
    proj = tmp_path / name
    proj.mkdir()
    (proj / "simplex.toml").write_text(f"""\
[package]
name = "my-agent"
version = "0.1.0"

[models]
tiny-llama = {{ version = "~1.0", variant = "F16" }}

[experts]
sql-expert = "^2"

[registries]
default = "{registry}"
""")
    return proj


def _publish(cli, sample_dir: Path, registry: str) -> None:  # noqa: ANN001
    ref = f"{registry}/tiny-llama:1.0.0"
    cli("pack", "model", sample_dir / "tiny-llama", "--ref", ref, "--variant", "F32")
    cli("pack", "model", sample_dir / "tiny-llama-f16", "--ref", ref, "--variant", "F16")
    cli("push", ref)
    cli("pack", "expert", sample_dir / "sql-expert", "--ref", f"{registry}/sql-expert:2.1.0")
    cli("push", f"{registry}/sql-expert:2.1.0")


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_bundle_round_trip_to_an_offline_home(cli, cli2, sample_dir: Path,  # noqa: ANN001
                                              tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    reg = f"oci:{registry}"
    _publish(cli, sample_dir, reg)
    key = tmp_path / "keys" / "k.pem"
    kid = cli("keygen", "--out", key, "--json").json["key_id"]
    for ref in (f"{reg}/tiny-llama:1.0.0", f"{reg}/sql-expert:2.1.0"):
        cli("sign", ref, "--key", key)
    proj = _project(tmp_path, reg)
    cli("install", "--manifest-path", proj / "simplex.toml")
    bundle = tmp_path / "project.tar"
    made = cli("bundle", "create", "--lock", proj / "simplex.lock", "-o", bundle, "--json").json
    assert len(made["refs"]) == 4  # two artifacts and their signature indexes
    # The registry is gone: the second home has only the bundle, and trusts the key.
    shutil.rmtree(registry)
    (cli2.home / "config.json").write_text(json.dumps({"trust": {"keys": [kid]}}))
    offline = tmp_path / "offline"
    offline.mkdir()
    for name in ("simplex.toml", "simplex.lock"):
        shutil.copy(proj / name, offline / name)
    # A home that trusts another key refuses the bundle, and keeps nothing of it.
    from conftest import Cli

    third = Cli(tmp_path / "home3", tmp_path)
    third.home.mkdir()
    other = third("keygen", "--out", tmp_path / "keys" / "other.pem", "--json").json["key_id"]
    (third.home / "config.json").write_text(json.dumps({"trust": {"keys": [other]}}))
    r = third.fail("bundle", "import", bundle, code=1)
    assert "signature" in r.stderr.lower()
    assert not list((third.home / "store" / "blobs" / "sha256").glob("*"))
    cli2("bundle", "import", bundle)
    cli2("install", "--frozen", "--offline", "--manifest-path", offline / "simplex.toml")
    # The same files; the offline home trusts the key, so its records also name the signer.
    for kind in ("models", "experts"):
        got, want = _tree(offline / ".simplex" / kind), _tree(proj / ".simplex" / kind)
        records = [k for k in want if k.endswith(".sxpm-install.json")]
        assert records and set(got) == set(want)
        assert {k: v for k, v in got.items() if k not in records} == \
            {k: v for k, v in want.items() if k not in records}
        for rec in records:
            signer = json.loads((offline / ".simplex" / kind / rec).read_text())["signer"]
            assert signer["key"] == kid


def test_tampered_bundle_is_refused_and_nothing_enters_the_store(
        cli, cli2, sample_dir: Path, tmp_path: Path) -> None:  # noqa: ANN001
    ref = _packed(cli, sample_dir)
    bundle = tmp_path / "b.tar"
    cli("bundle", "create", ref, "-o", bundle)
    if shutil.which("skopeo"):
        out = subprocess.run(["skopeo", "inspect", "--raw", f"oci-archive:{bundle}:{ref}"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["mediaType"] == "application/vnd.oci.image.index.v1+json"
    data = bytearray(bundle.read_bytes())
    big = data.find(b"GGUF")  # inside the model layer
    data[big + 4096] ^= 0x01
    bad = tmp_path / "bad.tar"
    bad.write_bytes(bytes(data))
    r = cli2.fail("bundle", "import", bad, code=1)
    assert "does not match its digest" in r.stderr
    blobs = cli2.home / "store" / "blobs" / "sha256"
    assert not blobs.exists() or not any(blobs.iterdir())
    assert not (cli2.home / "store" / "index.json").exists() or \
        json.loads((cli2.home / "store" / "index.json").read_text())["manifests"] == []
    assert not list(cli2.home.glob(".bundle-*"))
    # A link member is refused the same way.
    import tarfile

    linked = tmp_path / "link.tar"
    with tarfile.open(bundle) as src, tarfile.open(linked, "w") as dst:
        for member in src.getmembers():
            dst.addfile(member, src.extractfile(member))
        evil = tarfile.TarInfo("blobs/sha256/" + "a" * 64)
        evil.type, evil.linkname = tarfile.SYMTYPE, "/etc/passwd"
        dst.addfile(evil)
    r = cli2.fail("bundle", "import", linked, code=1)
    assert "link" in r.stderr
    # The untouched bundle imports.
    cli2("bundle", "import", bundle)
    assert cli2("inspect", ref, "--json").json["digest"]


# --- mirrors and pull-through caches ------------------------------------------------


@pytest.fixture
def upstream(tmp_path: Path):  # noqa: ANN201
    """A registry of this test's own, so the test can stop it."""
    import registry

    if not registry.available():
        pytest.skip("docker-registry is not installed")
    server = registry.Registry.start(tmp_path / "upstream")
    yield server
    server.stop()


def _locked_project(cli, sample_dir: Path, tmp_path: Path, host: str) -> Path:  # noqa: ANN001
    reg = f"{host}/simplex"
    _publish(cli, sample_dir, reg)
    proj = _project(tmp_path, reg)
    cli("lock", "--manifest-path", proj / "simplex.toml")
    return proj


def _copy_project(proj: Path, where: Path, mirrors: str = "") -> Path:
    where.mkdir()
    shutil.copy(proj / "simplex.lock", where / "simplex.lock")
    (where / "simplex.toml").write_text((proj / "simplex.toml").read_text() + mirrors)
    return where


def test_mirrors_in_order_and_a_lock_installed_while_its_host_is_down(  # noqa: ANN001
        cli, cli2, sample_dir: Path, tmp_path: Path, upstream) -> None:
    from registry import free_port

    proj = _locked_project(cli, sample_dir, tmp_path, upstream.host)
    lock_text = (proj / "simplex.lock").read_text()
    cli("install", "--frozen", "--manifest-path", proj / "simplex.toml")
    dead = f"127.0.0.1:{free_port()}"
    with store_server(cli.home, cli.env) as served:
        # The first mirror is down, the second is the first home's store; the
        # upstream is stopped. The lock names the upstream and is used as it is.
        upstream.stop()
        mirrors = f'\n[registries.mirrors]\n"{upstream.host}" = ["{dead}", "{served}"]\n'
        other = _copy_project(proj, tmp_path / "other", mirrors)
        cli2("install", "--locked", "--manifest-path", other / "simplex.toml")
        assert (other / "simplex.lock").read_text() == lock_text
        assert _tree(other / ".simplex" / "models") == _tree(proj / ".simplex" / "models")
        # Without the mirrors the same install fails: the upstream is down.
        bare = _copy_project(proj, tmp_path / "bare")
        from conftest import Cli

        third = Cli(tmp_path / "home3", tmp_path)
        third.home.mkdir()
        r = third.fail("install", "--frozen", "--manifest-path", bare / "simplex.toml")
        assert "Cannot reach" in r.stderr
        # The home's config.json works the same, and doctor shows who answers.
        (third.home / "config.json").write_text(json.dumps(
            {"mirrors": {upstream.host: [dead, served]}}))
        third("install", "--frozen", "--manifest-path", bare / "simplex.toml")
        report = {m["mirror"]: m["answers"] for m in third("doctor", "--json").json["mirrors"]}
        assert report == {dead: False, served: True}
        assert "does not answer" in third("doctor").stdout


def test_pull_through_cache_serves_each_blob_once(cli, sample_dir: Path,  # noqa: ANN001
                                                   tmp_path: Path, upstream) -> None:
    import registry
    from conftest import Cli
    from faultproxy import FaultProxy

    proj = _locked_project(cli, sample_dir, tmp_path, upstream.host)
    counter = FaultProxy(upstream.host)  # counts what the upstream serves
    cache = registry.Registry.start(tmp_path / "cache", proxy=f"http://{counter.host}")
    try:
        def fresh_install(i: int) -> Path:
            h = Cli(tmp_path / f"lab-{i}", tmp_path)
            h.home.mkdir()
            (h.home / "config.json").write_text(json.dumps(
                {"mirrors": {upstream.host: [cache.host]}}))
            where = _copy_project(proj, tmp_path / f"proj-{i}")
            h("install", "--frozen", "--manifest-path", where / "simplex.toml")
            return where / ".simplex"

        first = fresh_install(0)
        after_first = counter.blob_gets()
        for i in range(1, 8):
            assert _tree(fresh_install(i)) == _tree(first)
        served = counter.blob_gets()
        lock = (proj / "simplex.lock").read_text()
        layers = {line.split('digest = "')[1].split('"')[0]
                  for line in lock.splitlines() if "path = " in line}
        assert layers and layers <= set(served)
        # The seven homes after the first cost the upstream nothing. The first miss of
        # each blob costs it at most two GETs: distribution 2.8's proxy fetches a blob
        # it lacks once to store it and once to stream it to the client
        # (proxyblobstore.ServeBlob), whatever the client does.
        assert served == after_first, (after_first, served)
        assert all(n <= 2 for n in served.values()), served
        # The upstream goes away: new homes still install what the cache holds.
        upstream.stop()
        fresh_install(8)
    finally:
        cache.stop()
        counter.close()
