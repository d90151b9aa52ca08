"""worker.watchdog: the pure decisions with a fake clock, the claim race, the watchdog's actions, and the
loop's load shedding over real loopback sockets (--queue-timeout 503s, gone clients, a saturated pool)."""

from __future__ import annotations

import logging
import socket
import threading
import time

import pytest

from tests.conftest import poll
from tests.support import read_response, serve
from webcluster.worker.handlers.base import Exchange
from webcluster.worker.http.events import Request
from webcluster.worker.inflight import Inflight
from webcluster.worker.stats import WorkerStats
from webcluster.worker.watchdog import (
    GONE_CHECK_AFTER,
    RETRY_AFTER_S,
    PoolWatch,
    Watchdog,
    admission,
    assess,
    peer_gone,
)

pytestmark = pytest.mark.timeout(60)


def req(target: str = "/x", method: str = "GET") -> Request:
    return Request(method, target, "1.1", [("host", "t")])


# --- assess: pure, fake clock -------------------------------------------------------------------


def test_requests_past_the_timeout_are_reported_once_each() -> None:
    reported: set = set()
    running = [(1, (100.0, req("/a"))), (2, (104.0, req("/b")))]
    v = assess(106.0, running, None, threads=4, request_timeout=5.0, reported=reported)
    assert [(s.ident, s.ran_for, s.request.target) for s in v.newly_stuck] == [(1, 6.0, "/a")]
    assert (v.stuck, v.saturated, v.retire) == (1, False, None)
    v = assess(110.0, running, None, threads=4, request_timeout=5.0, reported=reported)
    assert [s.ident for s in v.newly_stuck] == [2]  # /a was already reported
    assert v.stuck == 2
    # thread 1 finished /a and started /c: a new request, reported again when it is stuck
    running = [(1, (111.0, req("/c"))), (2, (104.0, req("/b")))]
    v = assess(112.0, running, None, threads=4, request_timeout=5.0, reported=reported)
    assert v.newly_stuck == [] and v.stuck == 1
    v = assess(117.0, running, None, threads=4, request_timeout=5.0, reported=reported)
    assert [s.request.target for s in v.newly_stuck] == ["/c"]
    assert reported == {(1, 111.0), (2, 104.0)}  # finished requests are forgotten


def test_at_the_timeout_exactly_a_request_is_not_stuck_yet() -> None:
    v = assess(105.0, [(1, (100.0, req()))], None, threads=1, request_timeout=5.0, reported=set())
    assert v.stuck == 0 and not v.saturated


def test_every_thread_stuck_saturates_and_asks_to_retire() -> None:
    running = [(i, (100.0, req())) for i in range(3)]
    v = assess(110.0, running, None, threads=3, request_timeout=5.0, reported=set())
    assert v.saturated and v.stuck == 3
    assert v.retire == "all 3 threads stuck longer than --request-timeout 5s"


def test_a_queue_that_waited_past_the_timeout_asks_to_retire_without_saturation() -> None:
    running = [(1, (109.0, req()))]  # busy but not stuck: overload, not a hang
    v = assess(110.0, running, 5.5, threads=2, request_timeout=5.0, reported=set())
    assert not v.saturated and v.retire is not None and "waited 5.5s" in v.retire
    v = assess(110.0, running, 4.0, threads=2, request_timeout=5.0, reported=set())
    assert v.retire is None


@pytest.mark.parametrize(
    ("waited", "queue_timeout", "verdict"),
    [
        (0.0, 0.0, "run"),
        (GONE_CHECK_AFTER / 2, 0.001, "run"),  # too short to bother the kernel, or to shed
        (GONE_CHECK_AFTER, 0.0, "check"),
        (5.0, 0.0, "check"),  # no --queue-timeout: never shed, still drop gone clients
        (0.5, 1.0, "check"),
        (1.5, 1.0, "shed"),
    ],
)
def test_admission(waited: float, queue_timeout: float, verdict: str) -> None:
    assert admission(waited, queue_timeout) == verdict


