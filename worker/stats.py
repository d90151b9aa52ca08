"""Per-worker request counters, updated from pool threads on every response.

``record()`` is on the per-request hot path: one lock around a handful of integer adds, plus a bisect
for the latency bucket done before the lock is taken; ``python -m loadtests.bench.hotpath`` measures it. One
lock rather than per-thread counters because ``snapshot()`` must see
each request entirely or not at all (requests, status class and histogram agree), and the lock is held
for less time than a dict lookup chain.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from typing import Any

from webcluster.worker.ipc import EVENT_FIELDS, LATENCY_BUCKETS_S, STATUS_CLASSES

_EVENT_INDEX = {name: i for i, name in enumerate(EVENT_FIELDS)}


class WorkerStats:
    """Cumulative counters for one worker process (thread-safe).

    Called from: pool threads (``record``), the poller thread (``snapshot``, ``requests``).
    """

    __slots__ = (
        "_lock",
        "_requests",
        "_status",
        "_bytes_in",
        "_bytes_out",
        "_buckets",
        "_latency_sum",
        "_events",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests = 0
        self._status = [0] * len(STATUS_CLASSES)  # index = status // 100 - 1
        self._bytes_in = 0
        self._bytes_out = 0
        self._buckets = [0] * len(LATENCY_BUCKETS_S)  # per-bucket counts, see worker.ipc
        self._latency_sum = 0.0
        self._events = [0] * len(EVENT_FIELDS)

    def record(self, status: int, duration_s: float, bytes_in: int, bytes_out: int) -> None:
        """Count one finished request. ``duration_s`` is from the complete head to the last byte queued.

        Status codes outside 100..599 (e.g. 0 for "no response sent") are clamped into 1xx / 5xx so
        that ``requests`` always equals the sum over status classes.
        """
        if not 0.0 <= duration_s < 1e9:  # NaN, negative or inf would poison latency_sum
            duration_s = 0.0
        cls = status // 100 - 1
        if cls < 0:
            cls = 0
        elif cls > 4:
            cls = 4
        # bisect_left: first bound >= duration, i.e. the smallest bucket with duration <= le.
        bucket = bisect_left(LATENCY_BUCKETS_S, duration_s)
        lock = self._lock
        lock.acquire()  # not "with": a context manager costs as much again as the lock (hot path)
        try:
            self._requests += 1
            self._status[cls] += 1
            self._bytes_in += bytes_in
            self._bytes_out += bytes_out
            self._buckets[bucket] += 1
            self._latency_sum += duration_s
        finally:
            lock.release()

    def count(self, event: str, n: int = 1) -> None:
        """Count ``n`` occurrences of one of ``ipc.EVENT_FIELDS`` (any thread; rare events, so a lock)."""
        i = _EVENT_INDEX[event]
        with self._lock:
            self._events[i] += n

    def event(self, event: str) -> int:
        """The count of one event so far."""
        return self._events[_EVENT_INDEX[event]]

    @property
    def requests(self) -> int:
        """Requests recorded so far (a single int read needs no lock under the GIL)."""
        return self._requests

    def snapshot(self) -> dict[str, Any]:
        """A consistent copy of the counters, with the field names of an ipc ``stats`` message."""
        with self._lock:
            status = list(self._status)
            events = list(self._events)
            snap: dict[str, Any] = {
                "requests": self._requests,
                "bytes_in": max(0, self._bytes_in),  # a negative count would fail ipc validation
                "bytes_out": max(0, self._bytes_out),
                "latency_buckets": list(self._buckets),
                "latency_sum": self._latency_sum,
            }
        snap["status"] = dict(zip(STATUS_CLASSES, status, strict=True))
        snap["events"] = dict(zip(EVENT_FIELDS, events, strict=True))
        return snap
