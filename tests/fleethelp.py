"""Helpers for the fleet tests: an `sxpm store serve` process on a free loopback port."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from registry import free_port


@contextlib.contextmanager
def store_server(home: Path, env: dict[str, str]) -> Iterator[str]:
    """Run ``sxpm store serve`` for ``home``; yields ``127.0.0.1:PORT``."""
    for _ in range(5):  # another process may take the port between bind and serve
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "sxpm", "store", "serve", "--port",
                                 str(port)], env={**env, "SIMPLEX_HOME": str(home)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        host = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        up = False
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                urllib.request.urlopen(f"http://{host}/v2/", timeout=2).close()
                up = True
                break
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        if up:
            try:
                yield host
            finally:
                proc.terminate()
                proc.wait(timeout=10)
                assert proc.stderr is not None
                proc.stderr.close()
            return
        proc.kill()
        proc.wait()
    raise RuntimeError("sxpm store serve did not start")


def http(method: str, url: str, headers: dict[str, str] | None = None
         ) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, method=method, headers=headers or {},
                                 data=b"x" if method in ("POST", "PUT", "PATCH") else None)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()
