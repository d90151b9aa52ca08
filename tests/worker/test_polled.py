"""A connection whose request is read as it is accepted joins the epoll set only when it first waits
(``Conn.polled``, ``Loop.arm``): one answered and closed at once costs no EPOLL_CTL_ADD and no removal."""

from __future__ import annotations

import socket

import pytest

from tests.worker.test_loop_deadlines import Harness, pending
from webcluster.worker.poller import ONESHOT, READ

pytestmark = pytest.mark.timeout(30)

REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
CLOSE = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


@pytest.fixture
def harness():
    h = Harness(keepalive=5.0)
    assert h.loop.lead is not None
    h.loop.lead.active = True  # the leader serves bodiless requests inline, as under Loop.run
    yield h
    h.close()


def _record_adds(h: Harness) -> list[tuple[int, int]]:
    adds: list[tuple[int, int]] = []
    register = h.poller.register

    def recording(fd: int, events: int, obj) -> None:
        adds.append((fd, events))
        register(fd, events, obj)

    h.poller.register = recording
    return adds


def _connect_and_send(h: Harness, data: bytes) -> socket.socket:
    """A client whose request is in the server's socket before the loop accepts it."""
    c = socket.create_connection(h.lsock.getsockname())
    h.clients.append(c)
    c.sendall(data)
    return c


def test_a_request_answered_and_closed_at_accept_never_enters_the_epoll_set(harness):
    adds = _record_adds(harness)
    c = _connect_and_send(harness, CLOSE)
    harness.settle()
    assert pending(c).endswith(b"hello") and not harness.loop._conns
    assert adds == []


def test_a_keep_alive_connection_joins_the_set_when_it_first_waits(harness):
    adds = _record_adds(harness)
    c = _connect_and_send(harness, REQUEST)
    harness.settle()
    assert pending(c).endswith(b"hello")
    conn = harness.conn()
    assert conn.polled and conn.level and adds == [(conn.fd, READ)]  # one epoll_ctl, as before
    c.sendall(REQUEST)
    harness.settle()
    assert pending(c).endswith(b"hello") and adds == [(conn.fd, READ)]


def test_a_connection_with_nothing_to_read_at_accept_joins_the_set_armed(harness):
    adds = _record_adds(harness)
    c = harness.connect()
    conn = harness.conn()
    assert adds == [(conn.fd, READ | ONESHOT)]
    c.sendall(REQUEST)
    harness.settle()
    assert pending(c).endswith(b"hello")


def test_a_request_for_the_pool_joins_the_set_disarmed_before_the_thread_has_it(harness):
    adds = _record_adds(harness)
    c = _connect_and_send(harness, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
    harness.settle()
    assert pending(c).endswith(b"hello")
    conn = harness.conn()
    assert adds[0] == (conn.fd, ONESHOT)  # before the (here inline) pool ran it, which re-armed it


def test_a_pool_thread_hands_back_through_the_loop_a_connection_not_in_the_set(harness):
    # The leader serves a request read at accept inline and is deposed meanwhile: it hands the
    # connection back like a pool thread, whose direct re-arm (EPOLL_CTL_MOD) needs an entry to modify.
    c = _connect_and_send(harness, REQUEST)
    harness.settle()
    assert pending(c).endswith(b"hello")
    conn = harness.conn()
    conn.polled = False  # as if the response had been sent by a deposed leader
    assert harness.loop.rearm.from_pool(conn) is False
