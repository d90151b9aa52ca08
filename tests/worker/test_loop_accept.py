"""A new connection's first read: done in the pass that accepts it, armed only when nothing came yet.

Driven pass by pass with the harness of ``test_loop_deadlines`` (real loopback sockets, the real epoll set
polled without sleeping, a fake clock, the pool run inline on the loop's thread).
"""

from __future__ import annotations

import socket

import pytest

from tests.worker import test_loop_deadlines as deadlines
from tests.worker.test_loop_deadlines import Harness, pending
from webcluster.worker.handlers.base import Exchange
from webcluster.worker.transport import State

pytestmark = pytest.mark.timeout(30)
harness = deadlines.harness  # the same fixture: loops made by the test, closed after it

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def connect(h: Harness) -> socket.socket:
    """A client connection the loop has not accepted yet (``Harness.connect`` would run passes)."""
    c = socket.create_connection(h.lsock.getsockname())
    h.clients.append(c)
    return c


def test_a_request_sent_with_the_handshake_is_answered_in_the_pass_that_accepts_it(harness):
    h = harness()
    c = connect(h)
    c.sendall(GET)  # on loopback the bytes are in our receive queue when sendall returns
    h.loop.step()  # one pass: accept, read, parse, serve; no second epoll round for the read
    assert pending(c).endswith(b"\r\n\r\nhello")


def test_a_connection_closed_by_the_response_is_done_in_that_pass(harness):
    h = harness()
    c = connect(h)
    c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    h.loop.step()
    assert pending(c).endswith(b"\r\n\r\nhello")
    h.loop.step()  # the hand-back (this harness's pool runs the request inline, then hands it back)
    assert pending(c) == b"" and not h.loop._conns


def test_a_client_that_connects_and_waits_is_read_when_its_request_comes(harness):
    h = harness()
    c = connect(h)
    h.loop.step()  # accepted; nothing to read yet, so the fd is armed for the request
    assert h.conn().state is State.READING and h.conn().idle and pending(c) is None
    h.settle()
    assert pending(c) is None
    c.sendall(GET)
    h.loop.step()
    assert pending(c).endswith(b"\r\n\r\nhello")


def test_a_head_begun_with_the_handshake_is_finished_by_later_reads(harness):
    h = harness(header_timeout=10.0)
    c = connect(h)
    c.sendall(GET[:10])
    h.loop.step()
    assert h.conn().state is State.READING and not h.conn().idle
    c.sendall(GET[10:])
    h.loop.step()
    assert pending(c).endswith(b"\r\n\r\nhello")


def test_a_request_given_to_a_thread_from_the_first_read_raises_no_event_while_it_runs(harness):
    # The fd is registered disarmed before the first read, so a request that goes to a pool thread from
    # there is, as after any other read, invisible to epoll until the thread hands it back: the loop can
    # never race the thread for the bytes of the next request.
    seen: list[list] = []

    def handler(ex: Exchange) -> None:
        if ex.request.target == "/first":
            client.sendall(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
            seen.append([fd for fd, _ in h.poller._epoll.poll(0)])
        ex.start_response(200, "OK", [("Content-Length", str(len(ex.request.target)))])
        ex.write(ex.request.target.encode())

    # No serving on the loop's thread: every request goes to the pool.
    h = harness(inline_budget=0.0)
    h.loop.runner.handler = handler
    client = connect(h)
    client.sendall(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
    h.loop.step()
    assert len(seen) == 1 and h.conn().fd not in seen[0]
    h.settle()
    answers = pending(client)
    first, second = answers.split(b"HTTP/1.1 200 OK\r\n")[1:]
    assert first.endswith(b"\r\n\r\n/first") and second.endswith(b"\r\n\r\n/next")
