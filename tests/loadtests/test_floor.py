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


def test_the_floor_answers_hello_world_on_one_connection_kept_alive():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "loadtests.bench.floor", "--procs", "1",
                             "--port", str(port)], cwd=REPO)  # fmt: skip
    try:
        c = poll("the floor to listen", lambda: socket.create_connection(("127.0.0.1", port), 2))
        for _ in range(2):
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while not data.endswith(b"Hello, World!"):
                data += c.recv(4096)
            assert data.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Length: 13\r\n" in data
        c.close()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
