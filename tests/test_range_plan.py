"""The ranged-pull planner (sxpm/transport/ranges.py): piece size and stream count come
from what the first piece shows, on links simulated by real threads that sleep as a
capped connection would."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from sxpm.store.sink import BUFFER
from sxpm.transport import ranges
from sxpm.transport.ranges import LinkSample, Piece, RangedPull, keep_growing, piece_size

MiB = 1024 * 1024


class Link:
    """``per_stream`` bytes/s per connection, ``total`` bytes/s shared, ``ttfb`` per request."""

    def __init__(self, per_stream: float, total: float, ttfb: float) -> None:
        self.per_stream, self.total, self.ttfb = per_stream, total, ttfb
        self.active = 0
        self.peak = 0
        self.lock = threading.Lock()
        self.got: list[tuple[int, int]] = []
        self.starts: list[float] = []

    def carry(self, n: int) -> None:
        """Wait while ``n`` bytes cross: each stream gets ``per_stream``, or its share
        of ``total`` among the streams receiving, looked at every 256 KiB so that a
        stream joining slows the others within a few milliseconds."""
        while n > 0:
            step = min(n, 256 * 1024)
            with self.lock:
                rate = min(self.per_stream, self.total / max(1, self.active))
            time.sleep(step / rate)
            n -= step

    def fetch(self, piece: Piece, lane: object, progress: ranges.Progress) -> None:
        with self.lock:
            self.starts.append(time.monotonic())
        time.sleep(self.ttfb)
        progress.update(0)  # the answer's headers
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        pos = piece.start
        try:
            # A buffer at a time, each claimed first, as sxpm.store.sink.receive does.
            while (n := piece.claim(pos, BUFFER - pos % BUFFER)) > 0:
                self.carry(n)
                progress.update(n)
                pos += n
        finally:
            with self.lock:
                self.active -= 1
                self.got.append((piece.start, pos))


class Count:
    def __init__(self) -> None:
        self.n = 0

    def update(self, n: int) -> None:
        self.n += n

    def close(self) -> None:
        pass


def _pull(link: Link, size: int) -> RangedPull:
    progress = Count()
    run = RangedPull([(0, size)], link.fetch, lambda buffers: None, progress,  # type: ignore[arg-type,return-value]
                     fixed=None, piece=64 * MiB)
    run.run()
    assert not run.errors
    assert progress.n == size
    covered = sorted(link.got)
    assert covered[0][0] == 0 and covered[-1][1] == size
    assert all(x[1] == y[0] for x, y in zip(covered, covered[1:], strict=False))
    return run


def test_a_capped_link_ramps_up_to_many_streams() -> None:
    # 40 MiB/s per connection, 1 GiB/s in all, 20 ms a request: more streams pay.
    link = Link(40 * MiB, 1024 * MiB, 0.02)
    run = _pull(link, 512 * MiB)
    assert link.peak >= 8, run.plan
    assert run.sample is not None and 0.005 < run.sample.ttfb_s < 0.1
    assert run.piece < 64 * MiB  # enough pieces for every stream


def test_a_full_link_stops_the_ramp() -> None:
    # The link carries 40 MiB/s whatever the streams: doubling once shows it.
    link = Link(40 * MiB, 40 * MiB, 0.02)
    run = _pull(link, 192 * MiB)
    assert run.plan[-1][0] == 1, run.plan
    assert run.cap == 1


def test_a_shared_link_keeps_what_it_carries() -> None:
    # 20 MiB/s per connection, 100 MiB/s in all: about five streams.
    link = Link(20 * MiB, 100 * MiB, 0.02)
    run = _pull(link, 256 * MiB)
    assert 4 <= run.cap <= 6, run.plan


def test_a_fast_stream_stays_alone() -> None:
    link = Link(4096 * MiB, 4096 * MiB, 0.0)
    _pull(link, 256 * MiB)
    assert link.peak == 1


def test_piece_size_follows_round_trip_and_rate() -> None:
    far = piece_size(LinkSample(0.08, 20 * MiB), 1024 * MiB, 16)
    near = piece_size(LinkSample(0.001, 20 * MiB), 1024 * MiB, 16)
    assert far > near
    assert ranges.MIN_PIECE <= near <= far <= ranges.MAX_PIECE
    # Never so large that the streams run out of pieces.
    assert piece_size(LinkSample(0.2, 100 * MiB), 64 * MiB, 16) == ranges.MIN_PIECE


def test_keep_growing() -> None:
    assert keep_growing(10.0, 19.0, 1, 2)
    assert not keep_growing(10.0, 12.0, 1, 2)
    assert keep_growing(20.0, 35.0, 2, 4)


def test_a_near_registry_keeps_one_stream_even_when_slow() -> None:
    # No round trip to hide (a loopback registry on a busy machine): one stream.
    link = Link(100 * MiB, 100 * MiB, 0.0)
    _pull(link, 128 * MiB)
    assert link.peak == 1


def test_a_far_link_starts_every_stream_without_waiting_for_the_probe() -> None:
    # 80 ms a request, 20 MiB/s per connection: the probe alone would take 0.4 s of one
    # stream; the other streams start as soon as the first answer is late.
    link = Link(20 * MiB, 1024 * MiB, 0.08)
    run = _pull(link, 256 * MiB)
    assert run.far, run.plan
    assert link.peak >= 12, run.plan
    starts = sorted(link.starts)
    assert starts[11] - starts[0] < ranges.PROBE / link.per_stream / 2, starts
    # Pieces of one lane, taken in offset order: the streams stay near the hash.
    assert max(b - a for a, b in link.got) <= ranges.LANE_BUFFERS * ranges.BUFFER


def test_a_round_trip_seen_before_the_pull_starts_every_stream_at_once() -> None:
    # The manifest's and config's answers took 50 ms: the pull does not wait for its
    # own first answer to know the link is far (this one answers at once).
    link = Link(20 * MiB, 1024 * MiB, 0.0)
    progress = Count()
    run = RangedPull([(0, 64 * MiB)], link.fetch, lambda buffers: None, progress,  # type: ignore[arg-type,return-value]
                     fixed=None, piece=64 * MiB, round_trip_s=0.05)
    run.run()
    assert not run.errors and progress.n == 64 * MiB
    assert run.far and link.peak > 1, run.plan
    near = RangedPull([(0, 64 * MiB)], link.fetch, lambda buffers: None, Count(),  # type: ignore[arg-type,return-value]
                      fixed=None, piece=64 * MiB, round_trip_s=0.001)
    near.run()
    assert not near.far


def test_a_pull_takes_up_streams_released_by_another() -> None:
    # Another pull holds all but one of the process's streams; once it lets them go,
    # this pull's remaining pieces run on them.
    held = []
    while ranges._budget.acquire(blocking=False):  # every stream the process has now
        held.append(True)
    assert len(held) >= ranges.MAX_STREAMS
    ranges._budget.release()  # but one
    held.pop()
    timer = threading.Timer(0.3, lambda: [ranges._budget.release() for _ in held])
    timer.start()
    try:
        link = Link(20 * MiB, 1024 * MiB, 0.08)
        _pull(link, 256 * MiB)
    finally:
        timer.join()
    assert link.peak >= 8


def _pulls(monkeypatch: pytest.MonkeyPatch, link: Link, count: int,
           size: int) -> ranges._Budget:
    """``count`` pulls of ``size`` bytes at once on one link, as eight layers of one
    artifact, with the process's streams counted afresh; each gets every byte of its
    blob. The streams' budget, once they are done."""
    budget = ranges._Budget()
    monkeypatch.setattr(ranges, "_budget", budget)
    progress = [Count() for _ in range(count)]
    runs = [RangedPull([(0, size)], link.fetch, lambda buffers: None, p,  # type: ignore[arg-type,return-value]
                       fixed=None, piece=64 * MiB) for p in progress]
    threads = [threading.Thread(target=run.run) for run in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(not run.errors for run in runs)
    assert [p.n for p in progress] == [size] * count
    assert sum(b - a for a, b in link.got) == count * size
    assert budget.used == 0 and budget.running == 0
    return budget


def test_several_blobs_on_a_capped_link_take_more_streams(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # 20 MiB/s per connection and plenty in all: with four blobs waiting for streams,
    # the process goes past one blob's sixteen because the aggregate rate grows.
    link = Link(20 * MiB, 4096 * MiB, 0.08)
    budget = _pulls(monkeypatch, link, 4, 256 * MiB)
    assert budget.ceiling > ranges.MAX_STREAMS
    assert link.peak > ranges.MAX_STREAMS
    assert link.peak <= ranges.STREAMS_LIMIT + 4  # the budget's, and each pull's first


def _step(monkeypatch: pytest.MonkeyPatch, before: float, after: float) -> ranges._Budget:
    """The process's step decision, on a clock of its own: ``before`` bytes/s at the
    first streams, ``after`` once the step's streams run."""
    clock = [100.0]
    monkeypatch.setattr(ranges.time, "monotonic", lambda: clock[0])
    budget = ranges._Budget()

    def run(rate: float, until: Callable[[], bool]) -> None:
        for _ in range(100):  # 5 s at most
            clock[0] += 0.05
            budget.count(int(rate * 0.05))
            budget.starved(0.25)
            if until():
                return

    run(before, lambda: budget.ceiling != ranges.MAX_STREAMS)
    assert budget.ceiling == ranges.MAX_STREAMS + ranges.STEP  # stepped up, measuring
    run(after, lambda: budget.settled)
    assert budget.settled
    return budget


def test_a_step_that_brings_a_third_more_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    # 20 MiB/s per connection on busy CPUs: twice the streams bring what the CPUs have
    # left, a third more rather than twice as much, and that is worth their buffers.
    budget = _step(monkeypatch, 300 * MiB, 400 * MiB)
    assert budget.ceiling == ranges.STREAMS_LIMIT


def test_a_step_that_brings_little_is_taken_back(monkeypatch: pytest.MonkeyPatch) -> None:
    budget = _step(monkeypatch, 300 * MiB, 330 * MiB)
    assert budget.ceiling == ranges.MAX_STREAMS


def test_several_blobs_on_a_full_link_keep_sixteen_streams(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # 240 MiB/s in all, which sixteen streams fill (each waits 80 ms for every 8 MiB
    # piece, so sixteen bring about 265 MiB/s): the step up does not pay and is taken
    # back, and every blob still completes.
    link = Link(20 * MiB, 240 * MiB, 0.08)
    budget = _pulls(monkeypatch, link, 4, 256 * MiB)
    assert budget.settled and budget.ceiling == ranges.MAX_STREAMS


class AheadLink(Link):
    """A link whose fetch can take an answer requested ahead (sxpm.transport.ranges.Ahead):
    counts what was sent ahead, read and closed unread; ``fail_at`` makes the request
    for the piece at that offset fail."""

    def __init__(self, per_stream: float, total: float, ttfb: float,
                 fail_at: int | None = None) -> None:
        super().__init__(per_stream, total, ttfb)
        self.fail_at = fail_at
        self.opened = self.read = self.closed = 0
        self.idle: list[float] = []  # per read of a piece sent ahead: seconds waited

    def open(self, a: int, b: int) -> tuple[int, int]:
        with self.lock:
            self.starts.append(time.monotonic())
            self.opened += 1
        time.sleep(self.ttfb)
        if a == self.fail_at:
            raise ConnectionError("the connection dropped")
        return a, b

    def close(self, answer: object) -> None:
        with self.lock:
            self.closed += 1

    def fetch_ahead(self, piece: Piece, lane: object, progress: ranges.Progress,
                    opened: ranges.Opened | None, near_end: ranges.NearEnd | None) -> None:
        a, b = piece.start, piece.asked
        if opened is None:
            with self.lock:
                self.starts.append(time.monotonic())
            time.sleep(self.ttfb)
        else:
            waited = time.monotonic()
            assert opened() == (a, b)
            with self.lock:
                self.read += 1
                self.idle.append(time.monotonic() - waited)
        with self.lock:
            self.active += 1
        progress.update(0)
        pos = a
        try:
            while (n := piece.claim(pos, min(256 * 1024, BUFFER - pos % BUFFER))) > 0:
                time.sleep(n / self.per_stream)
                progress.update(n)
                pos += n
                if near_end is not None:
                    near_end(piece.end - pos)
        finally:
            with self.lock:
                self.active -= 1
                self.got.append((a, pos))

    def ahead(self) -> ranges.Ahead:
        return ranges.Ahead(open=self.open, fetch=self.fetch_ahead, close=self.close)


def _ahead_pull(link: AheadLink, size: int, round_trip_s: float | None) -> RangedPull:
    progress = Count()
    run = RangedPull([(0, size)], link.fetch, lambda buffers: None, progress,  # type: ignore[arg-type,return-value]
                     fixed=None, piece=64 * MiB, round_trip_s=round_trip_s,
                     ahead=link.ahead())
    run.run()
    return run


def test_a_far_link_asks_for_the_next_piece_before_this_one_ends() -> None:
    # 80 ms a request, 20 MiB/s per connection: a stream sends its next request while
    # the end of its piece arrives, so the answer is in when it gets there.
    link = AheadLink(20 * MiB, 4096 * MiB, 0.08)
    run = _ahead_pull(link, 256 * MiB, 0.08)
    assert not run.errors and run.far
    assert link.opened >= 8, (link.opened, run.plan)
    assert link.read == link.opened and link.closed == 0
    # Most answers were in before the stream wanted them (a round trip is 80 ms).
    assert sorted(link.idle)[len(link.idle) // 2] < 0.04, link.idle
    covered = sorted(link.got)
    assert covered[0][0] == 0 and covered[-1][1] == 256 * MiB
    assert all(x[1] == y[0] for x, y in zip(covered, covered[1:], strict=False))


def test_a_near_link_sends_no_request_ahead() -> None:
    link = AheadLink(100 * MiB, 100 * MiB, 0.0)
    run = _ahead_pull(link, 64 * MiB, 0.001)
    assert not run.errors and not run.far
    assert link.opened == 0


def test_a_failed_request_sent_ahead_stops_the_pull_and_closes_the_rest() -> None:
    link = AheadLink(20 * MiB, 4096 * MiB, 0.05, fail_at=160 * MiB)
    run = _ahead_pull(link, 256 * MiB, 0.05)
    assert any(isinstance(e, ConnectionError) for e in run.errors), run.errors
    time.sleep(0.2)  # answers sent ahead of stopped streams come in and are closed
    assert link.opened >= 1
    assert link.read + link.closed == link.opened - 1  # all but the failed one


def test_a_piece_splits_on_a_buffer_boundary_past_the_buffer_being_read() -> None:
    lock = threading.Lock()
    piece = Piece(0, 8 * MiB, lock)
    assert piece.claim(0, BUFFER) == BUFFER  # reading [0, 2 MiB)
    with lock:
        assert piece.split() == (6 * MiB, 8 * MiB)  # half of the 6 MiB left, rounded up
    assert piece.end == 6 * MiB and piece.asked == 8 * MiB
    assert piece.claim(2 * MiB, BUFFER) == BUFFER
    with lock:
        assert piece.split() is None  # one buffer left past this one: not worth a request
    assert piece.claim(4 * MiB, BUFFER) == BUFFER
    assert piece.claim(6 * MiB, BUFFER) == 0  # the rest is another stream's
    short = Piece(0, 5 * MiB, lock)
    short.claim(0, BUFFER)
    with lock:
        assert short.split() is None  # 3 MiB left: under two buffers each way
    odd = Piece(3 * MiB + 123, 16 * MiB, lock)  # a resumed range, not aligned
    with lock:
        cut = odd.split()
    assert cut is not None and cut[0] % BUFFER == 0 and cut[1] == 16 * MiB


def test_the_last_pieces_are_shared_by_streams_with_none_left() -> None:
    # A far link, five pieces of 8 MiB and sixteen streams: the eleven streams with
    # no piece take halves of what the five still have to read, instead of leaving
    # five streams at one connection's rate to finish the pull alone.
    link = Link(20 * MiB, 4096 * MiB, 0.05)
    run = _pull(link, 40 * MiB)  # every byte once, no gap, no overlap
    assert run.far
    assert len(link.got) > 5, link.got
    assert all(a % BUFFER == 0 for a, _ in link.got)
    assert link.peak > 5


def test_fixed_streams_read_their_pieces_whole() -> None:
    link = Link(20 * MiB, 4096 * MiB, 0.05)
    run = RangedPull([(0, 24 * MiB)], link.fetch, lambda buffers: None, Count(),  # type: ignore[arg-type,return-value]
                     fixed=4, piece=8 * MiB)
    run.run()
    assert not run.errors
    assert sorted(link.got) == [(0, 8 * MiB), (8 * MiB, 16 * MiB), (16 * MiB, 24 * MiB)]


def test_a_pull_tells_when_its_last_piece_is_taken() -> None:
    # The caller may start its next blob then, while the last pieces arrive.
    link = Link(20 * MiB, 4096 * MiB, 0.05)
    progress = Count()
    seen: list[int] = []
    run = RangedPull([(0, 40 * MiB)], link.fetch, lambda buffers: None, progress,  # type: ignore[arg-type,return-value]
                     fixed=None, piece=64 * MiB, taken=lambda: seen.append(progress.n))
    run.run()
    assert not run.errors and progress.n == 40 * MiB
    assert len(seen) == 1 and seen[0] < 40 * MiB  # once, with bytes still to come


def test_the_next_item_starts_once_the_one_before_is_taken() -> None:
    from sxpm.ops.transfer import _parallel

    second_started = threading.Event()
    log: list[str] = []

    def fn(item: object, taken: ranges.Callable[[], None]) -> None:
        if item == "first":
            taken()  # every byte asked for; the rest still arriving
            log.append(f"second ran beside the first: {second_started.wait(10)}")
        else:
            second_started.set()

    _parallel(1, ["first", "second"], fn)  # type: ignore[list-item,arg-type]
    assert log == ["second ran beside the first: True"]

    order: list[str] = []

    def untold(item: object, taken: ranges.Callable[[], None]) -> None:
        order.append(f"start {item}")
        time.sleep(0.2)
        order.append(f"end {item}")

    _parallel(1, ["a", "b"], untold)  # type: ignore[list-item,arg-type]
    assert order == ["start a", "end a", "start b", "end b"]  # one job at a time
