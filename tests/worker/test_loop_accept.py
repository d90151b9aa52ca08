"""A new connection's first read: done in the pass that accepts it, armed only when nothing came yet; with
--defer-accept the kernel hands us a connection only once its first bytes are here.

Driven pass by pass with the harness of ``test_loop_deadlines`` (real loopback sockets, the real epoll set
polled without sleeping, a fake clock, the pool run inline on the loop's thread).
"""

from __future__ import annotations

import socket
import time

import pytest

from tests.conftest import poll
from tests.worker import test_loop_deadlines as deadlines
from tests.worker.test_loop_deadlines import Harness, pending
from webcluster.worker.acceptor import Listener
from webcluster.worker.handlers.base import Exchange
from webcluster.worker.handlers.forwarded import ForwardedPolicy
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


def test_with_defer_accept_a_connection_comes_with_its_first_bytes_and_is_served_at_once(harness):
    h = harness(defer_accept=1)
    c = connect(h)  # connected, as the client sees it
    h.settle()  # passes without sleeping, well inside the kernel's one-second hold
    # Held by the kernel: no fd, no epoll entry, no timer of ours
    assert not h.loop._conns and pending(c) is None
    c.sendall(GET)
    h.loop.step()  # one pass: accept, read, parse, serve
    assert pending(c).endswith(b"\r\n\r\nhello")
    # Kept alive: it joined the epoll set only now, to wait for the next request
    assert h.conn().polled


def test_with_defer_accept_a_silent_connection_is_accepted_late_then_timed_out(harness):
    h = harness(defer_accept=1, header_timeout=10.0)
    c = connect(h)
    started = time.monotonic()

    def accepted() -> bool:
        h.loop.step()
        return bool(h.loop._conns)

    poll("the kernel hands over the silent connection", accepted, timeout=10.0, interval=0.02)
    assert time.monotonic() - started >= 0.9  # not before the second is over (Linux: about 1.0 s)
    assert h.conn().state is State.READING and h.conn().idle
    h.later(9.9)
    assert pending(c) is None  # its --header-timeout started at the accept
    h.later(0.2)
    assert pending(c) == b"" and not h.loop._conns  # closed; a client that sent nothing gets no 408


@pytest.mark.parametrize("seconds", [0, 1, 30])
def test_defer_accept_is_set_on_each_tcp_listener_and_0_clears_it(seconds):
    # Every worker sets it, 0 included: the supervisor keeps the sockets over a reload that may change it.
    with socket.create_server(("127.0.0.1", 0)) as sock:
        # What an earlier generation set
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 5)
        Listener(sock, seconds)
        # The kernel keeps a count of SYN-ACK retransmissions and reports their span back: at least ours
        got = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT)
        assert (got == 0) if seconds == 0 else got >= seconds


def test_defer_accept_leaves_a_unix_listener_alone(tmp_path):
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "s"))
        sock.listen(1)
        assert Listener(sock, 1).tcp is False


def quick_acks(sock: socket.socket) -> bool:
    """Whether the kernel ACKs this socket's incoming segments at once (Linux reports TCP_QUICKACK as
    "not in delayed-ACK (ping-pong) mode")."""
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK))


def test_tcp_listeners_start_connections_with_delayed_acks():
    with socket.create_server(("127.0.0.1", 0)) as sock:
        assert quick_acks(sock)  # the kernel's default
        Listener(sock, 0)
        assert not quick_acks(sock)
        with socket.create_connection(sock.getsockname()) as c:
            c.sendall(GET)
            accepted, _ = sock.accept()
            with accepted:  # inherited: a complete request's ACK waits to ride with the response
                assert not quick_acks(accepted)


class AckModes:
    """Records, while it answers, whether its connection's socket ACKs at once."""

    def __init__(self) -> None:
        self.h: Harness | None = None
        self.seen: list[bool] = []

    def __call__(self, ex: Exchange) -> None:
        self.seen.append(quick_acks(self.h.conn().sock))
        ex.start_response(200, "OK", [("Content-Length", "2")])
        ex.finish(b"ok", True)


@pytest.mark.parametrize(
    "first, rest, quick",
    [
        (GET, b"", False),  # the whole request came with the connection
        (GET[:10], GET[10:], True),  # the rest of the head is to come
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody", b"", False),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbo", b"dy", True),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", b"0\r\n\r\n", True),
    ],
)
def test_a_connection_waited_on_for_more_of_its_request_acks_at_once(harness, first, rest, quick):
    """HAProxy's rule: delayed ACKs only while the whole request is known to be here. A client with
    Nagle on holds its next small segment until the last one is ACKed, so the loop turns quick ACKs
    back on (``Conn.want_more``) when it waits for more of a head or a body."""
    app = AckModes()
    h = app.h = harness(handler=app)
    c = connect(h)
    c.sendall(first)
    h.loop.step()
    if rest:
        assert app.seen == [] and quick_acks(h.conn().sock) is quick
        # Nagle is on for this client: with our ACK delayed, this would stay in its send queue (~40 ms)
        c.sendall(rest)
        h.loop.step()  # so one pass, at once, gets it
    assert app.seen == [quick]
    assert pending(c).endswith(b"\r\n\r\nok")


def test_a_proxy_header_and_request_in_one_segment_are_served_at_accept(harness):
    h = harness(proxy_trust=ForwardedPolicy(("127.0.0.1",)))
    c = connect(h)
    c.sendall(b"PROXY TCP4 198.18.0.7 127.0.0.1 40000 80\r\n" + GET)
    h.loop.step()  # one pass: accept, the header, the request, served
    assert pending(c).endswith(b"\r\n\r\nhello")
    assert h.conn().remote == ("198.18.0.7", 40000)


def test_a_proxy_header_still_to_come_at_accept_is_waited_for_armed(harness):
    h = harness(proxy_trust=ForwardedPolicy(("127.0.0.1",)), defer_accept=0)
    c = connect(h)
    h.loop.step()  # accepted before the header: its first step finds nothing and arms the fd
    assert h.conn().state is State.PROXY_HEADER and h.conn().polled and pending(c) is None
    c.sendall(b"PROXY TCP4 198.18.0.7 127.0.0.1 40000 80\r\n" + GET)
    h.loop.step()
    assert pending(c).endswith(b"\r\n\r\nhello")


def test_a_head_begun_with_the_handshake_is_finished_by_later_reads(harness):
    # The client has Nagle on: its second segment goes out at once only because the first was ACKed at
    # once (``Conn.want_more``; test_a_connection_waited_on_for_more_of_its_request_acks_at_once)
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
