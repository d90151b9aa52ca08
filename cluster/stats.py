"""Supervisor-side stats: worker reports (decoded by worker.ipc) + psutil figures -> StatsSnapshot.

Threads: the arbiter thread calls ``worker_started``, ``worker_exited``, ``on_message``, ``set_state``
and ``sample``; the admin thread calls ``snapshot``. One lock guards the state; psutil is queried
outside it. Every ``now`` argument must come from the same clock as ``clock`` (``time.monotonic`` by
default), which ``snapshot()`` uses when called without one.

Totals are the sum over live workers plus the last counters of every worker that exited, so they keep
counting across crashes, recycles and reloads (a stats message that arrives after the exit is still
counted, see ``on_message``).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, astuple, dataclass, field
from typing import Any

import psutil

from worker.ipc import EVENT_FIELDS, GAUGE_FIELDS, LATENCY_BUCKETS_S, STATUS_CLASSES

_RECENT_EXITS = 64  # exited workers whose late stats messages are still accepted


@dataclass(frozen=True, slots=True)
class ProcInfo:
    """psutil figures for one process."""

    rss_bytes: int
    cpu_percent: float
    num_threads: int
    open_fds: int


ProcInfoFn = Callable[[int], ProcInfo | None]


class PsutilProcInfo:
    """``proc_info(pid)`` backed by psutil. Keeps one ``psutil.Process`` per pid because
    ``cpu_percent()`` measures the time since the previous call on the same object."""

    def __init__(self) -> None:
        self._procs: dict[int, psutil.Process] = {}

    def __call__(self, pid: int) -> ProcInfo | None:
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


@dataclass(frozen=True, slots=True)
class Counters:
    """Cumulative request counters (field names as in the ipc ``stats`` message)."""

    requests: int = 0
    status: tuple[int, ...] = (0,) * len(STATUS_CLASSES)
    bytes_in: int = 0
    bytes_out: int = 0
    latency_buckets: tuple[int, ...] = (0,) * len(LATENCY_BUCKETS_S)  # per bucket, not cumulative
    latency_sum: float = 0.0
    events: tuple[int, ...] = (0,) * len(EVENT_FIELDS)  # in EVENT_FIELDS order

    @classmethod
    def from_message(cls, msg: dict[str, Any]) -> Counters:
        """From a validated ipc ``stats`` message."""
        return cls(
            requests=msg["requests"],
            status=tuple(msg["status"][name] for name in STATUS_CLASSES),
            bytes_in=msg["bytes_in"],
            bytes_out=msg["bytes_out"],
            latency_buckets=tuple(msg["latency_buckets"]),
            latency_sum=float(msg["latency_sum"]),
            events=tuple(msg["events"][name] for name in EVENT_FIELDS),
        )

    def event(self, name: str) -> int:
        """One of ``ipc.EVENT_FIELDS`` by name."""
        return self.events[EVENT_FIELDS.index(name)]

    def plus(self, other: Counters) -> Counters:
        return Counters(
            self.requests + other.requests,
            _add(self.status, other.status),
            self.bytes_in + other.bytes_in,
            self.bytes_out + other.bytes_out,
            _add(self.latency_buckets, other.latency_buckets),
            self.latency_sum + other.latency_sum,
            _add(self.events, other.events),
        )

    def minus(self, other: Counters) -> Counters:
        """Difference, clamped at zero (a counter never goes backwards)."""
        return Counters(
            max(0, self.requests - other.requests),
            _sub(self.status, other.status),
            max(0, self.bytes_in - other.bytes_in),
            max(0, self.bytes_out - other.bytes_out),
            _sub(self.latency_buckets, other.latency_buckets),
            max(0.0, self.latency_sum - other.latency_sum),
            _sub(self.events, other.events),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "status": dict(zip(STATUS_CLASSES, self.status, strict=True)),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "latency_buckets": list(self.latency_buckets),
            "latency_sum": self.latency_sum,
            **dict(zip(EVENT_FIELDS, self.events, strict=True)),
        }


@dataclass(frozen=True, slots=True)
class Gauges:
    """Point-in-time figures a worker reports (``threads`` = its pool size)."""

    active_connections: int = 0
    idle_connections: int = 0
    busy_threads: int = 0
    queue_depth: int = 0
    threads: int = 0
    stuck_threads: int = 0  # running a request for longer than --request-timeout

    @property
    def saturated(self) -> bool:
        """Every pool thread is stuck: the worker cannot start another request."""
        return self.threads > 0 and self.stuck_threads >= self.threads

    @classmethod
    def from_message(cls, msg: dict[str, Any]) -> Gauges:
        return cls(**{name: msg[name] for name in GAUGE_FIELDS})

    def plus(self, other: Gauges) -> Gauges:
        return Gauges(*_add(astuple(self), astuple(other)))


@dataclass(frozen=True, slots=True)
class WorkerSnapshot:
    """One live worker as the admin endpoint shows it."""

    slot: int
    pid: int
    generation: int
    state: str  # booting | running | retiring | boot_error | any state set by the arbiter
    uptime_s: float
    heartbeat_age_s: float | None  # None until the first message
    requests_per_s: float  # over the last sample interval
    restarts: int  # of its slot
    counters: Counters
    gauges: Gauges
    proc: ProcInfo | None  # None until sampled, or when the process vanished

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "slot": self.slot,
            "pid": self.pid,
            "generation": self.generation,
            "state": self.state,
            "uptime_s": self.uptime_s,
            "heartbeat_age_s": self.heartbeat_age_s,
            "requests_per_s": self.requests_per_s,
            "restarts": self.restarts,
        }
        out.update(self.counters.to_dict())
        out.update(asdict(self.gauges))
        out["saturated"] = self.gauges.saturated
        out.update(asdict(self.proc or ProcInfo(0, 0.0, 0, 0)))
        return out


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    """One sample: ``t`` is seconds since the supervisor started; quantiles are None without requests."""

    t: float
    requests_per_s: float
    p50_s: float | None
    p95_s: float | None
    p99_s: float | None
    rss_bytes: int


@dataclass(frozen=True, slots=True)
class StatsSnapshot:
    """Everything /stats, /metrics and the dashboard show, taken at one instant."""

    uptime_s: float
    generation: int
    workers: tuple[WorkerSnapshot, ...]
    totals: Counters  # live workers + exited workers
    gauges: Gauges  # summed over live workers
    restarts: dict[int, int]  # per slot
    exits: dict[str, int]  # worker exits by reason
    history: tuple[HistoryPoint, ...]
    interval_s: float = 1.0
    latency_bounds_s: tuple[float, ...] = field(default=LATENCY_BUCKETS_S)

    @property
    def rss_bytes(self) -> int:
        return sum(w.proc.rss_bytes for w in self.workers if w.proc)

    @property
    def latest(self) -> HistoryPoint | None:
        return self.history[-1] if self.history else None

    def to_dict(self) -> dict[str, Any]:
        """The /stats JSON document: totals, per-worker rows, restarts per slot, exits, history."""
        last = self.latest or HistoryPoint(self.uptime_s, 0.0, None, None, None, self.rss_bytes)
        totals = self.totals.to_dict()
        totals.update(asdict(self.gauges))
        totals.update(
            workers=len(self.workers),
            rss_bytes=self.rss_bytes,
            requests_per_s=last.requests_per_s,
            p50_s=last.p50_s,
            p95_s=last.p95_s,
            p99_s=last.p99_s,
        )
        return {
            "uptime_s": self.uptime_s,
            "generation": self.generation,
            "interval_s": self.interval_s,
            "latency_bounds_s": [b if math.isfinite(b) else "+Inf" for b in self.latency_bounds_s],
            "totals": totals,
            "restarts": {str(slot): n for slot, n in sorted(self.restarts.items())},
            "exits": dict(self.exits),
            "workers": [w.to_dict() for w in self.workers],
            "history": [asdict(p) for p in self.history],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False)


def quantile(
    q: float, buckets: Sequence[int], bounds: Sequence[float] = LATENCY_BUCKETS_S
) -> float | None:
    """Estimate the q-quantile from per-bucket counts by linear interpolation inside the bucket
    (Prometheus ``histogram_quantile``); the +Inf bucket yields the highest finite bound."""
    total = sum(buckets)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(buckets):
        if count and seen + count >= rank:
            lower = bounds[i - 1] if i else 0.0
            upper = bounds[i]
            if math.isinf(upper):
                return lower
            return lower + (upper - lower) * (rank - seen) / count
        seen += count
    return bounds[-2]


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
                gauges=_sum_gauges(w.gauges for w in workers),
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


def _sum_gauges(gauges: Iterable[Gauges]) -> Gauges:
    total = Gauges()
    for g in gauges:
        total = total.plus(g)
    return total


def _add(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(x + y for x, y in zip(a, b, strict=True))


def _sub(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(max(0, x - y) for x, y in zip(a, b, strict=True))
