"""The pull's data path (sxpm.store.sink through BlobWriter.sink): bytes received into
buffers are written (direct I/O where the file system has it) and hashed from
memory, in order, on their own threads; ranges from several streams, an earlier
attempt's ranges on disk, odd resume offsets, bad bytes and failed writes."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

MiB = 1024 * 1024


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def update(self, n: int) -> None:
        self.n += n


def _desc(data: bytes):  # noqa: ANN202
    from sxpm.core.oci import Descriptor

    return Descriptor.for_bytes("application/octet-stream", data)


def _receive(sink, lane, data: bytes, start: int, end: int) -> int:  # noqa: ANN001
    """Feed ``data[start:end]`` as a socket would, in uneven reads."""
    from sxpm.store.sink import receive

    stream = io.BytesIO(data[start:end])

    def readinto(view: memoryview) -> int:
        return stream.readinto(view[:300_001])

    return receive(readinto, sink, lane, start, end, Counter())


def _direct_io_works(path: Path) -> bool:
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return False
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | flag, 0o644))
        return True
    except OSError:
        return False
    finally:
        path.unlink(missing_ok=True)


@pytest.mark.parametrize("direct", [True, False])
def test_sequential_sink_stores_the_blob(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         direct: bool) -> None:
    from sxpm.store.layout import OCILayout

    if not direct:
        monkeypatch.setenv("SXPM_NO_DIRECT", "1")
    layout = OCILayout(tmp_path / "store")
    data = os.urandom(7 * MiB + 12_345)  # an unaligned tail
    desc = _desc(data)
    with layout.writer(desc) as w:
        with w.sink() as sink:
            assert _receive(sink, sink.lane(), data, 0, len(data)) == len(data)
        expect_direct = direct and _direct_io_works(tmp_path / "probe")
        assert (w._dfd >= 0) == expect_direct
        assert w.written == len(data)
        w.commit()
    assert layout.blob_path(desc.digest).read_bytes() == data


def test_sink_resumes_at_an_odd_offset(tmp_path: Path) -> None:
    from sxpm.store.layout import OCILayout

    layout = OCILayout(tmp_path / "store")
    data = os.urandom(5 * MiB)
    desc = _desc(data)
    odd = MiB + 7
    with layout.writer(desc) as w:  # an earlier attempt, killed after an odd prefix
        w.write(data[:odd])
        w.abort(keep_partial=True)
    with layout.writer(desc) as w:
        assert w.offset == odd
        with w.sink() as sink:
            _receive(sink, sink.lane(), data, odd, len(data))
        w.commit()
    assert layout.blob_path(desc.digest).read_bytes() == data


def test_sink_refuses_bad_bytes(tmp_path: Path) -> None:
    from sxpm.errors import CorruptBlobError
    from sxpm.store.layout import OCILayout

    layout = OCILayout(tmp_path / "store")
    data = os.urandom(3 * MiB)
    desc = _desc(data)
    bad = bytearray(data)
    bad[2 * MiB + 1] ^= 0xFF
    with pytest.raises(CorruptBlobError), layout.writer(desc) as w:
        with w.sink() as sink:
            _receive(sink, sink.lane(), bytes(bad), 0, len(bad))
        w.commit()
    assert not layout.has_blob(desc.digest)
    assert not any(layout.partial_dir.iterdir())


def test_ranges_from_two_streams_out_of_order_spill_to_disk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream far ahead of the hash releases its buffers; the hash reads them back."""
    from sxpm.store.layout import BlobWriter, OCILayout
    from sxpm.store.sink import BUFFER

    layout = OCILayout(tmp_path / "store")
    data = os.urandom(12 * MiB + 99)
    desc = _desc(data)
    reads: list[int] = []
    real = BlobWriter.hash_upto

    def counting(self: BlobWriter, n: int) -> None:
        reads.append(n - self._hashed)
        real(self, n)

    monkeypatch.setattr(BlobWriter, "hash_upto", counting)
    with layout.writer(desc) as w:
        assert w.open_ranges() == [(0, len(data))]
        half = 6 * MiB
        with w.sink() as sink:
            ahead, behind = sink.lane(2), sink.lane(2)
            _receive(sink, ahead, data, half, len(data))  # all of it before the start
            _receive(sink, behind, data, 0, half)
        assert w.written == len(data) and w.missing() == []
        assert sum(reads) >= len(data) - half - 2 * BUFFER  # most of it read back
        w.commit()
    assert layout.blob_path(desc.digest).read_bytes() == data


