"""A real worker process: idle connections and slow clients must not consume its thread pool.

The capacity checks: 2,000 idle keep-alive connections against one worker with 4 threads, and slow
clients dribbling their heads one byte per 100 ms on more connections than there are threads, while a
normal client is still answered promptly.
"""

from __future__ import annotations

import resource
import socket
import threading
import time

import psutil
import pytest

pytestmark = pytest.mark.timeout(120)

REQUEST = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"


def _raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))


def _read_one_response(sock: socket.socket) -> bytes:
    """Read one response whose body has a Content-Length (the welcome page/static file does)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-body")
        body += chunk
    return head.split(b"\r\n", 1)[0]


def _timed_request(port: int) -> tuple[bytes, float]:
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(REQUEST)
        status = _read_one_response(c)
    return status, time.monotonic() - t0


def _worker_threads(sup) -> int:
    (pid,) = sup.worker_pids()
    return psutil.Process(pid).num_threads()


def test_2000_idle_keepalive_connections_cost_no_threads(run_supervisor):
    _raise_nofile(4096)
    sup = run_supervisor("--procs", "1", "--threads", "4", "--keepalive", "120")
    threads_before = _worker_threads(sup)
    conns = []
    try:
        for _ in range(2000):
            c = socket.create_connection(("127.0.0.1", sup.port), timeout=10)
            c.sendall(REQUEST)
            assert _read_one_response(c).startswith(b"HTTP/1.1 200")
            conns.append(c)  # now idle, keep-alive, waiting in the worker's poller
        status, elapsed = _timed_request(sup.port)
        assert status.startswith(b"HTTP/1.1 200")
        assert elapsed < 1.0, f"fresh client waited {elapsed:.2f}s behind 2000 idle connections"
        # pool threads start on demand, never more than --threads (4): none for an idle connection
        assert _worker_threads(sup) <= threads_before + 4
        # every idle connection is still open and still usable
        for c in conns[::100]:
            c.sendall(REQUEST)
            assert _read_one_response(c).startswith(b"HTTP/1.1 200")
    finally:
        for c in conns:
            c.close()


def test_slow_clients_dribbling_heads_do_not_starve_the_pool(run_supervisor):
    threads = 4
    sup = run_supervisor("--procs", "1", "--threads", str(threads), "--header-timeout", "30")
    stop = threading.Event()
    slow_socks = [
        socket.create_connection(("127.0.0.1", sup.port), timeout=10) for _ in range(threads * 3)
    ]

    def dribble() -> None:
        # one byte per 100 ms on every slow connection, round robin, never finishing the head
        payload = b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 1000
        i = 0
        while not stop.is_set() and i < len(payload):
            for s in slow_socks:
                s.sendall(payload[i : i + 1])
            i += 1
            stop.wait(0.1)

    t = threading.Thread(target=dribble, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 3.0
        times = []
        while time.monotonic() < deadline:
            status, elapsed = _timed_request(sup.port)
            assert status.startswith(b"HTTP/1.1 200")
            times.append(elapsed)
        assert times and max(times) < 1.0, f"normal requests slowed to {max(times):.2f}s"
        # the slow connections are all still open (no thread was needed to hold them)
        for s in slow_socks:
            s.setblocking(False)
            with pytest.raises(BlockingIOError):
                s.recv(1)
    finally:
        stop.set()
        t.join(5)
        for s in slow_socks:
            s.close()
