"""Which models are loaded, for how long, and who may use each one now.

A :class:`ResidencyManager` holds loaded ``llama_cpp.Llama`` objects, one per
:class:`LoadSpec` (file plus the parameters that shape the context). A caller takes a
:class:`Lease` with :meth:`ResidencyManager.acquire`; the model loads on first use and
stays resident for a keep-alive after the last lease ends (``keep_alive`` seconds;
negative keeps it until unloaded, 0 unloads as soon as it is idle).

* One lease per model at a time: a llama.cpp context is not thread-safe, so requests
  for one model wait in arrival order (a FIFO of tickets, not a bare lock, which would
  let a late request overtake). ``max_queue`` caps the waiting ones:
  :class:`~sxpm.errors.QueueFullError` carries a retry-after.
* At most ``max_loaded`` models, and their estimated memory (weights plus KV cache)
  within ``memory_budget`` bytes: to make room the least recently used idle model is
  unloaded. A model with a lease or a waiting request is never unloaded; the loader
  waits for one to become idle instead. A single model larger than the budget still
  loads when nothing else is resident (its offload plan already fits the device).
* An expert's LoRA adapter is loaded once onto the resident base and switched per
  lease (``llama_set_adapters_lora``): the base is not reloaded, several experts share
  it. Switching clears the prompt cache, whose KV entries were computed with the other
  adapter.

``sxpm.load()`` sessions and ``sxpm serve`` use the same class; sessions share
:func:`default_manager`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sxpm.errors import MissingExtraError, QueueFullError, RunnerError

DEFAULT_KEEP_ALIVE = 300.0
# How long a loader waits for a busy model to become idle before giving up.
ROOM_TIMEOUT = 600.0


def import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise MissingExtraError("llama_cpp", "run") from exc
    return llama_cpp


@dataclass(frozen=True)
class LoadSpec:
    """What to load: the key of a resident model, and how to load it."""

    name: str  # NAME@VERSION, for listings
    path: Path
    n_ctx: int
    n_gpu_layers: int
    n_threads: int | None = None
    embedding: bool = False
    memory: int = 0  # estimated bytes once loaded
    loader: Callable[[], Any] | None = field(default=None, compare=False, hash=False)

    @property
    def key(self) -> tuple[Any, ...]:
        return (str(self.path), self.n_ctx, self.n_gpu_layers, self.n_threads, self.embedding)

    def kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"model_path": str(self.path), "n_ctx": self.n_ctx,
                              "n_gpu_layers": self.n_gpu_layers, "verbose": False}
        if self.n_threads:
            kw["n_threads"] = self.n_threads
        if self.embedding:
            kw["embedding"] = True
        return kw

    def load(self) -> Any:
        if self.loader is not None:
            return self.loader()
        return import_llama_cpp().Llama(**self.kwargs())


@dataclass
class Resident:
    spec: LoadSpec
    llama: Any = None
    busy: bool = False
    waiting: deque[object] = field(default_factory=deque)
    adapters: dict[str, Any] = field(default_factory=dict)  # adapter path -> handle
    active_adapter: str | None = None
    expert: str | None = None  # name of the expert applied now
    last_used: float = 0.0
    expires_at: float | None = None  # monotonic; None: no expiry
    expires_wall: float | None = None  # the same instant as a Unix time, for listings
    load_seconds: float = 0.0
    loads: int = 0
    switches: int = 0

    @property
    def in_use(self) -> bool:
        return self.busy or bool(self.waiting)

    def info(self) -> dict[str, Any]:
        return {"name": self.spec.name, "path": str(self.spec.path), "expert": self.expert,
                "experts": sorted(self.adapters), "memory": self.spec.memory,
                "busy": self.busy, "queued": len(self.waiting),
                "expires_at": self.expires_wall, "load_seconds": self.load_seconds,
                "embedding": self.spec.embedding}


class Lease:
    """The right to use one resident model until :meth:`release` (or the ``with`` ends)."""

    def __init__(self, manager: ResidencyManager, resident: Resident,
                 keep_alive: float | None, loaded: bool, waited: float) -> None:
        self._manager = manager
        self.resident = resident
        self.keep_alive = keep_alive
        self.loaded = loaded  # True when this lease had to load the model
        self.waited = waited  # seconds spent in the queue and loading
        self._released = False

    @property
    def llama(self) -> Any:
        return self.resident.llama

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._manager._release(self.resident, self.keep_alive)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class ResidencyManager:
    def __init__(self, *, keep_alive: float = DEFAULT_KEEP_ALIVE,
                 max_loaded: int | None = None, max_queue: int | None = None,
                 memory_budget: int | None = None) -> None:
        self.keep_alive = keep_alive
        self.max_loaded = max_loaded
        self.max_queue = max_queue
        self.memory_budget = memory_budget
        self._cond = threading.Condition()
        self._residents: dict[tuple[Any, ...], Resident] = {}
        self._reaper: threading.Thread | None = None
        self._closed = False
        self.events: deque[tuple[str, str]] = deque(maxlen=256)  # (event, model): for tests
        self.on_load: Callable[[str, float], None] | None = None

    # --- leases --------------------------------------------------------------------

    def acquire(self, spec: LoadSpec, adapter: Path | None = None, expert: str | None = None,
                *, keep_alive: float | None = None) -> Lease:
        """Wait for ``spec``'s model (loading it if needed) with ``adapter`` applied."""
        start = time.monotonic()
        ticket = object()
        with self._cond:
            res = self._residents.get(spec.key)
            if res is None:
                res = self._residents[spec.key] = Resident(spec)
            if self.max_queue is not None and res.busy and len(res.waiting) >= self.max_queue:
                depth = len(res.waiting)
                raise QueueFullError(spec.name, depth, retry_after=max(1, depth))
            res.waiting.append(ticket)
            while res.busy or res.waiting[0] is not ticket:
                self._cond.wait()
            res.waiting.popleft()
            res.busy = True
            need_load = res.llama is None
            if need_load:
                try:
                    self._make_room(res)
                except BaseException:
                    self._abandon(res)
                    raise
        loaded = False
        try:
            if need_load:
                t0 = time.monotonic()
                llama = spec.load()
                with self._cond:
                    res.llama = llama
                    res.load_seconds = time.monotonic() - t0
                    res.loads += 1
                    res.adapters.clear()
                    res.active_adapter = res.expert = None
                    self.events.append(("load", spec.name))
                loaded = True
                if self.on_load is not None:
                    self.on_load(spec.name, res.load_seconds)
            self._apply_adapter(res, adapter, expert)
        except BaseException:
            with self._cond:
                self._abandon(res)
            raise
        return Lease(self, res, keep_alive, loaded, time.monotonic() - start)

    @contextmanager
    def lease(self, spec: LoadSpec, adapter: Path | None = None, expert: str | None = None,
              *, keep_alive: float | None = None) -> Iterator[Lease]:
        lease = self.acquire(spec, adapter, expert, keep_alive=keep_alive)
        try:
            yield lease
        finally:
            lease.release()

    def _abandon(self, res: Resident) -> None:
        """A lease that failed before it began: free the slot (and a never-loaded entry)."""
        res.busy = False
        if res.llama is None and not res.waiting:
            self._residents.pop(res.spec.key, None)
        self._cond.notify_all()

    def _release(self, res: Resident, keep_alive: float | None) -> None:
        ka = self.keep_alive if keep_alive is None else keep_alive
        with self._cond:
            res.busy = False
            res.last_used = time.monotonic()
            if ka < 0:
                res.expires_at = res.expires_wall = None
            else:
                res.expires_at = res.last_used + ka
                res.expires_wall = time.time() + ka
            if ka == 0 and not res.waiting:
                self._unload(res, "expired")
            self._ensure_reaper()
            self._cond.notify_all()

    # --- adapters ------------------------------------------------------------------

    def _apply_adapter(self, res: Resident, adapter: Path | None, expert: str | None) -> None:
        want = str(adapter) if adapter is not None else None
        if want == res.active_adapter:
            res.expert = expert if want else None
            return
        import ctypes

        llama_cpp = import_llama_cpp()
        llm = res.llama
        if want is None:
            rc = llama_cpp.llama_set_adapters_lora(llm.ctx, None, 0, None)
        else:
            handle = res.adapters.get(want)
            if handle is None:
                handle = llama_cpp.llama_adapter_lora_init(llm.model, want.encode())
                if not handle:
                    raise RunnerError(f"llama.cpp could not load the adapter {want}",
                                      hint="the adapter's tensors do not match this model")
                res.adapters[want] = handle  # freed with the model
            arr = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(handle)
            scales = (ctypes.c_float * 1)(1.0)
            rc = llama_cpp.llama_set_adapters_lora(llm.ctx, arr, 1, scales)
        if rc:
            raise RunnerError(f"llama.cpp could not switch the adapter of {res.spec.name}")
        # The cached prompt's KV entries were computed under the other adapter.
        llm.reset()
        res.active_adapter = want
        res.expert = expert if want else None
        res.switches += 1
        self.events.append(("switch", f"{res.spec.name}+{expert or ''}"))

    # --- room ----------------------------------------------------------------------

    def _loaded(self) -> list[Resident]:
        return [r for r in self._residents.values() if r.llama is not None]

    def _over(self, incoming: Resident) -> bool:
        loaded = self._loaded()
        if not loaded:
            return False  # alone, anything loads (see the module docstring)
        if self.max_loaded is not None and len(loaded) + 1 > self.max_loaded:
            return True
        if self.memory_budget is not None:
            used = sum(r.spec.memory for r in loaded)
            return used + incoming.spec.memory > self.memory_budget
        return False

    def _make_room(self, incoming: Resident) -> None:
        deadline = time.monotonic() + ROOM_TIMEOUT
        while self._over(incoming):
            idle = [r for r in self._loaded() if not r.in_use]
            if idle:
                self._unload(min(idle, key=lambda r: r.last_used), "evicted")
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                raise RunnerError(f"No room to load {incoming.spec.name}: every loaded model "
                                  "is busy", hint="retry later, or raise --max-loaded")
            self._cond.wait(left)

    def _unload(self, res: Resident, why: str) -> None:
        llm, res.llama = res.llama, None
        res.adapters.clear()
        res.active_adapter = res.expert = None
        res.expires_at = res.expires_wall = None
        if not res.in_use:
            self._residents.pop(res.spec.key, None)
        if llm is not None:
            self.events.append((why, res.spec.name))
            close = getattr(llm, "close", None)
            if close is not None:
                close()

    # --- keep-alive ----------------------------------------------------------------

    def _ensure_reaper(self) -> None:
        if self._reaper is None or not self._reaper.is_alive():
            self._reaper = threading.Thread(target=self._reap, name="sxpm-keep-alive",
                                            daemon=True)
            self._reaper.start()

    def _reap(self) -> None:
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                pending = [r for r in self._loaded() if r.expires_at is not None]
                for res in pending:
                    if not res.in_use and res.expires_at is not None and res.expires_at <= now:
                        self._unload(res, "expired")
                nexts = [r.expires_at for r in self._loaded() if r.expires_at is not None]
                if not nexts and not pending:
                    self._reaper = None
                    return
                self._cond.wait(max(0.05, min(nexts) - now) if nexts else 1.0)

    # --- inspection and control ----------------------------------------------------

    def loaded(self) -> list[dict[str, Any]]:
        with self._cond:
            return [r.info() for r in self._loaded()]

    def is_loaded(self, spec: LoadSpec) -> bool:
        with self._cond:
            res = self._residents.get(spec.key)
            return res is not None and res.llama is not None

    def queue_depth(self) -> int:
        with self._cond:
            return sum(len(r.waiting) for r in self._residents.values())

    def unload(self, match: Callable[[LoadSpec], bool]) -> list[str]:
        """Unload the idle models ``match`` selects now; busy ones when their lease ends."""
        names: list[str] = []
        with self._cond:
            for res in list(self._loaded()):
                if not match(res.spec):
                    continue
                names.append(res.spec.name)
                if res.in_use:
                    res.expires_at = time.monotonic()  # the reaper takes it when idle
                    res.expires_wall = time.time()
                else:
                    self._unload(res, "unloaded")
            self._ensure_reaper()
            self._cond.notify_all()
        return names

    def close(self) -> None:
        with self._cond:
            self._closed = True
            for res in list(self._loaded()):
                self._unload(res, "closed")
            self._cond.notify_all()


_default: ResidencyManager | None = None
_default_lock = threading.Lock()


def default_manager() -> ResidencyManager:
    """The manager every ``sxpm.load()`` session of this process shares."""
    global _default
    with _default_lock:
        if _default is None:
            _default = ResidencyManager()
        return _default
