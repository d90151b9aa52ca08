"""10,000 idle keep-alive connections against two workers, in a CI-sized form.

The experiment is ``loadtests.bench.idle.hold_idle`` (the one BENCHMARKS.md reports with a 30 s hold):
open the connections, one request each, hold them while fresh clients keep getting answers, then reuse
every one of them.

Keep-alive timeout: the held run uses ``--keepalive 30`` because the default (5 s, as documented in the
README) would, correctly, close them during a 10 s hold; the second test shows exactly that with the
defaults: nothing is closed before 5 s, everything soon after.

Bounds are generous (the machine is shared and has 2 cores): fresh-request p99 < 250 ms here, where the
documented run (BENCHMARKS.md) holds it under 50 ms; memory growth < 4 KiB per idle connection, PSS
summed over the workers.
"""

from __future__ import annotations

import http.client
import resource

import psutil
import pytest

from loadtests.bench.idle import IdleResult, hold_idle, raise_nofile

N_IDLE = 10_000
P99_BOUND_MS = 250.0
GROWTH_BOUND = 4096  # bytes per idle connection


def _need_fds(n: int) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < n:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {n}")
    raise_nofile(n)


def _warm(port: int, n: int = 200) -> None:
    """Serve some requests first so the 'before' memory sample is not taken on a cold worker."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for _ in range(n):
            conn.request("GET", "/")
            assert conn.getresponse().read()
    finally:
        conn.close()


def _sampler(pids: list[int]):
    procs = [psutil.Process(pid) for pid in pids]

    def sample() -> dict[str, int]:
        infos = [p.memory_full_info() for p in procs]
        return {
            "pss": sum(i.pss for i in infos),
            "rss": sum(i.rss for i in infos),
            "threads": sum(p.num_threads() for p in procs),
        }

    return sample


def _report(r: IdleResult) -> str:
    s = r.samples
    growth = (s["opened"]["pss"] - s["before"]["pss"]) / max(r.opened, 1)
    return (
        f"opened {r.opened}/{r.wanted} in {r.open_seconds:.1f}s failed={r.failed} "
        f"closed={len(r.closed_ages)} open_at_end={r.open_at_end} reused={r.reused_ok} "
        f"probes={len(r.probe_ms)} p99={r.probe_percentile(99)}ms failures={r.probe_failures} "
        f"growth={growth:.0f}B/conn threads {s['before']['threads']}->{s['held']['threads']}"
    )


@pytest.mark.timeout(240)
def test_10000_idle_keepalive_connections_are_held_cheaply(run_supervisor):
    _need_fds(N_IDLE + 2048)
    sup = run_supervisor(
        "--procs", "2", "--app", "hello:app", "--chdir", "loadtests", "--keepalive", "30"
    )
    pids = sup.wait_workers(2)
    _warm(sup.port)
    result = hold_idle(sup.port, N_IDLE, hold=10.0, probe_rate=20, sample=_sampler(pids))
    print(_report(result))
    assert result.failed == {}, "connections refused or not answered"
    assert result.opened == N_IDLE
    assert result.closed_ages == [], "closed before the 30 s keep-alive timeout"
    assert result.open_at_end == N_IDLE
    assert result.reused_ok == N_IDLE, "a held connection did not answer a second request"
    assert result.probe_failures == 0 and len(result.probe_ms) >= 100
    assert result.probe_percentile(99) < P99_BOUND_MS
    growth = (result.samples["opened"]["pss"] - result.samples["before"]["pss"]) / N_IDLE
    assert growth < GROWTH_BOUND, f"{growth:.0f} bytes of worker PSS per idle connection"
    # idle connections cost no thread: pools start threads on demand, never beyond 2 x --threads (32)
    assert result.samples["held"]["threads"] - result.samples["before"]["threads"] <= 2 * 32


@pytest.mark.timeout(120)
def test_default_keepalive_keeps_idle_connections_until_5s(run_supervisor):
    n = 1000
    _need_fds(n + 1024)
    sup = run_supervisor("--procs", "2", "--app", "hello:app", "--chdir", "loadtests")
    result = hold_idle(sup.port, n, hold=8.0, probe_rate=20)
    ages = result.closed_ages
    print(
        f"opened {result.opened}, closed {len(ages)}, ages {min(ages, default=0):.2f}-{max(ages, default=0):.2f}s"
    )
    assert result.failed == {} and result.opened == n
    # every one was closed by the server, none before the documented 5 s (ages are measured from the
    # request's send time, a lower bound of the server's idle start), all within a generous margin after
    assert len(result.closed_ages) == n
    assert min(result.closed_ages) >= 5.0
    assert max(result.closed_ages) < 7.5
    assert result.probe_failures == 0
