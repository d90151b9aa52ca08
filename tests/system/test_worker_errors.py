"""Worker error paths against a real supervisor: an access log on a full disk, accept
errors (EMFILE) logged at a bounded rate with a count, refused requests logged with their head."""

from __future__ import annotations

import re
import signal
import socket
import urllib.request

import psutil
import pytest

from tests.conftest import poll
from tests.system.test_logs import COMBINED, _lines

pytestmark = pytest.mark.timeout(90)


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as resp:
        resp.read()
        return resp.status


def _event(sup, name: str) -> int:
    return sup.stats()["totals"][name]


def test_access_log_on_a_full_disk_warns_once_counts_and_exits_cleanly(run_supervisor):
    sup = run_supervisor("--procs", "1", "--threads", "2", "--access-log", "/dev/full")
    assert [_get(sup.url + "/") for _ in range(5)] == [200] * 5  # requests do not fail
    poll("5 access-log errors counted", lambda: _event(sup, "access_log_errors") == 5)
    old = sup.worker_pids()
    sup.signal(signal.SIGHUP)  # the old worker exits cleanly, with no traceback
    sup.wait_workers(1, exclude=old)
    sup.wait_for_output(rf"worker {old[0]} \(slot 0\) exited: exit code 0")
    assert _get(sup.url + "/") == 200
    out = sup.output()
    assert "Traceback" not in out, out
    warned = re.findall(r"\[(\d+)\] \[WARNING\] access log /dev/full: write failed", out)
    assert warned.count(str(old[0])) == 1, out  # once per worker, not once per line


def test_refused_requests_are_logged_with_their_head(run_supervisor, tmp_path):
    log = tmp_path / "access.log"
    sup = run_supervisor(
        "--procs", "1", "--threads", "2", "--max-body", "1000", "--access-log", str(log)
    )
    heads = [
        b"POST /upload HTTP/1.1\r\nHost: t\r\nUser-Agent: big/1\r\nContent-Length: 5000\r\n\r\n",
        b"POST /smuggle HTTP/1.1\r\nHost: t\r\nUser-Agent: te-cl/1\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n",
    ]
    sizes = []
    for head in heads:
        with socket.create_connection(("127.0.0.1", sup.port), timeout=10) as c:
            c.sendall(head)
            data = b""
            while chunk := c.recv(65536):
                data += chunk
            sizes.append(len(data))
    lines = sorted(
        COMBINED.match(line).groupdict()["status"] + " " + line for line in _lines(log, 2)
    )
    m413, m400 = (COMBINED.match(line.split(" ", 1)[1]) for line in lines[::-1])
    assert (m413["status"], m413["request"], m413["agent"]) == (
        "413",
        "POST /upload HTTP/1.1",
        "big/1",
    )
    assert (m400["status"], m400["request"], m400["agent"]) == (
        "400",
        "POST /smuggle HTTP/1.1",
        "te-cl/1",
    )
    assert sorted([int(m413["size"]), int(m400["size"])]) == sorted(sizes)


def test_accept_errors_are_logged_at_a_bounded_rate_with_a_count(run_supervisor):
    sup = run_supervisor("--procs", "1", "--threads", "2")
    worker = psutil.Process(sup.worker_pids()[0])
    limit = worker.num_fds() + 4  # room for 4 connections, then EMFILE
    worker.rlimit(psutil.RLIMIT_NOFILE, (limit, limit))
    clients = []
    try:
        for _ in range(
            12
        ):  # the kernel completes the handshakes; the worker cannot accept them all
            clients.append(socket.create_connection(("127.0.0.1", sup.port), timeout=5))
        # ~10 accept attempts a second fail while the clients wait: 30+ before this change
        poll("30 accept errors counted", lambda: _event(sup, "accept_errors") >= 30, timeout=30)
    finally:
        for c in clients:
            c.close()
    out = sup.output()
    lines = re.findall(r"\[WARNING\] accept failed (\d+) time\(s\) \(Too many open files\)", out)
    assert 1 <= len(lines) <= 5, out  # the first at once, then one per 10 s
    assert lines[0] == "1"
    assert _get(sup.url + "/") == 200  # the clients are gone: it serves again
