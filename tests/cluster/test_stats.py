"""WorkerStats (thread safety, histogram) and StatsAggregator with fake reports and a
fake psutil: totals, retention across exits, restarts, history and rates."""

from __future__ import annotations

import json
import os
import threading

import pytest

from webcluster.cluster.snapshot import Counters, ProcInfo, quantile
from webcluster.cluster.stats import PsutilProcInfo, StatsAggregator
from webcluster.worker import ipc
from webcluster.worker.stats import WorkerStats

# --- WorkerStats ------------------------------------------------------------------------------


def test_histogram_buckets_follow_le_semantics() -> None:
    stats = WorkerStats()
    for duration in (0.0, 0.001, 0.0011, 0.3, 10.0, 11.0, 1e12, float("nan"), -1.0):
        stats.record(200, duration, 0, 0)
    buckets = stats.snapshot()["latency_buckets"]
    bounds = ipc.LATENCY_BUCKETS_S
    # 0.0, 0.001 and the three invalid durations (clamped to 0) fall in le=0.001
    assert buckets[0] == 5
    assert buckets[bounds.index(0.0025)] == 1
    assert buckets[bounds.index(0.5)] == 1
    assert buckets[bounds.index(10.0)] == 1
    assert buckets[-1] == 1  # 11 s: +Inf
    assert stats.snapshot()["latency_sum"] == pytest.approx(0.001 + 0.0011 + 0.3 + 10 + 11)


def test_status_classes_and_clamping() -> None:
    stats = WorkerStats()
    for status in (100, 101, 200, 204, 301, 404, 499, 500, 503, 0, 999):
        stats.record(status, 0.01, 1, 2)
    snap = stats.snapshot()
    assert snap["status"] == {"1xx": 3, "2xx": 2, "3xx": 1, "4xx": 2, "5xx": 3}
    assert snap["requests"] == stats.requests == 11
    assert snap["bytes_in"] == 11 and snap["bytes_out"] == 22


@pytest.mark.timeout(60)
def test_record_is_thread_safe() -> None:
    stats = WorkerStats()
    n_threads, per_thread = 8, 20000
    barrier = threading.Barrier(n_threads)

    def hammer(i: int) -> None:
        barrier.wait()
        for j in range(per_thread):
            stats.record(200 + 100 * (j % 3), 0.002 * (i + 1), 3, 5)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(n_threads)]
    snaps = []
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):  # concurrent snapshots must be self-consistent
        snap = stats.snapshot()
        assert sum(snap["status"].values()) == snap["requests"] == sum(snap["latency_buckets"])
        snaps.append(snap["requests"])
    for t in threads:
        t.join()
    total = n_threads * per_thread
    snap = stats.snapshot()
    assert snap["requests"] == total
    assert sum(snap["status"].values()) == total
    assert sum(snap["latency_buckets"]) == total
    assert snap["bytes_in"] == 3 * total and snap["bytes_out"] == 5 * total
    assert snap["latency_sum"] == pytest.approx(sum(0.002 * (i + 1) for i in range(8)) * per_thread)
    assert snaps == sorted(snaps)


# --- quantile ---------------------------------------------------------------------------------


def test_quantile_interpolates_inside_the_bucket() -> None:
    buckets = [0] * len(ipc.LATENCY_BUCKETS_S)
    assert quantile(0.5, buckets) is None
    buckets[ipc.LATENCY_BUCKETS_S.index(0.1)] = 100  # all in (0.05, 0.1]
    assert quantile(0.5, buckets) == pytest.approx(0.075)
    assert quantile(0.99, buckets) == pytest.approx(0.0995)
    buckets[-1] = 100  # half beyond 10 s: the top quantiles report the highest finite bound
    assert quantile(0.99, buckets) == 10.0
    assert quantile(0.25, buckets) == pytest.approx(0.075)


# --- StatsAggregator --------------------------------------------------------------------------


