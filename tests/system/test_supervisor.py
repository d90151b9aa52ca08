"""The supervisor against REAL processes: reload, stop, slot changes and crashes under client load.

Each test starts ``python supervisor.py`` with the ``tests.apps.basic`` WSGI app through the
``run_supervisor`` fixture (tests/conftest.py), drives it with signals while client threads
(tests/system/loadgen.py) keep sending requests, and checks what the clients saw.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import threading
import time

import pytest

from tests.conftest import poll
from tests.system.loadgen import Load

APP = ("--app", "tests.apps.basic:app")
pytestmark = pytest.mark.timeout(90)


def get(port: int, path: str = "/pid", timeout: float = 10) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("GET", path, headers={"Connection": "close"})
    resp = conn.getresponse()
    resp.body = resp.read()  # type: ignore[attr-defined]
    conn.close()
    return resp


def spawned(sup) -> int:
    return len(re.findall(r"spawned worker \d+", sup.stderr()))


def test_kill9_worker_under_new_connection_load(run_supervisor):
    """kill -9 of a worker: nothing refused, only requests in flight on the dead worker may fail, and a
    new worker serves the slot within 1 s (its queued connections waited on the supervisor's socket)."""
    sup = run_supervisor("--procs", "2", "--threads", "4", *APP)
    before = sup.wait_workers(2)
    threads = 4
    with Load(sup.port, threads=threads, mode="new") as load:
        poll("load running", lambda: load.ok_count() >= 50)
        victim = before[0]
        kill_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()

        def new_pid_served():
            return [r for r in load.results if r.ok and r.pid not in before]

        first_new = poll("a request served by the new worker", new_pid_served, timeout=10)[0]
        poll("load continues", lambda: load.ok_count(since=first_new.ended) >= 50)
    after = sup.wait_workers(2)
    assert victim not in after and before[1] in after
    failures = load.failures()
    assert not [r for r in failures if r.error == "ConnectionRefusedError"], failures
    # only what the killed worker had accepted: at most one request per client thread, all begun before
    assert len(failures) <= threads, failures
    assert all(r.started <= killed for r in failures), (kill_at, failures)
    assert first_new.ended - kill_at < 1.0, f"slot refilled after {first_new.ended - kill_at:.2f}s"
    assert spawned(sup) == 3
    assert re.search(rf"worker {victim} \(slot \d\) exited: killed by SIGKILL", sup.stderr())


def test_three_hups_under_mixed_load(run_supervisor, tmp_path):
    """Three SIGHUPs in 10 s of new-connection and keep-alive load: zero failed requests, every pid
    replaced, generation 4, and the server_header changed in the config file is applied."""
    config = tmp_path / "webcluster.toml"
    config.write_text('server_header = "gen-1"\n')
    sup = run_supervisor("--procs", "2", "--threads", "4", "--config", str(config), *APP, procs=2)
    initial = sup.wait_workers(2)
    assert get(sup.port).getheader("Server") == "gen-1"
    start = time.monotonic()
    with Load(sup.port, threads=4, mode="mixed") as load:
        for n, at in enumerate((2.0, 5.0, 8.0), start=2):
            poll(f"t={at}", lambda at=at: time.monotonic() - start >= at, timeout=15)
            config.write_text(f'server_header = "gen-{n}"\n')
            sup.signal(signal.SIGHUP)
        poll("t=10", lambda: time.monotonic() - start >= 10.0, timeout=15)
    final = sup.wait_workers(2, exclude=initial)
    results = load.results
    assert len(results) > 200, len(results)
    assert load.failures() == [], load.failures()[:10]
    assert not set(initial) & set(final)
    stats = sup.stats()
    assert stats["generation"] == 4
    assert {w["generation"] for w in stats["workers"]} == {4}
    assert get(sup.port).getheader("Server") == "gen-4"
    served = {r.pid for r in results}
    assert len(served) >= 4, served  # old and new generations both answered during the run
    retried = sum(r.retried for r in results)
    print(
        f"{len(results)} requests, {retried} retried on a fresh connection after keep-alive close"
    )


def test_sigterm_lets_in_flight_request_finish(run_supervisor, tmp_path):
    """SIGTERM while a 2-second request is in flight: it completes with 200; the supervisor exits 0."""
    sup = run_supervisor("--procs", "2", "--threads", "4", *APP)
    mark = tmp_path / "in-app"
    box: dict = {}

    def slow() -> None:
        try:
            resp = get(sup.port, f"/sleep?seconds=2&mark={mark}")
            box["status"], box["body"] = resp.status, resp.body
        except Exception as exc:  # reported by the assertion below
            box["error"] = exc

    client = threading.Thread(target=slow)
    client.start()
    poll("the request to reach the app", mark.exists)
    sent = time.monotonic()
    sup.signal(signal.SIGTERM)
    # a load balancer sees the drain first: /healthz turns 503 while the request finishes
    poll("/healthz 503", lambda: sup.get_admin("/healthz")[0] == 503, timeout=5)
    assert sup.wait(15) == 0, sup.output()
    client.join(10)
    assert box.get("status") == 200 and box.get("body") == b"slept", box
    assert time.monotonic() - sent < 10
    assert sup.worker_pids() == []
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", sup.port), timeout=2)


def test_ttin_ttou_under_load(run_supervisor):
    """TTIN then TTOU under load: the worker count follows; zero failed requests (the removed slot is
    steered away and its accept queue drained before its worker stops and its socket closes)."""
    sup = run_supervisor("--procs", "2", "--threads", "4", *APP)
    initial = sup.wait_workers(2)
    with Load(sup.port, threads=6, mode="mixed") as load:
        poll("load running", lambda: load.ok_count() >= 50)
        sup.signal(signal.SIGTTIN)
        three = sup.wait_workers(3)
        added = (set(three) - set(initial)).pop()
        poll("the new slot serves", lambda: any(r.pid == added for r in load.results))
        sup.signal(signal.SIGTTOU)
        two = sup.wait_workers(2)
        mark = time.monotonic()
        poll("load continues", lambda: load.ok_count(since=mark) >= 50)
    assert added not in two and set(two) == set(initial)
    assert len(sup.worker_pids()) == 2
    assert load.failures() == [], load.failures()[:10]
    assert "slot 2 closed" in sup.stderr()


def test_stopped_worker_is_killed_after_timeout(run_supervisor):
    """A SIGSTOPped worker sends no heartbeat: after --timeout it gets SIGABRT, then SIGKILL, and is
    replaced."""
    sup = run_supervisor("--procs", "2", "--threads", "2", "--timeout", "2", *APP)
    before = sup.wait_workers(2)
    victim = before[0]
    os.kill(victim, signal.SIGSTOP)
    stopped = time.monotonic()
    after = sup.wait_workers(2, exclude=[victim], timeout=15)
    elapsed = time.monotonic() - stopped
    assert before[1] in after
    assert 1.0 <= elapsed <= 8.0, elapsed  # heartbeat every 1 s, timeout 2 s, checked within 1 s
    # SIGABRT first (stays pending on a stopped process), then SIGKILL
    assert re.search(rf"worker {victim} \(slot \d\) silent: no heartbeat for [\d.]+s", sup.stderr())
    assert re.search(rf"killing worker {victim} \(slot \d\): still running", sup.stderr())
    assert get(sup.port).status == 200


def test_healthz_says_starting_and_503_until_a_worker_is_ready(run_supervisor, tmp_path):
    """Before any worker is ready /healthz is 503 (a load balancer must not send yet) and says why:
    the server is starting, not draining."""
    go = tmp_path / "go"
    (tmp_path / "slowboot.py").write_text(
        "import os, time\n"
        f"while not os.path.exists({str(go)!r}):  # the app's import holds the worker back\n"
        "    time.sleep(0.05)\n"
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'up']\n"
    )
    sup = run_supervisor(
        "--procs", "1", "--chdir", str(tmp_path), "--app", "slowboot:app", ready=False
    )

    def healthz() -> tuple[int, bytes] | None:
        try:
            return sup.get_admin("/healthz")
        except OSError:  # the admin socket is not listening yet
            return None

    poll("/healthz answers", lambda: healthz() is not None, timeout=20)
    assert healthz() == (503, b"starting: no worker is ready yet\n")
    go.touch()
    poll("/healthz 200", lambda: healthz() == (200, b"ok\n"), timeout=20)


def test_import_error_exits_nonzero_without_fork_loop(run_supervisor):
    """An app that cannot be imported: non-zero exit within seconds, the error printed, no crash loop."""
    started = time.monotonic()
    sup = run_supervisor(
        "--procs", "2", "--admin", "off", "--app", "tests.apps.no_such_module:app", ready=False
    )
    code = sup.wait(10)
    elapsed = time.monotonic() - started
    assert code != 0
    assert elapsed < 10.0, elapsed  # ~1.5 s alone; generous for a loaded 2-core machine
    err = sup.stderr()
    assert "worker failed to boot, shutting down" in err
    assert "tests.apps.no_such_module" in err
    assert spawned(sup) <= 2, err
    assert sup.worker_pids() == []


def test_port_in_use_fails_with_one_line(run_supervisor):
    other = socket.create_server(("127.0.0.1", 0))
    port = other.getsockname()[1]
    try:
        sup = run_supervisor(
            "--procs", "1", "--admin", "off", "--bind", f"127.0.0.1:{port}", ready=False
        )
        assert sup.wait(10) == 1
    finally:
        other.close()
    assert (
        f"address 127.0.0.1:{port} is already in use; stop the other server or pass --bind"
        in sup.stderr()
    )
    assert spawned(sup) == 0
