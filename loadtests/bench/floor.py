"""The floor: how fast pure Python can answer the hello-world benchmark on this machine
(``python -m loadtests.bench.floor --procs 2 --port 8123``, then ``wrk -t1 -c64 http://127.0.0.1:8123/``).

NOT a server: one thread per process, an epoll loop, no limits, no timeouts, no framing checks, the whole
request assumed to arrive in one ``recv`` and the response to leave in one ``send``. It calls the same
``hello:app`` through a minimal WSGI environ, and closes after the response when the request says
``Connection: close`` (the ``close64`` scenario; the response says so too, as a server's must, so wrk
reconnects instead of writing its next request into a closed connection and counting a read error).
What it measures is what CPython itself costs per request (accept, recv, a split of the head, a dict,
the app call, a join, send) with nothing of a real server around it, so the distance between it and
webcluster is the cost of webcluster's machinery, and the distance between it and granian is what Python
costs against Rust. BENCHMARKS.md, "Issue 9, third pass" (keep-alive) and "eleventh pass" (close).
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # loadtests/, for hello
from hello import app  # noqa: E402


def serve(sock: socket.socket) -> None:
    """One process: accept and answer until killed."""
    ep = select.epoll()
    ep.register(sock.fileno(), select.EPOLLIN)
    conns: dict[int, socket.socket] = {}
    status_headers: list = []

    def start_response(status, headers, exc_info=None):
        status_headers[:] = [status, headers]

    while True:
        for fd, _ in ep.poll():
            if fd == sock.fileno():
                try:
                    while True:
                        c, _ = sock.accept()
                        c.setblocking(False)
                        conns[c.fileno()] = c
                        ep.register(c.fileno(), select.EPOLLIN)
                except BlockingIOError:
                    pass
                continue
            c = conns[fd]
            try:
                data = c.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                ep.unregister(fd)
                del conns[fd]
                c.close()
                continue
            lines = data.partition(b"\r\n\r\n")[0].split(b"\r\n")
            method, path, version = lines[0].split(b" ")
            environ = {"REQUEST_METHOD": method.decode(), "PATH_INFO": path.decode(),
                       "SERVER_PROTOCOL": version.decode()}  # fmt: skip
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                environ["HTTP_" + name.decode().upper().replace("-", "_")] = value.strip().decode()
            body = b"".join(app(environ, start_response))
            status, headers = status_headers
            head = "".join(f"{k}: {v}\r\n" for k, v in headers)
            close = environ.get("HTTP_CONNECTION") == "close"
            if close:
                head += "Connection: close\r\n"
            c.send(f"HTTP/1.1 {status}\r\n{head}\r\n".encode() + body)
            if close:
                ep.unregister(fd)
                del conns[fd]
                c.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--procs", type=int, default=2, help="processes (SO_REUSEPORT), default 2")
    parser.add_argument("--port", type=int, default=8123, help="port on 127.0.0.1, default 8123")
    args = parser.parse_args(argv)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(1024)
    sock.setblocking(False)
    children = []
    for _ in range(args.procs - 1):
        pid = os.fork()
        if pid == 0:
            children = []
            break
        children.append(pid)

    def stop(*_) -> None:  # the first process takes the others with it (kill it by its pid)
        for pid in children:
            os.kill(pid, signal.SIGKILL)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    serve(sock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