def test_ranges_resume_hashes_an_earlier_attempts_ranges_from_disk(tmp_path: Path) -> None:
    from sxpm.store.layout import OCILayout

    layout = OCILayout(tmp_path / "store")
    data = os.urandom(8 * MiB)
    desc = _desc(data)
    with layout.writer(desc) as w:  # the earlier attempt: the second quarter, recorded
        w.open_ranges()
        w.write_at(2 * MiB, data[2 * MiB:4 * MiB])
        w.complete(2 * MiB, 4 * MiB)
        w.abort(keep_partial=True)
    with layout.writer(desc) as w:
        missing = w.open_ranges()
        assert missing == [(0, 2 * MiB), (4 * MiB, 8 * MiB)]
        with w.sink() as sink:
            lane = sink.lane()
            for a, b in reversed(missing):
                _receive(sink, lane, data, a, b)
        w.commit()
    assert layout.blob_path(desc.digest).read_bytes() == data


def test_a_failed_write_stops_the_receiver_and_keeps_hash_and_file_in_step(
        tmp_path: Path) -> None:
    from sxpm.store.layout import OCILayout

    layout = OCILayout(tmp_path / "store")
    data = os.urandom(6 * MiB)
    desc = _desc(data)
    with layout.writer(desc) as w:
        sink = w.sink()
        real_write = sink._write

        def failing(offset: int, view: memoryview) -> None:
            if offset >= 2 * MiB:
                raise OSError(28, "No space left on device")
            real_write(offset, view)

        sink._write = failing  # type: ignore[method-assign]
        with pytest.raises(OSError, match="No space"):
            with sink:
                _receive(sink, sink.lane(), data, 0, len(data))
        assert w.written == 2 * MiB
        assert w._hashed == 2 * MiB
        assert w._hash.digest() == hashlib.sha256(data[:2 * MiB]).digest()
        w.abort(keep_partial=True)
    with layout.writer(desc) as w:  # the bytes kept are a trusted prefix
        assert w.offset == 2 * MiB


def test_direct_writes_refused_after_open_fall_back_to_the_page_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import fcntl

    import sxpm.store.sink
    from sxpm.store.layout import OCILayout

    if not _direct_io_works(tmp_path / "probe"):
        pytest.skip("this file system has no direct I/O")
    real = sxpm.store.sink.pwrite_all
    refused: list[int] = []

    def picky(fd: int, view: memoryview, offset: int) -> None:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            refused.append(offset)
            raise OSError(errno.EINVAL, "Invalid argument")
        real(fd, view, offset)

    monkeypatch.setattr(sxpm.store.sink, "pwrite_all", picky)
    layout = OCILayout(tmp_path / "store")
    data = os.urandom(5 * MiB)
    desc = _desc(data)
    with layout.writer(desc) as w:
        with w.sink() as sink:
            _receive(sink, sink.lane(), data, 0, len(data))
        assert refused == [0] and w._dfd == -1  # asked once, then never again
        w.commit()
    assert layout.blob_path(desc.digest).read_bytes() == data


