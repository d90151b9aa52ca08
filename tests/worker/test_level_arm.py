"""An idle keep-alive connection whose requests the loop serves itself stays armed (level-triggered, not
EPOLLONESHOT: ``Loop._after_flush``), so each next request costs no epoll_ctl; it is disarmed before a
pool thread or a deposed leader holds it, so the loop never sees its events meanwhile."""

from __future__ import annotations

import threading

import pytest

from tests.conftest import poll
from tests.support import read_response, serve
from webcluster.worker.handlers.base import Exchange
from webcluster.worker.poller import READ

pytestmark = pytest.mark.timeout(30)

GET = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
POST = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"


class App:
    """Answers with the thread that ran it; ``/block`` waits for ``release``."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def __call__(self, ex: Exchange) -> None:
        if ex.request.target == "/block":
            self.release.wait(20)
        elif ex.request.method == "POST":
            ex.body.read()
        body = threading.current_thread().name.encode()
        ex.start_response(200, "OK", [("Content-Length", str(len(body)))])
        ex.write(body)


def _count_modify(srv) -> list[tuple[int, int]]:
    """Every EPOLL_CTL_MOD the worker makes from now on, as (fd, events), and every EPOLL_CTL_ADD: a
    connection whose request was read at accept joins the epoll set when it first waits."""
    calls: list[tuple[int, int]] = []
    poller = srv.loop.poller
    modify, register = poller.modify, poller.register

    def counting(fd: int, events: int) -> None:
        calls.append((fd, events))
        modify(fd, events)

    def counting_add(fd: int, events: int, obj) -> None:
        calls.append((fd, events))
        register(fd, events, obj)

    poller.modify, poller.register = counting, counting_add
    return calls


def _conn_of(srv):
    (conn,) = srv.loop._conns.values()
    return conn


def test_keep_alive_requests_served_inline_cost_one_epoll_ctl_in_all():
    with serve(App(), threads=2, inline_budget=0.5) as srv:
        calls = _count_modify(srv)
        c = srv.connect()
        for _ in range(20):
            c.sendall(GET)
            status, _, body = read_response(c)
            assert status == 200 and body.startswith(b"webcluster-loop-")
        conn = _conn_of(srv)
        poll("level-armed", lambda: conn.level)  # the loop arms it just after sending the response
        assert [call for call in calls if call[0] == conn.fd] == [(conn.fd, READ)]  # the first only


def test_a_request_for_the_pool_is_disarmed_first_and_the_next_inline_one_re_armed():
    with serve(App(), threads=2, inline_budget=0.5) as srv:
        c = srv.connect()
        c.sendall(GET)
        assert read_response(c)[2].startswith(b"webcluster-loop-")
        conn = _conn_of(srv)
        poll("level-armed", lambda: conn.level)
        c.sendall(POST)  # a body: the pool
        assert read_response(c)[2].startswith(b"webcluster-worker")
        # the thread re-armed it one-shot (worker.rearm): the loop never saw it level-armed meanwhile
        assert not conn.level
        for _ in range(3):
            c.sendall(GET)
            assert read_response(c)[2].startswith(b"webcluster-loop-")
        poll("level-armed again", lambda: conn.level)


def test_a_deposed_request_is_disarmed_so_the_next_leader_sees_no_event_for_it():
    """Bytes a client sends behind a request that blocked on the poller's thread raise no event while
    it blocks (a level-armed fd would report them at every pass of the next leader), and are served
    in order once it ends."""
    app = App()
    with serve(app, threads=2, inline_budget=0.002) as srv:
        blocked = srv.connect()
        blocked.sendall(GET)
        read_response(blocked)
        conn = _conn_of(srv)
        poll("level-armed", lambda: conn.level)
        fd = conn.fd
        seen: list[int] = []
        handle = srv.loop.handle

        def counting(events, first=None):
            seen.extend(1 for obj, _ in events if getattr(obj, "fd", None) == fd)
            handle(events, first)

        srv.loop.handle = counting
        blocked.sendall(b"GET /block HTTP/1.1\r\nHost: t\r\n\r\n")
        poll("the poller to move", lambda: srv.loop.lead.depositions == 1, 5)
        assert not conn.level
        seen.clear()  # the event that brought the blocked request
        blocked.sendall(GET)  # pipelined behind the blocked request
        for _ in range(5):  # the next leader makes passes meanwhile (back-off: the pool)
            other = srv.connect()
            other.sendall(GET)
            assert read_response(other)[0] == 200
            other.close()
        assert seen == []
        app.release.set()
        assert read_response(blocked)[2] == b"webcluster-loop-0"
        assert read_response(blocked)[0] == 200
