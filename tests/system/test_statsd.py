"""--statsd-host under a REAL supervisor: a UDP socket on loopback receives gunicorn's metrics for real
requests (per request from the workers, gunicorn.workers each second from the supervisor)."""

from __future__ import annotations

import http.client
import socket
import time
from collections import Counter

import pytest

pytestmark = pytest.mark.timeout(60)


def test_statsd_metrics_for_real_requests(run_supervisor) -> None:
    daemon = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    daemon.bind(("127.0.0.1", 0))
    daemon.settimeout(0.5)
    try:
        port = daemon.getsockname()[1]
        sup = run_supervisor(
            "--procs", "2", "--threads", "2", "--app", "tests.apps.basic:app",
            "--statsd-host", f"127.0.0.1:{port}", "--statsd-prefix", "web",
        )  # fmt: skip
        for path in ["/"] * 5 + ["/missing"] * 2:
            conn = http.client.HTTPConnection("127.0.0.1", sup.port, timeout=10)
            conn.request("GET", path)
            conn.getresponse().read()
            conn.close()

        counts: Counter[str] = Counter()
        durations: list[float] = []
        gauges: list[str] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (counts["web.gunicorn.requests"] >= 7 and gauges):
            try:
                packet = daemon.recv(65536).decode()
            except TimeoutError:
                continue
            for line in packet.split("\n"):
                name, _, rest = line.partition(":")
                value, kind = rest.split("|")[:2]
                if kind == "c":
                    counts[name] += int(value)
                elif kind == "ms":
                    durations.append(float(value))
                elif kind == "g" and name == "web.gunicorn.workers":
                    gauges.append(value)
    finally:
        daemon.close()
    assert counts["web.gunicorn.requests"] == 7
    assert counts["web.gunicorn.request.status.200"] == 5
    assert counts["web.gunicorn.request.status.404"] == 2
    assert len(durations) == 7 and all(0 < d < 5000 for d in durations)
    assert gauges and gauges[-1] == "2"
