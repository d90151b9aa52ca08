"""Three webcluster hosts behind a real HAProxy, under distributed Locust load (``python -m loadtests.fleet``).

Each test builds its own network namespaces (198.18.0.0/24, removed at the end: checked), starts three
hosts (``--proxy-protocol``, ``--drain-delay``), HAProxy from ``docs/deploy/haproxy.cfg`` (health checks on
/healthz every 500 ms, fall 2, rise 1; PROXY v2 to the hosts) and Locust (1 master + 2 workers), and
injects one kind of fault:

- a rolling restart with the drain, HAProxy without ``option redispatch`` (its default): **zero failed
  requests**, and Locust's count, HAProxy's frontend count and the sum over the hosts agree exactly;
- the same rolling restart without ``--drain-delay``: the baseline, reported (its failures are what the
  drain is for; not asserted, they depend on timing);
- a rolling HUP, then a host added under load: zero failed, counts agree;
- a host crash (kill -9 of every process of one host): failures no more than what was in flight on it
  (the larger of HAProxy's eresp + econ for that host over the crash and the connections the host held
  at the kill: ``summary.crash_checks``), none after HAProxy marked it down, marked down within
  inter x fall.

Skipped, with the reason, when not root, without ``ip netns`` or without haproxy (CI runs as root and
``.ci/run`` installs haproxy and iproute2).
"""

from __future__ import annotations

import pytest

from loadtests.fleet.haproxy import haproxy_binary
from loadtests.fleet.netns import NetnsError, check_support, leftover
from loadtests.fleet.runner import Run, parse_args


def _why_not() -> str | None:
    try:
        check_support()
    except NetnsError as exc:
        return str(exc)
    if haproxy_binary() is None:
        return "haproxy is not installed (.ci/run installs it)"
    return None


pytestmark = [
    pytest.mark.skipif(_why_not() is not None, reason=_why_not() or ""),
    pytest.mark.timeout(240),
]

INTER_S, FALL = 0.5, 2
BASE = ["--hosts", "3", "--procs", "1", "--threads", "8", "-u", "20", "-r", "20",
        "--locust-workers", "2", "--inter-ms", "500", "--fall", "2", "--rise", "1",
        "--no-plot", "--progress-every", "10"]  # fmt: skip


def _run(tmp_path, *argv: str) -> dict:
    run = Run(parse_args([*BASE, "--results", str(tmp_path / "results"), *argv]))
    try:
        return run.execute()
    finally:  # only this run's namespaces: another fleet run may share the machine
        left = [ns for ns in leftover() if ns.startswith(run.net.prefix + "-")]
        assert not left, f"the run left network namespaces behind: {left}"


def _explain(s: dict) -> str:
    rows = "\n".join(f"  {r['Occurrences']} x {r['Method']} {r['Name']}: {r['Error']}"
                     for r in s["failure_rows"])  # fmt: skip
    faults = "\n".join(f"  {f}" for f in s["faults"])
    return f"{s['failures']} failed {s['failures_by_kind']}; {s['agreement']}\n{rows}\n{faults}"


def _faults_done(s: dict, kind: str, n: int) -> None:
    assert not [f for f in s["faults"] if f["kind"] == "error"], _explain(s)
    assert sum(1 for f in s["faults"] if f["kind"] == kind) == n, _explain(s)


def test_rolling_restart_with_drain_loses_nothing(tmp_path) -> None:
    # HAProxy's defaults (no redispatch): the drain alone must keep every request
    s = _run(tmp_path, "-t", "45", "--rolling-restart", "3", "--no-redispatch")
    _faults_done(s, "marked_up", 3)
    assert all(len(h["lives"]) == 2 for h in s["hosts"].values()), s["hosts"]
    assert s["requests"] > 300, "too little load to show anything"
    assert s["failures"] == 0, _explain(s)
    assert s["counts_agree"], _explain(s)


def test_rolling_restart_without_drain_is_the_baseline(tmp_path, record_property) -> None:
    s = _run(
        tmp_path, "-t", "45", "--rolling-restart", "3", "--drain-delay", "0", "--no-redispatch"
    )
    _faults_done(s, "marked_up", 3)
    record_property("baseline_failures", s["failures"])
    print(f"baseline without --drain-delay: {_explain(s)}")
    assert s["requests"] > 300


def test_rolling_hup_and_a_host_added_lose_nothing(tmp_path) -> None:
    s = _run(tmp_path, "-t", "30", "--rolling-hup", "3", "--add-host", "15")
    _faults_done(s, "reloaded", 3)
    assert "h4" in s["hosts"] and s["hosts"]["h4"]["requests"] > 0, s["hosts"]
    assert s["failures"] == 0, _explain(s)
    assert s["counts_agree"], _explain(s)


def test_host_crash_fails_only_requests_in_flight_on_it(tmp_path) -> None:
    s = _run(tmp_path, "-t", "25", "--crash", "5")
    _faults_done(s, "marked_up", 1)
    (crash,) = s["crashes"]
    assert crash["failures_within_bound"], _explain(s)
    assert crash["failures_after_marked_down"] == 0, _explain(s)
    assert crash["marked_down_after_s"] is not None
    assert crash["marked_down_after_s"] <= INTER_S * FALL + 0.3, _explain(s)
    assert not s["agreement"].startswith("MISMATCH"), _explain(s)
