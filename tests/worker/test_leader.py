"""worker.leader: requests served on the poller's thread, and the poller moved off a thread that blocks.

Over real sockets against a real Loop: which thread runs the app is what the app itself reports
(``threading.current_thread().name``), so each test sees where a request ran, not a counter we set.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time

import pytest

from tests.conftest import poll
from tests.support import read_response, serve
from webcluster.worker.handlers.base import Exchange
from webcluster.worker.leader import WATCH_INTERVAL
from webcluster.worker.loop import Loop, LoopSettings
from webcluster.worker.runner import Runner
from webcluster.worker.stats import WorkerStats
from webcluster.worker.threadpool import ThreadPool

pytestmark = pytest.mark.timeout(60)

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


class App:
    """Answers with the name of the thread that ran it; ``/block`` waits for ``release``, ``/spin``
    computes for ``spin`` seconds."""

    def __init__(self, spin: float = 0.0) -> None:
        self.release = threading.Event()
        self.spin = spin

    def __call__(self, ex: Exchange) -> None:
        target = ex.request.target
        if target == "/block":
            self.release.wait(20)
        elif target == "/spin":
            end = time.thread_time() + self.spin  # CPU time: preemption does not shorten the work
            while time.thread_time() < end:
                pass
        elif ex.request.method == "POST":
            ex.body.read()
        body = threading.current_thread().name.encode()
        ex.start_response(200, "OK", [("Content-Length", str(len(body)))])
        ex.write(body)


def ran_on(conn, request: bytes = GET) -> str:
    conn.sendall(request)
    status, _, body = read_response(conn)
    assert status == 200
    return body.decode()


def test_a_request_without_a_body_runs_on_the_poller_thread_and_one_with_a_body_in_the_pool():
    with serve(App(), threads=2, inline_budget=0.002) as srv:
        c = srv.connect()
        for _ in range(3):  # keep-alive: each next request on the same thread, no pool thread
            assert ran_on(c).startswith("webcluster-loop-")
        assert srv.pool.started == 0
        post = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
        assert ran_on(c, post).startswith("webcluster-worker")
        # Expect: 100-continue: its client may be waiting for us, so the pool too (Loop._dispatch)
        expect = b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n"
        assert ran_on(c, expect).startswith("webcluster-worker")
        # pipelined: answered in order, each on the poller thread
        c.sendall(GET * 3)
        assert [read_response(c)[2].decode()[:15] for _ in range(3)] == ["webcluster-loop"] * 3


def test_inline_budget_zero_sends_every_request_to_the_pool():
    with serve(App(), threads=2, inline_budget=0) as srv:
        assert ran_on(srv.connect()).startswith("webcluster-worker")


def test_a_blocked_request_moves_the_poller_and_everyone_else_is_still_served():
    """The app blocks on the poller's thread: within a few budgets another thread holds the poller;
    new connections are accepted and served (through the pool, during the back-off) while it blocks;
    the blocked request is answered once released, and its connection kept alive."""
    app, stats = App(), WorkerStats()
    with serve(app, threads=2, inline_budget=0.002, stats=stats) as srv:
        blocked = srv.connect()
        blocked.sendall(b"GET /block HTTP/1.1\r\nHost: x\r\n\r\n")
        poll("the poller to move", lambda: srv.loop.lead.depositions == 1, 5)
        assert stats.event("poller_moved") == 1  # /stats and /metrics show it
        assert srv.busy == 1  # the blocked request is still counted as running
        for _ in range(5):
            assert ran_on(srv.connect()).startswith("webcluster-worker")  # back-off: the pool
        app.release.set()
        status, _, body = read_response(blocked)
        assert status == 200 and body == b"webcluster-loop-0"
        assert ran_on(blocked).startswith("webcluster-")  # handed back, alive
        assert srv.loop.lead.depositions == 1
        # after the back-off the next request runs on the poller thread again (now the other seat)
        poll("inline serving again", lambda: ran_on(srv.connect()) == "webcluster-loop-1", 10)


def test_a_deposed_request_read_at_accept_is_handed_back_through_the_loop_and_kept_alive():
    """A connection whose request is read as it is accepted is not in the epoll set yet (Conn.polled).
    Its leader deposed, the request ends on that thread, which cannot re-arm an entry that does not
    exist: it hands the connection back through the loop, which adds it, and the next request is
    answered."""
    app = App()
    with serve(app, threads=2, inline_budget=0.002) as srv:
        loop = srv.loop
        loop.poller.call_soon(loop.acceptor.pause)  # the request is there before the accept
        poll("accepting paused", lambda: not loop.acceptor.accepting, 5)
        blocked = srv.connect()
        blocked.sendall(b"GET /block HTTP/1.1\r\nHost: x\r\n\r\n")
        loop.poller.call_soon(loop.acceptor.start)
        poll("the poller to move", lambda: loop.lead.depositions == 1, 5)
        (conn,) = loop._conns.values()
        assert not conn.polled  # read and served inline at accept
        app.release.set()
        status, _, body = read_response(blocked)
        assert status == 200 and body == b"webcluster-loop-0"
        assert ran_on(blocked).startswith("webcluster-")  # handed back, in the set, alive
        assert conn.polled


def test_a_request_computing_past_the_budget_keeps_the_poller():
    """Moving the poller off a thread that computes frees no CPU: only a blocked request moves it
    before the cap (25 budgets, at least 50 ms)."""
    with serve(App(spin=0.01), threads=2, inline_budget=0.002) as srv:
        c = srv.connect()
        for _ in range(3):
            assert ran_on(c, b"GET /spin HTTP/1.1\r\nHost: x\r\n\r\n").startswith("webcluster-loop")
        assert srv.loop.lead.depositions == 0


def test_a_request_computing_past_the_cap_moves_the_poller():
    with serve(App(spin=0.5), threads=2, inline_budget=0.002) as srv:
        c = srv.connect()
        c.sendall(b"GET /spin HTTP/1.1\r\nHost: x\r\n\r\n")
        poll("the poller to move", lambda: srv.loop.lead.depositions == 1, 5)
        assert ran_on(srv.connect()).startswith("webcluster-worker")
        assert read_response(c)[0] == 200


def test_the_watcher_checks_at_most_every_watch_interval_however_small_the_budget():
    """Each check takes the GIL from the leader; at half a 2 ms budget that was 1,000 a second. Under a
    steady stream of inline requests the watcher checks no more often than WATCH_INTERVAL, and a
    request sleeping for less than the budget never moves the poller."""
    app = App()
    with serve(app, threads=2, inline_budget=0.002, keepalive_requests=10**6) as srv:
        lead = srv.loop.lead
        checks = []
        check = lead._check
        lead._check = lambda seen, now: checks.append(now) or check(seen, now)
        c = srv.connect()
        start = time.monotonic()
        while time.monotonic() - start < 0.5:  # load for a duration, not a wait
            assert ran_on(c).startswith("webcluster-loop-")
        elapsed = time.monotonic() - start
        assert 1 <= len(checks) <= elapsed / WATCH_INTERVAL + 2
        assert all(b - a >= WATCH_INTERVAL * 0.9 for a, b in itertools.pairwise(checks))
        assert lead.depositions == 0


def test_a_stop_while_a_deposed_request_runs_ends_the_loop_and_answers_it():
    app = App()
    with serve(app, threads=2, inline_budget=0.002, graceful_timeout=5) as srv:
        blocked = srv.connect()
        blocked.sendall(b"GET /block HTTP/1.1\r\nHost: x\r\n\r\n")
        poll("the poller to move", lambda: srv.loop.lead.depositions == 1, 5)
        srv.loop.stop(graceful=True)
        poll("stopping", lambda: srv.loop.stopping, 5)
        app.release.set()
        status, headers, _ = read_response(blocked)
        assert status == 200 and headers["connection"] == "close"
        poll("the loop to end", srv.loop.lead.ended.is_set, 5)


def test_events_ready_beside_a_blocked_request_go_to_the_next_leader():
    """Requests that arrived in the same poll as one that blocks are not left waiting for it: the
    next leader handles them (run 5 times, so some runs put them in one batch)."""
    for _ in range(5):
        app = App()
        with serve(app, threads=4, inline_budget=0.002) as srv:
            conns = [srv.connect() for _ in range(5)]
            poll("5 connections", lambda: sum(srv.loop.gauges()[k] for k in
                                              ("idle_connections", "active_connections")) == 5)  # fmt: skip
            conns[0].sendall(b"GET /block HTTP/1.1\r\nHost: x\r\n\r\n")
            for c in conns[1:]:
                c.sendall(GET)
            for c in conns[1:]:
                c.settimeout(5)
                assert read_response(c)[0] == 200
            app.release.set()
            assert read_response(conns[0])[0] == 200


def test_a_failing_loop_ends_run_with_its_exception_on_the_calling_thread():
    """A bug in the loop must end the worker (the supervisor replaces it), as when the loop ran on the
    main thread, not leave it alive with no thread polling."""
    lsock = socket.create_server(("127.0.0.1", 0))
    loop = Loop(
        [lsock], Runner(App(), None, None), ThreadPool(2), LoopSettings(inline_budget=0.002)
    )
    raised: list[BaseException] = []

    def run() -> None:
        try:
            loop.run()
        except RuntimeError as exc:
            raised.append(exc)

    def boom() -> bool:
        raise RuntimeError("bug in the loop")

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        poll("the loop running on a seat", lambda: loop.lead._leader_ids[0] != 0)
        loop.step = boom  # the seat looks it up on every pass
        loop.poller.wake()
        t.join(5)
        assert not t.is_alive() and [str(e) for e in raised] == ["bug in the loop"]
    finally:
        loop.stop(graceful=False)
        lsock.close()
