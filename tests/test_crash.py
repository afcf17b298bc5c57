"""kill -9 of a pull and of an install at many points, then verify and run again.

No hook in sxpm: the proxy throttles the registry's answers and counts the bytes it
sends, and the test kills the process when a count is reached or when the store or
the install tree reaches a phase (partial file, first blob placed, tree being built,
tree renamed in). After each kill ``sxpm verify`` must be clean, and a second run
must finish fetching exactly the bytes that were not kept.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from conftest import Cli
from relhelp import MiB, kill_when, make_model, make_package, sha, spawn, tar_zstd

pytestmark = [pytest.mark.registry, pytest.mark.timeout(300)]

FILES = {f"shard-{i}.bin": os.urandom(2 * MiB) for i in range(3)}
TOTAL = sum(len(d) for d in FILES.values())
RATE = 6 * MiB  # bytes per second per connection: a pull takes about a second
BYTE_POINTS = [1, 64 * 1024, 512 * 1024, MiB, 2 * MiB - 1, 2 * MiB, 2 * MiB + 300_000,
               3 * MiB, 4 * MiB - 10, 4 * MiB + 1, 5 * MiB, 5 * MiB + MiB // 2, 6 * MiB - 1000]
PHASES = ["manifest fetched", "first partial file", "first blob placed", "second blob placed",
          "all blob bytes sent", "third partial file", "ref written"]


def _kept(home: Path) -> int:
    """Bytes of the artifact's layers the store holds: complete blobs and partials."""
    blobs = home / "store/blobs"
    n = 0
    for data in FILES.values():
        hexd = sha(data)[7:]
        if (blobs / "sha256" / hexd).exists():
            n += len(data)
        elif (blobs / ".partial" / f"sha256-{hexd}").exists():
            n += (blobs / ".partial" / f"sha256-{hexd}").stat().st_size
    return n


@pytest.fixture(scope="module")
def big(oci_registry, tmp_path_factory: pytest.TempPathFactory) -> str:  # noqa: ANN001
    home = tmp_path_factory.mktemp("crash-src") / "home"
    home.mkdir()
    ref = f"{oci_registry.host}/rel/crash:1"
    make_model(home, ref, FILES, name="crashmodel")
    Cli(home, home.parent)("push", ref)
    return "rel/crash:1"


def _condition(point: object, proxy, home: Path):  # noqa: ANN001, ANN202
    blobs = home / "store/blobs"
    placed = lambda: sum((blobs / "sha256" / sha(d)[7:]).exists() for d in FILES.values())  # noqa: E731
    partials = lambda: len(list((blobs / ".partial").glob("*")))  # noqa: E731
    if isinstance(point, int):
        return lambda: proxy.bytes_sent("/blobs/") >= point
    return {
        "manifest fetched": lambda: any("/manifests/" in p for _, p, _, _ in list(proxy.log)),
        "first partial file": lambda: partials() >= 1,
        "first blob placed": lambda: placed() >= 1,
        "second blob placed": lambda: placed() >= 2,
        "all blob bytes sent": lambda: proxy.bytes_sent("/blobs/") >= TOTAL,
        "third partial file": lambda: partials() + placed() >= 3,
        "ref written": lambda: b"rel/crash" in _read(home / "store/index.json"),
    }[str(point)]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


@pytest.mark.parametrize("point", BYTE_POINTS + PHASES)
def test_kill_9_during_pull(point: object, big: str, fault_proxy, tmp_path: Path) -> None:  # noqa: ANN001
    home = tmp_path / "home"
    home.mkdir()
    cli = Cli(home, tmp_path)
    ref = f"{fault_proxy.host}/{big}"
    fault_proxy.rate = RATE
    proc = spawn(cli, "pull", "-q", "-j", "1", ref)
    killed = kill_when(proc, _condition(point, fault_proxy, home))
    assert killed or proc.returncode == 0
    assert cli("verify").returncode == 0
    kept = _kept(home)
    fault_proxy.clear()
    cli("pull", "-q", ref)
    assert cli("verify").returncode == 0
    for data in FILES.values():
        assert (home / "store/blobs/sha256" / sha(data)[7:]).read_bytes() == data
    # The rerun fetched exactly what was missing (the small config blob aside).
    fetched = sum(fault_proxy.bytes_sent(f"/blobs/{sha(d)}") for d in FILES.values())
    assert fetched == TOTAL - kept, (point, fetched, TOTAL - kept)
    assert not list((home / "store/blobs/.partial").glob("*"))
    _record(f"pull/{point}", killed, kept)


