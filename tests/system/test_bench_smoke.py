"""The benchmark tool works end to end: wrk output is parsed, servers start and stop, the report is written.

A short real run (1 s per scenario, one round) of ``python -m loadtests.bench`` against webcluster and
whichever of gunicorn/waitress is installed, plus the small idle experiment; the figures are not judged here
(BENCHMARKS.md holds the real runs), only that they are there and sane.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from loadtests.bench.report import write_section
from loadtests.bench.wrk import WrkError, have_wrk, parse_wrk

ROOT = Path(__file__).resolve().parents[2]

WRK_OUTPUT = """Running 3s test @ http://127.0.0.1:18080/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     7.67ms   20.07ms   1.20s    94.45%
    Req/Sec    18.99k     6.93k   31.08k    60.00%
  Latency Distribution
     50%  812.00us
     75%    4.91ms
     90%   13.52ms
     99%    1.25s
  56833 requests in 3.02s, 7.32MB read
  Socket errors: connect 0, read 3, write 1, timeout 2
  Non-2xx or 3xx responses: 7
Requests/sec:  18848.31
Transfer/sec:      2.43MB
"""


def test_parse_wrk_reads_rate_percentiles_units_and_errors():
    r = parse_wrk(WRK_OUTPUT)
    assert r.rps == 18848.31
    assert r.requests == 56833
    assert r.duration_s == pytest.approx(3.02)
    assert r.p50_ms == pytest.approx(0.812)
    assert r.p99_ms == pytest.approx(1250.0)
    assert (r.non_2xx, r.socket_errors) == (7, 6)
    assert r.errors == 13
    assert r.error_detail == "connect 0, read 3, write 1, timeout 2"


def test_parse_wrk_without_errors_and_refuses_output_without_latency():
    clean = "\n".join(
        line for line in WRK_OUTPUT.splitlines() if "errors" not in line and "Non-2xx" not in line
    )
    assert parse_wrk(clean).errors == 0
    no_latency = "\n".join(line for line in clean.splitlines() if "%  " not in line)
    with pytest.raises(WrkError, match="--latency"):
        parse_wrk(no_latency)
    with pytest.raises(WrkError):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused")


def test_write_section_replaces_only_its_own_block(tmp_path):
    md = tmp_path / "B.md"
    md.write_text("# Title\n\nprose before\n")
    write_section(md, "a", "first A")
    write_section(md, "b", "first B")
    write_section(md, "a", "second A")
    text = md.read_text()
    assert "prose before" in text and "first B" in text and "second A" in text
    assert "first A" not in text
    assert text.index("second A") < text.index("first B")  # replaced in place, not appended


@pytest.mark.timeout(90)
@pytest.mark.skipif(not have_wrk(), reason="wrk is not installed")
def test_bench_runs_end_to_end(tmp_path):
    servers = ["webcluster"] + [
        name
        for name in ("gunicorn", "waitress", "granian", "uwsgi")
        if importlib.util.find_spec("pyuwsgi" if name == "uwsgi" else name) is not None
    ]
    out = tmp_path / "B.md"
    cmd = [
        sys.executable, "-m", "loadtests.bench", "--servers", ",".join(servers),
        "--scenarios", "ka64,close64,idle", "--procs", "1", "--threads", "4", "--rounds", "1",
        "--duration", "1", "--warmup", "0", "--idle-connections", "50", "--idle-hold", "1",
        "--name", "smoke", "--write", str(out), "--plot", str(tmp_path / "p.png"),
        "--json", str(tmp_path / "r.json"),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=80)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[round 1/1] ka64" in proc.stderr  # progress lines while running
    data = json.loads((tmp_path / "r.json").read_text())
    runs = {(r["scenario"], r["server"]): r for r in data["runs"]}
    # uWSGI --http-socket closes every connection: it runs the Connection: close scenario only
    assert set(runs) == {(s, v) for s in ("ka64", "close64") for v in servers} - {("ka64", "uwsgi")}
    for run in runs.values():
        assert run["rps"] > 0 and run["requests"] > 0
        assert run["non_2xx"] == 0
        assert run["cpu_s"] > 0 and run["pss"] > 0
        # the kernel's part: every request is a recv and a send
        assert 0 < run["sys_s"] < run["cpu_s"]
        # where the rest of the cores went: a share of idle time, and wrk's own CPU
        assert 0 <= run["idle_pct"] < 100 and run["client_s"] > 0
    idle = [i for i in data["idle"] if i["server"] == "webcluster"]
    assert [i["result"]["opened"] for i in idle] == [50, 50]
    assert all(i["result"]["reused_ok"] == 50 for i in idle)  # 1 s hold < every keep-alive timeout
    text = out.read_text()
    assert "<!-- bench:smoke:start -->" in text and "<!-- bench:smoke:end -->" in text
    assert "| hello, keep-alive, 64 conns | webcluster |" in text
    assert "wrk -t1 -c64 -d1s --latency" in text
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "p.png").stat().st_size > 1000
