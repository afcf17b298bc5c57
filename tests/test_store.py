"""The content-addressed store: verified writes, locks, refs, gc, verify."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sxpm.core.oci import Descriptor, sha256_digest
from sxpm.core.reference import Digest
from sxpm.errors import CorruptBlobError, SizeMismatchError
from sxpm.store.layout import OCILayout


def test_layout_files_are_an_oci_image_layout(tmp_path: Path) -> None:
    layout = OCILayout(tmp_path / "s")
    layout.ensure()
    assert (tmp_path / "s" / "oci-layout").read_text() == '{"imageLayoutVersion":"1.0.0"}'
    assert (tmp_path / "s" / "index.json").is_file()
    desc = layout.put_bytes(b"hello", "text/plain")
    path = tmp_path / "s" / "blobs" / "sha256" / hashlib.sha256(b"hello").hexdigest()
    assert path.read_bytes() == b"hello"
    assert not os.access(path, os.W_OK) or os.geteuid() == 0
    assert oct(path.stat().st_mode & 0o777) == "0o444"
    assert layout.has_blob(desc.digest)


def test_digest_mismatch_stores_nothing(tmp_path: Path) -> None:
    layout = OCILayout(tmp_path / "s")
    wrong = Descriptor("x", sha256_digest(b"expected"), 8)
    with pytest.raises(CorruptBlobError) as info, layout.writer(wrong) as w:
        w.write(b"tampered")
        w.commit()
    assert str(wrong.digest) in str(info.value)
    assert list(layout.iter_blobs()) == []
    assert not any(layout.partial_dir.iterdir())


def test_oversized_stream_is_cut_off(tmp_path: Path) -> None:
    layout = OCILayout(tmp_path / "s")
    desc = Descriptor("x", sha256_digest(b"abc"), 3)
    with pytest.raises(SizeMismatchError), layout.writer(desc) as w:
        w.write(b"abcdef")
    assert list(layout.iter_blobs()) == []


def test_interrupted_write_resumes_from_partial_bytes(tmp_path: Path) -> None:
    layout = OCILayout(tmp_path / "s")
    data = os.urandom(3 * 1024 * 1024)
    desc = Descriptor("x", sha256_digest(data), len(data))
    with pytest.raises(KeyboardInterrupt), layout.writer(desc) as w:
        w.write(data[:1_000_000])
        raise KeyboardInterrupt
    assert not layout.has_blob(desc.digest)
    with layout.writer(desc) as w:
        assert w.offset == 1_000_000
        w.write(data[w.offset:])
        w.commit()
    assert layout.blob_path(desc.digest).read_bytes() == data


def test_refs_gc_and_verify(tmp_path: Path) -> None:
    from sxpm.core.oci import Manifest

    layout = OCILayout(tmp_path / "s")
    cfg = layout.put_bytes(b"{}", "application/vnd.oci.empty.v1+json")
    layer = layout.put_bytes(b"layer", "application/octet-stream")
    orphan = layout.put_bytes(b"orphan", "application/octet-stream")
    mdesc = layout.put_manifest(Manifest(cfg, (layer,), "application/x-test"))
    layout.set_ref("example/a:1", mdesc)
    assert layout.resolve("example/a:1").digest == mdesc.digest
    assert layout.gc() == (1, len(b"orphan"))
    assert not layout.has_blob(orphan.digest)
    assert layout.has_blob(layer.digest)
    assert layout.verify().bad == []
    # Corrupt a blob behind the store's back: verify names it.
    path = layout.blob_path(layer.digest)
    os.chmod(path, 0o644)
    path.write_bytes(b"LAYER")
    report = layout.verify()
    assert [d for d, _ in report.bad] == [str(layer.digest)]
    assert layout.remove_ref("example/a:1")
    assert layout.refs() == {}


_PACKER = """
import sys
from sxpm.store.layout import OCILayout
layout = OCILayout(sys.argv[1])
for i in range(30):
    layout.put_file(__import__('pathlib').Path(sys.argv[2]), "application/octet-stream")
    layout.set_ref(f"r/{sys.argv[3]}:{i}", layout.put_bytes(b"m" * (i + 1), "text/plain"))
"""


def test_concurrent_writers_leave_one_valid_blob(tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(4 * 1024 * 1024))
    root = tmp_path / "s"
    procs = [subprocess.Popen([sys.executable, "-c", _PACKER, str(root), str(src), str(n)],
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
             for n in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    layout = OCILayout(root)
    digest = Digest("sha256", hashlib.sha256(src.read_bytes()).hexdigest())
    assert layout.blob_path(digest).read_bytes() == src.read_bytes()
    assert layout.verify().bad == []
    # Every process's refs survived the others' concurrent index.json updates.
    assert len(layout.refs()) == 4 * 30
    assert not any(layout.tmp_dir.iterdir())


def test_threads_of_one_process_hand_a_store_lock_over_at_once(tmp_path: Path) -> None:
    """Two threads of one pull (a fresh store's ``index.lock``, one blob's lock) still
    exclude each other, and the waiter gets the lock as soon as it is released: the
    file lock alone polls every 50 ms, which cost a fresh pull 50 ms before a blob."""
    import threading
    import time

    layout = OCILayout(tmp_path / "s")
    digest = Digest("sha256", "0" * 64)
    delays = []
    for _ in range(8):
        held, released, acquired = threading.Event(), [0.0], [0.0]

        def holder(held: threading.Event = held, released: list[float] = released) -> None:
            with layout.blob_lock(digest):
                held.set()
                time.sleep(0.02)
                released[0] = time.monotonic()

        def waiter(acquired: list[float] = acquired) -> None:
            with layout.blob_lock(digest):
                acquired[0] = time.monotonic()

        first = threading.Thread(target=holder)
        first.start()
        assert held.wait(10)
        second = threading.Thread(target=waiter)
        second.start()
        first.join(10)
        second.join(10)
        assert acquired[0] >= released[0] > 0  # never both at once
        delays.append(acquired[0] - released[0])
    # Eight hand-overs by 50 ms polls take ~200 ms; by a thread lock, a few ms.
    assert sum(delays) < 0.08, delays
