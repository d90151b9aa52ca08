"""loadtests.bench.floor answers the hello-world request it is measured with (a floor that served the
wrong thing would make the comparison in BENCHMARKS.md meaningless)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import poll

pytestmark = [pytest.mark.system, pytest.mark.timeout(30)]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def floor_port():
    """A one-process floor on a free port; killed by its pid at teardown."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "loadtests.bench.floor", "--procs", "1",
                             "--port", str(port)], cwd=REPO)  # fmt: skip
    try:
        poll("the floor to listen", lambda: _connects(port))
        yield port
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)


def _connects(port: int) -> bool:
    socket.create_connection(("127.0.0.1", port), 2).close()
    return True


def _response(c: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"Hello, World!"):
        chunk = c.recv(4096)
        assert chunk, f"closed after {data!r}"
        data += chunk
    return data


def test_the_floor_answers_hello_world_on_one_connection_kept_alive(floor_port):
    with socket.create_connection(("127.0.0.1", floor_port), 2) as c:
        for _ in range(2):
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            data = _response(c)
            assert data.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Length: 13\r\n" in data
            assert b"Connection: close" not in data


def test_the_floor_closes_after_a_request_that_asks_it_to(floor_port):
    # The close64 scenario: without this, wrk would write its next request into a closed connection
    with socket.create_connection(("127.0.0.1", floor_port), 2) as c:
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = _response(c)
        assert data.startswith(b"HTTP/1.1 200 OK\r\n") and b"\r\nConnection: close\r\n" in data
        assert c.recv(4096) == b""  # then the end of the stream