class FakeProcInfo:
    def __init__(self) -> None:
        self.table: dict[int, ProcInfo] = {}
        self.forgotten: list[int] = []

    def __call__(self, pid: int) -> ProcInfo | None:
        return self.table.get(pid)

    def forget(self, pid: int) -> None:
        self.forgotten.append(pid)


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def stats_msg(
    pid: int, requests: int, *, latency: float = 0.004, busy: int = 0, **gauges: int
) -> dict:
    """A valid ipc stats message for ``requests`` 2xx requests of ``latency`` seconds each."""
    ws = WorkerStats()
    for _ in range(requests):
        ws.record(200, latency, 10, 100)
    msg = ipc.stats(pid, 0, 1, 0.0, ws.snapshot(), {"busy_threads": busy, "threads": 4, **gauges})
    return ipc.decode(ipc.encode(msg))


@pytest.fixture
def agg() -> tuple[StatsAggregator, FakeProcInfo, FakeClock]:
    procs, clock = FakeProcInfo(), FakeClock()
    return StatsAggregator(history_seconds=10, proc_info=procs, clock=clock), procs, clock


def test_totals_are_the_sum_over_workers(agg) -> None:
    aggregator, procs, clock = agg
    aggregator.worker_started(0, 101, 1, clock.t)
    aggregator.worker_started(1, 102, 1, clock.t)
    assert aggregator.last_heartbeat(101) is None
    aggregator.on_message(0, 101, stats_msg(101, 7, busy=2, active_connections=3), clock.t + 1)
    aggregator.on_message(1, 102, stats_msg(102, 5, busy=1, idle_connections=4), clock.t + 1)
    assert aggregator.last_heartbeat(101) == clock.t + 1
    snap = aggregator.snapshot(clock.t + 2)
    assert snap.totals.requests == 12 == sum(w.counters.requests for w in snap.workers)
    assert snap.totals.status[1] == 12 and snap.totals.bytes_in == 120
    assert sum(snap.totals.latency_buckets) == 12
    assert snap.gauges.busy_threads == 3 and snap.gauges.threads == 8
    assert snap.gauges.active_connections == 3 and snap.gauges.idle_connections == 4
    assert [(w.slot, w.pid, w.state) for w in snap.workers] == [
        (0, 101, "running"),
        (1, 102, "running"),
    ]
    assert snap.workers[0].heartbeat_age_s == 1.0 and snap.workers[0].uptime_s == 2.0
    assert snap.uptime_s == 2.0 and snap.generation == 1


def test_counters_of_exited_workers_are_retained_and_restarts_counted(agg) -> None:
    aggregator, procs, clock = agg
    aggregator.worker_started(0, 101, 1, clock.t)
    aggregator.on_message(0, 101, ipc.ready(101, 0, 1), clock.t)
    aggregator.on_message(0, 101, stats_msg(101, 10), clock.t)
    aggregator.worker_exited(0, 101, clock.t + 1, "crash")
    assert procs.forgotten == [101]
    aggregator.on_message(0, 101, stats_msg(101, 13), clock.t + 1)  # late final message: +3
    aggregator.on_message(0, 101, stats_msg(101, 13), clock.t + 1)  # duplicate: no double count
    aggregator.worker_started(0, 201, 2, clock.t + 1)
    aggregator.on_message(0, 201, stats_msg(201, 4), clock.t + 2)
    aggregator.on_message(0, 999, stats_msg(999, 50), clock.t + 2)  # unknown pid: ignored
    snap = aggregator.snapshot(clock.t + 2)
    assert snap.totals.requests == 17
    assert [w.pid for w in snap.workers] == [201]
    assert snap.restarts == {0: 1} and snap.workers[0].restarts == 1
    assert snap.exits == {"crash": 1} and snap.generation == 2
    assert aggregator.last_heartbeat(101) is None


def test_states_follow_messages_and_the_arbiter(agg) -> None:
    aggregator, _, clock = agg
    aggregator.worker_started(0, 101, 1, clock.t)
    assert aggregator.snapshot().workers[0].state == "booting"
    aggregator.on_message(0, 101, ipc.ready(101, 0, 1), clock.t)
    assert aggregator.snapshot().workers[0].state == "running"
    aggregator.on_message(0, 101, ipc.retire(101), clock.t)
    assert aggregator.snapshot().workers[0].state == "retiring"
    aggregator.set_state(101, "draining")
    aggregator.on_message(0, 101, stats_msg(101, 1), clock.t)
    assert aggregator.snapshot().workers[0].state == "draining"
    aggregator.set_generation(5)
    assert aggregator.snapshot().generation == 5