# --- install: a package whose unpacking takes a moment, killed at each phase -------------

N_FILES = 1500
INSTALL_POINTS = [256 * 1024, "tree being built", "tree being built+0.02",
                  "tree being built+0.08", "record written", "tree renamed in",
                  "first partial file"]


@pytest.fixture(scope="module")
def package(oci_registry, tmp_path_factory: pytest.TempPathFactory) -> str:  # noqa: ANN001
    members = []
    for i in range(N_FILES):
        data = os.urandom(700)
        info = tarfile.TarInfo(f"src/mod{i // 100}/f{i}.txt")
        info.size = len(data)
        members.append((info, data))
    home = tmp_path_factory.mktemp("crash-pkg") / "home"
    home.mkdir()
    ref = f"{oci_registry.host}/rel/crashpkg:0.1.0"
    make_package(home, ref, tar_zstd(members), name="crashpkg")
    Cli(home, home.parent)("push", ref)
    return "rel/crashpkg:0.1.0"


@pytest.mark.parametrize("point", INSTALL_POINTS)
def test_kill_9_during_install(point: object, package: str, fault_proxy,  # noqa: ANN001
                               tmp_path: Path) -> None:
    import time

    home = tmp_path / "home"
    home.mkdir()
    cli = Cli(home, tmp_path)
    parent = home / "packages" / "crashpkg"
    dest = parent / "0.1.0"
    building = lambda: any(p.name.startswith(".0.1.0.") for p in _ls(parent))  # noqa: E731
    if isinstance(point, int):
        cond = lambda: fault_proxy.bytes_sent("/blobs/") >= point  # noqa: E731
        fault_proxy.rate = 512 * 1024
    elif point == "first partial file":
        cond = lambda: bool(list((home / "store/blobs/.partial").glob("*")))  # noqa: E731
        fault_proxy.rate = 512 * 1024
    elif point.startswith("tree being built"):
        delay = float(point.partition("+")[2] or 0)
        seen: list[float] = []

        def cond() -> bool:
            if not seen and building():
                seen.append(time.monotonic())
            return bool(seen) and time.monotonic() - seen[0] >= delay
    elif point == "record written":
        cond = lambda: any((p / ".sxpm-install.json").exists() for p in _ls(parent))  # noqa: E731
    else:
        cond = dest.exists
    proc = _install(cli, f"{fault_proxy.host}/{package}")
    killed = kill_when(proc, cond)
    assert killed or proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    assert cli("verify").returncode == 0
    # Never half an install: the tree is absent or complete.
    if dest.exists():
        assert json.loads((dest / ".sxpm-install.json").read_text())["name"] == "crashpkg"
        assert len(list(dest.rglob("*.txt"))) == N_FILES
    from sxpm.installed.records import list_installed

    assert all(not i.path.name.startswith(".") for i in list_installed(home))
    fault_proxy.clear()
    rerun = _install(cli, f"{fault_proxy.host}/{package}")
    assert rerun.wait(60) == 0, rerun.stderr.read() if rerun.stderr else ""
    assert cli("verify").returncode == 0
    assert len(list(dest.rglob("*.txt"))) == N_FILES
    _record(f"install/{point}", killed, 0)


def _install(cli: Cli, ref: str):  # noqa: ANN202
    """The library's install in a child process (the CLI installs packages per project)."""
    code = ("import sys; from sxpm.home import Home; from sxpm.ops.install import install; "
            "h = Home.from_env(); install(h, h.parse_ref(sys.argv[1]))")
    return subprocess.Popen([sys.executable, "-c", code, ref], cwd=cli.cwd, env=cli.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _ls(path: Path) -> list[Path]:
    try:
        return list(path.iterdir())
    except OSError:
        return []


def _record(case: str, killed: bool, kept: int) -> None:
    """Append the case to $SXPM_REL_REPORT (docs/reliability.md is written from it)."""
    out = os.environ.get("SXPM_REL_REPORT")
    if out:
        with open(out, "a") as fh:
            fh.write(json.dumps({"case": case, "killed": killed, "kept": kept}) + "\n")