def test_exactly_one_claimant_owns_a_queued_request() -> None:
    watch = PoolWatch()
    wins = []
    for serial in range(2000):
        watch.enqueue(serial, 1.0)
    barrier = threading.Barrier(4)

    def claimant() -> None:
        barrier.wait()
        wins.extend(s for s in range(2000) if watch.claim(s, 2.0) is not None)

    threads = [threading.Thread(target=claimant) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == list(range(2000)) and not watch.queued
    watch.enqueue(7, 10.0)
    watch.enqueue(8, 11.0)
    assert watch.oldest_queued() == 10.0 and watch.claim(7, 12.5) == 2.5


# --- the Watchdog's actions (fake clocks, no thread) ----------------------------------------------


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_watchdog_logs_the_stack_counts_saturates_and_retires_once(caplog) -> None:
    watch, table = PoolWatch(), Inflight.create(threads=2)
    clock = Clock()
    calls: list = []
    dog = Watchdog(
        watch,
        table,
        threads=2,
        request_timeout=3.0,
        on_saturated=lambda s: calls.append(("saturated", s)),
        on_retire=lambda reason: calls.append(("retire", reason)),
        count=lambda event, n: calls.append((event, n)),
        clock=clock,
        queue_clock=clock,
    )
    # this thread's real frame stands in for a stuck pool thread
    table.begin("GET", "/slow", 1000.0)
    gone = threading.Thread(target=table.begin, args=("POST", "/also", 1001.0))
    gone.start()  # it ends with its request still running: "(thread gone)"
    gone.join(5)
    clock.t = 1003.5
    with caplog.at_level(logging.WARNING, logger="webcluster.error"):
        dog.check()
    assert calls == [("request_timeouts", 1)] and dog.stuck == 1
    (record,) = caplog.records
    text = record.getMessage()
    assert text.startswith("request running for 3.5s (--request-timeout 3s): GET /slow on thread")
    assert "test_watchdog_logs_the_stack" in text  # the Python stack of the stuck thread
    clock.t = 1005.0
    dog.check()
    assert calls[1:] == [
        ("request_timeouts", 1),
        ("saturated", True),
        ("retire", "all 2 threads stuck longer than --request-timeout 3s"),
    ]
    assert "(thread gone)" in caplog.records[-1].getMessage()
    clock.t = 1010.0
    dog.check()  # nothing new: no log, no second retire
    assert len(calls) == 4
    table.end()
    dog.check()
    assert calls[4:] == [("saturated", False)] and dog.stuck == 1


def test_watchdog_period_follows_the_timeout() -> None:
    def period(timeout: float) -> float:
        noop = lambda *a: None  # noqa: E731
        dog = Watchdog(
            PoolWatch(), Inflight.create(1), threads=1, request_timeout=timeout, on_saturated=noop,
            on_retire=noop, count=noop,
        )  # fmt: skip
        return dog.period

    assert (period(0.1), period(2.0), period(60.0)) == (0.05, 0.5, 1.0)


# --- over real sockets: the loop and the runner --------------------------------------------------


class Gate:
    """A handler that blocks every request on an event and counts what the app ran."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.ran: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, ex: Exchange) -> None:
        with self.lock:
            self.ran.append(ex.request.target)
        if ex.request.target.startswith("/block"):
            self.release.wait(20)
        ex.start_response(200, "OK", [("Content-Length", "2")])
        ex.write(b"ok")


def _send(server, target: str) -> socket.socket:
    c = server.connect()
    c.sendall(f"GET {target} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    return c


def test_a_request_queued_longer_than_the_queue_timeout_gets_503_and_never_runs() -> None:
    gate, stats = Gate(), WorkerStats()
    with serve(
        gate, inline_budget=0, threads=2, watch=PoolWatch(queue_timeout=0.3), stats=stats
    ) as srv:
        blockers = [_send(srv, f"/block{i}") for i in range(2)]
        poll("len(gate.ran) == 2", lambda: len(gate.ran) == 2)
        start = time.monotonic()
        queued = [_send(srv, f"/queued{i}") for i in range(3)]
        for c in queued:
            status, headers, body = read_response(c)
            assert status == 503 and headers["retry-after"] == str(RETRY_AFTER_S)
            assert headers["connection"] == "close" and body.startswith(b"503")
        assert time.monotonic() - start < 0.3 + 2.0  # the loop answered: no thread was free
        gate.release.set()
        assert [read_response(c)[0] for c in blockers] == [200, 200]
        assert read_response(_send(srv, "/after"))[0] == 200
    assert sorted(gate.ran) == ["/after", "/block0", "/block1"]  # the app never saw the shed ones
    assert stats.event("shed_queue_timeout") == 3


def test_a_queued_request_whose_client_left_is_dropped_unrun() -> None:
    gate, stats = Gate(), WorkerStats()
    with serve(gate, inline_budget=0, threads=1, watch=PoolWatch(), stats=stats) as srv:
        blocker = _send(srv, "/block")
        poll("len(gate.ran) == 1", lambda: len(gate.ran) == 1)
        gone = [_send(srv, f"/gone{i}") for i in range(3)]
        kept = _send(srv, "/kept")
        time.sleep(GONE_CHECK_AFTER * 3)  # let them wait long enough to be checked at dequeue
        for c in gone:
            c.close()
        gate.release.set()
        assert read_response(blocker)[0] == 200
        assert read_response(kept)[0] == 200
    assert gate.ran == ["/block", "/kept"]
    assert stats.event("client_gone") == 3


def test_peer_gone_sees_a_close_and_not_a_waiting_client() -> None:
    a, b = socket.socketpair()
    try:
        assert not peer_gone(a.fileno())
        b.sendall(b"pipelined bytes are not a goodbye")
        assert not peer_gone(a.fileno())
        b.close()
        assert peer_gone(a.fileno())
    finally:
        a.close()


def test_a_saturated_pool_sheds_its_queue_and_accepts_nothing_until_it_recovers() -> None:
    gate, stats = Gate(), WorkerStats()
    with serve(gate, inline_budget=0, threads=1, watch=PoolWatch(), stats=stats) as srv:
        blocker = _send(srv, "/block")
        poll("len(gate.ran) == 1", lambda: len(gate.ran) == 1)
        queued = _send(srv, "/queued")
        poll(
            "len(srv.loop.runner.watch.queued) == 1",
            lambda: len(srv.loop.runner.watch.queued) == 1,
        )
        srv.loop.poller.call_soon(srv.loop.shedding.set_saturated, True)
        assert read_response(queued)[0] == 503
        waiting = _send(srv, "/waiting")  # the kernel completes the handshake; nobody accepts it
        waiting.settimeout(0.3)
        with pytest.raises(TimeoutError):
            waiting.recv(1)
        srv.loop.poller.call_soon(srv.loop.shedding.set_saturated, False)
        gate.release.set()
        waiting.settimeout(10)
        assert read_response(blocker)[0] == 200
        assert read_response(waiting)[0] == 200
    assert gate.ran == ["/block", "/waiting"]
    assert stats.event("shed_stuck_pool") == 1
