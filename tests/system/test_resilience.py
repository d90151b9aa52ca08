"""Workers that die on a request, on real processes: the site keeps serving (the crash-storm scenario).

A crashing request kills its whole worker process (``os._exit`` in tests/apps/faulty.py stands for a
segfaulting extension or an OOM kill). A worker that was ready is replaced at once, at most
``policy.RESPAWN_INTERVAL_S`` apart per slot; backoff is only for workers that never became ready; no
exit code of a ready worker halts the cluster; the log names the request that was running.
"""

from __future__ import annotations

import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from loadtests.crashstorm import normal, storm
from tests.conftest import ROOT, free_port, poll
from tests.system.loadgen import Load
from tests.system.test_supervisor import APP, get, spawned
from webcluster.cluster.policy import RESPAWN_INTERVAL_S

pytestmark = pytest.mark.timeout(90)
FAULTY = ("--app", "tests.apps.faulty:app")


def test_crash_storm_then_normal_traffic_succeeds(run_supervisor):
    """44 requests that each kill their worker, over 6.6 s, against 2 workers x 8 threads; then normal
    traffic right after: >= 99 % succeed and /healthz lists the workers. (Before: 96/100, with the
    slots in a 6.4 s backoff; the issue's run saw 8/18.)"""
    sup = run_supervisor("--procs", "2", "--threads", "8", *FAULTY)
    crashes = storm(sup.port, count=44, over=6.6)
    assert sum(crashes.values()) == 44 and "200" not in crashes, crashes
    started = time.monotonic()
    results = normal(sup.port, count=100)
    took = time.monotonic() - started
    assert results["200"] >= 99, (results, sup.stderr()[-3000:])
    assert took < 10, took
    assert sup.get_admin("/healthz")[0] == 200
    assert len(sup.wait_workers(2)) == 2
    err = sup.stderr()
    assert "shutting down" not in err
    assert re.search(r"worker \d+ \(slot \d\) was running GET /crash \(running [\d.]+s\)", err)
    assert "before it was ready" not in err  # ready workers died: no boot backoff
    print(f"storm {dict(crashes)}; then {dict(results)} in {took:.1f}s; {spawned(sup)} spawns")


def test_ready_worker_exit_code_3_does_not_halt(run_supervisor):
    sup = run_supervisor("--procs", "2", "--threads", "4", *FAULTY)
    before = sup.wait_workers(2)
    with pytest.raises(OSError):
        get(sup.port, "/exit?code=3")
    sup.wait_for_output(r"exited: exit code 3")
    after = sup.wait_workers(2, exclude=set(before) - set(sup.worker_pids()))
    assert sup.popen.poll() is None
    assert len(set(after) - set(before)) == 1
    assert get(sup.port, "/").status == 200
    assert "shutting down" not in sup.stderr()
    assert re.search(r"was running GET /exit\?code=3", sup.stderr())


def test_respawn_rate_of_a_crashing_ready_worker_is_bounded(run_supervisor):
    """A worker killed right after every start: replaced at a steady rate, never faster than one start
    per RESPAWN_INTERVAL_S per slot and never with a growing gap (no boot backoff)."""
    cmd = ("-m", "tests.apps.fake_workers", "ready_then_crash")
    sup = run_supervisor("--procs", "1", "--admin", "off", command=cmd, ready=False)
    sup.wait_for_output(r"listening on")
    seen: list[float] = []

    def twelve_spawns() -> bool:
        n = spawned(sup)
        while len(seen) < n:
            seen.append(time.monotonic())
        return n >= 12

    poll("twelve spawns", twelve_spawns, timeout=20, interval=0.01)
    gaps = [b - a for a, b in zip(seen[1:], seen[2:], strict=False)]
    assert max(gaps) < 1.5, gaps  # a backoff would have reached 1.6 s, then 3.2 s by now
    rate = (len(seen) - 2) / (seen[-1] - seen[1])
    assert rate <= 1.5 / RESPAWN_INTERVAL_S, (rate, gaps)  # observed via the log: margin for jitter
    assert sum(gaps) >= (len(gaps) - 1) * RESPAWN_INTERVAL_S, gaps
    assert "before it was ready" not in sup.stderr()
    sup.signal(signal.SIGTERM)
    assert sup.wait(10) == 0


