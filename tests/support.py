"""Shared helpers for in-process server tests: a real Loop + ThreadPool on a loopback socket.

``serve(handler, threads=4, host="127.0.0.1", **LoopSettings overrides)`` runs the worker's loop in a thread
(listening on ``host``, port 0) and yields a ``Server``; ``read_response`` is a small strict client-side reader.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

from webcluster.worker.handlers.base import Exchange
from webcluster.worker.loop import Loop, LoopSettings
from webcluster.worker.runner import Runner
from webcluster.worker.stats import WorkerStats
from webcluster.worker.threadpool import ThreadPool
from webcluster.worker.watchdog import PoolWatch


class Server:
    def __init__(self, loop: Loop, sock: socket.socket, pool: ThreadPool) -> None:
        self.loop = loop
        self.sock = sock
        self.pool = pool
        self.host, self.port = sock.getsockname()[:2]

    def connect(self) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout=10)

    @property
    def busy(self) -> int:
        """Requests running now: on pool threads, or on the poller's thread (worker.leader)."""
        return self.loop.gauges()["busy_threads"]


@contextmanager
def serve(
    handler: Callable[[Exchange], None],
    threads: int = 4,
    host: str = "127.0.0.1",
    *,
    watch: PoolWatch | None = None,
    stats: WorkerStats | None = None,
    **kw,
) -> Iterator[Server]:
    lsock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((host, 0))
    lsock.listen(1024)
    pool = ThreadPool(threads)
    settings = replace(LoopSettings(), **kw)
    loop = Loop([lsock], Runner(handler, stats, None, None, watch), pool, settings)
    t = threading.Thread(target=loop.run, daemon=True)
    t.start()
    try:
        yield Server(loop, lsock, pool)
    finally:
        loop.stop(graceful=False)
        t.join(5)
        lsock.close()


def _line(sock: socket.socket) -> bytes:
    """One line, LF included, read a byte at a time so nothing after it leaves the socket."""
    line = bytearray()
    while not line.endswith(b"\n"):
        byte = sock.recv(1)
        if not byte:
            break
        line += byte
    return bytes(line)


def _exactly(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        piece = sock.recv(n - len(data))
        if not piece:
            break
        data += piece
    return bytes(data)


def _until_eof(sock: socket.socket) -> bytes:
    data = bytearray()
    while piece := sock.recv(65536):
        data += piece
    return bytes(data)


def read_response(sock: socket.socket, head: bool = False) -> tuple[int, dict[str, str], bytes]:
    """Minimal client-side reader: status, headers, body (Content-Length or chunked or until close).

    It reads exactly one response and nothing beyond it (no buffer kept between calls), so a pipelined
    next response stays in the socket for the next call, or for the test's own ``recv``.
    """
    status_line = _line(sock)
    if not status_line:
        raise ConnectionError("closed before a response")
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while True:
        line = _line(sock)
        if line in (b"\r\n", b""):
            break
        k, v = line.decode("latin-1").split(":", 1)
        headers[k.strip().lower()] = v.strip()
    if status in (100, 204, 304) or head:  # no content (RFC 9110 §6.4.1); head=True for HEAD
        return status, headers, b""
    if "content-length" in headers:
        return status, headers, _exactly(sock, int(headers["content-length"]))
    if headers.get("transfer-encoding") == "chunked":
        body = bytearray()
        while size := int(_line(sock).strip(), 16):
            body += _exactly(sock, size)
            _line(sock)
        _line(sock)  # the CRLF after the last chunk (no trailers are sent to this reader)
        return status, headers, bytes(body)
    return status, headers, _until_eof(sock)


def is_closed(sock: socket.socket, timeout: float = 5.0) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
