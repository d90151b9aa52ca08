"""A/B of webcluster checkouts: the same scenarios against each tree, in interleaved rounds.

``python -m loadtests.bench.ab --tree base=/path/to/old --tree new=. [--rounds 10] [--scenarios ka64,ka1]``

On a shared machine the noise between two runs minutes apart is larger than most single changes, so a
change is measured against its parent in the same minutes: each round starts every tree alone in turn
(``supervisor.py --procs 2 --threads 32 --app hello:app``; a tree may carry extra supervisor arguments
after ``#``, e.g. ``--tree wide=.#--inline-budget 0.5``), warms it with 1 s of wrk, runs each scenario
and stops it; the order of the trees alternates every round. CPU is what the supervisor's whole process
tree used during the run (psutil); the machine's idle share and wrk's own CPU a request are recorded as
in the bench (``suites.machine_idle``, ``suites.children_cpu``). Prints every run, then per scenario the
medians of each tree, and in how many rounds each tree was ahead of the first.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import psutil

from loadtests.bench.servers import cpu_seconds
from loadtests.bench.suites import children_cpu, free_port, idle_percent, machine_idle
from loadtests.bench.wrk import run_wrk, wrk_command

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# name: (connections, Connection: close, path)
SCENARIOS = {
    "ka1": (1, False, "/"),
    "ka64": (64, False, "/"),
    "ka256": (256, False, "/"),
    "close64": (64, True, "/"),
    "static13": (64, False, "/static/13b.txt"),
    "flask64": (64, False, "/flask/json"),  # hello.py's Flask app (flask from the bench extra)
}


def _tree(spec: str) -> tuple[str, str, list[str]]:
    name, _, rest = spec.partition("=")
    path, _, extra = rest.partition("#")
    if not name or not path:
        raise argparse.ArgumentTypeError(f"--tree wants NAME=DIR[#ARGS], got {spec!r}")
    if not os.path.isfile(os.path.join(path, "supervisor.py")):
        raise argparse.ArgumentTypeError(f"{path}: no supervisor.py (a webcluster checkout?)")
    return name, os.path.abspath(path), extra.split()


def _start(path: str, extra: list[str], static: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    cmd = [sys.executable, "supervisor.py", "--procs", "2", "--threads", "32", "--app", "hello:app",
           "--chdir", "loadtests", "--static", f"/static={static}", "--bind", f"127.0.0.1:{port}",
           "--admin", "off", *extra]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).read()
            return proc, port
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                _stop(proc)
                raise SystemExit(f"{path}: the server did not start ({' '.join(cmd)})") from None
            time.sleep(0.1)


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run(trees, scenarios: list[str], rounds: int, duration: float) -> dict:
    """{(tree, scenario): [(req/s, CPU µs a request, machine idle %, wrk's CPU µs a request), ...]}
    over ``rounds`` interleaved rounds."""
    results: dict[tuple[str, str], list[tuple[float, float, float, float]]] = {
        (name, sc): [] for name, _, _ in trees for sc in scenarios
    }
    with tempfile.TemporaryDirectory() as static:
        with open(os.path.join(static, "13b.txt"), "wb") as f:
            f.write(b"Hello, file!\n")
        for r in range(rounds):
            for name, path, extra in trees if r % 2 == 0 else trees[::-1]:
                proc, port = _start(path, extra, static)
                try:
                    sup = psutil.Process(proc.pid)
                    procs = [sup, *sup.children(recursive=True)]
                    for sc in scenarios:
                        conns, close, target = SCENARIOS[sc]
                        url = f"http://127.0.0.1:{port}{target}"
                        run_wrk(wrk_command(url, connections=conns, duration=1, close=close), 60)
                        cpu0, idle0, wrk0 = cpu_seconds(procs), machine_idle(), children_cpu()
                        res = run_wrk(wrk_command(url, connections=conns, duration=duration,
                                                  close=close), duration + 60)  # fmt: skip
                        n = max(res.requests, 1)
                        us = (cpu_seconds(procs) - cpu0) / n * 1e6
                        idle = idle_percent(idle0, machine_idle())
                        wrk_us = (children_cpu() - wrk0) / n * 1e6
                        results[(name, sc)].append((res.rps, us, idle, wrk_us))
                        print(f"round {r + 1}/{rounds} {sc:8} {name:8} {res.rps:9,.0f} req/s "
                              f"{us:6.1f} µs CPU a request, machine idle {idle:4.1f} %, "
                              f"wrk {wrk_us:4.1f} µs a request", flush=True)  # fmt: skip
                finally:
                    _stop(proc)
    return results


def summary(trees, scenarios: list[str], results: dict) -> list[str]:
    """Median req/s and CPU of each tree per scenario, and rounds each was ahead of the first tree."""
    lines = []
    first = trees[0][0]
    for sc in scenarios:
        parts = []
        for name, _, _ in trees:
            runs = results[(name, sc)]
            rps = statistics.median(x[0] for x in runs)
            us, idle, wrk_us = (statistics.median(x[i] for x in runs) for i in (1, 2, 3))
            part = f"{name} {rps:,.0f} req/s ({us:.1f} µs, idle {idle:.1f} %, wrk {wrk_us:.1f} µs)"
            if name != first:
                ahead = sum(b[0] > a[0] for a, b in zip(results[(first, sc)], runs, strict=True))
                part += f", ahead of {first} in {ahead} of {len(runs)}"
            parts.append(part)
        lines.append(f"{sc:8} " + "; ".join(parts))
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.bench.ab", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--tree",
        type=_tree,
        action="append",
        required=True,
        metavar="NAME=DIR[#ARGS]",
        help="a webcluster checkout to run (twice or more; the first is the reference)",
    )
    p.add_argument("--rounds", type=int, default=10, help="interleaved rounds (default 10)")
    p.add_argument("--duration", type=float, default=5, help="seconds of wrk per run (default 5)")
    p.add_argument(
        "--scenarios", default="ka64", help=f"comma-separated, of {', '.join(SCENARIOS)}"
    )
    args = p.parse_args(argv)  # fmt: skip
    scenarios = args.scenarios.split(",")
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        p.error(f"unknown scenario(s) {unknown}; choose from {', '.join(SCENARIOS)}")
    results = run(args.tree, scenarios, args.rounds, args.duration)
    print("medians:")
    for line in summary(args.tree, scenarios, results):
        print(line)


if __name__ == "__main__":
    main()