# -- listeners close at once when a worker stops serving for good --------------------------------------


def _slow_request(port: int, mark, seconds: float, box: dict) -> threading.Thread:
    def run() -> None:
        try:
            resp = get(port, f"/sleep?seconds={seconds}&mark={mark}", timeout=30)
            box["status"], box["body"] = resp.status, resp.body
        except Exception as exc:  # reported by the assertion of the test
            box["error"] = repr(exc)

    client = threading.Thread(target=run, daemon=True)
    client.start()
    poll("the request to reach the app", mark.exists)
    return client


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return False  # a connect that hangs in a backlog times out: not refused
    return False


def test_sigterm_refuses_new_connections_at_once(run_supervisor, tmp_path):
    """SIGTERM with a request in flight: new clients are refused at once (before: they hung 6.5 s in a
    backlog nobody accepted from, then were reset); the request in flight still finishes."""
    sup = run_supervisor("--procs", "2", "--threads", "4", *APP)
    box: dict = {}
    client = _slow_request(sup.port, tmp_path / "in-app", 3, box)
    sent = time.monotonic()
    sup.signal(signal.SIGTERM)
    poll("new connections refused", lambda: _refused(sup.port), timeout=5, interval=0.02)
    refused_after = time.monotonic() - sent
    assert refused_after < 2.0, refused_after
    assert sup.wait(15) == 0, sup.output()
    client.join(10)
    assert box.get("status") == 200 and box.get("body") == b"slept", box
    assert "listening sockets closed" in sup.stderr()
    print(f"refused {refused_after:.2f}s after TERM")


def test_new_supervisor_serves_at_once_after_kill9_with_a_request_in_flight(
    run_supervisor, tmp_path
):
    """kill -9 of the supervisor while a request runs: the orphaned worker closes its listener at once
    (PR_SET_PDEATHSIG -> TERM) and finishes the request, so a new supervisor on the same port starts
    and serves (before: 'address already in use' until the orphan's drain ended)."""
    port = free_port()
    bind = ("--bind", f"127.0.0.1:{port}")
    sup = run_supervisor("--procs", "2", "--threads", "4", *bind, *APP)
    sup.wait_workers(2)
    box: dict = {}
    client = _slow_request(port, tmp_path / "in-app", 4, box)
    sup.popen.kill()
    killed = time.monotonic()
    sup.wait(10)
    again = run_supervisor("--procs", "2", "--threads", "4", *bind, *APP, ready=False)
    poll("the new supervisor to serve", lambda: get(port, "/", timeout=2).status == 200, timeout=10)
    serving_after = time.monotonic() - killed
    assert again.popen.poll() is None, again.output()
    assert serving_after < 6.0, serving_after  # mostly the new supervisor's own start-up
    again.wait_workers(2)
    client.join(15)
    assert box.get("status") == 200 and box.get("body") == b"slept", box
    print(f"new supervisor served {serving_after:.2f}s after kill -9 of the old one")


# -- a silent worker: SIGABRT (stacks in the error log), then SIGKILL ---------------------------------


