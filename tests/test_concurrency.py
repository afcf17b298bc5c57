"""Eight installs at once into one SIMPLEX_HOME, and gc running beside installs."""

from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest
from conftest import Cli
from relhelp import MiB, make_model, sha, spawn

pytestmark = [pytest.mark.registry, pytest.mark.timeout(240)]

SHARED = {f"shared-{i}.bin": os.urandom(MiB) for i in range(3)}
ONLY = [{"own-a.bin": os.urandom(MiB // 2)}, {"own-b.bin": os.urandom(MiB // 2)}]


@pytest.fixture(scope="module")
def two_models(oci_registry, tmp_path_factory: pytest.TempPathFactory) -> list[str]:  # noqa: ANN001
    """Two models that share three of their four layers."""
    home = tmp_path_factory.mktemp("conc-src") / "home"
    home.mkdir()
    cli = Cli(home, home.parent)
    refs = []
    for i, own in enumerate(ONLY):
        ref = f"{oci_registry.host}/rel/conc-{i}:1"
        make_model(home, ref, {**SHARED, **own}, name=f"conc{i}")
        cli("push", ref)
        refs.append(f"rel/conc-{i}:1")
    return refs


def _files(i: int) -> dict[str, bytes]:
    return {**SHARED, **ONLY[i]}


def test_eight_installs_at_once(two_models: list[str], fault_proxy, cli) -> None:  # noqa: ANN001
    fault_proxy.rate = 4 * MiB  # slow enough that the eight overlap
    procs = [spawn(cli, "model", "install", "-q", f"{fault_proxy.host}/{two_models[i % 2]}")
             for i in range(8)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    gets = fault_proxy.blob_gets()
    every = {sha(d) for i in (0, 1) for d in _files(i).values()}
    assert every <= set(gets)
    assert all(n == 1 for n in gets.values()), gets  # each blob fetched once, config too
    assert cli("verify").returncode == 0
    for i in (0, 1):
        for name, data in _files(i).items():
            assert (cli.home / f"models/conc{i}/1.0.0" / name).read_bytes() == data


def test_gc_beside_installs_removes_nothing_needed(two_models: list[str], fault_proxy,  # noqa: ANN001
                                                  cli) -> None:  # noqa: ANN001
    # Garbage for gc to find: an artifact whose ref is removed at once.
    make_model(cli.home, "oci:/nowhere/junk:1", {"junk.bin": os.urandom(4096)}, name="junk")
    cli("rm", "--keep-blobs", "oci:/nowhere/junk:1")  # its blobs stay for gc to find
    fault_proxy.rate = 4 * MiB
    stop = threading.Event()
    runs: list[int] = []

    def collect() -> None:
        while not stop.is_set():
            r = subprocess.run(cli_args(cli, "gc"), env=cli.env, cwd=cli.cwd,
                               capture_output=True, timeout=120)
            runs.append(r.returncode)

    worker = threading.Thread(target=collect)
    worker.start()
    try:
        time.sleep(0.3)
        procs = [spawn(cli, "model", "install", "-q",
                       f"{fault_proxy.host}/{two_models[i % 2]}") for i in range(4)]
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err.decode()
    finally:
        stop.set()
        worker.join(timeout=120)
    assert runs and all(code == 0 for code in runs), runs
    assert cli("verify").returncode == 0
    for i in (0, 1):
        for name, data in _files(i).items():
            assert (cli.home / f"models/conc{i}/1.0.0" / name).read_bytes() == data
    cli("gc")  # and after them all, gc still keeps what the refs name
    assert cli("verify").returncode == 0
    cli("model", "install", "-q", f"{fault_proxy.host}/{two_models[0]}")


def test_gc_waits_for_a_lease(lib_home) -> None:  # noqa: ANN001
    """A blob written under a use lease, not yet named by a ref, survives a gc."""
    store = lib_home.store
    store.ensure()
    result: list[tuple[int, int]] = []
    with store.in_use():
        desc = store.put_bytes(b"fetched, ref not yet written", "application/octet-stream")
        gc = threading.Thread(target=lambda: result.append(store.gc()))
        gc.start()
        time.sleep(0.5)
        assert gc.is_alive() and store.has_blob(desc.digest)  # gc waits for the lease
        from sxpm.core.oci import Manifest

        config = store.put_bytes(b"{}", "application/vnd.test.config")
        top = store.put_manifest(Manifest(config, (desc,)))
        store.set_ref("test/ref:1", top)
    gc.join(timeout=30)
    assert result and store.has_blob(desc.digest)


def cli_args(cli: Cli, *args: str) -> list[str]:
    import sys

    return [sys.executable, "-m", "sxpm", *args]