def test_sample_adds_psutil_figures_rates_and_history(agg) -> None:
    aggregator, procs, clock = agg
    aggregator.worker_started(0, 101, 1, clock.t)
    aggregator.worker_started(1, 102, 1, clock.t)
    procs.table[101] = ProcInfo(rss_bytes=30_000_000, cpu_percent=12.5, num_threads=34, open_fds=40)
    aggregator.sample(clock.t + 1)  # 102 has no psutil figures (vanished): tolerated
    snap = aggregator.snapshot(clock.t + 1)
    assert snap.workers[0].proc == procs.table[101] and snap.workers[1].proc is None
    assert snap.rss_bytes == 30_000_000
    point = snap.history[-1]
    assert point.requests_per_s == 0.0 and point.p95_s is None and point.t == 1.0

    aggregator.on_message(0, 101, stats_msg(101, 100, latency=0.004), clock.t + 1.5)
    aggregator.on_message(1, 102, stats_msg(102, 100, latency=0.004), clock.t + 1.5)
    aggregator.sample(clock.t + 3)  # 200 requests in 2 s, all in (0.0025, 0.005]
    snap = aggregator.snapshot(clock.t + 3)
    point = snap.history[-1]
    assert point.requests_per_s == pytest.approx(100.0)
    assert 0.0025 < point.p50_s < point.p95_s < point.p99_s <= 0.005
    assert [w.requests_per_s for w in snap.workers] == [pytest.approx(50.0), pytest.approx(50.0)]

    aggregator.worker_exited(0, 101, clock.t + 3.5, "recycle")  # moves to retained: no rate spike
    aggregator.sample(clock.t + 4)
    assert aggregator.snapshot(clock.t + 4).history[-1].requests_per_s == 0.0

    for i in range(20):  # the ring buffer keeps history_seconds / interval points
        aggregator.sample(clock.t + 5 + i)
    history = aggregator.snapshot().history
    assert len(history) == 10 and history[-1].t == 24.0


def test_snapshot_json_shape(agg) -> None:
    aggregator, procs, clock = agg
    aggregator.worker_started(0, 101, 3, clock.t)
    procs.table[101] = ProcInfo(1000, 1.0, 5, 9)
    aggregator.on_message(0, 101, stats_msg(101, 2), clock.t)
    aggregator.sample(clock.t + 1)
    doc = json.loads(aggregator.snapshot(clock.t + 1).to_json())
    assert set(doc) == {
        "uptime_s",
        "generation",
        "interval_s",
        "latency_bounds_s",
        "totals",
        "restarts",
        "exits",
        "workers",
        "history",
    }
    assert doc["latency_bounds_s"][-1] == "+Inf" and doc["generation"] == 3
    assert doc["totals"]["requests"] == 2 and doc["totals"]["workers"] == 1
    assert doc["totals"]["status"]["2xx"] == 2 and doc["totals"]["rss_bytes"] == 1000
    worker = doc["workers"][0]
    assert worker["pid"] == 101 and worker["rss_bytes"] == 1000 and worker["open_fds"] == 9
    assert worker["num_threads"] == 5 and worker["threads"] == 4 and worker["restarts"] == 0
    assert doc["history"][-1]["requests_per_s"] == 2.0
    assert doc["restarts"] == {"0": 0}


def test_counters_arithmetic_clamps() -> None:
    a = Counters(requests=5, bytes_in=3, latency_sum=1.0)
    b = Counters(requests=7, bytes_in=1, latency_sum=2.0)
    assert a.minus(b).requests == 0 and a.minus(b).bytes_in == 2 and a.minus(b).latency_sum == 0.0
    assert a.plus(b).requests == 12


def test_psutil_proc_info_on_a_real_and_a_dead_pid() -> None:
    info = PsutilProcInfo()
    me = info(os.getpid())
    assert me is not None and me.rss_bytes > 0 and me.num_threads >= 1 and me.open_fds > 0
    assert info(os.getpid()).cpu_percent >= 0.0
    info.forget(os.getpid())
    assert info(2**22 + 12345) is None  # beyond pid_max: NoSuchProcess is tolerated
