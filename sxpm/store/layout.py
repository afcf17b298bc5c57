"""An OCI image layout directory: the local store, and the embedded registry.

Both the store under ``$SIMPLEX_HOME/store`` and a layout registry (``oci:DIR``) are
plain OCI image layouts (``oci-layout``, ``index.json``, ``blobs/<alg>/<hex>``), so
other OCI tools (oras, skopeo) read them as they are.

Blob writes are crash-safe: bytes go to a temporary file on the same file system,
are hashed while written, and are renamed into place only when digest and size
match. A write for a known digest keeps its bytes in ``blobs/.partial/`` when
interrupted, so the next attempt resumes instead of starting over. Locks (the
``filelock`` package) serialise writers of one blob and updates of ``index.json``
across processes.

Processes that add content (pull, install, pack) hold a shared *use* lease on the
store for as long as they need blobs that no ref names yet; ``gc`` takes the lease
exclusively, so it runs only while no such process is between "blob written" and
"ref set" (docs/store.md, "gc and concurrent writers").
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import secrets
import shutil
import stat
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from sxpm.core.oci import (
    ANN_REF_NAME,
    ANN_SIMPLEX_REF,
    INDEX_TYPES,
    MANIFEST_TYPES,
    MAX_MANIFEST_BYTES,
    OCI_INDEX,
    Descriptor,
    ImageIndex,
    Manifest,
    canonical_json,
    digest_of,
    entry_ref,
    parse_manifest_bytes,
    ref_entry,
)
from sxpm.core.reference import Digest
from sxpm.errors import CorruptBlobError, ManifestError, SizeMismatchError, StoreError

if TYPE_CHECKING:
    from sxpm.store.sink import Sink

CHUNK = 1024 * 1024
LOCK_TIMEOUT_S = 900.0
USE_LOCK = "use.lock"
# Errors of the file system itself, not of one path: the store is left as it was.
_FS_ERRORS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
              errno.EROFS: "the file system is read-only", errno.EFBIG: "file too large",
              errno.EACCES: "permission denied", errno.EPERM: "permission denied"}


# One lock per lock file for the threads of this process, taken before the file lock.
# The file lock alone serialises threads too (each FileLock opens its own descriptor),
# but a waiting FileLock polls every 50 ms: two threads of one pull creating a fresh
# store both take ``index.lock``, and the second lost 50 ms before its first request.
# A thread lock hands over at once; the file lock still excludes other processes.
# Held weakly: a long-lived process (sxpm serve) takes a lock per blob it ever writes,
# and a lock nobody holds or waits for is gone with its last user.
_THREAD_LOCKS: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
_THREAD_LOCKS_GUARD = threading.Lock()


def _thread_lock(path: str) -> Any:
    """The process's ``threading.RLock`` for ``path`` (typed Any: RLock is a factory)."""
    with _THREAD_LOCKS_GUARD:
        lock = _THREAD_LOCKS.get(path)
        if lock is None:
            lock = _THREAD_LOCKS[path] = threading.RLock()
        return lock


def store_write_error(root: Path, exc: OSError) -> StoreError | None:
    """A one-line :class:`StoreError` for a write that failed on the file system."""
    reason = _FS_ERRORS.get(exc.errno or 0)
    if reason is None:
        return None
    return StoreError(f"Cannot write to the store at {root}: {reason}",
                      hint="nothing was stored; free space or fix the permissions, then "
                           "run the command again")
_LAYOUT_MARKER = {"imageLayoutVersion": "1.0.0"}


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new file, never half.

    The new file keeps the mode (and, where allowed, the owner) of the one it replaces,
    or gets ``0666 & ~umask`` when there was none: ``simplex.toml``, a lock, the
    ``index.json`` of a layout registry shared between users stay readable by whoever
    could read them. Secrets pass ``mode=0o600``; the file never has another mode.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        old: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        old = None
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            # The kernel applies the umask to 0o666, as for any new file.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                         0o666 if mode is None else mode)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as fh:
            if mode is not None:
                os.fchmod(fh.fileno(), mode)
            elif old is not None:
                with contextlib.suppress(OSError):  # only root may give a file away
                    os.fchown(fh.fileno(), old.st_uid, old.st_gid)
                os.fchmod(fh.fileno(), stat.S_IMODE(old.st_mode))
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


