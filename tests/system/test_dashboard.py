"""The admin endpoint of a REAL supervisor: /stats totals equal the requests made, /metrics parses, and
the dashboard loaded in headless Chromium shows one row per worker and a chart that updates."""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.test_admin import parse_prometheus

pytestmark = pytest.mark.timeout(120)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=4000",  # virtual ms: the page polls /stats about four times
)


def _wait_for(what: str, probe: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Poll ``probe`` until it returns something truthy (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except OSError:
            last = None
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def _start(run_supervisor, procs: int) -> Any:
    """A supervisor with ``procs`` running workers and at least one history point on /stats."""
    sup = run_supervisor("--procs", str(procs), "--threads", "4")
    _wait_for("a history point", lambda: sup.stats()["history"])
    return sup


def _make_requests(port: int, n: int) -> None:
    """``n`` requests, half on fresh connections and half on one keep-alive connection."""
    keep = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for i in range(n):
            if i % 2:
                keep.request("GET", "/")
                resp = keep.getresponse()
            else:
                fresh = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                fresh.request("GET", "/", headers={"Connection": "close"})
                resp = fresh.getresponse()
            resp.read()
            assert resp.status == 200
    finally:
        keep.close()


def test_stats_totals_equal_requests_made_and_metrics_parse(run_supervisor) -> None:
    sup = _start(run_supervisor, procs=2)
    n = 120
    _make_requests(sup.port, n)

    def counted() -> dict | None:
        doc = sup.stats()
        return doc if doc["totals"]["requests"] >= n else None

    doc = _wait_for(f"{n} requests on /stats", counted)
    totals, workers = doc["totals"], doc["workers"]
    assert totals["requests"] == n
    assert sum(w["requests"] for w in workers) == n  # no worker exited: live workers hold them all
    assert totals["status"]["2xx"] == n and sum(totals["latency_buckets"]) == n
    assert totals["bytes_out"] == sum(w["bytes_out"] for w in workers) > 0
    assert all(w["rss_bytes"] > 0 and w["open_fds"] > 0 for w in workers)
    assert sorted(w["pid"] for w in workers) == sorted(sup.worker_pids())

    status, body = sup.get_admin("/metrics")
    assert status == 200
    fams = parse_prometheus(body.decode())
    assert sum(v for _, _, v in fams["webcluster_requests_total"].samples) == n
    assert sum(v for _, _, v in fams["webcluster_worker_requests_total"].samples) == n
    assert sup.get_admin("/healthz") == (200, b"ok\n")


# --- the dashboard in headless Chromium ---------------------------------------------------------


def _dump_dom(url: str, profile: Path) -> str:
    """Load ``url`` in headless Chromium and return the DOM after the page's scripts ran."""
    assert CHROMIUM is not None
    proc = subprocess.Popen(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group, so teardown reaches the renderer children
    )
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the group of the browser this test started
        except ProcessLookupError:
            pass
        proc.wait()
    assert proc.returncode == 0, f"chromium exited {proc.returncode}"
    return out.decode()


def _chart(dom: str, chart_id: str) -> str:
    match = re.search(rf'<svg[^>]*id="{chart_id}"[^>]*>.*?</svg>', dom, re.S)
    assert match, f"no svg#{chart_id} in the DOM"
    return match.group(0)


def _row_pids(dom: str) -> list[int]:
    table = re.search(r'<table id="workers".*?</table>', dom, re.S)
    assert table, "no workers table"
    return [int(pid) for pid in re.findall(r'<tr data-pid="(\d+)"', table.group(0))]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt package 'chromium')")
def test_dashboard_in_headless_chromium(run_supervisor, tmp_path: Path) -> None:
    sup = _start(run_supervisor, procs=2)
    url = f"http://127.0.0.1:{sup.admin_port}/"
    _make_requests(sup.port, 20)
    first = _dump_dom(url, tmp_path / "profile1")

    pids = sorted(w["pid"] for w in sup.stats()["workers"])
    assert sorted(_row_pids(first)) == pids  # one row per worker
    assert int(re.search(r'<body[^>]*data-updates="(\d+)"', first).group(1)) >= 1
    chart1 = _chart(first, "chart-rps")
    assert re.search(r'<path d="M[\d.]+,[\d.]+[^"]*"[^>]*data-series="requests_per_s"', chart1)
    assert 'data-series="p95_s"' in _chart(first, "chart-latency")

    # More traffic, and wait until the supervisor's history has moved on by two samples.
    last_t = float(re.search(r'data-last-t="([\d.]+)"', chart1).group(1))
    _make_requests(sup.port, 40)
    _wait_for(
        "two more history points",
        lambda: sup.stats()["history"][-1]["t"] >= last_t + 2,
    )
    second = _dump_dom(url, tmp_path / "profile2")
    chart2 = _chart(second, "chart-rps")
    assert chart2 != chart1, "the requests/s chart did not change"
    assert float(re.search(r'data-last-t="([\d.]+)"', chart2).group(1)) > last_t
    assert sorted(_row_pids(second)) == pids


def test_totals_survive_a_reload(run_supervisor) -> None:
    """Workers replaced by SIGHUP keep their requests in the totals; restarts are counted per slot."""
    sup = _start(run_supervisor, procs=2)
    old = sup.worker_pids()
    _make_requests(sup.port, 30)
    _wait_for("30 requests on /stats", lambda: sup.stats()["totals"]["requests"] == 30)
    sup.signal(signal.SIGHUP)
    sup.wait_workers(2, exclude=old)
    _make_requests(sup.port, 10)
    doc = _wait_for(
        "40 requests on /stats", lambda: (d := sup.stats())["totals"]["requests"] >= 40 and d
    )
    assert doc["totals"]["requests"] == 40
    assert sum(w["requests"] for w in doc["workers"]) == 10  # the new generation's share
    assert doc["generation"] == 2
    assert doc["restarts"] == {"0": 1, "1": 1}
    fams = parse_prometheus(sup.get_admin("/metrics")[1].decode())
    assert sum(v for _, _, v in fams["webcluster_requests_total"].samples) == 40
