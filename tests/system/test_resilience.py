"""Workers that die on a request, on real processes: the site keeps serving (the crash-storm scenario).

A crashing request kills its whole worker process (``os._exit`` in tests/apps/faulty.py stands for a
segfaulting extension or an OOM kill). A worker that was ready is replaced at once, at most
``policy.RESPAWN_INTERVAL_S`` apart per slot; backoff is only for workers that never became ready; no
exit code of a ready worker halts the cluster; the log names the request that was running.
"""

from __future__ import annotations

import re
import signal
import time

import pytest

from cluster.policy import RESPAWN_INTERVAL_S
from loadtests.crashstorm import normal, storm
from tests.conftest import poll
from tests.system.test_supervisor import get, spawned

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
    assert max(gaps) < 1.0, gaps  # a backoff would have reached 0.8 s, then 1.6 s by now
    rate = (len(seen) - 2) / (seen[-1] - seen[1])
    assert rate <= 1.5 / RESPAWN_INTERVAL_S, (rate, gaps)  # observed via the log: margin for jitter
    assert sum(gaps) >= (len(gaps) - 1) * RESPAWN_INTERVAL_S, gaps
    assert "before it was ready" not in sup.stderr()
    sup.signal(signal.SIGTERM)
    assert sup.wait(10) == 0
