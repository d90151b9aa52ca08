"""Shared helpers for in-process server tests: a real Loop + ThreadPool on a loopback socket.

``serve(handler, threads=4, **LoopSettings overrides)`` runs the worker's loop in a thread and yields a
``Server``; ``read_response`` is a small strict client-side reader.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

from worker.handlers.base import Exchange
from worker.loop import Loop, LoopSettings
from worker.runner import Runner
from worker.threadpool import ThreadPool


class Server:
    def __init__(self, loop: Loop, sock: socket.socket, pool: ThreadPool) -> None:
        self.loop = loop
        self.sock = sock
        self.pool = pool
        self.port = sock.getsockname()[1]

    def connect(self) -> socket.socket:
        c = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return c


@contextmanager
def serve(handler: Callable[[Exchange], None], threads: int = 4, **kw) -> Iterator[Server]:
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1024)
    pool = ThreadPool(threads)
    settings = replace(LoopSettings(), **kw)
    loop = Loop([lsock], Runner(handler, None, None), pool, settings)
    t = threading.Thread(target=loop.run, daemon=True)
    t.start()
    try:
        yield Server(loop, lsock, pool)
    finally:
        loop.stop(graceful=False)
        t.join(5)
        pool.shutdown(1)
        lsock.close()


_readers: dict[int, object] = {}


def read_response(sock: socket.socket, head: bool = False) -> tuple[int, dict[str, str], bytes]:
    """Minimal client-side reader: status, headers, body (Content-Length or chunked or until close).

    One buffered reader per socket, so bytes of a pipelined next response are not lost between calls.
    """
    key = id(sock)
    entry = _readers.get(key)
    if entry is None or entry[0] is not sock:
        entry = _readers[key] = (sock, sock.makefile("rb"))
    f = entry[1]
    status_line = f.readline()
    if not status_line:
        raise ConnectionError("closed before a response")
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        k, v = line.decode("latin-1").split(":", 1)
        headers[k.strip().lower()] = v.strip()
    if status in (100, 204, 304) or head:  # no content (RFC 9110 §6.4.1); head=True for HEAD
        return status, headers, b""
    if "content-length" in headers:
        body = f.read(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size = int(f.readline().strip(), 16)
            if size == 0:
                f.readline()
                break
            body += f.read(size)
            f.readline()
    else:
        body = f.read()
    return status, headers, body


def is_closed(sock: socket.socket, timeout: float = 5.0) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()
