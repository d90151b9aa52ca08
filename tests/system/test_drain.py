"""``--drain-delay``: a host leaving its load balancer keeps serving until the balancer has noticed.

On SIGTERM, /healthz answers 503 at once; the listeners keep accepting and serving for the delay, and
responses on keep-alive connections carry ``Connection: close`` so a balancer's pooled connections end
cleanly; then the normal graceful stop. A second TERM, or INT, skips what is left of the delay.
(Through HAProxy, under load, with zero failed requests: ``tests/system/test_fleet.py``.)
"""

from __future__ import annotations

import re
import signal
import socket
import time

import pytest

from tests.conftest import poll
from tests.support import read_response

pytestmark = pytest.mark.timeout(90)

APP = ("--app", "tests.apps.basic:app", "--procs", "2", "--threads", "4")
GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def _request(sock: socket.socket) -> tuple[int, dict[str, str]]:
    sock.sendall(GET)
    status, headers, body = read_response(sock)
    assert body == b"hello"
    return status, headers


def test_term_drains_for_the_delay_then_stops(run_supervisor):
    sup = run_supervisor(*APP, "--drain-delay", "4")
    pooled = socket.create_connection(("127.0.0.1", sup.port), timeout=10)
    assert _request(pooled)[1].get("connection") != "close"  # keep-alive before the TERM
    sup.signal(signal.SIGTERM)
    began = time.monotonic()
    poll("/healthz 503", lambda: sup.get_admin("/healthz")[0] == 503, timeout=5)
    assert time.monotonic() - began < 2, "/healthz must answer 503 at once"
    # the pooled connection still gets its answer, told to close; fresh connections are accepted
    status, headers = poll("a close on keep-alive", lambda: _drained(pooled), timeout=3)
    assert status == 200
    with socket.create_connection(("127.0.0.1", sup.port), timeout=10) as fresh:
        status, headers = _request(fresh)
        assert (status, headers.get("connection")) == (200, "close")
    assert time.monotonic() - began < 3.5, "too slow to prove anything about a 4 s delay"
    assert sup.popen.poll() is None, "stopped before the drain delay was over"
    assert sup.wait(30) == 0
    assert time.monotonic() - began >= 3.5, "the graceful stop began before the delay ended"
    assert "draining for 4.0s" in sup.stderr()
    # the final count, after the workers' last reports (the fleet runner reads it per host life)
    served = re.search(r"supervisor exiting with code 0, (\d+) requests served", sup.stderr())
    assert served and int(served.group(1)) >= 3, sup.stderr()[-2000:]
    pooled.close()


def _drained(sock: socket.socket):
    status, headers = _request(sock)
    return (status, headers) if headers.get("connection") == "close" else None


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT])
def test_second_term_or_int_skips_the_delay(run_supervisor, second):
    sup = run_supervisor(*APP, "--drain-delay", "60")
    sup.signal(signal.SIGTERM)
    poll("/healthz 503", lambda: sup.get_admin("/healthz")[0] == 503, timeout=5)
    sup.signal(second)
    assert sup.wait(20) == 0


def test_no_delay_by_default(run_supervisor):
    sup = run_supervisor(*APP)
    sup.signal(signal.SIGTERM)
    assert sup.wait(20) == 0
    assert "draining" not in sup.stderr()
