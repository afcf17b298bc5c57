"""Shared fixtures: each test gets its own SIMPLEX_HOME; sample artifacts are real files.

The CLI is run in a subprocess (``python -m sxpm``) with this checkout first on
PYTHONPATH, exactly as a user runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "fixtures"))

import samples  # noqa: E402


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("samples")
    samples.write_samples(out)
    return out


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def json(self):  # noqa: ANN201
        return json.loads(self.stdout)

    @property
    def last_line(self) -> str:
        return self.stdout.strip().splitlines()[-1]


class Cli:
    """Runs ``sxpm`` with a given SIMPLEX_HOME."""

    def __init__(self, home: Path, cwd: Path) -> None:
        self.home = home
        self.cwd = cwd
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SXPM_")}
        self.env["SIMPLEX_HOME"] = str(home)
        self.env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
        self.env["HOME"] = str(home.parent / "userhome")

    def __call__(self, *args: str, ok: bool = True, env: dict[str, str] | None = None,
                 timeout: float = 300, input: str | None = None) -> Result:
        proc = subprocess.run(
            [sys.executable, "-m", "sxpm", *map(str, args)],
            cwd=self.cwd, env={**self.env, **(env or {})}, capture_output=True, text=True,
            timeout=timeout, input=input,
        )
        result = Result(proc.returncode, proc.stdout, proc.stderr)
        if ok and proc.returncode != 0:
            raise AssertionError(f"sxpm {' '.join(map(str, args))} failed "
                                 f"({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return result

    def fail(self, *args: str, code: int | None = None, **kw: object) -> Result:
        result = self(*args, ok=False, **kw)  # type: ignore[arg-type]
        assert result.returncode != 0, f"expected failure, got:\n{result.stdout}"
        if code is not None:
            assert result.returncode == code, (result.returncode, result.stderr)
        lines = [line for line in result.stderr.strip().splitlines() if line]
        assert len(lines) == 1, f"expected a one-line error, got:\n{result.stderr}"
        assert lines[0].startswith("error: "), lines[0]
        assert "Traceback" not in result.stderr
        return result


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def cli(home: Path, tmp_path: Path) -> Cli:
    return Cli(home, tmp_path)


@pytest.fixture
def cli2(tmp_path: Path) -> Cli:
    """A second, independent home (another machine)."""
    other = tmp_path / "home2"
    other.mkdir()
    return Cli(other, tmp_path)


@pytest.fixture
def registry_dir(tmp_path: Path) -> Path:
    return tmp_path / "registry"


@pytest.fixture
def lib_home(home: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    from sxpm.home import Home

    monkeypatch.setenv("SIMPLEX_HOME", str(home))
    return Home(home)


# --- a real OCI registry (Debian's docker-registry) on loopback, one per test run ---

REGISTRY_USERS = {"alice": "s3cret-pa55word"}


def _start_registry(tmp_path_factory: pytest.TempPathFactory, **kw: object):  # noqa: ANN202
    import registry

    if not registry.available():
        pytest.skip("docker-registry is not installed (apt-get install docker-registry; "
                    "scripts/test does it)")
    return registry.Registry.start(tmp_path_factory.mktemp("oci-registry"), **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def oci_registry(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """A registry without authentication; ``.host`` is ``127.0.0.1:PORT``."""
    server = _start_registry(tmp_path_factory)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """A registry with htpasswd (basic) authentication for ``REGISTRY_USERS``."""
    server = _start_registry(tmp_path_factory, users=REGISTRY_USERS)
    yield server
    server.stop()


@pytest.fixture
def fault_proxy(oci_registry):  # noqa: ANN001, ANN201
    """A fault-injecting HTTP proxy in front of ``oci_registry``."""
    from faultproxy import FaultProxy

    proxy = FaultProxy(oci_registry.host)
    yield proxy
    proxy.close()
