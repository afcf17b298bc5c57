"""How users install sxpm: a built wheel, on its own, runs the whole pack/push/pull path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(600)
def test_built_wheel_installs_and_runs(tmp_path: Path, sample_dir: Path) -> None:
    """The wheel carries every subpackage and the schemas: installed into a fresh
    environment (dependencies from this one), sxpm packs, pushes, pulls and lists."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(ROOT),
                    "-w", str(wheels)], check=True, timeout=300, cwd=tmp_path)
    (wheel,) = wheels.glob("sxpm-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True, timeout=120)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps",
                    "--disable-pip-version-check", str(wheel)], check=True, timeout=300)
    # Out of the checkout, with no PYTHONPATH: only the installed wheel can answer.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["SIMPLEX_HOME"] = str(tmp_path / "home")
    sxpm = venv / "bin" / "sxpm"

    def run(*args: str) -> str:
        r = subprocess.run([str(sxpm), *args], env=env, cwd=tmp_path, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return r.stdout

    where = subprocess.run([str(py), "-c", "import sxpm.core.oci as m; print(m.__file__)"],
                           env=env, cwd=tmp_path, capture_output=True, text=True, check=True)
    assert str(venv) in where.stdout, where.stdout
    assert "0.1.0" in run("--version")
    ref = f"oci:{tmp_path / 'registry'}/tiny-llama:1.0.0"
    run("pack", "model", str(sample_dir / "tiny-llama"), "--ref", ref)
    run("push", ref)
    env["SIMPLEX_HOME"] = str(tmp_path / "other")
    run("pull", ref)
    assert "tiny-llama" in run("list")
