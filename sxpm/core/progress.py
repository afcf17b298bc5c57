"""Progress reporting hooks: silent by default, tqdm bars in the CLI."""

from __future__ import annotations

import sys
from typing import Any, Protocol


class Progress(Protocol):
    def update(self, n: int) -> None: ...
    def close(self) -> None: ...


class Reporter:
    """Makes one progress line per artifact; the base class reports nothing."""

    def start(self, label: str, total: int) -> Progress:
        return _Silent()


class _Silent:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


class TqdmReporter(Reporter):
    """Bars with bytes, rate and ETA, drawn on stderr.

    Silent unless stdout is a terminal: output piped to a file or another program
    (``sxpm pull ... | tee log``, CI) carries no bars, whatever stderr is. ``--quiet``
    uses the base :class:`Reporter` instead, and tqdm is then never imported.
    """

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = _isatty(sys.stdout) if enabled is None else enabled

    def start(self, label: str, total: int) -> Progress:
        if not self.enabled:
            return _Silent()
        from tqdm import tqdm

        bar: Any = tqdm(total=total, desc=label, unit="B", unit_scale=True,
                        unit_divisor=1024, leave=True, file=sys.stderr)
        return _Locked(bar)


class _Locked:
    """A bar that several transfer threads update at once (tqdm's counter is not)."""

    def __init__(self, bar: Any) -> None:
        import threading

        self._bar = bar
        self._lock = threading.Lock()

    def update(self, n: int) -> None:
        with self._lock:
            self._bar.update(n)

    def close(self) -> None:
        with self._lock:
            self._bar.close()


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # replaced or closed
        return False


SILENT = Reporter()