def test_silent_worker_dumps_its_stacks_before_it_is_replaced(run_supervisor, tmp_path):
    """A request holds the GIL (C code that never returns): the loop thread sends no heartbeat. After
    --timeout the supervisor sends SIGABRT; the worker's faulthandler writes every thread's Python
    stack to the error log, naming the app's line; the slot is refilled and serves."""
    error_log = tmp_path / "error.log"
    sup = run_supervisor(
        "--procs", "1", "--threads", "2", "--timeout", "2", "--error-log", str(error_log), *FAULTY
    )
    (victim,) = sup.wait_workers(1)
    mark = tmp_path / "in-app"
    client = threading.Thread(
        target=lambda: _outcome_of(sup.port, f"/hold-gil?mark={mark}"), daemon=True
    )
    client.start()
    poll("the request to reach the app", mark.exists)
    sup.wait_workers(1, exclude=[victim], timeout=20)
    text = error_log.read_text()
    assert re.search(rf"worker {victim} \(slot 0\) silent: no heartbeat for [\d.]+s", text), text
    assert "Fatal Python error: Aborted" in text, text
    assert re.search(r'File ".*tests/apps/faulty\.py", line \d+ in app', text), text
    assert re.search(rf"worker {victim} \(slot 0\) exited: killed by SIGABRT", text), text
    assert re.search(rf"worker {victim} \(slot 0\) was running GET /hold-gil", text), text
    assert get(sup.port, "/").status == 200
    assert sup.stats()["exits"].get("timeout") == 1


def _outcome_of(port: int, path: str) -> None:
    try:
        get(port, path, timeout=30)
    except OSError:
        pass  # the worker is killed under the request: expected


# -- start-up checks, reload storms ----------------------------------------------------------------------


def test_procs_above_the_descriptor_limit_fails_with_a_clear_error(tmp_path):
    """--procs beyond RLIMIT_NOFILE: exit 2 with one line naming the setting and the fix (before: a raw
    'OSError: Too many open files' traceback and 'exiting with code None')."""

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    proc = subprocess.run(
        [sys.executable, "supervisor.py", "--procs", "5000", "--admin", "off", "--bind",
         "127.0.0.1:0"],
        cwd=ROOT, capture_output=True, text=True, timeout=30, preexec_fn=low_limit,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "setting procs: 5000 workers need about" in proc.stderr
    assert "limit of 1024 (RLIMIT_NOFILE); lower --procs" in proc.stderr
    assert "Traceback" not in proc.stderr and "code None" not in proc.stderr
    assert "listening on" not in proc.stdout


def test_bad_pem_key_fails_before_the_banner(run_supervisor, tmp_path):
    """A garbage key: exit 2 naming the files, and no 'listening on https://...' printed first."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n")
    cert.write_text(key.read_text())
    sup = run_supervisor(
        "--procs", "1", "--certfile", str(cert), "--keyfile", str(key), *APP, ready=False
    )
    assert sup.wait(30) == 2, sup.output()
    assert "listening on" not in sup.stdout()
    assert re.search(r"setting certfile/keyfile: cannot load .*key\.pem", sup.stderr())
    assert spawned(sup) == 0


def test_hup_storm_is_coalesced(run_supervisor, tmp_path):
    """20 HUPs in 2 s with a slow-importing app: at most 2 x procs workers at any moment (before: 22
    for 2 slots), no failed request, and the last config wins."""
    config = tmp_path / "webcluster.toml"
    config.write_text('server_header = "v0"\n')
    sup = run_supervisor(
        "--procs", "2", "--threads", "4", "--config", str(config),
        "--app", "tests.apps.slow_import:app", procs=2,
    )  # fmt: skip
    initial = sup.wait_workers(2)
    counts: list[int] = []
    with Load(sup.port, threads=2, mode="mixed") as load:
        for i in range(1, 21):
            config.write_text(f'server_header = "v{i}"\n')
            sup.signal(signal.SIGHUP)
            until = time.monotonic() + 0.1
            while time.monotonic() < until:
                counts.append(len(sup.worker_pids()))
                time.sleep(0.01)

        def settled() -> bool:
            counts.append(len(sup.worker_pids()))
            return get(sup.port, "/").getheader("Server") == "v20" and counts[-1] == 2

        poll("the last config served by 2 workers", settled, timeout=60, interval=0.02)
    final = sup.wait_workers(2, exclude=initial)
    assert max(counts) <= 4, max(counts)
    assert load.failures() == [], load.failures()[:5]
    generation = sup.stats()["generation"]
    assert generation < 12, generation  # coalesced: far fewer reloads than HUPs
    assert "reloading again when it is done" in sup.stderr()
    print(f"max {max(counts)} workers; generation {generation} after 20 HUPs; {final}")
