"""Per-worker request counters, updated from pool threads on every response.

``record()`` is on the per-request hot path, so it does the least it can: it extends a list by one
record's four values (one C call, atomic under the GIL) and nothing else. The counters are brought up to
date in batches (``_fold``): when the report reads them (``snapshot``, once a second) or when FOLD_AT
values are waiting, whichever comes first. A batch is counted with C-level builtins (slices, ``Counter``
for the status classes, ``sum`` for the bytes, one sort and a bisect per bucket for the histogram) instead
of a lock, a bisect and six counter updates per request: 5.1 k instructions a record the per-request way,
3.0 k now, the fold included (``python -m loadtests.bench.hotpath --instructions``, BENCHMARKS.md).

Each request's four values are added in one call, so ``snapshot()`` still sees each request entirely or
not at all: requests, status classes and the histogram always agree.
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from collections import Counter
from typing import Any

from webcluster.worker.ipc import EVENT_FIELDS, LATENCY_BUCKETS_S, STATUS_CLASSES

_EVENT_INDEX = {name: i for i, name in enumerate(EVENT_FIELDS)}
# Values waiting (four a record) before the recording thread folds them itself: the report folds them
# every second, but a loop that does not report (or is blocked) must not let the list grow without bound.
FOLD_AT = 4 * 1024


class WorkerStats:
    """Cumulative counters for one worker process (thread-safe).

    Called from: pool threads (``record``), the poller thread (``snapshot``, ``requests``).
    """

    __slots__ = (
        "_lock",
        "_pending",
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
        # Recorded, not yet folded in: (status, duration, bytes in, bytes out) of each request, flat
        self._pending: list[int | float] = []
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
        if not 0.0 <= duration_s < 1e9:  # NaN, negative, inf: would poison the sum and the sort
            duration_s = 0.0
        pending = self._pending
        pending += (status, duration_s, bytes_in, bytes_out)  # one extend, atomic under the GIL
        if len(pending) >= FOLD_AT:
            with self._lock:
                self._fold()

    def _fold(self) -> None:
        """Under ``_lock``: add the waiting records to the counters. Only the records there when it
        starts: a thread may add one meanwhile (no lock), and it stays for the next fold."""
        pending = self._pending
        n = len(pending)  # four values a record, each record added whole
        if not n:
            return
        batch = pending[:n]
        del pending[:n]  # one C call: a record added after the slice is kept
        statuses, durations, ins, outs = batch[0::4], batch[1::4], batch[2::4], batch[3::4]
        self._requests += n // 4
        status = self._status
        for code, count in Counter(statuses).items():
            cls = code // 100 - 1
            status[0 if cls < 0 else 4 if cls > 4 else cls] += count
        self._bytes_in += sum(ins)
        self._bytes_out += sum(outs)
        self._latency_sum += sum(durations)
        # Bucket i holds LATENCY_BUCKETS_S[i-1] < d <= LATENCY_BUCKETS_S[i] (Prometheus "le"): in the
        # sorted durations, the count at or below each bound, less the count at or below the one before.
        ordered = sorted(durations)
        buckets = self._buckets
        below = 0
        for i, bound in enumerate(LATENCY_BUCKETS_S):
            upto = bisect_right(ordered, bound)
            buckets[i] += upto - below
            below = upto

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
        """Requests recorded so far, folded or not. No lock: a fold running meanwhile can make it read
        low for that moment, never high (it reads the folded count first)."""
        return self._requests + len(self._pending) // 4

    def snapshot(self) -> dict[str, Any]:
        """A consistent copy of the counters, with the field names of an ipc ``stats`` message."""
        with self._lock:
            self._fold()
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
