"""Credentials under redirects, and writes to a full or read-only store."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import REGISTRY_USERS, Cli
from relhelp import MiB, make_model, sha, store_state

pytestmark = [pytest.mark.registry, pytest.mark.timeout(120)]


class Recorder:
    """A plain HTTP server on another loopback address that serves blobs and records
    the headers of every request (the "CDN" a registry redirects to)."""

    def __init__(self, blobs: dict[str, bytes], host: str = "127.0.0.2") -> None:
        self.headers: list[dict[str, str]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                recorder.headers.append(dict(self.headers.items()))
                data = blobs.get(self.path.rsplit("/", 1)[-1])
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_authorization_is_not_sent_to_another_host(auth_registry, tmp_path: Path) -> None:  # noqa: ANN001
    from faultproxy import FaultProxy

    user, password = next(iter(REGISTRY_USERS.items()))
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    proxy = FaultProxy(auth_registry.host)
    files = {"w.bin": os.urandom(MiB)}
    recorder = Recorder({sha(d): d for d in files.values()})
    try:
        home = tmp_path / "home"
        home.mkdir()
        cli = Cli(home, tmp_path)
        docker = Path(cli.env["HOME"]) / ".docker"
        docker.mkdir(parents=True)
        (docker / "config.json").write_text(json.dumps({"auths": {proxy.host: {"auth": token}}}))
        ref = f"{proxy.host}/rel/secret:1"
        make_model(home, ref, files, name="secret")
        cli("push", ref)
        # The registry now answers blob GETs with a redirect to another host.
        digest = sha(files["w.bin"])
        proxy.add(f"/blobs/{digest}", method="GET", status=307, times=10,
                  headers={"Location": f"{recorder.url}/cdn/{digest}"})
        other = tmp_path / "home2"
        other.mkdir()
        cli2 = Cli(other, tmp_path)
        out = cli2("--debug", "model", "install", ref)
        assert (other / "models/secret/1.0.0/w.bin").read_bytes() == files["w.bin"]
        assert any(h.get("Authorization", "").startswith("Basic ") for _, p, h, _ in proxy.log
                   if p.endswith(f"/blobs/{digest}"))  # the registry did get the login
        assert recorder.headers, "the redirect was not followed"
        assert all("Authorization" not in h and "authorization" not in h
                   for h in recorder.headers), recorder.headers
        # Never printed, logged or written into the store or a lock.
        for text in (out.stdout, out.stderr):
            assert password not in text and token not in text
        for path in [*other.rglob("*"), *home.rglob("*")]:
            if path.is_file() and ".docker" not in path.parts:
                data = path.read_bytes()
                assert password.encode() not in data and token.encode() not in data, path
    finally:
        recorder.close()
        proxy.close()


# --- a full disk and a read-only store (tmpfs; needs root to mount) ---------------------


@contextlib.contextmanager
def tmpfs(path: Path, size: str):  # noqa: ANN201
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip()})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture(scope="module")
def big_and_small(oci_registry, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:  # noqa: ANN001
    home = tmp_path_factory.mktemp("disk-src") / "home"
    home.mkdir()
    cli = Cli(home, home.parent)
    small = f"{oci_registry.host}/rel/small:1"
    big = f"{oci_registry.host}/rel/big:1"
    make_model(home, small, {"s.bin": os.urandom(64 * 1024)}, name="small")
    make_model(home, big, {"b1.bin": os.urandom(3 * MiB), "b2.bin": os.urandom(3 * MiB)},
               name="big")
    cli("push", small)
    cli("push", big)
    return small, big


def test_disk_full(big_and_small: tuple[str, str], tmp_path: Path) -> None:
    small, big = big_and_small
    with tmpfs(tmp_path / "disk", "4m") as home:
        cli = Cli(home, tmp_path)
        cli("model", "install", "-q", small)
        before = store_state(home)
        r = cli.fail("pull", "-q", big, code=1)
        assert "disk is full" in r.stderr and str(home / "store") in r.stderr
        after = store_state(home)
        added = {k: v for k, v in after.items() if before.get(k) != v}
        # No partial file, index.json as it was; at most a complete, verified blob that
        # was fetched before the disk filled (kept for the next try, gc removes it).
        assert all(k.startswith("blobs/sha256/") and k.endswith(v) for k, v in added.items())
        assert set(before) <= set(after)
        cli("gc")
        assert store_state(home) == before
        assert cli("verify").returncode == 0
        cli("model", "install", "-q", small)  # what was there still works


def test_read_only_store(big_and_small: tuple[str, str], tmp_path: Path) -> None:
    small, big = big_and_small
    with tmpfs(tmp_path / "ro", "16m") as home:
        cli = Cli(home, tmp_path)
        cli("pull", "-q", small)
        before = store_state(home)
        r = subprocess.run(["mount", "-o", "remount,ro", str(home)], capture_output=True)
        if r.returncode != 0:
            pytest.skip("cannot remount read-only here")
        for args in (["pull", "-q", big], ["model", "install", "-q", small], ["gc"]):
            r = cli.fail(*args, code=1, timeout=60)
            assert "read-only" in r.stderr.lower(), r.stderr
        assert store_state(home) == before
        assert cli("verify").returncode == 0
