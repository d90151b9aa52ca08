"""A pool thread re-arms an idle keep-alive connection itself (worker.rearm): the loop is not woken for
it, the keep-alive timeout still counts from the response, and anything else goes back to the loop."""

from __future__ import annotations

import time

import pytest

from tests.conftest import poll
from tests.support import is_closed, read_response, serve
from webcluster.worker.handlers.base import Exchange

pytestmark = pytest.mark.timeout(30)

REQUEST = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"


def hello(ex: Exchange) -> None:
    ex.start_response(200, "OK", [("Content-Length", "5")])
    ex.write(b"hello")


def _count_resumes(srv) -> list[bool]:
    seen: list[bool] = []
    resume = srv.loop.resume

    def counting(conn, close):
        seen.append(close)
        resume(conn, close)

    srv.loop.host._resume = counting
    return seen


def test_keep_alive_responses_are_re_armed_by_the_pool_thread() -> None:
    with serve(hello, inline_budget=0, keepalive=5.0) as srv:
        resumes = _count_resumes(srv)
        c = srv.connect()
        for _ in range(50):
            c.sendall(REQUEST)
            assert read_response(c)[0] == 200
        c.sendall(REQUEST * 3)  # pipelined: served in order whatever path each took
        assert [read_response(c)[2] for _ in range(3)] == [b"hello"] * 3
        assert resumes == []  # the loop was never handed a connection back
        c.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert read_response(c)[0] == 200
        assert is_closed(c)


def test_keep_alive_timeout_counts_from_the_response_after_a_re_arm() -> None:
    with serve(hello, inline_budget=0, keepalive=1.0) as srv:
        resumes = _count_resumes(srv)
        c = srv.connect()
        c.sendall(REQUEST)
        assert read_response(c)[0] == 200
        answered = time.monotonic()
        c.settimeout(5)
        assert c.recv(1) == b""  # closed by the server's keep-alive timer
        idle = time.monotonic() - answered
        assert resumes == []
        assert 0.9 <= idle < 2.5, idle


def test_short_keep_alive_timeouts_go_through_the_loop() -> None:
    with serve(hello, inline_budget=0, keepalive=0.5) as srv:
        resumes = _count_resumes(srv)
        c = srv.connect()
        for _ in range(3):
            c.sendall(REQUEST)
            assert read_response(c)[0] == 200
        # the thread hands the connection back after the response is sent: the client may read it first
        poll("the third hand-back", lambda: len(resumes) == 3)
        assert resumes == [False, False, False]
        c.settimeout(5)
        assert c.recv(1) == b""
