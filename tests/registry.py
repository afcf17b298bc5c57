"""A real OCI registry for tests and benchmarks: Debian's CNCF distribution server.

``Registry.start(tmp)`` runs ``docker-registry serve`` on a free loopback port with
a temporary storage root (and, with ``htpasswd=``, basic authentication), waits until
``/v2/`` answers and stops it on ``stop()``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

BINARY = shutil.which("docker-registry") or "/usr/bin/docker-registry"


def available() -> bool:
    return os.access(BINARY, os.X_OK)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def htpasswd_line(user: str, password: str) -> str:
    import bcrypt

    return f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()}\n"


@dataclass
class Registry:
    host: str
    root: Path
    proc: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(cls, workdir: Path, *, users: dict[str, str] | None = None,
              proxy: str | None = None) -> Registry:
        """``proxy``: a pull-through cache of the registry at that ``http://`` URL."""
        workdir.mkdir(parents=True, exist_ok=True)
        root = workdir / "storage"
        root.mkdir(exist_ok=True)
        auth = ""
        if users:
            htpasswd = workdir / "htpasswd"
            htpasswd.write_text("".join(htpasswd_line(u, p) for u, p in users.items()))
            auth = f"auth:\n  htpasswd:\n    realm: sxpm-test\n    path: {htpasswd}\n"
        last_error = ""
        for _ in range(5):  # another process may take the port between bind and serve
            port = free_port()
            config = workdir / "config.yml"
            config.write_text(
                "version: 0.1\n"
                "log:\n  level: error\n  accesslog:\n    disabled: true\n"
                f"storage:\n  filesystem:\n    rootdirectory: {root}\n"
                "  delete:\n    enabled: true\n"
                "  maintenance:\n    uploadpurging:\n      enabled: false\n"
                f"http:\n  addr: 127.0.0.1:{port}\n"
                + auth
                + (f"proxy:\n  remoteurl: {proxy}\n" if proxy else ""))
            log = workdir / "registry.log"
            with open(log, "wb") as out:
                proc = subprocess.Popen([BINARY, "serve", str(config)], stdout=out,
                                        stderr=subprocess.STDOUT)
            host = f"127.0.0.1:{port}"
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    urllib.request.urlopen(f"http://{host}/v2/", timeout=2).close()
                    return cls(host, root, proc, log)
                except urllib.error.HTTPError:
                    return cls(host, root, proc, log)  # 401: up, with auth
                except OSError:
                    time.sleep(0.05)
            last_error = log.read_text(errors="replace")[-2000:]
            with contextlib.suppress(OSError):
                proc.kill()
            proc.wait()
        raise RuntimeError(f"docker-registry did not start:\n{last_error}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
