"""Slow and hostile clients: what each timeout bounds, and slowhttptest against a real server.

In-process (the real Loop + ThreadPool over loopback, tests.support.serve): a slow body is read by the
loop, not a pool thread (also when pipelined), and ends in 408 at --body-timeout or --body-min-rate; a
slow reader holds a thread for at most --send-timeout per output window; a request that announces
``Expect: 100-continue`` is bounded by --body-min-rate in its thread.

System (supervisor.py in a subprocess, tests.conftest.run_supervisor): slowhttptest in slow-headers (-H),
slow-body (-B) and slow-read (-X) modes, 1,000 attacking connections each, while a client thread measures
normal requests (every one answered, p99 < 1 s) and /stats shows the attack connections being closed.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from tests.support import is_closed, read_response, serve, wait_for
from worker.handlers.base import Exchange


def echo_length(ex: Exchange) -> None:
    body = str(len(ex.body.read())).encode()
    ex.start_response(200, "OK", [("Content-Length", str(len(body)))])
    ex.write(body)


def post(length: int, extra: bytes = b"") -> bytes:
    return b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n" % (length, extra)


def trickle_until_answer(c: socket.socket, piece: bytes, every: float, limit: float) -> int | None:
    """Send ``piece`` every ``every`` seconds until the server answers; its status (None: no answer)."""
    c.settimeout(every)
    start = time.monotonic()
    while time.monotonic() - start < limit:
        try:
            c.sendall(piece)
            head = c.recv(64)
        except TimeoutError:
            continue
        except OSError:
            return None
        return int(head.split()[1]) if head else None
    return None


# ---- in-process ----------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_slow_bodies_wait_in_the_loop_not_in_threads_and_get_408():
    with serve(echo_length, threads=2, body_timeout=1.0) as srv:
        slow = []
        for _ in range(10):  # five times more slow bodies than threads
            c = srv.connect()
            c.sendall(post(1000) + b"x" * 10)
            slow.append(c)
        fresh = srv.connect()
        fresh.sendall(post(5) + b"hello")
        assert read_response(fresh)[2] == b"5"  # answered at once: no thread is waiting on a body
        assert srv.pool.busy == 0
        for c in slow:
            status, headers, _ = read_response(c)
            assert status == 408 and headers["connection"] == "close"
            assert is_closed(c)


@pytest.mark.timeout(30)
def test_body_min_rate_cuts_a_trickle_that_the_body_timeout_would_not():
    with serve(echo_length, body_timeout=10.0, body_min_rate=1000) as srv:
        c = srv.connect()
        c.sendall(post(100_000))
        start = time.monotonic()
        # 250 B/s, each gap far below the 10 s body timeout
        assert trickle_until_answer(c, b"x" * 50, 0.2, 8) == 408
        assert 1.0 <= time.monotonic() - start < 5.0


@pytest.mark.timeout(30)
def test_a_fast_body_passes_the_min_rate_and_a_large_one_is_finished_by_a_thread():
    with serve(echo_length, body_min_rate=1000, body_timeout=5.0) as srv:
        size = 3 * 65536 + 7  # above the loop's pre-read budget: a thread reads the rest
        c = srv.connect()
        c.sendall(post(size))
        for i in range(0, size, 50_000):
            c.sendall(b"y" * min(50_000, size - i))
        assert read_response(c)[2] == str(size).encode()
        c.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        )
        assert read_response(c)[2] == b"3"


@pytest.mark.timeout(30)
def test_a_pipelined_slow_body_goes_back_to_the_loop():
    with serve(echo_length, threads=1, body_timeout=3.0) as srv:
        c = srv.connect()
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + post(100) + b"abc")
        assert read_response(c)[0] == 200
        start = time.monotonic()
        other = srv.connect()
        other.sendall(post(2) + b"ok")
        assert read_response(other)[2] == b"2"  # the only thread is free while that body trickles
        assert time.monotonic() - start < 1.5
        assert read_response(c)[0] == 408


@pytest.mark.timeout(30)
def test_expect_continue_body_is_bounded_by_the_min_rate_in_its_thread():
    with serve(echo_length, threads=1, body_timeout=10.0, body_min_rate=1000) as srv:
        c = srv.connect()
        c.sendall(post(100_000, b"Expect: 100-continue\r\n"))
        assert c.recv(64) == b"HTTP/1.1 100 Continue\r\n\r\n"
        start = time.monotonic()
        assert trickle_until_answer(c, b"z" * 20, 0.3, 8) == 408
        assert time.monotonic() - start < 5.0
        assert wait_for(lambda: srv.pool.busy == 0)


@pytest.mark.timeout(30)
def test_a_slow_reader_holds_a_thread_for_at_most_the_send_timeout():
    big = b"x" * (16 << 20)

    def huge(ex: Exchange) -> None:
        ex.start_response(200, "OK", [("Content-Length", str(len(big)))])
        for i in range(0, len(big), 65536):
            ex.write(big[i : i + 65536])

    with serve(huge, send_timeout=1.0) as srv:
        c = srv.connect()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert wait_for(lambda: srv.pool.busy == 1, 5)
        stop = threading.Event()

        def trickle() -> None:  # 4 KiB every 0.2 s: steady progress, but 16 MiB would take 800 s
            while not stop.is_set():
                try:
                    if not c.recv(4096):
                        return
                except OSError:
                    return
                stop.wait(0.2)

        reader = threading.Thread(target=trickle, daemon=True)
        reader.start()
        try:
            start = time.monotonic()
            assert wait_for(lambda: srv.pool.busy == 0, 10)
            assert time.monotonic() - start < 6.0
        finally:
            stop.set()
            reader.join(5)
