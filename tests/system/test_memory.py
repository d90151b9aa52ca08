"""A worker's memory, over real sockets and processes: pool threads start as demand needs them and never
beyond ``--threads``; uploads leave RSS bounded (the body is streamed piece by piece, and the worker's
glibc malloc policy, worker/allocator.py, returns what the pieces used); a plain-HTTP worker does not
carry the modules only the supervisor (or TLS) needs."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest

from tests.conftest import http_get, poll

MIB = 1 << 20


def _get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


@pytest.mark.timeout(60)
def test_pool_threads_start_on_demand_and_never_exceed_threads(run_supervisor):
    # --inline-budget 0: every request in the pool (a bodiless one would otherwise run on the poller's
    # thread, and one that sleeps would move the poller to the second seat: test_leader covers that)
    sup = run_supervisor(
        "--procs", "1", "--threads", "4", "--app", "tests.apps.basic:app", "--inline-budget", "0"
    )  # fmt: skip
    (pid,) = sup.wait_workers(1)
    worker = psutil.Process(pid)
    at_boot = worker.num_threads()
    assert _get(sup.port, "/") == 200
    poll("one pool thread started for one request", lambda: worker.num_threads() == at_boot + 1)

    most = at_boot
    stop = threading.Event()

    def watch() -> None:
        nonlocal most
        while not stop.is_set():
            most = max(most, worker.num_threads())
            stop.wait(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with ThreadPoolExecutor(16) as clients:  # 16 requests at once on a pool of 4
            statuses = list(clients.map(lambda _: _get(sup.port, "/sleep?seconds=0.3"), range(16)))
    finally:
        stop.set()
        watcher.join(5)
    assert statuses == [200] * 16
    assert most == at_boot + 4, f"{most - at_boot} pool threads for --threads 4"
    assert worker.num_threads() == at_boot + 4  # started threads stay for the next burst


UPLOAD = 5 * MIB
UPLOADS = 100
CLIENTS = 4
# Streaming 4 uploads at a time takes a few MiB of buffers; a worker that held whole bodies (4 x 5 MiB at
# once, more with copies) or kept its arenas' high-water marks would pass this bound within the run.
RSS_GROWTH_BOUND = 12 * MIB


def _upload(port: int, data: bytes, chunked: bool) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        if chunked:
            pieces = (data[i : i + 64 * 1024] for i in range(0, len(data), 64 * 1024))
            conn.request("POST", "/upload", body=pieces, encode_chunked=True)
        else:
            conn.request("POST", "/upload", body=data)
        resp = conn.getresponse()
        assert resp.status == 201, resp.status
        return json.loads(resp.read())
    finally:
        conn.close()


@pytest.mark.timeout(180)
def test_uploads_leave_worker_rss_bounded(run_supervisor):
    sup = run_supervisor("--procs", "1", "--threads", "8", "--app", "loadtests.demoapp:app")
    (pid,) = sup.wait_workers(1)
    worker = psutil.Process(pid)
    data = os.urandom(UPLOAD)
    expected = {"length": UPLOAD, "sha256": hashlib.sha256(data).hexdigest()}
    assert _upload(sup.port, data, chunked=False) == expected
    before = worker.memory_info().rss
    peak = before
    with ThreadPoolExecutor(CLIENTS) as clients:
        for result in clients.map(lambda i: _upload(sup.port, data, i % 2 == 1), range(UPLOADS)):
            assert result == expected
            peak = max(peak, worker.memory_info().rss)
    after = worker.memory_info().rss
    report = f"RSS {before / MIB:.1f} MiB -> peak {peak / MIB:.1f} -> after {after / MIB:.1f}"
    print(report)
    assert peak - before < RSS_GROWTH_BOUND, report


def test_a_plain_worker_carries_no_supervisor_only_module(run_supervisor):
    sup = run_supervisor("--procs", "1", "--app", "tests.apps.modules:app")
    status, body = http_get(sup.port, "/")
    assert status == 200
    assert json.loads(body) == []  # ssl (no TLS), psutil, importlib.metadata, tomllib, difflib...