_WRITEBACK = 16 * CHUNK


def _start_writeback(fd: int, start: int, length: int) -> None:
    """Start writing ``length`` bytes at ``start`` to disk without waiting for it.

    Nothing reads them back from the cache (the hash has them already, or takes them
    from memory); the fsync before the blob enters the store then finds little left
    to write, instead of the whole blob at the end.
    """
    with contextlib.suppress(AttributeError, OSError):
        os.posix_fadvise(fd, start, length, os.POSIX_FADV_DONTNEED)


RANGES_SUFFIX = ".ranges"
"""A ranged download records its completed byte ranges in ``<partial>.ranges``."""


def _merge(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(i for i in intervals if i[1] > i[0]):
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def _read_ranges(path: Path, size: int) -> list[tuple[int, int]] | None:
    """Completed ranges recorded beside a partial file; None when there is no record.

    A record that cannot be read or does not make sense trusts nothing (``[]``).
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError:
        return []
    try:
        obj = json.loads(raw)
        if not isinstance(obj, dict) or obj.get("size") != size:
            return []
        items = [(int(a), int(b)) for a, b in obj.get("done", [])]
    except (ValueError, TypeError):
        return []
    return _merge([(max(0, a), min(size, b)) for a, b in items])


class BlobWriter:
    """A file being written into the layout; see :meth:`OCILayout.writer`.

    Two ways to fill it:

    * sequentially, :meth:`write` appends and hashes as it goes (resume: the bytes
      already in the partial file are a prefix, re-hashed when the writer opens);
    * by ranges (a known blob, fetched by several streams): :meth:`open_ranges` says
      which byte ranges are still missing, :meth:`write_at` puts bytes at their offset
      (from any thread), :meth:`complete` records a range as written, and
      :meth:`hash_upto` hashes the contiguous prefix of completed bytes, reading it
      back from disk. Completed ranges are kept in ``<partial>.ranges`` (replaced
      atomically, and always a subset of the bytes written), so a pull killed at any
      point resumes with only the missing ranges; bytes not recorded there are never
      trusted.

    Either way, received bytes take :meth:`sink` (writing and hashing on their own
    threads, from memory); :meth:`commit` checks size and digest before the blob
    enters the store.
    """

    def __init__(self, layout: OCILayout, expected: Descriptor | None, where: str) -> None:
        self.layout = layout
        self.expected = expected
        self.where = where
        self._hash = hashlib.sha256() if expected is None else hashlib.new(
            expected.digest.algorithm)
        self._ranged = False
        self._fd = -1
        self._pfd = -1  # positional writes of a sequential sink (``_fh`` appends)
        self._dfd = -2  # direct-I/O descriptor of a sink; -2: not tried yet, -1: none
        self._refused: list[int] = []  # direct descriptors refused, closed with the rest
        self._fd_lock = threading.Lock()
        self._tail = False  # bytes past ``offset`` on disk that a sequential write drops
        self._extra: list[tuple[int, int]] = []  # recorded ranges past the prefix
        layout.ensure()
        if expected is not None:
            # Named after the digest so an interrupted download resumes from its bytes.
            self.path = layout.partial_dir / f"{expected.digest.algorithm}-{expected.digest.hex}"
            self.ranges_path = self.path.with_name(self.path.name + RANGES_SUFFIX)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh: IO[bytes] = open(self.path, "ab+")  # noqa: SIM115 - closed in commit/abort
            on_disk = os.fstat(self._fh.fileno()).st_size
            recorded = _read_ranges(self.ranges_path, expected.size)
            if recorded is None:  # written in order: the bytes on disk are a prefix
                prefix = on_disk
            else:  # written by ranges: trust only what the record says is complete
                recorded = _merge([(a, min(b, on_disk)) for a, b in recorded])
                prefix = recorded[0][1] if recorded and recorded[0][0] == 0 else 0
                self._extra = [r for r in recorded if r[0] > 0]
                self._tail = on_disk > prefix or self.ranges_path.exists()
            if prefix > expected.size:
                self._fh.truncate(0)
                prefix = 0
            self._fh.seek(0)
            left = prefix
            while left:
                chunk = self._fh.read(min(CHUNK, left))
                if not chunk:
                    break
                self._hash.update(chunk)
                left -= len(chunk)
            self.offset = prefix - left
        else:
            layout.tmp_dir.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=layout.tmp_dir, prefix="blob-")
            self.path = Path(name)
            self.ranges_path = self.path.with_name(self.path.name + RANGES_SUFFIX)
            self._fh = os.fdopen(fd, "wb")
            self.offset = 0
        self.written = self._flushed = self._hashed = self.offset

    # --- sequential --------------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._ranged:
            raise StoreError("BlobWriter.write after open_ranges(); use write_at")
        if self.layout.interrupted.is_set():
            raise KeyboardInterrupt
        if self.expected is not None and self.written + len(data) > self.expected.size:
            self.abort(keep_partial=False)
            raise SizeMismatchError(str(self.expected.digest), self.expected.size,
                                    self.written + len(data), where=self.where)
        if self._tail:
            self._drop_tail()
        self._fh.write(data)
        self._hash.update(data)
        self.written += len(data)
        if self.written - self._flushed >= _WRITEBACK:
            self._fh.flush()
            _start_writeback(self._fh.fileno(), self._flushed, self.written - self._flushed)
            self._flushed = self.written

    def _drop_tail(self) -> None:
        """Make the file the trusted prefix alone, before appending to it."""
        self._fh.flush()
        self._fh.truncate(self.written)
        with contextlib.suppress(FileNotFoundError):
            self.ranges_path.unlink()
        self._extra = []
        self._tail = False

    def restart(self) -> None:
        """Drop the bytes written so far (the source could not resume)."""
        assert self.expected is not None
        self._close_fds()
        self._ranged = False
        self._fh.seek(0)
        self._fh.truncate(0)
        with contextlib.suppress(FileNotFoundError):
            self.ranges_path.unlink()
        self._extra = []
        self._tail = False
        self._hash = hashlib.new(self.expected.digest.algorithm)
        self.offset = self.written = self._flushed = self._hashed = 0

    # --- by ranges ---------------------------------------------------------------------
    def open_ranges(self) -> list[tuple[int, int]]:
        """Switch to ranged writing; the ``[start, end)`` ranges still to be written."""
        assert self.expected is not None, "ranged writes need the expected descriptor"
        if self._ranged:
            return self.missing()
        size = self.expected.size
        self._fh.flush()
        self._done = _merge([(0, self.offset), *self._extra])
        self._hashed = self.offset
        self._cond = threading.Condition()
        self._save_lock = threading.Lock()
        self._saved_at = 0.0
        # Record first: a file with holes is never mistaken for a sequential prefix.
        self.save_ranges()
        self._fd = os.open(self.path, os.O_RDWR)
        if os.fstat(self._fd).st_size > size:
            os.ftruncate(self._fd, size)
        self._ranged = True
        self._tail = False
        self.written = sum(b - a for a, b in self._done)
        return self.missing()

    def missing(self) -> list[tuple[int, int]]:
        assert self.expected is not None
        out: list[tuple[int, int]] = []
        pos = 0
        with self._cond:
            done = list(self._done)
        for start, end in done:
            if start > pos:
                out.append((pos, start))
            pos = max(pos, end)
        if pos < self.expected.size:
            out.append((pos, self.expected.size))
        return out

    def write_at(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Put ``data`` at ``offset`` (thread-safe); record it with :meth:`complete`."""
        assert self.expected is not None and self._ranged
        if self.layout.interrupted.is_set():
            raise KeyboardInterrupt
        if offset < 0 or offset + len(data) > self.expected.size:
            raise SizeMismatchError(str(self.expected.digest), self.expected.size,
                                    offset + len(data), where=self.where)
        view = memoryview(data)
        while len(view):
            n = os.pwrite(self._fd, view, offset)
            view = view[n:]
            offset += n

    def complete(self, start: int, end: int) -> None:
        """Record ``[start, end)`` as written; the hash may now read it."""
        with self._cond:
            self._done = _merge([*self._done, (start, end)])
            self.written = sum(b - a for a, b in self._done)
            self._cond.notify_all()
        now = time.monotonic()
        if now - self._saved_at >= 0.25:
            self.save_ranges()

    def save_ranges(self) -> None:
        """Write the record of completed ranges (atomically replaced)."""
        assert self.expected is not None
        # One save at a time, so that an older record never replaces a newer one
        # (several receiving threads complete ranges and save).
        with self._save_lock:
            with self._cond:
                done = list(self._done)
                self._saved_at = time.monotonic()
            data = json.dumps({"size": self.expected.size, "done": done}).encode()
            tmp = self.ranges_path.with_name(f".{self.ranges_path.name}.{threading.get_ident()}")
            tmp.write_bytes(data)
            os.replace(tmp, self.ranges_path)

    def frontier(self) -> int:
        """End of the completed prefix: every byte before it is written and recorded."""
        with self._cond:
            return self._done[0][1] if self._done and self._done[0][0] == 0 else 0

    def hash_upto(self, n: int) -> None:
        """Hash the completed bytes up to ``n`` (at most :meth:`frontier`)."""
        if n > self.frontier():
            raise StoreError(f"cannot hash to {n}: bytes before it are not complete")
        if self._dfd >= 0 and self._hashed % 4096 == 0:
            # Written around the page cache (sxpm.store.sink): read back around it too.
            from sxpm.store.sink import read_direct

            def update(view: memoryview) -> None:
                self._hash.update(view)
                self._hashed += len(view)

            try:
                read_direct(self._dfd, self._hashed, n, update)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
            if self._hashed >= n:
                return
        buf = bytearray(min(4 * CHUNK, max(n - self._hashed, 1)))
        view = memoryview(buf)
        while self._hashed < n:
            got = os.preadv(self._fd, [view[:min(len(buf), n - self._hashed)]], self._hashed)
            if got <= 0:
                raise StoreError(f"{self.path} is shorter than its recorded ranges")
            self._hash.update(view[:got])
            _start_writeback(self._fd, self._hashed, got)
            self._hashed += got

    # --- pipelined (sxpm.store.sink) ----------------------------------------------------
    def sink(self, *, receivers: int = 1) -> Sink:
        """The fast path for received bytes: submit buffers at their offsets to the
        returned :class:`~sxpm.store.sink.Sink` (from :meth:`Sink.lane`); they are
        written (direct I/O where the file system has it) and hashed from memory on
        their own threads. Sequentially, submit from :attr:`written` on, in order;
        after :meth:`open_ranges`, submit the missing ranges in any order (each is
        recorded once written, and the hash reads an earlier attempt's ranges back
        from disk when it reaches them). With more than one receiving thread each
        writes its own buffers (see :mod:`sxpm.store.sink`). Close the sink before
        :meth:`commit`.
        """
        from sxpm.store.sink import Sink, aligned, open_direct, pwrite_all

        assert self.expected is not None, "a sink needs the expected descriptor"
        size = self.expected.size
        if self.layout.interrupted.is_set():
            raise KeyboardInterrupt
        before: list[tuple[int, int]] = []
        if self._ranged:
            cache_fd = self._fd

            def written(offset: int, n: int) -> None:
                self.complete(offset, offset + n)

            with self._cond:
                # Bytes on disk before this sink and not hashed yet; the sink's own
                # arrive in memory.
                before = [(max(a, self._hashed), b) for a, b in self._done if b > self._hashed]
        else:
            if self._tail:
                self._drop_tail()
            self._fh.flush()
            if self._pfd < 0:
                self._pfd = os.open(self.path, os.O_WRONLY)
            cache_fd = self._pfd
            self._hashed = self.written  # the hash covers the prefix on disk

            def written(offset: int, n: int) -> None:
                self.written = offset + n
        if self._dfd == -2:
            self._dfd = open_direct(self.path)

        def write(offset: int, view: memoryview) -> None:
            if offset + len(view) > size:
                raise SizeMismatchError(str(self.expected.digest) if self.expected else "",
                                        size, offset + len(view), where=self.where)
            dfd = self._dfd  # read once: another receiving thread may turn it off
            if dfd >= 0 and aligned(offset, len(view)):
                try:
                    pwrite_all(dfd, view, offset)
                    return
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise
                    # Direct I/O accepted at open but not for these writes (a larger
                    # block size): the page cache from here on. The descriptor stays
                    # open until the writer closes: another receiving thread may be
                    # writing with it, and a number closed now could name another file.
                    with self._fd_lock:
                        if self._dfd == dfd:
                            self._refused.append(dfd)
                            self._dfd = -1
            pwrite_all(cache_fd, view, offset)
            _start_writeback(cache_fd, offset, len(view))

        def update(view: memoryview) -> None:
            self._hash.update(view)
            self._hashed += len(view)

        def readback(start: int, end: int) -> None:
            assert start == self._hashed
            self.hash_upto(end)

        return Sink(write=write, written=written, update=update, hashed=self._hashed,
                    on_disk=before, readback=readback, interrupted=self.layout.interrupted,
                    write_here=receivers > 1 and self._ranged)

    def _close_fds(self) -> None:
        for fd in self._refused:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._refused.clear()
        for name in ("_fd", "_pfd", "_dfd"):
            fd = getattr(self, name)
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
            setattr(self, name, -1 if name != "_dfd" else -2)

    # --- the end ---------------------------------------------------------------------------
    def commit(self, media_type: str = "application/octet-stream") -> Descriptor:
        if self._ranged:
            try:  # the sink hashed all it could; the rest is on disk
                self.hash_upto(self.frontier())
            except BaseException:
                self.abort(keep_partial=True)
                raise
            os.fsync(self._fd)
            self._close_fds()
            self._fh.close()
        else:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._close_fds()
            self._fh.close()
        algorithm = self.expected.digest.algorithm if self.expected else "sha256"
        actual = Digest(algorithm, self._hash.hexdigest())
        if self.expected is not None:
            if self.written != self.expected.size:
                if self._ranged and self.written < self.expected.size:
                    self.save_ranges()  # incomplete: keep what is there for a resume
                    raise SizeMismatchError(str(self.expected.digest), self.expected.size,
                                            self.written, where=self.where)
                self._discard()
                raise SizeMismatchError(str(self.expected.digest), self.expected.size,
                                        self.written, where=self.where)
            if actual != self.expected.digest:
                self._discard()
                raise CorruptBlobError(str(self.expected.digest), str(actual), where=self.where)
            media_type = self.expected.media_type
            # Verified whole: without its record the file reads as a complete prefix.
            with contextlib.suppress(FileNotFoundError):
                self.ranges_path.unlink()
        self.layout._place(self.path, actual)
        return Descriptor(media_type, actual, self.written)

    def abort(self, keep_partial: bool = True) -> None:
        if self._ranged:
            if self._fd >= 0:
                with contextlib.suppress(OSError):
                    self.save_ranges()
        self._close_fds()
        with contextlib.suppress(OSError, ValueError):
            self._fh.close()
        if not keep_partial or self.expected is None:
            self._discard()

    def _discard(self) -> None:
        for path in (self.path, self.ranges_path):
            with contextlib.suppress(OSError):
                path.unlink()


@dataclass
class VerifyReport:
    checked: int
    bad: list[tuple[str, str]]  # (digest, what is wrong)


class OCILayout:
    """An OCI image layout rooted at ``root``."""

    def __init__(self, root: Path | str, lock_dir: Path | str | None = None) -> None:
        self.root = Path(root)
        self.lock_dir = Path(lock_dir) if lock_dir else self.root / ".locks"
        self.blobs_dir = self.root / "blobs"
        self.partial_dir = self.blobs_dir / ".partial"
        self.tmp_dir = self.blobs_dir / ".tmp"
        self.index_path = self.root / "index.json"
        self.interrupted = threading.Event()
        """Set (on Ctrl-C) to make every writer of this layout stop at its next write."""

    # --- structure ------------------------------------------------------------
    def exists(self) -> bool:
        return (self.root / "oci-layout").is_file()

    def ensure(self) -> None:
        if self.exists() and self.index_path.is_file():
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self.lock_dir.mkdir(parents=True, exist_ok=True)
            with self._lock("index"):
                if not (self.root / "oci-layout").is_file():
                    write_atomic(self.root / "oci-layout", canonical_json(_LAYOUT_MARKER))
                if not self.index_path.is_file():
                    write_atomic(self.index_path, canonical_json(
                        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}))
                (self.blobs_dir / "sha256").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"Cannot create the OCI layout at {self.root}: {exc.strerror}",
                             hint="check the path and its permissions") from exc

    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        # Imported here: filelock costs ~20 ms, and reading the store takes no lock.
        from filelock import FileLock
        from filelock import Timeout as LockTimeout

        self.lock_dir.mkdir(parents=True, exist_ok=True)
        path = str(self.lock_dir / f"{name}.lock")
        timed_out = StoreError(f"Timed out waiting for the lock {name!r} in {self.root}",
                               hint="another sxpm process holds it; retry when it ends")
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        local = _thread_lock(path)
        if not local.acquire(timeout=LOCK_TIMEOUT_S):
            raise timed_out
        try:
            # Never negative: filelock reads a negative timeout as "wait forever".
            lock = FileLock(path, timeout=max(0.0, deadline - time.monotonic()))
            try:
                with lock:
                    yield
            except LockTimeout:
                raise timed_out from None
        finally:
            local.release()

    @contextlib.contextmanager
    def _use_lock(self, exclusive: bool) -> Iterator[None]:
        """``flock`` on ``locks/use.lock``: shared for writers, exclusive for gc."""
        try:
            import fcntl
        except ImportError:  # not POSIX: no lease; gc must not run beside a pull there
            yield
            return
        try:
            self.lock_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_dir / USE_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise store_write_error(self.root, exc) or exc from None
        try:
            mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
            deadline = time.monotonic() + LOCK_TIMEOUT_S
            while True:
                try:
                    fcntl.flock(fd, mode | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise StoreError(
                            f"Timed out waiting for the store {self.root} to be free",
                            hint="another sxpm process is pulling, installing or collecting "
                                 "garbage; retry when it ends") from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)  # releases the lock

    def in_use(self) -> contextlib.AbstractContextManager[None]:
        """A shared lease: ``gc`` waits until every holder is done (see module doc)."""
        return self._use_lock(exclusive=False)

    def blob_lock(self, digest: Digest) -> contextlib.AbstractContextManager[None]:
        return self._lock(f"blob-{digest.hex}")

    def ref_lock(self, name: str) -> contextlib.AbstractContextManager[None]:
        return self._lock("ref-" + hashlib.sha256(name.encode()).hexdigest()[:32])

    # --- blobs ----------------------------------------------------------------
    def blob_path(self, digest: Digest) -> Path:
        return self.blobs_dir / digest.algorithm / digest.hex

    def has_blob(self, digest: Digest) -> bool:
        return self.blob_path(digest).is_file()

    def blob_size(self, digest: Digest) -> int:
        return self.blob_path(digest).stat().st_size

    def open_blob(self, digest: Digest) -> io.BufferedReader:
        try:
            return open(self.blob_path(digest), "rb")
        except FileNotFoundError:
            from sxpm.errors import NotFoundError

            raise NotFoundError(f"Blob {digest} is not in {self.root}",
                                hint="pull the artifact again") from None

    def read_blob(self, desc: Descriptor, limit: int = MAX_MANIFEST_BYTES) -> bytes:
        """Read a small blob whole and check it against its descriptor."""
        if desc.size > limit:
            raise ManifestError(str(desc.digest), f"blob of {desc.size} bytes is over the limit")
        with self.open_blob(desc.digest) as fh:
            data = fh.read(limit + 1)
        actual = digest_of(data, desc.digest.algorithm)
        if actual != desc.digest:
            raise CorruptBlobError(str(desc.digest), str(actual), where=str(self.root))
        return data

    @contextlib.contextmanager
    def writer(self, expected: Descriptor | None = None, where: str = "") -> Iterator[BlobWriter]:
        """Write a blob; ``expected`` is the descriptor it must match, if known.

        With an expected digest, the per-blob lock is held for the whole write, so
        two processes fetching the same blob do the work once.
        """
        lock = self.blob_lock(expected.digest) if expected else contextlib.nullcontext()
        with lock:
            try:
                w = BlobWriter(self, expected, where)
            except OSError as exc:
                raise store_write_error(self.root, exc) or exc from None
            try:
                yield w
            except OSError as exc:
                failed = store_write_error(self.root, exc)
                # A full or read-only disk: drop the partial bytes so the store is as it was.
                w.abort(keep_partial=failed is None)
                if failed is None:
                    raise
                raise failed from None
            except BaseException:
                w.abort(keep_partial=True)
                raise

    def _place(self, tmp: Path, digest: Digest) -> None:
        target = self.blob_path(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(tmp, 0o444)  # installed trees hard-link blobs: keep them read-only
        os.replace(tmp, target)
        _fsync_dir(target.parent)

    def put_bytes(self, data: bytes, media_type: str, algorithm: str = "sha256", **kw: Any
                  ) -> Descriptor:
        """Store ``data`` under its digest by ``algorithm`` (that of the digest naming
        it, for bytes read from elsewhere), hashed once, here."""
        desc = Descriptor.for_bytes(media_type, data, algorithm, **kw)
        self.put_verified(desc, data)
        return desc

    def put_verified(self, desc: Descriptor, data: bytes) -> None:
        """Store ``data``, whose digest ``desc`` holds because the caller computed it from
        these very bytes in memory (a manifest read and checked, bytes just hashed).

        Hashing them again on the way to disk would only repeat that work: the bytes
        written are the bytes hashed. Anything received from elsewhere goes through
        :meth:`writer`, which hashes as it writes.
        """
        if len(data) != desc.size:
            raise SizeMismatchError(str(desc.digest), desc.size, len(data), where="local data")
        if self.has_blob(desc.digest):
            return
        self.ensure()
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix="blob-")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                self._place(Path(name), desc.digest)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name)
                raise
        except OSError as exc:
            raise store_write_error(self.root, exc) or exc from None

    def put_file(self, path: Path, media_type: str,
                 progress: Callable[[int], None] | None = None) -> Descriptor:
        """Copy a file into the layout, hashing it on the way."""
        with self.writer(None, where=str(path)) as w, open(path, "rb") as src:
            for chunk in iter(lambda: src.read(CHUNK), b""):
                w.write(chunk)
                if progress:
                    progress(len(chunk))
            return w.commit(media_type)

    def remove_blob(self, digest: Digest) -> None:
        with self.blob_lock(digest), contextlib.suppress(FileNotFoundError):
            self.blob_path(digest).unlink()

    def iter_blobs(self) -> Iterator[Digest]:
        if not self.blobs_dir.is_dir():
            return
        for alg_dir in sorted(self.blobs_dir.iterdir()):
            if alg_dir.name.startswith(".") or not alg_dir.is_dir():
                continue
            for blob in sorted(alg_dir.iterdir()):
                try:
                    yield Digest.parse(f"{alg_dir.name}:{blob.name}")
                except ValueError:
                    continue

    # --- manifests and refs -----------------------------------------------------
    def put_manifest(self, manifest: Manifest | ImageIndex) -> Descriptor:
        desc = manifest.descriptor()
        self.put_bytes(manifest.to_bytes(), desc.media_type)
        return desc

    def load_manifest(self, desc: Descriptor) -> Manifest | ImageIndex:
        return parse_manifest_bytes(self.read_blob(desc), f"manifest {desc.digest}")

    def _read_index(self) -> dict[str, Any]:
        try:
            obj = json.loads(self.index_path.read_bytes())
        except FileNotFoundError:
            return {"schemaVersion": 2, "manifests": []}
        except (ValueError, RecursionError) as exc:
            raise StoreError(f"{self.index_path} is not valid JSON ({exc})",
                             hint="restore it or run `sxpm verify`") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("manifests", []), list):
            raise StoreError(f"{self.index_path} is not an OCI index")
        return obj

    def refs(self) -> dict[str, Descriptor]:
        """Every named ref in ``index.json``, name -> descriptor (annotation stripped)."""
        out: dict[str, Descriptor] = {}
        for i, item in enumerate(self._read_index().get("manifests", [])):
            desc = Descriptor.from_dict(item, source=str(self.index_path),
                                        path=f"$.manifests[{i}]")
            name = entry_ref(desc.annotations)
            if name:
                ann = {k: v for k, v in desc.annotations.items()
                       if k not in (ANN_REF_NAME, ANN_SIMPLEX_REF)}
                out[name] = Descriptor(desc.media_type, desc.digest, desc.size, ann,
                                       desc.artifact_type)
        return out

    def resolve(self, name: str) -> Descriptor | None:
        return self.refs().get(name)

    def set_ref(self, name: str, desc: Descriptor) -> None:
        self.ensure()
        with self._lock("index"):
            index = self._read_index()
            items = [m for m in index.get("manifests", [])
                     if entry_ref(m.get("annotations") or {}) != name]
            items.append(ref_entry(name, desc.to_dict()))
            items.sort(key=lambda m: entry_ref(m.get("annotations") or {}) or "")
            index["manifests"] = items
            self._write_index(index)

    def remove_ref(self, name: str) -> bool:
        if not self.index_path.exists():
            return False
        with self._lock("index"):
            index = self._read_index()
            before = index.get("manifests", [])
            after = [m for m in before
                     if entry_ref(m.get("annotations") or {}) != name]
            if len(after) == len(before):
                return False
            index["manifests"] = after
            self._write_index(index)
            return True

    def _write_index(self, index: dict[str, Any]) -> None:
        # Older stores lack ``mediaType``; image-spec asks for it and tools check it.
        index.setdefault("schemaVersion", 2)
        index.setdefault("mediaType", OCI_INDEX)
        write_atomic(self.index_path, canonical_json(index))

    # --- integrity ------------------------------------------------------------
    def reachable(self, roots: list[Descriptor]) -> set[Digest]:
        """Digests of every blob reachable from ``roots`` that is present."""
        seen: set[Digest] = set()
        stack = list(roots)
        while stack:
            desc = stack.pop()
            if desc.digest in seen:
                continue
            seen.add(desc.digest)
            if desc.media_type in _MANIFESTISH and self.has_blob(desc.digest):
                try:
                    obj = self.load_manifest(desc)
                except (ManifestError, CorruptBlobError):
                    continue
                if isinstance(obj, ImageIndex):
                    stack.extend(obj.manifests)
                else:
                    stack.extend(obj.blobs())
        # Referrers (signatures) live as long as their subject.
        return seen

    def gc(self, extra_roots: list[Descriptor] | None = None, dry_run: bool = False,
           roots: Callable[[dict[str, Descriptor]], tuple[list[Descriptor], list[str]]]
           | None = None) -> tuple[int, int]:
        """Remove unreachable blobs and stale temporary files; (blobs, bytes) freed.

        Waits for every :meth:`in_use` lease to end and holds new ones off meanwhile,
        so a blob a running pull has written but not yet named by a ref survives.
        ``roots``, given the refs under that lock, says what to keep and which refs to
        drop (default: every ref). Bytes count only for a blob whose last link goes:
        one an installed tree still hard-links stays on disk.
        """
        with self._lock("gc"), self._use_lock(exclusive=True):
            refs = self.refs()
            kept, drop = roots(refs) if roots else (list(refs.values()), [])
            keep = self.reachable(kept + list(extra_roots or []))
            if not dry_run:
                for name in drop:
                    self.remove_ref(name)
            count = freed = 0
            for digest in list(self.iter_blobs()):
                if digest in keep:
                    continue
                path = self.blob_path(digest)
                with self.blob_lock(digest):
                    try:
                        st = path.stat()
                        if not dry_run:
                            path.unlink()
                    except FileNotFoundError:
                        continue
                count += 1
                freed += st.st_size if st.st_nlink <= 1 else 0
            if not dry_run and self.tmp_dir.is_dir():
                # Files a killed pack or store write left; the folder itself stays, as
                # every write makes it again.
                for leftover in self.tmp_dir.iterdir():
                    if leftover.is_dir() and not leftover.is_symlink():
                        shutil.rmtree(leftover, ignore_errors=True)
                    else:
                        leftover.unlink(missing_ok=True)
            return count, freed

    def verify(self, progress: Callable[[int], None] | None = None) -> VerifyReport:
        bad: list[tuple[str, str]] = []
        checked = 0
        for digest in self.iter_blobs():
            checked += 1
            h = hashlib.new(digest.algorithm)
            try:
                with open(self.blob_path(digest), "rb") as fh:
                    for chunk in iter(lambda fh=fh: fh.read(CHUNK), b""):  # type: ignore[misc]
                        h.update(chunk)
                        if progress:
                            progress(len(chunk))
            except OSError as exc:
                bad.append((str(digest), f"unreadable: {exc.strerror}"))
                continue
            if h.hexdigest() != digest.hex:
                bad.append((str(digest), f"content hashes to {digest.algorithm}:{h.hexdigest()}"))
        for name, desc in self.refs().items():
            if not self.has_blob(desc.digest):
                bad.append((str(desc.digest), f"missing, named by ref {name}"))
        return VerifyReport(checked, bad)


_MANIFESTISH = MANIFEST_TYPES | INDEX_TYPES
