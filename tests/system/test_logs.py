"""Logs from a real supervisor: the access log in Apache combined format, error-log levels."""

from __future__ import annotations

import re
import socket
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import poll

pytestmark = pytest.mark.timeout(60)

# %h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-agent}i"
COMBINED = re.compile(
    r"^(?P<host>\S+) - - \[(?P<time>\d{2}/\w{3}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4})\] "
    r'"(?P<request>[^"\\]*(?:\\.[^"\\]*)*)" (?P<status>\d{3}) (?P<size>\d+|-) '
    r'"(?P<referer>[^"\\]*(?:\\.[^"\\]*)*)" "(?P<agent>[^"\\]*(?:\\.[^"\\]*)*)"$'
)


def _lines(path: Path, n: int, timeout: float = 10.0) -> list[str]:
    def ready() -> list[str] | None:
        lines = path.read_text().splitlines() if path.exists() else []
        return lines if len(lines) >= n else None

    return poll(f"{n} access-log lines in {path}", ready, timeout)


def test_access_log_is_apache_combined(run_supervisor, tmp_path):
    log = tmp_path / "access.log"
    sup = run_supervisor("--procs", "1", "--threads", "2", "--access-log", str(log))
    req = urllib.request.Request(
        sup.url + "/", headers={"User-Agent": "tester/1.0", "Referer": "http://ref.example/"}
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        size = len(resp.read())
    with socket.create_connection(("127.0.0.1", sup.port), timeout=5) as c:
        # a quote and a non-ASCII byte in the agent are escaped, so they cannot break the line format
        c.sendall(b'GET /missing HTTP/1.1\r\nHost: t\r\nUser-Agent: evil"\xe9agent\r\n\r\n')
        assert c.recv(4096).startswith(b"HTTP/1.1 404")
    with socket.create_connection(("127.0.0.1", sup.port), timeout=5) as c:
        c.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n")  # refused head: 400
        assert c.recv(4096).startswith(b"HTTP/1.1 400")
    # The 400 is logged by the loop thread, the others by pool threads after they answered: the
    # order of lines from different threads is not the order of requests, so find each by status.
    by_status = {}
    for line in _lines(log, 3)[:3]:
        parsed = COMBINED.match(line)
        assert parsed, line
        by_status[parsed["status"]] = line
    first, second, third = by_status["200"], by_status["404"], by_status["400"]
    m = COMBINED.match(first)
    assert m, first
    assert m["host"] == "127.0.0.1" and m["request"] == "GET / HTTP/1.1"
    assert m["status"] == "200" and int(m["size"]) == size
    assert m["referer"] == "http://ref.example/" and m["agent"] == "tester/1.0"
    m2 = COMBINED.match(second)
    assert m2, second
    assert m2["status"] == "404" and m2["agent"] == 'evil\\"\\xe9agent'
    m3 = COMBINED.match(third)
    # a refused head is logged with what of it arrived, and the bytes of the error response
    assert m3 and m3["status"] == "400" and m3["request"] == "GET / HTTP/1.1", third
    assert m3["size"] != "-" and int(m3["size"]) > 0


def test_access_log_is_off_by_default_and_log_level_filters(run_supervisor):
    sup = run_supervisor("--procs", "1", "--log-level", "warning")
    with urllib.request.urlopen(sup.url + "/", timeout=5) as resp:
        resp.read()
    out = sup.output()
    assert "GET / HTTP/1.1" not in out  # no access log unless asked
    assert "[INFO]" not in out  # warning level hides info lines


def test_access_log_format_with_gunicorn_atoms(run_supervisor, tmp_path):
    log = tmp_path / "access.log"
    fmt = '%(h)s %(m)s %(U)s q=%(q)s %(H)s %(s)s %(B)s pid=%({X-Pid}o)s req=%({X-Request-Id}i)s %(p)s %(D)sus "%(a)s"'
    sup = run_supervisor(
        "--procs", "1", "--threads", "2", "--app", "tests.apps.basic:app",
        "--access-log", str(log), "--access-log-format", fmt,
    )  # fmt: skip
    req = urllib.request.Request(
        sup.url + "/pid?x=1", headers={"X-Request-Id": "abc-123", "User-Agent": 'a"b'}
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        pid = resp.read().decode()
    line = _lines(log, 1)[0]
    m = re.fullmatch(
        r'127\.0\.0\.1 GET /pid q=x=1 HTTP/1\.1 200 (\d+) pid=(\d+) req=abc-123 <(\d+)> (\d+)us "a\\"b"',
        line,
    )
    assert m, line
    assert int(m[1]) == len(pid) and m[2] == pid and m[3] == pid and int(m[4]) > 0


def test_bad_access_log_format_is_refused_at_start(run_supervisor):
    sup = run_supervisor("--access-log-format", "%(h)s %(bogus)s", ready=False)
    assert sup.wait(20) == 2
    assert "unknown atom %(bogus)s" in sup.stderr()
