"""Received bytes to disk and hash on their own threads: the pull's data path.

A thread that receives a blob hands each full buffer to a :class:`Sink`; a writer
thread puts it on disk at its offset (several receivers write their own, below),
then a hashing thread hashes it from memory, in offset order. Receiving, writing and
hashing (sha256, about 0.6 s per GiB) overlap instead of taking turns; one stream's
bytes are never read back from disk.

Writes go around the page cache (``O_DIRECT``) where the file system allows it: a
blob is fsynced before it enters the store anyway, so the cache would only hold
dirty pages waiting for that fsync, and filling it (allocating a page for every
4 KiB) costs more CPU than receiving the bytes does. Writes that are not aligned
to :data:`ALIGN` (the end of a blob, a resume at an odd offset) take an ordinary
descriptor of the same file. ``SXPM_NO_DIRECT=1`` turns direct writes off.

Several receivers (the streams of a ranged fetch) each take a :class:`Lane` of
buffers and write their own buffers (``write_here``): one writer thread for sixteen
streams or more was a queue they waited on for buffers to receive into (a profile of
eight 128 MiB layers over a capped link: streams waiting for a buffer about as long as
for the network), while a direct write of a buffer takes about a millisecond.
Bytes that arrive ahead of the hash wait in memory while their lane has a buffer
left to receive with; past that they are released once written, and the hash reads
them back from disk when it gets there (around the page cache too, where
they were written around it). A catch-up (many held buffers, or a range read back)
takes in what the streams wrote meanwhile between buffers, so a stream never waits
for another, or for the hash, and memory stays bounded by the lanes' buffers.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path

from sxpm.core.progress import Progress

ALIGN = 4096
"""Offset, length and address alignment of a direct write (the page size, which
covers every logical block size in use)."""
BUFFER = 2 * 1024 * 1024
"""Bytes per buffer: large enough that the per-buffer work of three threads is
small, small enough that a few per stream stay cheap (measured: 1-4 MiB all alike)."""
LANE_BUFFERS = 4

_Item = tuple["Lane", mmap.mmap, int, int]  # lane, buffer, offset, length


def open_direct(path: Path | str) -> int:
    """A descriptor of ``path`` that bypasses the page cache, or -1.

    -1 where the platform or the file system has no direct I/O (tmpfs, macOS) or it
    is turned off: the caller then writes through the cache as usual.
    """
    flag = getattr(os, "O_DIRECT", 0)
    if not flag or os.environ.get("SXPM_NO_DIRECT", "") not in ("", "0"):
        return -1
    try:
        # Read too: bytes written around the cache are read back around it (the hash
        # of a range released ahead of it), not through pages filled only to be dropped.
        return os.open(path, os.O_RDWR | flag)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
            return -1
        raise


def pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    while len(view):
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def aligned(offset: int, n: int) -> bool:
    return offset % ALIGN == 0 and n % ALIGN == 0


def read_direct(fd: int, start: int, end: int, update: Callable[[memoryview], None]) -> int:
    """Pass ``[start, end)`` of the direct descriptor ``fd`` to ``update``, a buffer at
    a time; the offset reached (short of ``end`` at an end of file). ``start`` must be
    aligned; the reads are whole blocks, and a block past ``end`` is read but not passed.
    Raises ``OSError`` (``EINVAL``) where the file system refuses the read."""
    size = min(BUFFER, -(-(end - start) // ALIGN) * ALIGN)
    with mmap.mmap(-1, max(size, ALIGN)) as buf, memoryview(buf) as view:
        pos = start
        while pos < end:
            want = min(size, end - pos)
            got = os.preadv(fd, [view[:-(-want // ALIGN) * ALIGN]], pos)
            if got <= 0:
                break
            take = min(got, want)
            update(view[:take])
            pos += take
            if take % ALIGN:
                break  # an end of file: the next read would not be aligned
        return pos


class Lane:
    """The buffers of one receiving thread."""

    def __init__(self, sink: Sink, count: int) -> None:
        self.sink = sink
        self.count = count
        self.held = 0  # buffers waiting in the hashing thread (that thread's counter)
        self._free: queue.SimpleQueue[mmap.mmap] = queue.SimpleQueue()
        for _ in range(count):
            # Anonymous mappings are page-aligned, as direct I/O needs.
            self._free.put(mmap.mmap(-1, BUFFER))

    def buffer(self) -> mmap.mmap:
        """A free buffer (waits while all of this lane's are being written or hashed)."""
        self.sink.check()
        buf = self._free.get()
        self.sink.check()
        return buf

    def release(self, buf: mmap.mmap) -> None:
        self._free.put(buf)


class Sink:
    """Buffers at offsets -> ``write`` on one thread -> ``update`` in offset order on
    another.

    ``write(offset, view)`` puts bytes on disk; ``written(offset, n)`` records them
    (called after ``write``, on the same thread); ``update(view)`` hashes;
    ``readback(start, end)`` hashes ``[start, end)`` from disk: the ``on_disk``
    ranges (an earlier attempt's) and bytes released ahead of the hash.
    Bytes are hashed only after they are written, so after :meth:`close` the hash
    never covers a byte the file does not hold. The first error of either thread
    is raised by the next :meth:`submit`, :meth:`Lane.buffer` or :meth:`close`.
    """

    def __init__(self, *, write: Callable[[int, memoryview], None],
                 written: Callable[[int, int], None], update: Callable[[memoryview], None],
                 hashed: int, on_disk: list[tuple[int, int]] | None = None,
                 readback: Callable[[int, int], None] | None = None,
                 interrupted: threading.Event | None = None, write_here: bool = False) -> None:
        self._write, self._written, self._update = write, written, update
        self._readback = readback
        # Ranges that start where the hash will be at some point (the hashed prefix
        # itself is the range that ends at ``hashed``).
        self._on_disk = {a: b for a, b in on_disk or () if a >= hashed}
        if self._on_disk and readback is None:
            raise ValueError("bytes on disk need a readback")
        self._interrupted = interrupted
        self.hashed = hashed
        self._error: BaseException | None = None
        self._broken = False  # the hashing failed: hash nothing more (hashing thread)
        self._ended = False  # the writer is done (hashing thread)
        self._to_write: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._to_hash: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        # One receiver keeps a writer thread: receiving and writing then overlap. Several
        # write on their own threads (``write_here``), which overlap with each other.
        self._write_here = write_here
        self._threads = [threading.Thread(target=self._hasher, name="sxpm-hash", daemon=True)]
        if not write_here:
            self._threads.append(threading.Thread(target=self._writer, name="sxpm-write",
                                                  daemon=True))
        for thread in self._threads:
            thread.start()
        self._closed = False

    def lane(self, buffers: int = LANE_BUFFERS) -> Lane:
        return Lane(self, buffers)

    def submit(self, lane: Lane, buf: mmap.mmap, offset: int, n: int) -> None:
        """Hand ``buf[:n]`` (bytes at ``offset``) over; the lane gets it back later."""
        self.check()
        if not n:
            lane.release(buf)
        elif self._write_here:
            try:
                with memoryview(buf) as view:
                    self._write(offset, view[:n])
                self._written(offset, n)
            except BaseException as exc:
                self._fail(exc)  # the other receivers stop at their next buffer
                lane.release(buf)
                raise
            self._to_hash.put((lane, buf, offset, n))
        else:
            self._to_write.put((lane, buf, offset, n))

    def check(self) -> None:
        if self._error is not None:
            raise self._error
        if self._interrupted is not None and self._interrupted.is_set():
            raise KeyboardInterrupt

    def close(self) -> None:
        """Wait until every submitted byte is written and hashed as far as it can be."""
        if not self._closed:
            self._closed = True
            (self._to_hash if self._write_here else self._to_write).put(None)
            for thread in self._threads:
                thread.join()
        self.check()

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:
            with contextlib.suppress(BaseException):  # the error in flight wins
                self.close()

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc

    def _writer(self) -> None:
        while (item := self._to_write.get()) is not None:
            lane, buf, offset, n = item
            if self._error is None:
                try:
                    with memoryview(buf) as view:
                        self._write(offset, view[:n])
                    self._written(offset, n)
                    self._to_hash.put(item)
                    continue
                except BaseException as exc:
                    self._fail(exc)
            lane.release(buf)
        self._to_hash.put(None)

    def _hasher(self) -> None:
        # Every written byte is hashed, even after the writer failed, so the hash
        # ends where the file does; only a failure of the hashing itself stops it.
        pending: dict[int, _Item] = {}
        while not self._ended:
            self._take(self._to_hash.get(), pending)
            if not self._broken:
                try:
                    self._advance(pending)
                except BaseException as exc:
                    self._fail(exc)
                    self._broken = True
            if self._broken:
                self._drop(pending)
        # Left over: bytes after a gap that never filled (a failed stream). They are
        # on disk and recorded; the writer hashes them from there once the gap fills.
        self._drop(pending)

    def _take(self, item: _Item | None, pending: dict[int, _Item]) -> None:
        """Hold a written buffer for the hash, or give it back to its lane."""
        if item is None:
            self._ended = True
            return
        lane, buf, offset, n = item
        if not self._broken and offset != self.hashed and lane.held >= lane.count - 1:
            # Ahead of the hash, and the lane's last free buffer: release this one
            # (it is on disk) and read it back when the hash gets here.
            self._on_disk[offset] = offset + n
            lane.release(buf)
            return
        pending[offset] = item
        lane.held += 1

    def _take_arrived(self, pending: dict[int, _Item]) -> None:
        """Take what was written meanwhile: a long catch-up (buffers held for many
        streams, or a range read back from disk) must not keep the other streams'
        buffers queued here while they wait for one to receive into."""
        while not self._ended:
            try:
                item = self._to_hash.get_nowait()
            except queue.Empty:
                return
            self._take(item, pending)

    @staticmethod
    def _drop(pending: dict[int, _Item]) -> None:
        for lane, buf, _, _ in pending.values():
            lane.held -= 1
            lane.release(buf)
        pending.clear()

    def _advance(self, pending: dict[int, _Item]) -> None:
        while True:
            item = pending.pop(self.hashed, None)
            if item is not None:
                lane, buf, offset, n = item
                with memoryview(buf) as view:
                    self._update(view[:n])
                self.hashed = offset + n
                lane.held -= 1
                lane.release(buf)
                self._take_arrived(pending)
                continue
            end = self._on_disk.pop(self.hashed, None)
            if end is None:
                return
            assert self._readback is not None
            while self.hashed < end:  # a buffer at a time, taking arrivals in between
                step = min(end, self.hashed + BUFFER)
                self._readback(self.hashed, step)
                self.hashed = step
                self._take_arrived(pending)


def receive(readinto: Callable[[memoryview], int], sink: Sink, lane: Lane, pos: int,
            end: int, progress: Progress, stop: threading.Event | None = None,
            claim: Callable[[int, int], int] | None = None) -> int:
    """Read ``[pos, end)`` of a blob into the sink's buffers; the offset reached.

    Buffers end on :data:`BUFFER` boundaries, so after a resume at an
    odd offset the writes are aligned again. Bytes received before an error are
    handed over too (the next attempt resumes after them). ``claim(pos, want)``, when
    given, is asked before each buffer how much of it to read: less than ``want``
    (0: stop at ``pos``) once another stream took over the end of the range.
    """
    while pos < end and not (stop is not None and stop.is_set()):
        buf = lane.buffer()
        want = min(BUFFER - pos % BUFFER, end - pos)
        if claim is not None and (want := claim(pos, want)) <= 0:
            lane.release(buf)
            break
        got = 0
        try:
            with memoryview(buf) as view:
                while got < want:
                    n = readinto(view[got:want])
                    if not n:
                        break
                    got += n
        except BaseException:
            with contextlib.suppress(BaseException):
                sink.submit(lane, buf, pos, got)
                progress.update(got)
            raise
        sink.submit(lane, buf, pos, got)
        progress.update(got)
        pos += got
        if got < want:
            break
    return pos
