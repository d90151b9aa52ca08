"""A response that ends its connection and is served on the loop thread leaves with the FIN: its last bytes
are sent with MSG_MORE, the kernel keeps them until the close that follows at once, and tacks the FIN onto
that segment (``OutputQueue.send``/``write_some``, ``on_loop``). A pool thread's closing response, and any
response that does not end the connection, goes out at once. Over real loopback TCP sockets."""

from __future__ import annotations

import socket

import pytest

from tests.worker.test_held import _harness, made  # noqa: F401 (a fixture)
from tests.worker.test_loop_deadlines import pending
from webcluster.worker.handlers.base import Exchange
from webcluster.worker.outqueue import OutputQueue

pytestmark = pytest.mark.timeout(30)

CLOSE = b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


class Seeing:
    """Answers as a whole response nothing runs after (``finish(body, hold=True)``), then records what
    its one client has received at that moment (None: nothing yet)."""

    def __init__(self) -> None:
        self.client: socket.socket | None = None
        self.seen: list[bytes | None] = []

    def __call__(self, ex: Exchange) -> None:
        ex.start_response(200, "OK", [("Content-Length", "2")])
        ex.finish(b"ok", True)
        self.seen.append(pending(self.client))


def read_to_eof(c: socket.socket) -> bytes:
    c.settimeout(5)
    got = bytearray()
    while data := c.recv(65536):
        got += data
    return bytes(got)


def test_a_closing_response_served_on_the_loop_waits_for_its_fin_and_arrives_with_it(made):  # noqa: F811
    app = Seeing()
    h = _harness(made, app)  # the leader serves bodiless requests inline
    app.client = c = h.connect()
    c.sendall(CLOSE)
    h.loop.step()  # a lone event: nothing is held, the response is sent, then the loop closes
    assert app.seen == [None]  # the kernel kept it for the FIN
    got = read_to_eof(c)
    assert got.startswith(b"HTTP/1.1 200 OK\r\n") and got.endswith(b"\r\n\r\nok")
    assert b"connection: close" in got.lower()
    assert not h.loop._conns


def test_a_keep_alive_response_on_the_loop_goes_out_at_once(made):  # noqa: F811
    app = Seeing()
    h = _harness(made, app)
    app.client = c = h.connect()
    c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    h.loop.step()
    assert app.seen[0] is not None and app.seen[0].endswith(b"\r\n\r\nok")
    assert len(h.loop._conns) == 1


def test_a_closing_response_from_a_pool_thread_goes_out_at_once(made):  # noqa: F811
    """Its close waits for the hand-back to the loop, which may take a poll pass: no MSG_MORE."""
    app = Seeing()
    h = _harness(made, app)
    h.loop.lead.active = False  # every request goes to the pool (the harness's runs it at once)
    app.client = c = h.connect()
    c.sendall(CLOSE)
    h.loop.step()
    assert app.seen[0] is not None and app.seen[0].endswith(b"\r\n\r\nok")
    h.settle()  # the hand-back, then the close
    assert read_to_eof(c) == b""
    assert not h.loop._conns


@pytest.fixture
def tcp_pair():
    lsock = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(lsock.getsockname())
    server, _ = lsock.accept()
    lsock.close()
    server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as the worker's accepted sockets
    server.setblocking(False)
    yield server, client
    server.close()
    client.close()


def test_write_some_keeps_the_last_bytes_for_the_fin_only_when_told(tcp_pair):
    server, client = tcp_pair
    out = OutputQueue(server, 5.0, lambda: 0.0)
    out.buf += b"a" * 100
    assert out.write_some()  # the connection stays: at once
    assert pending(client) == b"a" * 100
    out.buf += b"b" * 100
    assert out.write_some(ends=True)  # the loop closes next: kept for the FIN
    assert pending(client) is None
    server.close()
    assert read_to_eof(client) == b"b" * 100


def test_send_keeps_a_closing_response_only_on_the_loop(tcp_pair):
    server, client = tcp_pair
    out = OutputQueue(server, 5.0, lambda: 0.0)
    out.send(b"pool", hold=True, ends=True)  # not on_loop: a pool thread's
    assert pending(client) == b"pool"
    out.on_loop = True
    out.send(b"kept", hold=False, ends=True)  # more of the application may run: at once
    assert pending(client) == b"kept"
    out.send(b"last", hold=True, ends=True)
    assert pending(client) is None
    server.shutdown(socket.SHUT_WR)  # a lingering close's half-close pushes it with the FIN as well
    assert read_to_eof(client) == b"last"
