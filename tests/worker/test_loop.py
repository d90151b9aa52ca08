"""The worker's loop + pool + exchange in-process, over real loopback sockets.

These check the concurrency model (idle and half-read connections hold no thread, pipelining, timeouts,
backpressure, graceful stop) with tiny handlers, so they stay fast and need no forked process.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from tests.conftest import poll
from tests.support import is_closed, read_response, serve
from webcluster.worker.handlers.base import Exchange

pytestmark = pytest.mark.timeout(30)


def hello(ex: Exchange) -> None:
    body = b"hello " + ex.request.target.encode()
    ex.start_response(
        200, "OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
    )
    ex.write(body)


def echo(ex: Exchange) -> None:
    data = ex.body.read()
    ex.start_response(200, "OK", [("Content-Length", str(len(data)))])
    ex.write(data)


def streaming(ex: Exchange) -> None:
    ex.start_response(200, "OK", [("Content-Type", "text/plain")])
    for i in range(3):
        ex.write(b"part%d;" % i)


def test_keep_alive_serves_many_requests_on_one_connection():
    with serve(hello) as srv:
        c = srv.connect()
        for i in range(5):
            c.sendall(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
            status, headers, body = read_response(c)
            assert (status, body) == (200, b"hello /%d" % i)
            assert "date" in headers and headers["server"] == "webcluster"


def test_pipelined_requests_are_answered_in_order():
    with serve(hello) as srv:
        c = srv.connect()
        c.sendall(b"".join(b"GET /p%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(10)))
        f_bodies = [read_response(c)[2] for _ in range(10)]
        assert f_bodies == [b"hello /p%d" % i for i in range(10)]


def test_streamed_response_is_chunked_on_http11_and_close_delimited_on_http10():
    with serve(streaming) as srv:
        c = srv.connect()
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = read_response(c)
        assert headers["transfer-encoding"] == "chunked" and body == b"part0;part1;part2;"
        c2 = srv.connect()
        c2.sendall(b"GET / HTTP/1.0\r\n\r\n")
        status, headers, body = read_response(c2)
        assert body == b"part0;part1;part2;" and "transfer-encoding" not in headers
        assert is_closed(c2)


def test_chunked_request_body_is_decoded_for_the_app():
    with serve(echo) as srv:
        c = srv.connect()
        c.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n"
        )
        assert read_response(c)[2] == b"hello world"
        c.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
        assert read_response(c)[2] == b"abc"


def test_expect_100_continue_is_sent_only_when_the_app_reads():
    with serve(echo) as srv:
        c = srv.connect()
        c.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        )
        assert c.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        c.sendall(b"data")
        assert read_response(c)[2] == b"data"
    with serve(hello) as srv:  # hello never reads: no 100, a final answer, then close
        c = srv.connect()
        c.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        )
        status, headers, _ = read_response(c)
        assert status == 200 and headers.get("connection") == "close"


def test_unread_body_is_discarded_and_keep_alive_continues():
    with serve(hello) as srv:
        c = srv.connect()
        c.sendall(
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nxxxxxGET /b HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        assert read_response(c)[2] == b"hello /a"
        assert read_response(c)[2] == b"hello /b"


def test_bad_request_gets_400_and_a_closed_connection_and_others_are_served():
    with serve(hello) as srv:
        bad = srv.connect()
        bad.sendall(
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        status, headers, _ = read_response(bad)
        assert status == 400 and headers["connection"] == "close"
        assert is_closed(bad)
        good = srv.connect()
        good.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(good)[0] == 200


def test_handler_exception_becomes_500_and_the_worker_keeps_serving():
    def boom(ex: Exchange) -> None:
        if ex.request.target == "/boom":
            raise RuntimeError("app bug")
        hello(ex)

    with serve(boom) as srv:
        c = srv.connect()
        c.sendall(b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(c)[0] == 500
        c.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(c)[0] == 200


def test_idle_keep_alive_connection_is_closed_after_the_timeout():
    with serve(hello, keepalive=0.3) as srv:
        c = srv.connect()
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(c)[0] == 200
        t0 = time.monotonic()
        assert is_closed(c, timeout=5)
        assert 0.2 <= time.monotonic() - t0 < 3


def test_half_sent_head_gets_408_after_the_header_timeout():
    with serve(hello, header_timeout=0.3) as srv:
        c = srv.connect()
        c.sendall(b"GET / HTTP/1.1\r\nHost:")
        status, headers, _ = read_response(c)
        assert status == 408 and headers["connection"] == "close"
        assert is_closed(c)


def test_keepalive_requests_limit_closes_after_the_last_request():
    with serve(hello, keepalive_requests=2) as srv:
        c = srv.connect()
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert "connection" not in read_response(c)[1]
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(c)[1]["connection"] == "close"
        assert is_closed(c)


def test_idle_and_half_read_connections_hold_no_thread():
    with serve(hello, threads=2) as srv:
        idle = []
        for _ in range(50):
            c = srv.connect()
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            read_response(c)
            idle.append(c)
        slow = []
        for _ in range(20):  # more half-heads than threads
            c = srv.connect()
            c.sendall(b"GET / HTTP/1.1\r\nHo")
            slow.append(c)
        fresh = srv.connect()
        fresh.sendall(b"GET /fresh HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(fresh)[2] == b"hello /fresh"
        poll("srv.pool.busy == 0", lambda: srv.pool.busy == 0, 5.0)
        gauges = srv.loop.gauges()
        assert gauges["idle_connections"] >= 50  # the keep-alive ones, waiting in the poller
        assert gauges["active_connections"] + gauges["idle_connections"] >= 71
        assert gauges["threads"] == 2


def test_max_connections_pauses_accepting_until_a_slot_frees():
    with serve(hello, max_connections=3) as srv:
        held = [srv.connect() for _ in range(3)]
        for c in held:
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            read_response(c)
        extra = srv.connect()  # completes the TCP handshake in the kernel backlog
        extra.sendall(b"GET /extra HTTP/1.1\r\nHost: x\r\n\r\n")
        extra.settimeout(0.5)
        with pytest.raises(TimeoutError):
            extra.recv(1)
        g = srv.loop.gauges()
        assert g["active_connections"] + g["idle_connections"] == 3
        held[0].close()
        extra.settimeout(5)
        assert read_response(extra)[2] == b"hello /extra"


@pytest.mark.parametrize("inline_budget", [0.0, 0.002], ids=["pool", "inline"])
def test_graceful_stop_finishes_in_flight_and_says_connection_close(inline_budget):
    gate = threading.Event()

    def slow(ex: Exchange) -> None:
        gate.wait(5)
        hello(ex)

    with serve(slow, graceful_timeout=5, inline_budget=inline_budget) as srv:
        c = srv.connect()
        c.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        poll("a request running", lambda: srv.busy == 1, 5.0)
        srv.loop.stop(graceful=True)
        poll("srv.loop.stopping", lambda: srv.loop.stopping, 5.0)
        gate.set()
        status, headers, body = read_response(c)
        assert status == 200 and headers["connection"] == "close"
        assert is_closed(c)


@pytest.mark.parametrize("inline_budget", [0.0, 0.002], ids=["pool", "inline"])
def test_client_that_stops_reading_is_dropped_after_send_timeout(inline_budget):
    big = b"x" * (8 * 1024 * 1024)

    def huge(ex: Exchange) -> None:
        ex.start_response(200, "OK", [("Content-Length", str(len(big)))])
        ex.write(big)

    with serve(huge, send_timeout=0.5, inline_budget=inline_budget) as srv:
        c = srv.connect()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        # we never read: the server must give up and free its thread
        poll("the request running", lambda: srv.busy == 1, 5)
        poll("no request running", lambda: srv.busy == 0, 10)
        poll(
            "srv.loop.gauges()['active_connections'] == 0",
            lambda: srv.loop.gauges()["active_connections"] == 0,
            5,
        )
        assert srv.loop.gauges()["idle_connections"] == 0


def test_accepted_sockets_inherit_tcp_nodelay_from_the_listener():
    # Without TCP_NODELAY a response split in two writes waits for the client's delayed ACK (~40 ms).
    with serve(hello) as srv:
        c = srv.connect()
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        read_response(c)
        (conn,) = list(srv.loop._conns.values())
        assert conn.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert conn.local == ("127.0.0.1", srv.port)


def test_keep_alive_timer_waits_for_a_slow_reader_still_reading_its_response():
    # The idle timer starts once the response is in the kernel; a client still reading it must not
    # find its connection closed when it sends the next request.
    big = b"y" * (4 * 1024 * 1024)

    def huge(ex: Exchange) -> None:
        ex.start_response(200, "OK", [("Content-Length", str(len(big)))])
        ex.write(big)

    with serve(huge, keepalive=0.3) as srv:
        c = socket.socket()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        c.connect(("127.0.0.1", srv.port))
        c.settimeout(10)
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += c.recv(1024)
        received = len(head) - head.index(b"\r\n\r\n") - 4
        t0 = time.monotonic()
        while received < len(big):  # pace the reader so reading takes several idle periods
            data = c.recv(32 * 1024)
            assert data, "closed while the client was still reading"
            received += len(data)
            time.sleep(0.005)
        assert time.monotonic() - t0 > 0.6  # longer than two keep-alive periods
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.recv(12) == b"HTTP/1.1 200"
