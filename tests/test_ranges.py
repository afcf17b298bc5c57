"""Large blobs pulled as parallel HTTP ranges: the writer's ranged mode, resume after
kill -9, corruption, registries without Range; and when progress bars are drawn."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

MiB = 1024 * 1024
RANGED_ENV = {"SXPM_RANGE_MIN": str(8 * MiB), "SXPM_RANGE_PIECE": str(4 * MiB),
              "SXPM_RANGE_STREAMS": "2"}  # the registry is on loopback: ask for ranges


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _desc(data: bytes):  # noqa: ANN202
    from sxpm.core.oci import Descriptor

    return Descriptor.for_bytes("application/octet-stream", data)


def _partials(home: Path) -> list[str]:
    partial = home / "store" / "blobs" / ".partial"
    return sorted(p.name for p in partial.glob("*")) if partial.is_dir() else []


# --- BlobWriter's ranged mode ------------------------------------------------------------


def test_writer_by_ranges_out_of_order(tmp_path: Path) -> None:
    from sxpm.errors import StoreError
    from sxpm.store.layout import OCILayout

    layout = OCILayout(tmp_path / "store")
    data = os.urandom(3 * MiB + 17)
    desc = _desc(data)
    with layout.writer(desc) as w:
        assert w.open_ranges() == [(0, len(data))]
        cuts = [(2 * MiB, len(data)), (MiB, 2 * MiB), (0, MiB)]  # last piece first
        for a, b in cuts[:2]:
            w.write_at(a, data[a:b])
            w.complete(a, b)
        assert w.frontier() == 0
        with pytest.raises(StoreError):
            w.hash_upto(MiB)  # never hashes bytes not recorded as complete
        w.write_at(0, data[:MiB])
        w.complete(0, MiB)
        assert w.frontier() == len(data) and w.missing() == []
        w.commit()
    assert layout.blob_path(desc.digest).read_bytes() == data
    assert _partials(tmp_path) == [] and not any(layout.partial_dir.iterdir())


def test_writer_resumes_only_recorded_ranges(tmp_path: Path) -> None:
    from sxpm.store.layout import OCILayout

    layout = OCILayout(tmp_path / "store")
    data = os.urandom(4 * MiB)
    desc = _desc(data)
    with pytest.raises(KeyboardInterrupt), layout.writer(desc) as w:
        w.open_ranges()
        w.write_at(MiB, data[MiB:2 * MiB])
        w.complete(MiB, 2 * MiB)
        w.write_at(3 * MiB, data[3 * MiB:])  # written, never recorded: not trusted
        raise KeyboardInterrupt
    record = json.loads(layout.partial_dir.joinpath(
        f"sha256-{desc.digest.hex}.ranges").read_text())
    assert record["done"] == [[MiB, 2 * MiB]]
    with layout.writer(desc) as w:
        assert w.offset == 0
        assert w.open_ranges() == [(0, MiB), (2 * MiB, 4 * MiB)]
        assert w.written == MiB
        for a, b in w.missing():
            w.write_at(a, data[a:b])
            w.complete(a, b)
        w.commit()
    assert layout.blob_path(desc.digest).read_bytes() == data


def test_sequential_writer_trusts_only_the_recorded_prefix(tmp_path: Path) -> None:
    from sxpm.store.layout import OCILayout

    layout = OCILayout(tmp_path / "store")
    data = os.urandom(3 * MiB)
    desc = _desc(data)
    with pytest.raises(KeyboardInterrupt), layout.writer(desc) as w:
        w.open_ranges()
        for a, b in [(0, MiB), (2 * MiB, 3 * MiB)]:
            w.write_at(a, data[a:b])
            w.complete(a, b)
        raise KeyboardInterrupt
    with layout.writer(desc) as w:  # a sequential fetch (a registry without Range)
        assert w.offset == MiB  # the hole and what follows it are dropped
        w.write(data[MiB:])
        w.commit()
    assert layout.blob_path(desc.digest).read_bytes() == data
    # A record that cannot be read trusts nothing.
    other = os.urandom(2 * MiB)
    odesc = _desc(other)
    with pytest.raises(KeyboardInterrupt), layout.writer(odesc) as w:
        w.open_ranges()
        w.write_at(0, other[:MiB])
        w.complete(0, MiB)
        raise KeyboardInterrupt
    layout.partial_dir.joinpath(f"sha256-{odesc.digest.hex}.ranges").write_text("{not json")
    with layout.writer(odesc) as w:
        assert w.open_ranges() == [(0, 2 * MiB)]
        w.abort(keep_partial=False)
    assert not any(layout.partial_dir.iterdir())


def test_writer_by_ranges_refuses_a_wrong_byte(tmp_path: Path) -> None:
    from sxpm.errors import CorruptBlobError, SizeMismatchError
    from sxpm.store.layout import OCILayout

    layout = OCILayout(tmp_path / "store")
    data = os.urandom(2 * MiB)
    desc = _desc(data)
    bad = bytearray(data)
    bad[MiB + 5] ^= 1
    with pytest.raises(CorruptBlobError), layout.writer(desc) as w:
        w.open_ranges()
        for a, b in [(MiB, 2 * MiB), (0, MiB)]:
            w.write_at(a, bad[a:b])
            w.complete(a, b)
        w.commit()
    assert not layout.has_blob(desc.digest) and not any(layout.partial_dir.iterdir())
    with pytest.raises(SizeMismatchError), layout.writer(desc) as w:
        w.open_ranges()
        w.write_at(MiB, data[MiB:] + b"x")  # past the end
    with layout.writer(desc) as w:  # incomplete: refused, kept for a resume
        w.open_ranges()
        w.write_at(0, data[:MiB])
        w.complete(0, MiB)
        with pytest.raises(SizeMismatchError):
            w.commit()
    assert not layout.has_blob(desc.digest)
    with layout.writer(desc) as w:
        assert w.offset == MiB


# --- against a real registry, through the fault proxy --------------------------------------


def _publish(cli, oci_registry, repo: str, size: int) -> tuple[bytes, str]:  # noqa: ANN001
    from test_remote import make_artifact

    data = os.urandom(size)
    ref = f"{oci_registry.host}/{repo}:1"
    make_artifact(cli.home, ref, {"big.bin": data})
    cli("push", ref)
    return data, sha(data)


def _blob_gets(fault_proxy, digest: str) -> list[str | None]:  # noqa: ANN001
    return [h.get("Range") for m, p, h, _ in fault_proxy.log
            if m == "GET" and p.endswith(f"/blobs/{digest}")]


@pytest.mark.registry
def test_a_loopback_registry_sends_a_large_blob_in_one_request(cli, cli2, oci_registry,  # noqa: ANN001
                                                               fault_proxy) -> None:  # noqa: ANN001
    # Nothing holds one loopback connection back: no probe, no ranges, one GET (on a
    # busy machine the first answers of eight layers are as slow as a far link's).
    size = 24 * MiB
    data, digest = _publish(cli, oci_registry, "r1/near", size)
    out = cli2("pull", f"{fault_proxy.host}/r1/near:1", "--json",
               env={"SXPM_RANGE_MIN": str(8 * MiB)}).json
    assert out["blobs_transferred"] == 2
    assert _blob_gets(fault_proxy, digest) == [None]
    blob = cli2.home / "store" / "blobs" / "sha256" / digest.split(":")[1]
    assert blob.read_bytes() == data


@pytest.mark.registry
def test_ranged_pull_fetches_parallel_ranges(cli, cli2, oci_registry,  # noqa: ANN001
                                             fault_proxy) -> None:  # noqa: ANN001
    size = 48 * MiB + 1234
    data, digest = _publish(cli, oci_registry, "r1/big", size)
    out = cli2("pull", f"{fault_proxy.host}/r1/big:1", "--json", env=RANGED_ENV).json
    assert out["blobs_transferred"] == 2
    ranges = _blob_gets(fault_proxy, digest)
    assert len(ranges) >= 2 and all(r and r.startswith("bytes=") for r in ranges)
    spans = sorted(tuple(map(int, re.findall(r"\d+", r or ""))) for r in ranges)
    assert spans[0][0] == 0 and spans[-1][1] == size - 1  # the pieces cover the blob
    assert all(a[1] + 1 == b[0] for a, b in zip(spans, spans[1:], strict=False))
    assert fault_proxy.bytes_sent(f"/blobs/{digest}") == size
    blob = cli2.home / "store" / "blobs" / "sha256" / digest.split(":")[1]
    assert blob.read_bytes() == data
    assert _partials(cli2.home) == []


@pytest.mark.registry
def test_ranged_pull_keeps_its_connections(cli, cli2, oci_registry,  # noqa: ANN001
                                          fault_proxy) -> None:  # noqa: ANN001
    # Twelve ranges on two streams: each stream asks for its next range on the
    # connection it has, as a new one costs a TCP (and TLS) handshake over a real link.
    size = 48 * MiB
    data, digest = _publish(cli, oci_registry, "r1/kept", size)
    fault_proxy.clear()
    cli2("pull", f"{fault_proxy.host}/r1/kept:1", "--json", env=RANGED_ENV)
    assert len(_blob_gets(fault_proxy, digest)) == size // (4 * MiB)
    # The manifest's and config's connection is reused by a stream; one more at most
    # where a stream starts before that connection is back in the pool.
    assert fault_proxy.connections <= 3, fault_proxy.connections
    blob = cli2.home / "store" / "blobs" / "sha256" / digest.split(":")[1]
    assert blob.read_bytes() == data


@pytest.mark.registry
def test_streams_share_the_last_pieces_on_a_far_link(cli, cli2, oci_registry,  # noqa: ANN001
                                                    fault_proxy) -> None:  # noqa: ANN001
    # Every answer 40 ms late and 8 MiB/s: a far link, and a blob of three 8 MiB
    # pieces and some. Streams with no piece take over the ends of pieces being read;
    # those streams stop at the cut and close their answers' connections with the
    # rest unread, and the blob is still every byte once, verified.
    size = 26 * MiB + 5
    data, digest = _publish(cli, oci_registry, "r1/far", size)
    fault_proxy.clear()
    fault_proxy.add(".", stall_s=0.04, times=10**6)
    fault_proxy.rate = 8 * MiB
    cli2("pull", f"{fault_proxy.host}/r1/far:1", "-q",
         env={"SXPM_RANGE_MIN": str(8 * MiB), "SXPM_RANGE_PLAN": "measure"})
    spans = [tuple(map(int, re.findall(r"\d+", r or ""))) for r in _blob_gets(fault_proxy, digest)]
    assert all(len(s) == 2 for s in spans), spans
    starts = sorted(a for a, _ in spans)
    assert len(spans) > 4 and any(a % (8 * MiB) for a in starts), spans  # a cut taken over
    blob = cli2.home / "store" / "blobs" / "sha256" / digest.split(":")[1]
    assert blob.read_bytes() == data
    assert _partials(cli2.home) == []


@pytest.mark.registry
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_interrupted_ranged_pull_fetches_only_the_missing_ranges(  # noqa: ANN001
        sig: int, cli, cli2, oci_registry, fault_proxy) -> None:  # noqa: ANN001
    size = 48 * MiB
    data, digest = _publish(cli, oci_registry, f"r2/big-{sig}", size)
    fault_proxy.rate = 2 * MiB  # per stream: about 6 s for the whole blob
    ref = f"{fault_proxy.host}/r2/big-{sig}:1"
    proc = subprocess.Popen([sys.executable, "-m", "sxpm", "pull", ref, "-q"],
                            env={**cli2.env, **RANGED_ENV}, cwd=cli2.cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    record = cli2.home / "store" / "blobs" / ".partial" / (digest.replace(":", "-") + ".ranges")
    deadline = time.monotonic() + 60
    done: list[list[int]] = []
    while time.monotonic() < deadline:
        try:
            done = json.loads(record.read_text())["done"]
        except (OSError, ValueError, KeyError):
            done = []
        if sum(b - a for a, b in done) >= 8 * MiB:
            break
        time.sleep(0.05)
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=60)  # a Ctrl-C that does not stop the streams hangs
    if sig == signal.SIGINT:  # Ctrl-C stops the streams, and says the bytes are kept
        assert proc.returncode == 130
        assert "interrupted" in err and "Traceback" not in err
    done = json.loads(record.read_text())["done"]  # what the stopped process recorded
    kept = sum(b - a for a, b in done)
    assert 8 * MiB <= kept < size
    assert not (cli2.home / "store" / "blobs" / "sha256" / digest.split(":")[1]).exists()
    time.sleep(1)  # let the proxy notice the dead client before counting afresh
    fault_proxy.clear()
    out = cli2("pull", ref, "--json", env=RANGED_ENV).json
    assert out["blobs_transferred"] == 1
    blob = cli2.home / "store" / "blobs" / "sha256" / digest.split(":")[1]
    assert blob.read_bytes() == data and _partials(cli2.home) == []
    assert fault_proxy.bytes_sent(f"/blobs/{digest}") == size - kept  # only what was missing
    for value in _blob_gets(fault_proxy, digest):
        first, last = map(int, re.findall(r"\d+", value or ""))
        assert not any(a <= first <= last < b for a, b in done), value


@pytest.mark.registry
def test_flipped_byte_in_one_range_stores_nothing(cli, cli2, oci_registry,  # noqa: ANN001
                                                  fault_proxy) -> None:  # noqa: ANN001
    size = 24 * MiB
    _, digest = _publish(cli, oci_registry, "r3/big", size)
    fault_proxy.add(f"/blobs/{digest}", flip_at=MiB + 77)
    r = cli2.fail("pull", f"{fault_proxy.host}/r3/big:1", code=1, env=RANGED_ENV)
    assert digest in r.stderr and "mismatch" in r.stderr.lower()
    assert len(_blob_gets(fault_proxy, digest)) >= 2
    assert not (cli2.home / "store" / "blobs" / "sha256" / digest.split(":")[1]).exists()
    assert _partials(cli2.home) == []
    assert cli2("list", "--json").json == []


@pytest.mark.registry
@pytest.mark.parametrize("delta", [7, -7], ids=["larger", "smaller"])
def test_ranged_pull_of_a_wrong_size_stores_nothing(delta: int, cli, cli2,  # noqa: ANN001
                                                    oci_registry, fault_proxy) -> None:  # noqa: ANN001
    from sxpm.core.reference import Digest
    from sxpm.home import Home

    repo = f"r5/size{delta}"
    data, digest = _publish(cli, oci_registry, repo, 16 * MiB)
    top = Home(cli.home).store.resolve(f"{oci_registry.host}/{repo}:1")
    assert top is not None
    manifest = json.loads(Home(cli.home).store.blob_path(Digest.parse(str(top.digest)))
                          .read_bytes())
    manifest["layers"][0]["size"] += delta
    fault_proxy.add(f"/{repo}/manifests/1", body=json.dumps(manifest).encode(),
                    headers={"Docker-Content-Digest": ""})
    r = cli2.fail("pull", f"{fault_proxy.host}/{repo}:1", code=1, env=RANGED_ENV)
    assert "size mismatch" in r.stderr.lower() and digest in r.stderr
    assert not (cli2.home / "store" / "blobs" / "sha256" / digest.split(":")[1]).exists()
    assert _partials(cli2.home) == []


@pytest.mark.registry
def test_registry_without_ranges_falls_back_to_one_stream(cli, cli2, oci_registry,  # noqa: ANN001
                                                          fault_proxy) -> None:  # noqa: ANN001
    size = 16 * MiB
    data, digest = _publish(cli, oci_registry, "r4/big", size)
    fault_proxy.add(f"/blobs/{digest}", times=100, headers={"Content-Range": ""})
    out = cli2("pull", f"{fault_proxy.host}/r4/big:1", "--json", env=RANGED_ENV).json
    assert out["blobs_transferred"] == 2
    blob = cli2.home / "store" / "blobs" / "sha256" / digest.split(":")[1]
    assert blob.read_bytes() == data and _partials(cli2.home) == []
    assert None in _blob_gets(fault_proxy, digest)  # the whole blob, in one request


@pytest.mark.registry
@pytest.mark.parametrize("ranged", [False, True], ids=["sequential", "ranged"])
def test_bad_bytes_kept_from_a_crash_are_fetched_again(ranged: bool, cli, cli2,  # noqa: ANN001
                                                       oci_registry, fault_proxy) -> None:  # noqa: ANN001
    """A partial file whose kept bytes are wrong (a power loss, a disk error) fails its
    digest once; the blob is then fetched whole, and only the right bytes are stored."""
    size = 12 * MiB
    data, digest = _publish(cli, oci_registry, f"r6/crash-{int(ranged)}", size)
    partial = cli2.home / "store" / "blobs" / ".partial" / digest.replace(":", "-")
    partial.parent.mkdir(parents=True)
    partial.write_bytes(os.urandom(2 * MiB))  # not the blob's first bytes
    if ranged:
        partial.with_name(partial.name + ".ranges").write_text(
            json.dumps({"size": size, "done": [[0, 2 * MiB]]}))
    env = RANGED_ENV if ranged else {}
    out = cli2("pull", f"{fault_proxy.host}/r6/crash-{int(ranged)}:1", "--json", env=env).json
    assert out["blobs_transferred"] == 2
    blob = cli2.home / "store" / "blobs" / "sha256" / digest.split(":")[1]
    assert blob.read_bytes() == data and _partials(cli2.home) == []
    assert fault_proxy.bytes_sent(f"/blobs/{digest}") == (size - 2 * MiB) + size


# --- progress bars ---------------------------------------------------------------------------


def test_progress_follows_stdout_and_draws_on_stderr(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from sxpm.core import progress

    class Tty:
        def __init__(self, tty: bool) -> None:
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

    monkeypatch.setattr(sys, "stderr", Tty(True))
    monkeypatch.setattr(sys, "stdout", Tty(False))
    assert not progress.TqdmReporter().enabled  # stdout piped: silent, stderr or not
    monkeypatch.undo()
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    bar = progress.TqdmReporter().start("pull demo", 4096)
    bar.update(4096)
    bar.close()
    captured = capsys.readouterr()
    assert "pull demo" in captured.err and "4.00k" in captured.err.lower()
    assert "pull demo" not in captured.out


def test_cli_bars_only_on_a_terminal(cli, cli2, registry_dir: Path) -> None:  # noqa: ANN001
    import pty

    from test_remote import make_artifact

    ref = f"oci:{registry_dir}/bars:1"
    make_artifact(cli.home, ref, {"x.bin": os.urandom(300_000)})
    cli("push", ref)
    piped = cli2("pull", ref)
    assert "pull bars" not in piped.stderr and "B/s" not in piped.stderr

    def pull_on_tty(*extra: str) -> str:
        for p in (cli2.home / "store").glob("*"):
            if p.name in ("blobs", "index.json"):
                subprocess.run(["rm", "-rf", str(p)], check=True)
        leader, follower = pty.openpty()
        proc = subprocess.run([sys.executable, "-m", "sxpm", "pull", ref, *extra],
                              env=cli2.env, cwd=cli2.cwd, stdout=follower,
                              stderr=subprocess.PIPE, text=True, timeout=120)
        os.close(follower)
        os.close(leader)
        assert proc.returncode == 0, proc.stderr
        return proc.stderr

    drawn = pull_on_tty()
    assert "pull bars" in drawn and "B/s" in drawn  # bytes and rate on stderr
    assert "pull bars" not in pull_on_tty("--quiet")
