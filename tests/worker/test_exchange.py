"""``ConnExchange`` over a real socket: a whole response leaves in one send, and the end of a response
is final."""

from __future__ import annotations

import socket

import pytest

from webcluster.worker.connection import Conn
from webcluster.worker.exchange import ConnExchange
from webcluster.worker.handlers.wsgi import WSGIHandler
from webcluster.worker.http.errors import LocalProtocolError
from webcluster.worker.http.events import Request
from webcluster.worker.http.protocol import H1Connection
from webcluster.worker.transport import LoopHost, LoopSettings

pytestmark = pytest.mark.timeout(30)


class CountingSocket(socket.socket):
    """A socket that counts its ``send`` calls (one per syscall: it is non-blocking)."""

    sends = 0

    def send(self, data, flags=0):
        type(self).sends += 1
        return super().send(data, flags)


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    server = CountingSocket(a.family, a.type, a.proto, fileno=a.detach())
    server.setblocking(False)
    CountingSocket.sends = 0
    b.settimeout(5)
    yield server, b
    server.close()
    b.close()


def exchange(server: socket.socket, head: bytes) -> ConnExchange:
    settings = LoopSettings()
    host = LoopHost(settings, lambda *a: None, lambda *a: None, lambda *a: None)
    conn = Conn(server, H1Connection(settings.limits), host, ("127.0.0.1", 1), ("127.0.0.1", 2))
    conn.h1.receive_data(head)
    request = conn.h1.next_event()
    assert type(request) is Request
    host.begin_request(conn)
    return ConnExchange(conn, request)


def read_all(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        data += sock.recv(65536)
    return data


@pytest.mark.parametrize("body", [[b"hello"], (b"hello",)])
def test_a_one_chunk_wsgi_response_goes_out_in_one_send(pair, body):
    server, client = pair

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return body

    ex = exchange(server, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    WSGIHandler(app)(ex)
    assert CountingSocket.sends == 1 and ex.finished and ex.bytes_out == 5
    answer = client.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nContent-Length: 5\r\n" in answer and answer.endswith(b"\r\n\r\nhello")


def test_a_chunked_response_ends_with_its_last_chunk(pair):
    server, client = pair
    ex = exchange(server, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    ex.start_response(200, "OK", [])
    ex.finish(b"abc")
    answer = read_all(client, 1)
    assert CountingSocket.sends == 1
    assert (
        answer.endswith(b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        and b"Transfer-Encoding: chunked" in answer
    )


def test_nothing_may_follow_the_end_of_a_response(pair):
    server, _ = pair
    ex = exchange(server, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    ex.start_response(200, "OK", [("Content-Length", "2")])
    ex.finish(b"ok")
    ex.finish()  # ending twice is harmless
    with pytest.raises(LocalProtocolError):
        ex.finish(b"more")
    assert CountingSocket.sends == 1


def test_a_body_longer_than_its_content_length_commits_the_head_but_sends_nothing(pair):
    server, client = pair
    ex = exchange(server, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    ex.start_response(200, "OK", [("Content-Length", "2")])
    with pytest.raises(LocalProtocolError):
        ex.finish(b"abc")
    # as after a head sent and a write refused: the handler's error path aborts, the connection closes
    assert ex.headers_sent and ex.status == 200 and not ex.finished
    assert not ex._conn.h1.keep_alive
    assert CountingSocket.sends == 0


def test_an_informational_status_cannot_finish_a_response(pair):
    server, client = pair
    ex = exchange(server, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    ex.start_response(103, "Early Hints", [])
    with pytest.raises(LocalProtocolError):
        ex.finish(b"")
    assert not ex.headers_sent  # nothing committed: the handler's error path can still answer 500
    ex.start_response(500, "Internal Server Error", [("Content-Length", "0")])
    ex.finish()
    assert read_all(client, 1).startswith(b"HTTP/1.1 500 ")