def test_a_stream_ahead_gets_its_buffers_back_while_the_hash_catches_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hash reading a long range back from disk takes what the other streams wrote
    meanwhile, between buffers: a stream ahead of it gets its buffers back to receive
    into instead of waiting for the whole catch-up."""
    import threading

    from sxpm.store.layout import BlobWriter, OCILayout
    from sxpm.store.sink import BUFFER

    layout = OCILayout(tmp_path / "store")
    data = os.urandom(12 * MiB)
    desc = _desc(data)
    with layout.writer(desc) as w:  # an earlier attempt left [2, 6 MiB) on disk
        w.open_ranges()
        w.write_at(2 * MiB, data[2 * MiB:6 * MiB])
        w.complete(2 * MiB, 6 * MiB)
        w.abort(keep_partial=True)
    events: list[str] = []
    reading, got_back = threading.Event(), threading.Event()
    real = BlobWriter.hash_upto

    def reading_back(self: BlobWriter, n: int) -> None:
        if not reading.is_set():  # the catch-up's start: once the stream's two wait
            reading.set()
            while sink._to_hash.qsize() < 2:
                threading.Event().wait(0.01)
        else:  # later in the catch-up: not before the stream had a buffer back
            got_back.wait(30)
        real(self, n)
        events.append(f"read to {n // MiB} MiB")

    monkeypatch.setattr(BlobWriter, "hash_upto", reading_back)
    with layout.writer(desc) as w:
        assert w.open_ranges() == [(0, 2 * MiB), (6 * MiB, 12 * MiB)]
        with w.sink() as sink:
            ahead = sink.lane(2)

            def stream() -> None:
                reading.wait(30)
                for offset in (8 * MiB, 10 * MiB):
                    buf = ahead.buffer()
                    buf[:BUFFER] = data[offset:offset + BUFFER]
                    sink.submit(ahead, buf, offset, BUFFER)
                buf = ahead.buffer()  # the third: only once the hash let one go
                events.append("buffer back")
                got_back.set()
                ahead.release(buf)

            thread = threading.Thread(target=stream)
            thread.start()
            behind = sink.lane(2)
            _receive(sink, behind, data, 0, 2 * MiB)  # hashed, then [2, 6 MiB) read back
            thread.join(60)
            _receive(sink, behind, data, 6 * MiB, 8 * MiB)
        assert events.index("buffer back") < events.index("read to 6 MiB"), events
        w.commit()
    assert layout.blob_path(desc.digest).read_bytes() == data


def test_read_direct_passes_exactly_the_range(tmp_path: Path) -> None:
    """Ranges released ahead of the hash are read back around the page cache, in whole
    blocks: the bytes passed are those of the range, whatever its end."""
    from sxpm.store.sink import open_direct, read_direct

    path = tmp_path / "blob"
    data = os.urandom(5 * MiB + 123)
    path.write_bytes(data)
    if not _direct_io_works(tmp_path / "probe"):
        pytest.skip("no direct I/O on this file system")
    fd = open_direct(path)
    try:
        for start, end in ((0, len(data)), (4096, len(data) - 7), (2 * MiB, 2 * MiB + 1)):
            got = bytearray()
            assert read_direct(fd, start, end, got.extend) == end
            assert bytes(got) == data[start:end]
    finally:
        os.close(fd)


def test_streams_of_a_ranged_sink_write_their_own_buffers(tmp_path: Path) -> None:
    """Several receivers write on their own threads (no writer thread to queue on);
    the hash still takes every byte in order."""
    import threading

    from sxpm.store.layout import OCILayout

    layout = OCILayout(tmp_path / "store")
    data = os.urandom(16 * MiB + 4097)
    desc = _desc(data)
    writers: set[str] = set()
    cuts = [0, 4 * MiB, 8 * MiB, 12 * MiB, len(data)]
    with layout.writer(desc) as w:
        w.open_ranges()
        real = w.complete

        def complete(start: int, end: int) -> None:
            writers.add(threading.current_thread().name)
            real(start, end)

        w.complete = complete  # type: ignore[method-assign]
        with w.sink(receivers=4) as sink:
            assert not any(t.name == "sxpm-write" for t in threading.enumerate())
            streams = [threading.Thread(target=_receive, name=f"stream-{i}",
                                        args=(sink, sink.lane(2), data, a, b))
                       for i, (a, b) in enumerate(zip(cuts, cuts[1:], strict=False))]
            for t in reversed(streams):
                t.start()
            for t in streams:
                t.join()
        assert writers == {f"stream-{i}" for i in range(4)}
        w.commit()
    assert layout.blob_path(desc.digest).read_bytes() == data


def test_a_failed_write_of_one_stream_stops_the_others(tmp_path: Path) -> None:
    import threading

    from sxpm.store.layout import OCILayout

    layout = OCILayout(tmp_path / "store")
    data = os.urandom(8 * MiB)
    desc = _desc(data)
    errors: list[BaseException] = []
    with layout.writer(desc) as w:
        w.open_ranges()
        sink = w.sink(receivers=2)
        real_write = sink._write
        started = threading.Event()

        def failing(offset: int, view: memoryview) -> None:
            if offset == 6 * MiB:
                started.wait(10)
                raise OSError(28, "No space left on device")
            real_write(offset, view)

        sink._write = failing  # type: ignore[method-assign]

        def stream(a: int, b: int) -> None:
            try:
                if a == 0:
                    started.set()
                    threading.Event().wait(0.3)  # the other's write fails meanwhile
                _receive(sink, sink.lane(2), data, a, b)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=stream, args=r) for r in [(0, 4 * MiB),
                                                                    (4 * MiB, 8 * MiB)]]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with pytest.raises(OSError, match="No space"):
            sink.close()
        assert len(errors) == 2 and all("No space" in str(e) for e in errors), errors
        assert (6 * MiB, 8 * MiB) in w.missing()  # never recorded as written
        assert w._hashed < 6 * MiB
        w.abort(keep_partial=True)
    with layout.writer(desc) as w:  # the next attempt fetches what is not recorded
        assert (6 * MiB, 8 * MiB) in w.open_ranges()
