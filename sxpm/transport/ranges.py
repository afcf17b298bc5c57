"""How a large blob is cut into HTTP ranges, and how many streams fetch them.

A loopback registry is fastest with one stream (sxpm.transport.remote does not come
here for one); a link that caps each connection (CDNs, object-store-backed
registries) or has a long round trip is fastest with many. Which one a registry is
shows only once it answers, so the plan is made from what the link shows, not from
constants:

1. The first piece (``PROBE`` bytes) is asked for on one stream, and the time until
   its answer starts (the fetch reports it as a zero-byte update) is the round trip.
2. A round trip of ``FAR_RTT`` or more (the host's answers before the pull, the
   manifest's and the config's, already show it; else the probe's does) is a far
   link, where one stream is held back
   (its window per round trip, a cap per connection): the other streams start at
   once, without waiting for the probe, whose 8 MiB would otherwise cost a far link
   0.4 s of one stream at 20 MiB/s. Their pieces are one lane long and taken in
   offset order, so the bytes stay close enough to the hash to be hashed from memory
   while they arrive.
3. A near link waits for the probe; its time to first byte and its rate give the
   piece size: a request leaves the stream idle for about one round trip, so a piece
   lasts ``PIECE_RTTS`` round trips at the measured rate (bounded by ``MIN_PIECE``
   and ``MAX_PIECE``, and small enough that every stream gets work). A fast probe
   (a LAN) keeps one stream for the rest.
4. Otherwise ``MAX_STREAMS`` streams run for one measuring window. If the aggregate
   rate grew by at least half of what they would bring at the probe's per-stream
   rate, the link rewards streams (a cap per connection, a long round trip) and they
   all stay; otherwise the streams come down to what the link showed it carries,
   aggregate rate over per-stream rate (one, for a full link or busy CPUs), each
   extra stream leaving after its current piece.

A pull runs at most ``MAX_STREAMS`` streams; the process's streams are counted
together (:class:`_Budget`). They start at ``MAX_STREAMS`` in all, and while pulls
have pieces waiting for a stream (eight large layers at once) the process measures
whether more streams pay: a step of ``STEP`` more is kept when the aggregate rate of
all pulls grew by ``STEP_GAIN`` of the rate before, else taken back, up to
``STREAMS_LIMIT``. A blob's pull takes up streams that
others released while it still has pieces left. Each stream keeps at most two lanes
of buffers in memory (16 MiB), one lane past a pull's fourth stream and half a lane
(4 MiB) past the process's ``MAX_STREAMS``: at most 16 MiB for each of the first
``MAX_STREAMS`` streams and each pull's first, 4 MiB for the others (eight layers at
once: 24 x 16 + 16 x 4 = 448 MiB of buffers; one blob: 160 MiB).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sxpm.core.progress import Progress
from sxpm.store.sink import BUFFER, LANE_BUFFERS, Lane

PROBE = 8 * 1024 * 1024
"""Bytes of the first piece, measured to plan the rest."""
MIN_PIECE = 4 * 1024 * 1024
MAX_PIECE = 64 * 1024 * 1024
PIECE_RTTS = 40
"""A piece lasts this many round trips, so request gaps cost about 2.5% of a stream."""
MAX_STREAMS = 16
"""Parallel ranged streams in the whole process (aria2c's -x16 default ceiling)."""
GROWTH = 0.5
"""A ramp step is kept when the aggregate rate grows by this share of the ideal."""
FAST_STREAM = 512 * 1024 * 1024
"""A probe this fast (bytes/s) shows nothing holds one stream back (a loopback or LAN
registry): the CPUs are the limit, and more streams would only contend for them
(docs/benchmarks.md: two streams from loopback cost 18% on two cores)."""
NEAR_RTT = 0.005
NEAR_STREAM = 64 * 1024 * 1024
"""A first byte in under 5 ms and a stream over 64 MiB/s: a registry next door
(loopback, a LAN) on a machine busy enough to slow the probe below ``FAST_STREAM``;
there is no round trip for streams to hide, so one stream too. Both are needed: the
first-byte time comes from buffer-sized progress steps and is only an estimate."""
FAR_RTT = 0.03
"""An answer that takes this long to start (seconds) is a far link: streams start
without waiting for the probe's rate. A LAN or a nearby region answers well within it."""
REFILL = 0.05
"""Seconds between looks for streams that other pulls released (a piece at the end of
a pull lasts a few tenths of a second)."""

STREAMS_LIMIT = 2 * MAX_STREAMS
"""The process's streams never go past this, however the link rewards them: several
large blobs at once, each as aria2c's -x16 would, on a link that caps every connection."""
STEP = MAX_STREAMS
STEP_WINDOW = 0.5
"""Seconds the process measures before and after a step, at least. Progress moves a
buffer (2 MiB) at a time per stream, and each new stream starts with a round trip and
a first buffer: a quarter of a second right after a step to 32 streams measured
140-160 MiB/s on a link that then carried 400-580 MiB/s."""
STEP_GAIN = 0.25
"""A step is kept when the aggregate rate of all pulls grows by this share of the rate
before it. Not half of the ideal, as for a pull's first ramp: on a link that caps each
connection, twice the streams bring what the CPUs have left, which on a busy machine
is well under twice the rate and still worth their buffers (eight 128 MiB layers at
20 MiB/s per connection on 2 CPUs: 340-560 MiB/s at 32 streams, 160-380 MiB/s back
at 16). A link that is full gives nothing more, and the step is taken back."""
"""Streams added to the process's ceiling at a time, when all are busy and more pay:
one more blob's worth (aria2c's -x16 is per download)."""
SMALL_LANE = LANE_BUFFERS // 2
"""Buffers of a stream past ``MAX_STREAMS`` in the process: memory stays bounded by
``MAX_STREAMS`` streams of up to two lanes and the rest of half a lane each."""


class _Budget:
    """The process's streams: ``MAX_STREAMS`` at first; raised by ``STEP`` while pulls
    have pieces waiting for a stream and each step raised the aggregate rate of all
    pulls by at least ``STEP_GAIN`` of the rate before, up to ``STREAMS_LIMIT``. A step
    that did not pay is taken back (streams over the ceiling leave after their piece),
    and the ceiling stays."""

    def __init__(self, ceiling: int = MAX_STREAMS) -> None:
        self.lock = threading.Lock()
        self.ceiling = ceiling
        self.used = 0
        self.running = 0
        """Streams running in the process: those of the budget and each pull's first."""
        self.bytes = 0
        """Bytes received by every ranged pull of the process."""
        self.settled = False
        self._window: tuple[float, int] | None = None  # (start, bytes) of a measurement
        self._settle_until = 0.0  # a step's new streams are past their first request
        self._before: float | None = None  # the aggregate rate before the step

    def acquire(self, blocking: bool = False) -> bool:
        assert not blocking, "a stream is taken only when one is free"
        with self.lock:
            if self.used >= self.ceiling:
                return False
            self.used += 1
            return True

    def release(self) -> None:
        with self.lock:
            self.used -= 1

    def shed(self) -> bool:
        """Release one stream if the process holds more than its ceiling (a step back)."""
        with self.lock:
            if self.used <= self.ceiling:
                return False
            self.used -= 1
            return True

    def count(self, n: int) -> None:
        with self.lock:
            self.bytes += n

    def run(self, n: int) -> None:
        with self.lock:
            self.running += n

    def starved(self, window: float) -> None:
        """A pull has pieces and no stream for them: measure what the process's streams
        carry over ``window`` seconds (``STEP_WINDOW`` at least), then take a step up,
        keep it, or take it back."""
        window = max(window, STEP_WINDOW)
        now = time.monotonic()
        with self.lock:
            if self.settled:
                return
            if not self._settle_until:  # the first streams are past their first request
                self._settle_until = now + window / 2
            if self._window is None:
                if now >= self._settle_until:
                    self._window = (now, self.bytes)
                return
            start, mark = self._window
            if now - start < window:
                return
            rate = (self.bytes - mark) / (now - start)
            self._window = None
            if self._before is not None:
                if rate < self._before * (1 + STEP_GAIN):
                    self.ceiling -= STEP
                    self.settled = True
                    return
            if self.ceiling + STEP > STREAMS_LIMIT:
                self.settled = True
                return
            self._before = rate
            self.ceiling += STEP
            self._settle_until = now + window / 2


_budget = _Budget()

MIN_SPLIT = 2 * BUFFER
"""A stream with no piece left takes half of what another stream has still to read of
its piece when that is at least this long: each half is a buffer or more, worth the
round trip of the new request (at 20 MiB/s a buffer lasts 0.1 s)."""


class Piece:
    """``[start, end)`` of a blob, read by one stream.

    At the end of a pull the last pieces would leave most streams idle while a few
    read on, each at one connection's rate: a stream with nothing left to take
    instead takes the second half of what another has still to read (:meth:`split`,
    as aria2c splits its segments). The reader's ``end`` comes down; it learns so
    before its next buffer (:meth:`claim`) and stops there, closing its answer's
    connection (the rest of that answer is not read). Cuts fall on buffer
    boundaries past the buffer being read, so every buffer stays whole and aligned.
    """

    def __init__(self, start: int, end: int, lock: threading.Lock) -> None:
        self.start = start
        self.end = end
        self.asked = end
        """The end when the piece was taken (what a request sent ahead asked for)."""
        self.reading_to = start
        """The end of the buffer being read: the earliest offset a cut may take."""
        self._lock = lock

    def claim(self, pos: int, want: int) -> int:
        """Bytes of the next buffer (at ``pos``, ``want`` long) still this piece's."""
        with self._lock:
            n = max(0, min(want, self.end - pos))
            self.reading_to = pos + n
            return n

    def split(self) -> tuple[int, int] | None:
        """Take the second half of the rest, or None when it is too short to share.
        The caller holds the lock given to the piece."""
        rest = self.end - self.reading_to
        if rest < MIN_SPLIT:
            return None
        cut = -(-(self.reading_to + rest // 2) // BUFFER) * BUFFER
        if cut >= self.end:
            return None
        taken = (cut, self.end)
        self.end = cut
        return taken


Fetch = Callable[[Piece, Lane, Progress], None]
"""Fetch a piece into the sink through ``lane``, counting bytes on the progress, and
``update(0)`` once the answer starts (its headers are in); the piece's end may come
down meanwhile (:meth:`Piece.claim`)."""


Opened = Callable[[], Any]
"""The answer to a piece's request sent ahead, its headers in (waits for them)."""
NearEnd = Callable[[int], None]
"""Told the bytes of the piece left to read after each read of the answer."""


@dataclass(frozen=True)
class Ahead:
    """Requests sent ahead on a far link: ``open(a, b)`` sends the request for
    ``[a, b)`` and returns its answer, headers in; ``fetch(piece, lane, progress,
    opened, near_end)`` reads the piece from ``opened`` (or a request of its own when
    None; the answer asked for the piece as it was when opened), telling ``near_end``
    what is left; ``close(answer)`` returns an answer never read to the pool."""

    open: Callable[[int, int], Any]
    fetch: Callable[[Piece, Lane, Progress, Opened | None, NearEnd | None], None]
    close: Callable[[Any], None]


AHEAD_MARGIN = 1.25
"""A stream sends its next request when what is left of its piece lasts this many of
its requests' answer times: early enough that the answer has started when the piece
ends (a late one leaves the stream idle; an early one only fills a kernel buffer)."""


class _Opening:
    """A request sent from a helper thread; its answer is closed if nobody reads it."""

    def __init__(self, ahead: Ahead, a: int, b: int) -> None:
        self.ahead = ahead
        self.done = threading.Event()
        self.answer: Any = None
        self.error: BaseException | None = None
        self.abandoned = False
        self.elapsed = 0.0
        self.answered_at = 0.0
        """When the answer's headers came: its bytes have been arriving since."""
        self._lock = threading.Lock()
        threading.Thread(target=self._run, args=(a, b), daemon=True,
                         name="sxpm-range-ahead").start()

    def _run(self, a: int, b: int) -> None:
        started = time.monotonic()
        try:
            answer = self.ahead.open(a, b)
        except BaseException as exc:
            self.error = exc
            answer = None
        self.answered_at = time.monotonic()
        self.elapsed = self.answered_at - started
        with self._lock:
            self.answer = answer
            abandoned = self.abandoned
            self.done.set()
        if abandoned and answer is not None:
            self.ahead.close(answer)

    def result(self) -> Any:
        self.done.wait()
        if self.error is not None:
            raise self.error
        return self.answer

    def abandon(self) -> None:
        """Nobody will read the answer: close it now, or when it comes."""
        with self._lock:
            self.abandoned = True
            answer = self.answer if self.done.is_set() else None
            self.answer = None
        if answer is not None:
            self.ahead.close(answer)


@dataclass(frozen=True)
class LinkSample:
    """What one stream showed: seconds to the first byte, then bytes per second."""

    ttfb_s: float
    rate: float


def piece_size(sample: LinkSample, remaining: int, max_streams: int) -> int:
    """Bytes per ranged request for the rest of a blob, from what the probe showed."""
    wanted = sample.rate * max(PIECE_RTTS * sample.ttfb_s, 0.25)
    piece = int(min(MAX_PIECE, max(MIN_PIECE, wanted)))
    piece = min(piece, max(MIN_PIECE, remaining // max(1, 2 * max_streams)))
    return max(BUFFER, piece // BUFFER * BUFFER)


def keep_growing(before: float, after: float, streams_before: int, streams_after: int) -> bool:
    """Whether the step from ``streams_before`` to ``streams_after`` paid off."""
    if before <= 0:
        return after > 0
    ideal = before / streams_before * (streams_after - streams_before)
    return after - before >= GROWTH * ideal


class _Counter:
    """The caller's progress, with the bytes and first-byte time seen on the way."""

    def __init__(self, inner: Progress) -> None:
        self.inner = inner
        self.bytes = 0
        self.first: float | None = None
        self.first_bytes = 0
        self.answered = threading.Event()
        """Set by the first update, a zero-byte one when the answer starts."""
        self.answered_at: float | None = None
        self._lock = threading.Lock()

    def update(self, n: int) -> None:
        _budget.count(n)
        if self.answered_at is None:
            self.answered_at = time.monotonic()
            self.answered.set()
        with self._lock:
            if self.first is None and n > 0:
                self.first = time.monotonic()
                self.first_bytes = n
            self.bytes += n
        self.inner.update(n)

    def close(self) -> None:
        pass


def _merge(pieces: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in pieces:
        if out and out[-1][1] == a:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def _cut(missing: list[tuple[int, int]], piece: int) -> collections.deque[tuple[int, int]]:
    return collections.deque((a, min(b, a + piece)) for lo, b in missing
                             for a in range(lo, b, piece))


class RangedPull:
    """Runs the streams of one blob; ``fixed`` streams and ``piece`` bytes, or adaptive."""

    def __init__(self, missing: list[tuple[int, int]], fetch: Fetch,
                 new_lane: Callable[[int], Lane], progress: Progress, *,
                 fixed: int | None, piece: int, max_streams: int = MAX_STREAMS,
                 round_trip_s: float | None = None, ahead: Ahead | None = None,
                 taken: Callable[[], None] | None = None) -> None:
        self.missing = missing
        self.taken = taken
        """Told once the last piece is taken (the pieces planned), so that the caller
        may start its next blob while the last pieces of this one arrive."""
        self.planned = False
        """The pieces are cut for the rest of the pull (after the probe)."""
        self.ahead = ahead
        """Where the fetch can send a piece's request ahead (used on a far link)."""
        self.fetch = fetch
        self.new_lane = new_lane
        self.counter = _Counter(progress)
        self.fixed = fixed
        self.piece = piece
        self.max_streams = max(1, min(max_streams, MAX_STREAMS))
        self.pieces: collections.deque[tuple[int, int]] = collections.deque()
        self.reading: set[Piece] = set()
        """Pieces being read, which a stream with none left may split."""
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.threads: list[threading.Thread] = []
        self.active = 0
        """Streams running (taking pieces); changed under ``lock``."""
        self.sample: LinkSample | None = None
        self.cap = self.max_streams
        """Streams allowed to take another piece; lowered when more did not pay."""
        self.far = False
        """The first answer took ``FAR_RTT`` or more: all streams started at once."""
        self.round_trip_s = round_trip_s
        """The fastest answer of this host before the pull (the manifest's, the
        config's): ``FAR_RTT`` or more and the streams start without waiting for one."""
        self.plan: list[tuple[int, float]] = []
        """(streams, aggregate bytes/s) at each ramp step, for benchmarks and tests."""
        self.started_at = time.monotonic()

    # --- streams -----------------------------------------------------------------
    def _worker(self, lane_buffers: int, held: bool) -> None:
        counted = True  # in ``active``; leaving is counted under the same lock as the check
        after: tuple[int, int, _Opening] | None = None  # the next piece, requested ahead
        lead = self.round_trip_s or FAR_RTT  # seconds a request waits for its answer
        try:
            lane = self.new_lane(lane_buffers)
            while not self.stop.is_set():
                opening: _Opening | None = None
                if after is not None:
                    a, b, opening = after
                    after = None
                    lead = (lead + opening.elapsed) / 2
                else:
                    with self.lock:
                        # The process took a step back: this stream leaves, unless it
                        # is the pull's last one.
                        if held and self.active > 1 and _budget.shed():
                            held = False
                            self.active -= 1
                            counted = False
                            return
                        taken = self._take() if self.active <= self.cap else None
                        if taken is None:
                            self.active -= 1
                            counted = False
                            return
                        a, b = taken
                piece = Piece(a, b, self.lock)
                with self.lock:
                    self.reading.add(piece)
                try:
                    if self.ahead is None:
                        self.fetch(piece, lane, self.counter)
                        continue
                    # On a far link a stream would wait a round trip between its pieces
                    # (requests cannot be pipelined): the next piece's request goes out
                    # on a second connection while the end of this one arrives.
                    # The stream's rate: bytes of this piece since its answer came (for
                    # one sent ahead, some were waiting in the kernel's buffer).
                    mark = (opening.answered_at, b - a) if opening is not None else None

                    def near_end(left: int, lead: float = lead, held: bool = held) -> None:
                        nonlocal after, mark
                        if after is not None or not self.far or self.stop.is_set():
                            return
                        now = time.monotonic()
                        if mark is None:
                            mark = (now, left)
                            return
                        rate = (mark[1] - left) / max(now - mark[0], 1e-6)
                        if rate <= 0 or left > rate * lead * AHEAD_MARGIN:
                            return
                        with self.lock, _budget.lock:
                            # Only a stream that would take another piece takes it early.
                            leaving = held and self.active > 1 and \
                                _budget.used > _budget.ceiling
                            if leaving or not self.pieces or self.active > self.cap:
                                return
                            c, d = self._pop()
                        assert self.ahead is not None
                        after = (c, d, _Opening(self.ahead, c, d))

                    self.ahead.fetch(piece, lane, self.counter,
                                     opening.result if opening is not None else None,
                                     near_end if self.fixed is None else None)
                finally:
                    with self.lock:
                        self.reading.discard(piece)
        except BaseException as exc:
            with self.lock:
                self.errors.append(exc)
            self.stop.set()
        finally:
            if after is not None:
                after[2].abandon()
            if counted:
                with self.lock:
                    self.active -= 1
            if held:
                _budget.release()
            _budget.run(-1)

    def _pop(self) -> tuple[int, int]:
        """The next piece (``lock`` held); the last one tells ``taken``."""
        piece = self.pieces.popleft()
        if not self.pieces:
            self._all_taken()
        return piece

    def _planned(self, pieces: Iterable[tuple[int, int]]) -> None:
        """The pieces for the rest of the pull (``lock`` held)."""
        self.pieces = collections.deque(pieces)
        self.planned = True
        if not self.pieces:
            self._all_taken()

    def _all_taken(self) -> None:
        if self.planned and self.taken is not None:
            taken, self.taken = self.taken, None
            taken()

    def _take(self) -> tuple[int, int] | None:
        """The next piece, else half of the longest rest being read (``lock`` held).
        Fixed streams (a plan given, not measured) only take the pieces cut for them."""
        if self.pieces:
            return self._pop()
        if self.fixed is not None or not self.reading:
            return None
        longest = max(self.reading, key=lambda p: p.end - p.reading_to)
        return longest.split()

    def _splittable(self) -> int:
        """Streams that could share the rests being read (``lock`` held): about one
        for each ``MIN_SPLIT`` bytes of a rest."""
        if self.fixed is not None:
            return 0
        return sum((p.end - p.reading_to) // MIN_SPLIT for p in self.reading)

    def _start(self, count: int) -> int:
        started = 0
        for _ in range(count):
            held = _budget.acquire(blocking=False)
            if not held and self._alive():
                break  # the process's streams are all in use; one always runs
            with self.lock:
                n = self.active
                self.active += 1
            buffers = 2 * LANE_BUFFERS if n < 4 else LANE_BUFFERS
            if held and _budget.used > MAX_STREAMS:
                buffers = SMALL_LANE
            thread = threading.Thread(target=self._worker, args=(buffers, held),
                                      name=f"sxpm-range-{len(self.threads)}", daemon=True)
            self.threads.append(thread)
            _budget.run(1)
            thread.start()
            started += 1
        return started

    def _alive(self) -> bool:
        return any(t.is_alive() for t in self.threads)

    def _wait(self, seconds: float | None) -> None:
        """Join the streams for up to ``seconds``; on Ctrl-C stop them and re-raise."""
        deadline = None if seconds is None else time.monotonic() + seconds
        try:
            for thread in list(self.threads):
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                thread.join(left)
                if deadline is not None and time.monotonic() >= deadline:
                    return
        except BaseException:
            self.stop.set()
            for thread in self.threads:
                thread.join()
            raise

    def _finish(self) -> None:
        """Wait for the last piece; meanwhile take up streams other pulls released."""
        if self.fixed is not None or self.cap <= 1:
            self._wait(None)
            return
        # The process measures over several round trips whether more streams pay.
        answered = self.counter.answered_at or time.monotonic()
        window = max(0.25, 4 * (answered - self.started_at))
        while self._alive():
            self._wait(REFILL)
            if self.stop.is_set():
                continue
            with self.lock:
                wanted = min(self.cap, len(self.pieces)) - self.active
                sharing = min(self.cap - self.active, self._splittable())
            if wanted > 0 and self._start(wanted) < wanted:
                _budget.starved(window)
            elif wanted <= 0 and sharing > 0:
                # The last pieces: streams other pulls let go share their rests. Only
                # what is free: a pull ending is no sign that more streams would pay.
                self._start(sharing)

    # --- plan ----------------------------------------------------------------------
    def run(self) -> None:
        if self.fixed is not None:
            with self.lock:
                self._planned(_cut(self.missing, self.piece))
            self._start(min(self.fixed, len(self.pieces)))
            self._wait(None)
            return
        self._probe()
        if self.stop.is_set() or not self.pieces or self.far:
            self._finish()
            return
        assert self.sample is not None
        if self.sample.rate >= FAST_STREAM or (self.sample.ttfb_s < NEAR_RTT
                                               and self.sample.rate >= NEAR_STREAM):
            with self.lock:  # the rest as one request on one stream
                rest = sorted(self.pieces)
                self._planned(_cut(_merge(rest), max(b for _, b in rest)))
                self.cap = 1
            self._start(1)
            self._wait(None)
            return
        self._ramp()
        self._finish()

    def _probe(self) -> None:
        a, b = self.missing[0]
        probe_end = min(b, a + PROBE)
        self.pieces = collections.deque([(a, probe_end)])
        rest = [(probe_end, b), *self.missing[1:]] if probe_end < b else self.missing[1:]
        remaining = sum(y - x for x, y in rest)
        started = self.started_at = time.monotonic()
        self._start(1)
        known_far = self.round_trip_s is not None and self.round_trip_s >= FAR_RTT
        if remaining >= 2 * MIN_PIECE and not self.stop.is_set() and (
                known_far or not self.counter.answered.wait(FAR_RTT)):
            # A far link: every stream now, on pieces of one lane (8 MiB) taken in
            # offset order. The streams then stay within their lanes' reach of the hash,
            # which runs beside the transfer; an even share per stream (one request
            # each) left most of the blob to be read back from disk and hashed after
            # the last byte (0.6 s of 3.4 s for 512 MiB, docs/benchmarks.md).
            self.far = True
            share = LANE_BUFFERS * BUFFER
            with self.lock:
                self._planned([*self.pieces, *_cut(rest, share)])
                wanted = min(self.max_streams, len(self.pieces))
            self._start(wanted - 1)
            self.plan.append((len(self.threads), 0.0))
            return
        self._wait(None)
        if self.stop.is_set():
            return
        ended = time.monotonic()
        first = self.counter.first or ended
        got = probe_end - a
        # The first update comes a buffer after the first byte: the rate is what came
        # after it, and that buffer's time is taken back out of the first-byte time.
        after = got - self.counter.first_bytes
        rate = after / (ended - first) if after > 0 and ended > first else \
            got / max(ended - started, 1e-6)
        ttfb = max(0.0, first - started - self.counter.first_bytes / rate)
        if self.counter.answered_at is not None and self.counter.answered_at < first:
            ttfb = self.counter.answered_at - started  # measured, where the fetch tells
        self.sample = LinkSample(ttfb, rate)
        self.plan.append((1, rate))
        self.piece = piece_size(self.sample, remaining, self.max_streams)
        with self.lock:
            self._planned(_cut(rest, self.piece))
        self.threads = [t for t in self.threads if t.is_alive()]

    def _ramp(self) -> None:
        assert self.sample is not None
        # A window holds several buffers of every stream (progress moves a buffer at a
        # time), measured once the new streams are past their first request.
        per_buffer = BUFFER / max(self.sample.rate, 1.0)
        window = max(0.25, 4 * self.sample.ttfb_s, 4 * per_buffer)
        settle = 2 * self.sample.ttfb_s + per_buffer
        with self.lock:
            wanted = min(self.max_streams, len(self.pieces))
        self._start(wanted)
        self._wait(settle)
        if not self._alive() or self.stop.is_set():
            return
        mark, t0 = self.counter.bytes, time.monotonic()
        self._wait(window)
        if not self._alive() or self.stop.is_set():
            return
        rate = (self.counter.bytes - mark) / max(time.monotonic() - t0, 1e-6)
        with self.lock:
            streams = self.active
        self.plan.append((streams, rate))
        if not keep_growing(self.sample.rate, rate, 1, streams):
            # What the link carries, in streams of the probe's rate.
            keep = max(1, min(streams, round(rate / max(self.sample.rate, 1.0))))
            with self.lock:
                self.cap = keep
            self.plan.append((keep, rate))
