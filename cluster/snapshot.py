"""The stats the supervisor hands out: immutable snapshots of the cluster, and their arithmetic.

``cluster.stats.StatsAggregator`` builds a ``StatsSnapshot`` from the workers' reports; the admin endpoint
renders it as JSON (``to_dict``, the dashboard's source) and Prometheus text, statsd sends it. Every type
here is a frozen value: safe to hand from the supervisor's main thread to the admin threads.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, astuple, dataclass, field
from typing import Any

from webcluster.worker.ipc import EVENT_FIELDS, GAUGE_FIELDS, LATENCY_BUCKETS_S, STATUS_CLASSES


@dataclass(frozen=True, slots=True)
class ProcInfo:
    """psutil figures for one process."""

    rss_bytes: int
    cpu_percent: float
    num_threads: int
    open_fds: int


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
            add_counts(self.status, other.status),
            self.bytes_in + other.bytes_in,
            self.bytes_out + other.bytes_out,
            add_counts(self.latency_buckets, other.latency_buckets),
            self.latency_sum + other.latency_sum,
            add_counts(self.events, other.events),
        )

    def minus(self, other: Counters) -> Counters:
        """Difference, clamped at zero (a counter never goes backwards)."""
        return Counters(
            max(0, self.requests - other.requests),
            sub_counts(self.status, other.status),
            max(0, self.bytes_in - other.bytes_in),
            max(0, self.bytes_out - other.bytes_out),
            sub_counts(self.latency_buckets, other.latency_buckets),
            max(0.0, self.latency_sum - other.latency_sum),
            sub_counts(self.events, other.events),
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
        return Gauges(*add_counts(astuple(self), astuple(other)))


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


def sum_gauges(gauges: Iterable[Gauges]) -> Gauges:
    total = Gauges()
    for g in gauges:
        total = total.plus(g)
    return total


def add_counts(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(x + y for x, y in zip(a, b, strict=True))


def sub_counts(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(max(0, x - y) for x, y in zip(a, b, strict=True))
