"""WorkerStats: records are folded into the counters in batches; the counts must be what counting each
request on its own gives, and every snapshot must agree with itself while threads keep recording."""

from __future__ import annotations

import math
import random
import threading
from bisect import bisect_left

import pytest

from webcluster.worker import stats as stats_module
from webcluster.worker.ipc import LATENCY_BUCKETS_S, STATUS_CLASSES
from webcluster.worker.stats import WorkerStats

pytestmark = pytest.mark.timeout(30)


def _expected(records: list[tuple[int, float, int, int]]) -> dict:
    """What counting request by request gives (the definition in worker.ipc)."""
    status = dict.fromkeys(STATUS_CLASSES, 0)
    buckets = [0] * len(LATENCY_BUCKETS_S)
    total = 0.0
    for code, duration, _, _ in records:
        if not 0.0 <= duration < 1e9:
            duration = 0.0
        status[STATUS_CLASSES[min(max(code // 100 - 1, 0), 4)]] += 1
        buckets[bisect_left(LATENCY_BUCKETS_S, duration)] += 1
        total += duration
    return {
        "requests": len(records),
        "status": status,
        "latency_buckets": buckets,
        "latency_sum": total,
        "bytes_in": sum(r[2] for r in records),
        "bytes_out": sum(r[3] for r in records),
    }


def _records(n: int, seed: int) -> list[tuple[int, float, int, int]]:
    rnd = random.Random(seed)
    codes = [0, 99, 100, 200, 204, 301, 404, 499, 500, 503, 600, 999]
    # Durations on and around every bound (le semantics), plus the values the record must clamp
    edges = [b for b in LATENCY_BUCKETS_S if b != math.inf]
    odd = [0.0, -1.0, math.nan, math.inf, 1e12]
    out = []
    for _ in range(n):
        pick = rnd.random()
        if pick < 0.3:
            duration = rnd.choice(edges)
        elif pick < 0.35:
            duration = rnd.choice(odd)
        else:
            duration = rnd.uniform(0, 20)
        out.append((rnd.choice(codes), duration, rnd.randrange(0, 10_000), rnd.randrange(0, 10**6)))
    return out


@pytest.mark.parametrize("n", [0, 1, 7, stats_module.FOLD_AT // 4 - 1, stats_module.FOLD_AT // 4,
                               3 * stats_module.FOLD_AT // 4 + 5])  # fmt: skip
def test_batched_counts_equal_counting_each_request(n):
    records = _records(n, seed=n)
    stats = WorkerStats()
    for record in records:
        stats.record(*record)
    assert stats.requests == n  # folded or not
    snap = stats.snapshot()
    want = _expected(records)
    assert snap["latency_sum"] == pytest.approx(want.pop("latency_sum"))
    assert {k: snap[k] for k in want} == want


def test_records_are_folded_before_they_pile_up():
    stats = WorkerStats()
    for _ in range(stats_module.FOLD_AT):  # four values a record: four times the records needed
        stats.record(200, 0.001, 0, 1)
        assert len(stats._pending) < stats_module.FOLD_AT  # bounded without any snapshot


def test_snapshots_agree_with_themselves_while_threads_record():
    stats = WorkerStats()
    per_thread, threads = 20_000, 4
    records = _records(per_thread, seed=1)
    seen: list[dict] = []
    done = threading.Event()

    def record() -> None:
        for r in records:
            stats.record(*r)

    def watch() -> None:
        while not done.is_set():
            seen.append(stats.snapshot())

    workers = [threading.Thread(target=record) for _ in range(threads)]
    watcher = threading.Thread(target=watch)
    watcher.start()
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    done.set()
    watcher.join()
    assert len(seen) > 1
    for snap in seen:  # each request entirely or not at all
        assert snap["requests"] == sum(snap["status"].values()) == sum(snap["latency_buckets"])
    final = stats.snapshot()
    want = _expected(records * threads)
    assert final["latency_sum"] == pytest.approx(want.pop("latency_sum"))
    assert {k: final[k] for k in want} == want
