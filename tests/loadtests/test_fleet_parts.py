"""The pure parts of ``python -m loadtests.fleet``: the HAProxy config it renders from docs/deploy, the
counts it reads from ``show stat``, the summary's agreement verdict and crash checks, the chart's rates,
and the runner refusing to start without root / ip netns (exit status 2, a reason)."""

from __future__ import annotations

import math
import shutil
import subprocess

import pytest

from loadtests.fleet import netns
from loadtests.fleet.haproxy import Backend, counts, render
from loadtests.fleet.plot import host_rates
from loadtests.fleet.runner import fault_plan, main, parse_args
from loadtests.fleet.summary import failures_after, summarize


def _rendered(tmp_path) -> str:
    return render(frontend="198.18.0.2:80", stats_socket=tmp_path / "s.sock",
                  servers=[Backend("h1", "198.18.0.11", 8080), Backend("h4", "198.18.0.14", 8080, False)],
                  admin_port=9180, inter_ms=500, fall=2, rise=1)  # fmt: skip


def test_haproxy_config_from_the_deploy_template(tmp_path) -> None:
    text = _rendered(tmp_path)
    assert "server h1 198.18.0.11:8080\n" in text and "server h4 198.18.0.14:8080 disabled" in text
    assert "default-server inter 500ms fall 2 rise 1 check port 9180 send-proxy-v2" in text
    assert "option httpchk GET /healthz" in text and "$" not in text


@pytest.mark.system  # runs haproxy -c
def test_haproxy_accepts_the_rendered_config(tmp_path) -> None:
    haproxy = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
    if haproxy is None:
        pytest.skip("haproxy is not installed")
    path = tmp_path / "haproxy.cfg"
    path.write_text(_rendered(tmp_path))
    check = subprocess.run([haproxy, "-c", "-f", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_counts_from_show_stat() -> None:
    stats = {
        "FRONTEND": {"req_tot": "100", "hrsp_5xx": "2"},
        "h1": {"hrsp_2xx": "60", "hrsp_3xx": "5", "hrsp_5xx": "1", "econ": "0", "status": "UP"},
        "h2": {"hrsp_2xx": "33", "hrsp_other": "1", "eresp": "1", "status": "DOWN"},
    }
    c = counts(stats, ["h1", "h2"])
    assert c["frontend_requests"] == 100 and c["server_responses"] == 100
    assert c["servers"]["h2"] == {"responses": 34, "5xx": 0, "connection_errors": 0,
                                  "response_errors": 1, "retries": 0, "status": "DOWN"}  # fmt: skip


def _summary(requests: int, failures: int, front: int, hosts: list[int], faults=(), history=()):
    agg = {"Type": "", "Name": "Aggregated", "Request Count": str(requests),
           "Failure Count": str(failures), "Requests/s": "1", "50%": "1", "95%": "2", "99%": "3"}  # fmt: skip
    return summarize(
        stats_rows=[agg], failure_rows=[], history=list(history),
        haproxy={"frontend_requests": front, "server_responses": front},
        hosts={f"h{i}": {"requests": n, "lives": [n]} for i, n in enumerate(hosts)},
        faults=list(faults), load_start=1000.0, duration_s=10.0,
    )  # fmt: skip


def test_agreement_is_exact_or_explained_by_a_crash() -> None:
    assert _summary(100, 0, 100, [60, 40])["counts_agree"] is True
    assert _summary(100, 0, 101, [61, 40])["agreement"].startswith("MISMATCH")
    assert _summary(100, 0, 100, [60, 39])["agreement"].startswith("MISMATCH")
    crash = [{"t": 2.0, "kind": "crash", "host": "h1", "connections_held": 2},
             {"t": 2.5, "kind": "marked_down", "host": "h1", "after_s": 0.5, "bound_s": 1.0,
              "in_flight": 3}]  # fmt: skip
    s = _summary(100, 2, 101, [50, 40], crash)
    assert s["agreement"].startswith("consistent with the crash"), s["agreement"]
    assert (
        s["crashes"][0]["failures_within_bound"] and s["crashes"][0]["marked_down_after_s"] == 0.5
    )
    assert _summary(100, 4, 100, [50, 40], crash)["crashes"][0]["failures_within_bound"] is False
    # HAProxy counted none lost, the host held two connections: one failure is within the bound
    quiet = [crash[0], {**crash[1], "in_flight": 0}]
    assert _summary(100, 1, 101, [50, 40], quiet)["crashes"][0]["failures_within_bound"] is True
    assert _summary(100, 3, 101, [50, 40], quiet)["crashes"][0]["failures_within_bound"] is False
    assert _summary(100, 0, 100, [50, 51], crash)["agreement"].startswith("MISMATCH")


def test_failures_after_a_moment_allow_for_the_report_lag() -> None:
    rows = [{"Name": "Aggregated", "Timestamp": str(t), "Total Failure Count": str(n)}
            for t, n in [(1000, 0), (1002, 1), (1004, 3), (1008, 3), (1010, 4)]]  # fmt: skip
    assert failures_after(rows, 1000.5) == 3  # before 1003.5: the 1002 row (1); 4 at the end
    assert failures_after(rows, 1001.5) == 1  # before 1004.5: the 1004 row (3)
    assert failures_after(rows, 1010) == 0


def test_host_rates_per_life() -> None:
    rows = [{"t": str(t), "host": "h1", "life": str(life), "requests": str(n)}
            for t, life, n in [(0, 1, 0), (1, 1, 10), (2, 1, 30), (3, 2, 0), (4, 2, 5)]]  # fmt: skip
    t, rate = host_rates(rows)["h1"]
    assert t == [1.0, 2.0, 3.0, 4.0]
    assert rate[:2] == [10.0, 15.0] and math.isnan(rate[2]) and rate[3] == 5.0  # a break, no bridge


def test_fault_plan_in_time_order() -> None:
    opts = parse_args(["--crash", "20", "--rolling-restart", "5s", "--add-host", "1m"])
    assert fault_plan(opts) == [(5.0, "rolling_restart"), (20.0, "crash"), (60.0, "add_host")]
    assert opts.drain_delay == 4.0  # inter 1 s x (fall 2 + 2)


def test_without_root_or_netns_it_says_so_and_exits_2(monkeypatch, capsys, tmp_path) -> None:
    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    assert main(["--results", str(tmp_path / "r")]) == 2
    assert "needs root" in capsys.readouterr().err
    monkeypatch.setattr(netns.os, "geteuid", lambda: 0)
    monkeypatch.setattr(netns.shutil, "which", lambda name: None)
    assert main(["--results", str(tmp_path / "r")]) == 2
    assert "iproute2" in capsys.readouterr().err


@pytest.mark.system  # runs ip netns
@pytest.mark.parametrize("n", [1])
def test_nothing_left_behind_by_a_failed_setup(n, monkeypatch) -> None:
    """A namespace made before an error is removed (needs root and ip netns; skipped otherwise)."""
    try:
        netns.check_support()
    except netns.NetnsError as exc:
        pytest.skip(str(exc))
    net = netns.Network("wcfunit")
    with pytest.raises(netns.NetnsError):
        with net:
            net.add("a", 11)
            net.add("b", 11)  # the same address's peer name twice: `ip link add` fails
    assert not [ns for ns in netns.leftover() if ns.startswith("wcfunit")]
