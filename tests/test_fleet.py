"""Fleets: a home's store served to others (`sxpm store serve`), offline bundles,
mirrors and pull-through caches, against real servers on loopback."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

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
