"""The loop's deadlines, driven by an injected clock and poller: no sleeps, no waiting for real time.

``Loop(clock=..., poller=...)``: the clock is a ``FakeClock`` the test moves forward; the poller is the real
epoll ``Poller`` that never blocks (it records the timeout the loop asked for and polls with 0), and the
pool runs each request inline on the loop thread. ``Loop.step`` is one pass of the loop, so a test decides
exactly when events are handled and timers run. Sockets are real loopback connections.
"""

from __future__ import annotations

import socket

import pytest

from webcluster.worker.handlers.base import Exchange
from webcluster.worker.loop import Loop, LoopSettings
from webcluster.worker.poller import Poller
from webcluster.worker.runner import Runner
from webcluster.worker.transport import State

pytestmark = pytest.mark.timeout(30)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class NoWaitPoller(Poller):
    """The real epoll set, but ``poll`` never sleeps; the timeouts the loop asked for are kept."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[float] = []
        self.blind = 0  # this many polls report no event (what arrives after a real poll returned)

    def poll(self, timeout, run_calls=True):
        self.asked.append(timeout)
        if self.blind:
            self.blind -= 1
            return []
        return super().poll(0, run_calls)


class InlinePool:
    """Runs each request at once on the caller's (the loop's) thread."""

    size, busy, queued = 1, 0, 0

    def submit(self, fn, arg) -> None:
        fn(arg)


def hello(ex: Exchange) -> None:
    ex.start_response(200, "OK", [("Content-Length", "5")])
    ex.write(b"hello")


class Harness:
    def __init__(self, handler=hello, proxy_trust=None, **settings) -> None:
        # A connection is accepted when it is made, as with --defer-accept 0: these tests are about what
        # the loop does with a connection that has sent nothing yet (test_loop_accept covers the deferral).
        settings.setdefault("defer_accept", 0)
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.clock = FakeClock()
        self.poller = NoWaitPoller()
        self.loop = Loop([self.lsock], Runner(handler, None, None), InlinePool(),
                         LoopSettings(**settings), poller=self.poller, clock=self.clock,
                         proxy_trust=proxy_trust)  # fmt: skip
        self.loop.acceptor.start()
        self.clients: list[socket.socket] = []

    def connect(self) -> socket.socket:
        c = socket.create_connection(self.lsock.getsockname())  # blocking: MSG_DONTWAIT reads
        self.clients.append(c)
        self.settle()
        return c

    def settle(self, passes: int = 6) -> None:
        """A few loop passes at the current (frozen) time: events in flight get handled."""
        for _ in range(passes):
            self.loop.step()

    def later(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.settle()

    def conn(self):
        (conn,) = self.loop._conns.values()
        return conn

    def close(self) -> None:
        self.loop.close_all()
        for c in self.clients:
            c.close()
        self.lsock.close()


@pytest.fixture
def harness():
    made: list[Harness] = []

    def make(**settings) -> Harness:
        made.append(Harness(**settings))
        return made[-1]

    yield make
    for h in made:
        h.close()


def pending(c: socket.socket) -> bytes | None:
    """What the server sent so far without waiting (b"" at EOF, None when nothing is there yet).

    The client ACKs at once (TCP_QUICKACK): the keep-alive timer looks at unacknowledged bytes, and in
    frozen time a delayed ACK would never come."""
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
    try:
        return c.recv(65536, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return None


def test_idle_keep_alive_connection_closes_exactly_at_the_keepalive_timeout(harness):
    h = harness(keepalive=5.0)
    c = h.connect()
    c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    h.settle()
    assert pending(c).endswith(b"\r\n\r\nhello")
    assert h.conn().state is State.READING and h.conn().idle
    h.later(4.9)
    assert pending(c) is None and len(h.loop._conns) == 1
    h.later(0.2)
    assert pending(c) == b"" and not h.loop._conns


def test_a_new_request_restarts_the_keepalive_period(harness):
    h = harness(keepalive=5.0)
    c = h.connect()
    for _ in range(3):  # each request 4 s after the last: never idle for 5 s
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        h.settle()
        assert pending(c).endswith(b"hello")
        h.later(4.0)
    assert len(h.loop._conns) == 1
    h.later(1.1)
    assert pending(c) == b""


def test_half_sent_head_gets_408_at_the_header_timeout_then_lingers(harness):
    h = harness(header_timeout=10.0, linger_timeout=2.0)
    c = h.connect()
    c.sendall(b"GET / HTTP/1.1\r\nHost:")
    h.settle()
    h.later(9.9)
    assert pending(c) is None
    h.later(0.2)
    answer = pending(c)
    assert answer.startswith(b"HTTP/1.1 408 ") and b"connection: close" in answer.lower()
    # Our write side is shut (the client reads EOF after the 408), but the socket lingers so unread
    # input cannot turn the close into a reset (RFC 9112 §9.6), for at most --linger-timeout.
    assert pending(c) == b""
    assert h.conn().state is State.LINGERING
    h.later(1.9)
    assert h.conn().state is State.LINGERING
    h.later(0.2)
    assert not h.loop._conns


@pytest.mark.parametrize("pipelined", [False, True])
def test_a_head_begun_after_a_response_runs_on_the_header_timeout(harness, pipelined):
    # A head that arrives whole needs no header timer; a partial one must leave the keep-alive period
    # (5 s, which would close it silently) for the header timeout (10 s, then a 408). Pipelined: the
    # partial head came with the first request, and the loop parses it after the response went out.
    h = harness(keepalive=5.0, header_timeout=10.0)
    c = h.connect()
    first = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    if pipelined:
        c.sendall(first + b"GET / HTTP/1.1\r\nHo")
        h.settle()
    else:
        c.sendall(first)
        h.settle()
        assert pending(c).endswith(b"hello")
        h.later(1.0)
        c.sendall(b"GET / HTTP/1.1\r\nHo")
        h.settle()
    assert h.conn().state is State.READING and not h.conn().idle
    h.later(6.0)
    assert len(h.loop._conns) == 1
    h.later(3.9)
    assert len(h.loop._conns) == 1
    h.later(0.2)
    assert b"HTTP/1.1 408 " in pending(c)


def test_lingering_ends_as_soon_as_the_client_closes(harness):
    h = harness(header_timeout=10.0, linger_timeout=2.0)
    c = h.connect()
    c.sendall(b"GET / HTTP/1.1\r\nHost:")
    h.settle()
    h.later(10.1)
    assert h.conn().state is State.LINGERING
    c.shutdown(socket.SHUT_WR)
    h.settle()
    assert not h.loop._conns


def test_connection_that_never_sends_a_byte_is_closed_without_a_408(harness):
    h = harness(header_timeout=10.0)
    c = h.connect()
    h.later(10.1)
    assert pending(c) == b"" and not h.loop._conns


def test_body_preread_gets_408_at_the_body_timeout(harness):
    h = harness(body_timeout=30.0, header_timeout=10.0)
    c = h.connect()
    c.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    h.settle()
    assert h.conn().state is State.BODY  # the loop holds it: no thread for a slow body
    h.later(29.9)  # past the header timeout, which no longer applies
    assert pending(c) is None
    h.later(0.2)
    assert pending(c).startswith(b"HTTP/1.1 408 ")


def test_poll_waits_until_the_nearest_deadline_and_at_most_the_tick(harness):
    h = harness(keepalive=0.25, header_timeout=10.0)
    assert h.loop.poll_timeout(h.clock.now) == 1.0  # nothing due: the 1 s stats tick
    c = h.connect()
    c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    h.settle()
    assert pending(c).endswith(b"hello")
    h.loop.step()
    assert h.poller.asked[-1] == pytest.approx(0.25)  # the idle deadline, not the 10 s head one


def test_graceful_stop_closes_idle_connections_after_the_grace(harness):
    h = harness(keepalive=5.0, drain_idle_grace=1.0)
    c = h.connect()
    c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    h.settle()
    assert pending(c).endswith(b"hello")
    h.loop.stop(graceful=True)
    h.settle()
    assert h.loop.stopping and pending(c) is None
    h.later(1.1)
    assert pending(c) == b"" and not h.loop._conns
    assert h.loop.step() is False  # drained: the loop ends


def test_a_stale_timer_entry_does_nothing_after_the_state_changed(harness):
    # The head timer of a request that completed must not fire while its connection is idle.
    h = harness(keepalive=20.0, header_timeout=10.0)
    c = h.connect()
    c.sendall(b"GET / HTTP/1.1\r\n")
    h.settle()
    c.sendall(b"Host: x\r\n\r\n")
    h.settle()
    assert pending(c).endswith(b"hello")
    h.later(10.5)  # the old head deadline passes
    assert pending(c) is None and len(h.loop._conns) == 1


def test_under_steady_load_the_queues_are_looked_at_once_per_slack(harness, monkeypatch):
    # Each request leaves a voided keep-alive entry behind; once they come due, popping them on every
    # pass would cost a look at every queue per request. They are acted on at most SLACK late instead.
    from webcluster.worker.timeouts import SLACK
    from webcluster.worker.timers import DeadlineQueue

    h = harness(keepalive=0.05)
    c = h.connect()
    looked: set[float] = set()
    expired = DeadlineQueue.expired
    monkeypatch.setattr(DeadlineQueue, "expired", lambda q, now: looked.add(now) or expired(q, now))
    for _ in range(200):  # a request per millisecond for 0.2 s: entries come due from 0.05 s on
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        h.settle()
        assert pending(c).endswith(b"hello")
        h.clock.advance(0.001)
    assert 0 < len(looked) <= 0.2 / SLACK + 1  # every pass: about 150 looks
    assert len(h.loop._conns) == 1  # and the live connection's own entry never fired
    h.later(0.05 + SLACK)
    assert pending(c) == b"" and not h.loop._conns  # idle: closed at most SLACK after its deadline


def test_a_request_that_came_after_the_poll_is_answered_not_reset_at_the_idle_deadline(harness):
    # The timers run after a pass's events: a request that arrived meanwhile is unread when its
    # connection's idle (or drain) deadline is acted on. It is served on the next pass, not reset.
    h = harness(keepalive=5.0)
    c = h.connect()
    c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    h.settle()
    assert pending(c).endswith(b"hello")
    h.clock.advance(5.1)
    c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    h.poller.blind = 1  # this pass's poll reports nothing: the request came after it
    h.loop.step()
    assert len(h.loop._conns) == 1  # still open: the request is waiting to be read
    h.settle()
    assert pending(c).endswith(b"hello") and len(h.loop._conns) == 1


def test_the_keepalive_deadline_moves_lazily_and_still_closes_between_keepalive_and_lazy_later(
    harness,
):
    # A busy connection keeps its pending keep-alive entry while it comes due at most ``lazy`` early
    # (nginx's lazy timers): a request per 10 ms for a second adds a handful of entries, not 100. Once
    # idle it is closed no sooner than --keepalive and at most ``lazy`` (+ SLACK) after it.
    from webcluster.worker.timeouts import SLACK

    h = harness(keepalive=5.0)
    c = h.connect()
    timeouts = h.loop.timeouts
    assert timeouts.lazy == 0.25
    added = 0
    for _ in range(100):
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        h.settle()
        assert pending(c).endswith(b"hello")
        added = max(added, len(timeouts.idle))
        h.clock.advance(0.01)
    assert 1 <= added <= 1.0 / timeouts.lazy + 1
    last = h.clock.now - 0.01  # the last response
    h.later(4.99 - 0.01)
    assert pending(c) is None and len(h.loop._conns) == 1
    while h.loop._conns:
        h.later(0.005)
    closed = h.clock.now - last
    assert 5.0 <= closed <= 5.0 + timeouts.lazy + SLACK + 0.005
    assert pending(c) == b""


def test_a_pass_runs_queued_calls_and_clears_a_wake_up_whose_call_ran_before_it(harness):
    # A pass calls run_calls only when there is something for it. A wake-up can outlive its call: the
    # loop drains the call, then the caller's wake() sets the flag and writes the eventfd. The next pass
    # must still clear the flag, or no later call_soon would write the eventfd to wake the loop.
    h = harness()
    ran: list[int] = []
    h.poller.call_soon(ran.append, 1)
    h.settle(1)
    assert ran == [1] and not h.poller.wake_pending
    h.poller.wake()  # the late wake-up of a call already run
    h.settle(1)
    assert not h.poller.wake_pending
    h.poller.call_soon(ran.append, 2)
    assert h.poller.wake_pending  # this one wrote the eventfd
    h.settle(1)
    assert ran == [1, 2]


@pytest.mark.parametrize(
    "sent", [b"", b"GET / HTTP/1.1\r\nHo", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"]
)
def test_a_connection_read_at_accept_runs_on_the_timer_of_what_it_sent(harness, sent):
    # A plain connection is read as it is accepted. Nothing yet, or part of a head: the header timeout
    # from then (a close, or a 408). A whole request: no header timer at all (answered, then the
    # keep-alive period, here the shorter one, ends it).
    h = harness(header_timeout=10.0, keepalive=3.0)
    c = socket.create_connection(h.lsock.getsockname())
    h.clients.append(c)
    c.sendall(sent)
    h.settle()
    if sent.endswith(b"\r\n\r\n"):
        assert pending(c).endswith(b"hello")
        h.later(3.1)
        assert pending(c) == b"" and not h.loop._conns
        return
    h.later(9.9)
    assert len(h.loop._conns) == 1
    h.later(0.2)
    answer = pending(c)
    assert answer.startswith(b"HTTP/1.1 408 ") if sent else answer == b""
