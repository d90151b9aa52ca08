"""Supervisor-side stats: worker reports (decoded by worker.ipc) + psutil figures -> StatsSnapshot
(the snapshot types are in cluster/snapshot.py).

Threads: the arbiter thread calls ``worker_started``, ``worker_exited``, ``on_message``, ``set_state``
and ``sample``; the admin thread calls ``snapshot``. One lock guards the state; psutil is queried
outside it. Every ``now`` argument must come from the same clock as ``clock`` (``time.monotonic`` by
default), which ``snapshot()`` uses when called without one.

Totals are the sum over live workers plus the last counters of every worker that exited, so they keep
counting across crashes, recycles and reloads (a stats message that arrives after the exit is still
counted, see ``on_message``).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from webcluster.cluster.snapshot import (
    Counters,
    Gauges,
    HistoryPoint,
    ProcInfo,
    StatsSnapshot,
    WorkerSnapshot,
    quantile,
    sum_gauges,
)

if TYPE_CHECKING:
    import psutil

_RECENT_EXITS = 64  # exited workers whose late stats messages are still accepted


ProcInfoFn = Callable[[int], ProcInfo | None]


class PsutilProcInfo:
    """``proc_info(pid)`` backed by psutil. Keeps one ``psutil.Process`` per pid because
    ``cpu_percent()`` measures the time since the previous call on the same object.

    psutil is imported at the first call (the first sample, a second after start), not with this
    module: the workers forked at start then do not carry it (only workers forked later do)."""

    def __init__(self) -> None:
        self._procs: dict[int, psutil.Process] = {}

    def __call__(self, pid: int) -> ProcInfo | None:
        import psutil

        try:
            proc = self._procs.get(pid)
            if proc is None:
                proc = self._procs[pid] = psutil.Process(pid)
            with proc.oneshot():
                return ProcInfo(
                    rss_bytes=proc.memory_info().rss,
                    cpu_percent=proc.cpu_percent(None),
                    num_threads=proc.num_threads(),
                    open_fds=proc.num_fds(),
                )
        except (psutil.NoSuchProcess, psutil.AccessDenied):  # ZombieProcess is a NoSuchProcess
            self._procs.pop(pid, None)
            return None

    def forget(self, pid: int) -> None:
        """Drop the cached Process of an exited worker (pids get reused)."""
        self._procs.pop(pid, None)


@dataclass(slots=True)
class _Worker:
    slot: int
    pid: int
    generation: int
    started: float
    state: str = "booting"
    last_seen: float | None = None
    counters: Counters = field(default_factory=Counters)
    gauges: Gauges = field(default_factory=Gauges)
    proc: ProcInfo | None = None
    rate: float = 0.0
    rate_base: tuple[float, int] | None = None  # (now, requests) at the previous sample


class StatsAggregator:
    """Collects worker reports and psutil samples; hands out immutable StatsSnapshots."""

    def __init__(
        self,
        history_seconds: float = 300,
        proc_info: ProcInfoFn | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        interval: float = 1.0,
    ) -> None:
        self._proc_info = proc_info if proc_info is not None else PsutilProcInfo()
        self._clock = clock
        self._interval = interval
        self._started = clock()
        self._lock = threading.Lock()
        self._workers: dict[int, _Worker] = {}
        self._retired = Counters()  # last counters of every exited worker, summed
        self._recent: OrderedDict[int, Counters] = OrderedDict()  # exited pid -> counters counted
        self._starts: dict[int, int] = {}
        self._exits: dict[str, int] = {}
        self._generation = 0
        self._history: deque[HistoryPoint] = deque(maxlen=max(1, int(history_seconds / interval)))
        self._prev: tuple[float, Counters] = (self._started, Counters())

    # --- arbiter thread ----------------------------------------------------------------------

    def worker_started(self, slot: int, pid: int, generation: int, now: float) -> None:
        """A worker was forked into ``slot``; every start after a slot's first counts as a restart."""
        with self._lock:
            self._workers[pid] = _Worker(slot, pid, generation, now)
            self._recent.pop(pid, None)  # a reused pid is a new worker
            self._starts[slot] = self._starts.get(slot, 0) + 1
            self._generation = max(self._generation, generation)

    def worker_exited(self, slot: int, pid: int, now: float, reason: str) -> None:
        """A worker was reaped; its counters stay in the totals. ``reason``: free text for the
        exits-by-reason count, e.g. "exit", "crash", "timeout", "recycle", "reload", "stop"."""
        with self._lock:
            worker = self._workers.pop(pid, None)
            self._exits[reason] = self._exits.get(reason, 0) + 1
            if worker is not None:
                self._retired = self._retired.plus(worker.counters)
                self._recent[pid] = worker.counters
                while len(self._recent) > _RECENT_EXITS:
                    self._recent.popitem(last=False)
        forget = getattr(self._proc_info, "forget", None)
        if forget is not None:
            forget(pid)

    def on_message(self, slot: int, pid: int, msg: dict[str, Any], now: float) -> None:
        """A decoded ipc message from the worker in ``slot``. Any message is a heartbeat."""
        kind = msg.get("type")
        with self._lock:
            worker = self._workers.get(pid)
            if worker is None:
                if kind == "stats" and pid in self._recent:
                    self._count_late_stats(pid, Counters.from_message(msg))
                return
            worker.last_seen = now
            if kind == "stats":
                worker.counters = Counters.from_message(msg)
                worker.gauges = Gauges.from_message(msg)
                if worker.state == "booting":  # the loop is running, whatever became of "ready"
                    worker.state = "running"
            elif kind == "ready" and worker.state == "booting":
                worker.state = "running"
            elif kind == "retire":
                worker.state = "retiring"
            elif kind == "boot_error":
                worker.state = "boot_error"

    def set_state(self, pid: int, state: str) -> None:
        """Let the arbiter label a worker (e.g. "draining" after it sent TERM)."""
        with self._lock:
            if pid in self._workers:
                self._workers[pid].state = state

    def set_generation(self, generation: int) -> None:
        """The supervisor's current generation (raised by a reload before its workers start)."""
        with self._lock:
            self._generation = max(self._generation, generation)

    def sample(self, now: float) -> None:
        """Once a second: psutil figures for every live worker, per-worker rates, one history point."""
        with self._lock:
            pids = list(self._workers)
        procs = {pid: self._proc_info(pid) for pid in pids}  # syscalls: outside the lock
        with self._lock:
            for pid, info in procs.items():
                worker = self._workers.get(pid)
                if worker is not None:
                    worker.proc = info
                    _update_rate(worker, now)
            self._append_history(now)

    # --- any thread --------------------------------------------------------------------------

    def last_heartbeat(self, pid: int) -> float | None:
        """``now`` of the worker's last message, None before the first one (or unknown pid)."""
        with self._lock:
            worker = self._workers.get(pid)
            return worker.last_seen if worker else None

    def rss(self, pid: int) -> int | None:
        """Last sampled RSS of a live worker (for --max-worker-memory), None if not sampled."""
        with self._lock:
            worker = self._workers.get(pid)
            return worker.proc.rss_bytes if worker and worker.proc else None

    def snapshot(self, now: float | None = None) -> StatsSnapshot:
        """An immutable view of everything, safe to render from another thread."""
        now = self._clock() if now is None else now
        with self._lock:
            workers = sorted(self._workers.values(), key=lambda w: (w.slot, w.started))
            restarts = {slot: n - 1 for slot, n in self._starts.items()}
            snaps = tuple(_worker_snapshot(w, now, restarts[w.slot]) for w in workers)
            return StatsSnapshot(
                uptime_s=max(0.0, now - self._started),
                generation=self._generation,
                workers=snaps,
                totals=self._totals(),
                gauges=sum_gauges(w.gauges for w in workers),
                restarts=restarts,
                exits=dict(self._exits),
                history=tuple(self._history),
                interval_s=self._interval,
            )

    # --- internals (lock held) ---------------------------------------------------------------

    def _totals(self) -> Counters:
        total = self._retired
        for worker in self._workers.values():
            total = total.plus(worker.counters)
        return total

    def _count_late_stats(self, pid: int, counters: Counters) -> None:
        # The pipe can still hold a final stats message when the worker is reaped: count the part
        # that was not counted at exit.
        self._retired = self._retired.plus(counters.minus(self._recent[pid]))
        self._recent[pid] = counters

    def _append_history(self, now: float) -> None:
        prev_t, prev_totals = self._prev
        if now <= prev_t:
            return
        totals = self._totals()
        delta = totals.minus(prev_totals)
        self._prev = (now, totals)
        self._history.append(
            HistoryPoint(
                t=round(now - self._started, 3),
                requests_per_s=delta.requests / (now - prev_t),
                p50_s=quantile(0.50, delta.latency_buckets),
                p95_s=quantile(0.95, delta.latency_buckets),
                p99_s=quantile(0.99, delta.latency_buckets),
                rss_bytes=sum(w.proc.rss_bytes for w in self._workers.values() if w.proc),
            )
        )


def _update_rate(worker: _Worker, now: float) -> None:
    requests = worker.counters.requests
    if worker.rate_base is not None and now > worker.rate_base[0]:
        worker.rate = max(0, requests - worker.rate_base[1]) / (now - worker.rate_base[0])
    worker.rate_base = (now, requests)


def _worker_snapshot(worker: _Worker, now: float, restarts: int) -> WorkerSnapshot:
    return WorkerSnapshot(
        slot=worker.slot,
        pid=worker.pid,
        generation=worker.generation,
        state=worker.state,
        uptime_s=max(0.0, now - worker.started),
        heartbeat_age_s=None if worker.last_seen is None else max(0.0, now - worker.last_seen),
        requests_per_s=worker.rate,
        restarts=restarts,
        counters=worker.counters,
        gauges=worker.gauges,
        proc=worker.proc,
    )
