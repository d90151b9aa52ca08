"""Distributed, headless Locust load test of webcluster, with faults injected on a schedule.

``python -m loadtests.run --help``. It starts the cluster (``supervisor.py`` with ``loadtests.demoapp``
and ``loadtests/static``) on free loopback ports, or targets ``--host``; runs one Locust master and
``--locust-workers`` Locust workers as subprocesses; injects reloads, worker kills and TTIN/TTOU while
the load runs; prints a progress line every few seconds; then writes a results folder and prints a
summary. Exit status: 0 pass, 1 a threshold (``--max-failures``, ``--max-p95-ms``) missed or Locust
failed, 2 the run could not be made (cluster or Locust did not start).

Results folder: ``locust_stats.csv``, ``locust_stats_history.csv``, ``locust_failures.csv``,
``locust_exceptions.csv``, ``locust-report.html``, ``stats-start.json`` / ``stats-end.json`` (the
cluster's /stats), ``faults.jsonl``, ``summary.json`` / ``summary.txt`` / ``summary.md``, ``chart.png``
(when matplotlib is installed), and the logs of every process.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests.cluster import REPO, Cluster, ClusterError
from loadtests.faults import Fault, FaultLog, schedule
from loadtests.locusts import LoadShape, LocustFleet
from loadtests.plot import plot_run
from loadtests.report import (
    MIB,
    RunData,
    Summary,
    read_csv,
    render_markdown,
    render_text,
    summarize,
)


class RunError(RuntimeError):
    """The run could not be made (exit status 2)."""


def duration(text: str) -> float:
    """``90``, ``90s``, ``5m``, ``1h`` -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: use seconds, or a number with s, m or h")
    return float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[match[2]]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.run",
        description="Load-test webcluster with a distributed, headless Locust; inject faults.",
    )
    target = p.add_argument_group("target (default: start a cluster with the demo app)")
    target.add_argument("--host", help="test this running server (http://HOST:PORT) instead")
    target.add_argument("--admin", help="its admin endpoint HOST:PORT (for /stats)")
    target.add_argument("--supervisor-pid", type=int, help="its supervisor pid (for faults)")
    target.add_argument("--procs", type=int, default=2, help="worker processes (default 2)")
    target.add_argument("--threads", type=int, default=16, help="threads per worker (default 16)")
    target.add_argument(
        "--server-arg", action="append", default=[], metavar="ARG",
        help="extra supervisor.py argument, repeatable (--server-arg=--max-requests=5000)",
    )  # fmt: skip
    load = p.add_argument_group("load")
    load.add_argument("-u", "--users", type=int, default=50, help="simulated users (default 50)")
    load.add_argument("-r", "--spawn-rate", type=float, default=10.0, help="users started per s")
    load.add_argument("-t", "--duration", type=duration, default=60.0, help="e.g. 20s, 5m")
    load.add_argument("--locust-workers", type=int, default=2, help="Locust worker processes")
    load.add_argument("--drain-timeout", type=duration, default=30.0,
                      help="most seconds users get to finish their last task (default 30)")  # fmt: skip
    load.add_argument("--user-class", action="append", default=[], metavar="NAME",
                      help="run only these locustfile users (repeatable)")  # fmt: skip
    faults = p.add_argument_group("faults (periods in seconds from the start of the load)")
    faults.add_argument("--reload-every", type=duration, metavar="S", help="SIGHUP the supervisor")
    faults.add_argument("--kill-worker-every", type=duration, metavar="S",
                        help="kill -9 a random running worker")  # fmt: skip
    faults.add_argument("--ttin-ttou", type=duration, nargs="?", const=10.0, metavar="S",
                        help="alternate TTIN and TTOU every S seconds (default 10)")  # fmt: skip
    out = p.add_argument_group("output and verdict")
    out.add_argument(
        "--results", type=Path, help="results folder (default loadtests/results/<time>)"
    )
    out.add_argument("--progress-every", type=duration, default=5.0, help="seconds between lines")
    out.add_argument("--max-failures", type=int, help="fail the run above this many failures")
    out.add_argument("--max-p95-ms", type=float, help="fail the run if p95 exceeds this")
    out.add_argument("--no-plot", action="store_true", help="skip chart.png")
    out.add_argument("--title", default="", help="chart title")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    opts = parser.parse_args(argv)
    wants_faults = opts.reload_every or opts.kill_worker_every or opts.ttin_ttou
    if opts.host and wants_faults and not opts.supervisor_pid:
        parser.error("faults against --host need --supervisor-pid (and --admin for /stats)")
    if opts.results is None:
        opts.results = (
            REPO / "loadtests" / "results" / time.strftime("%Y%m%d-%H%M%S")
        )  # git-ignored
    return opts


def open_cluster(opts: argparse.Namespace) -> Cluster:
    if opts.host:
        return Cluster.attach(opts.host, opts.admin or "", opts.supervisor_pid)
    print(f"starting cluster: {opts.procs} workers x {opts.threads} threads", flush=True)
    return Cluster.start(
        opts.procs, opts.threads, opts.results / "cluster.log", list(opts.server_arg)
    )


def progress_line(
    elapsed: float, fleet: LocustFleet, stats: dict[str, Any] | None, log: FaultLog
) -> str:
    """One line of live figures: Locust's current window and the cluster's own view."""
    row = fleet.latest() or {}
    p95 = row.get("95%", "N/A")
    line = (
        f"[{elapsed:5.0f}s] users {row.get('User Count', '0'):>4}  "
        f"req/s {float(row.get('Requests/s') or 0):7.1f}  fail/s {float(row.get('Failures/s') or 0):5.1f}  "
        f"p95 {p95:>5} ms  total {row.get('Total Request Count', '0')} "
        f"({row.get('Total Failure Count', '0')} failed)"
    )
    if stats:
        totals = stats["totals"]
        restarts = sum(stats.get("restarts", {}).values())
        line += (
            f" | cluster {totals['workers']} workers {totals['requests_per_s']:.0f} req/s "
            f"rss {totals['rss_bytes'] / MIB:.0f} MiB restarts {restarts}"
        )
    counts = log.counts()
    if counts:
        line += " | faults " + " ".join(f"{k} {n}" for k, n in sorted(counts.items()))
    return line


def record_rss(path: Path, elapsed: float, stats: dict[str, Any] | None) -> None:
    """Append each running worker's RSS to ``rss.csv`` (t, slot, pid, rss_bytes)."""
    if not stats:
        return
    new = not path.exists()
    with path.open("a") as f:
        if new:
            f.write("t,slot,pid,rss_bytes\n")
        for w in stats.get("workers", []):
            if w.get("state") == "running":
                f.write(f"{elapsed:.1f},{w['slot']},{w['pid']},{w['rss_bytes']}\n")


def drive(fleet: LocustFleet, cluster: Cluster, plan: list[Fault], log: FaultLog, opts) -> None:
    """Until the master exits: inject each fault when due, print progress, else wait on the master."""
    pending = list(plan)
    start = log.load_start
    next_progress = start + opts.progress_every
    hard_deadline = start + opts.duration + opts.drain_timeout + 120
    while fleet.running():
        now = time.time()
        if now > hard_deadline:
            raise RunError("Locust master did not finish in time; see locust-master.log")
        while pending and start + pending[0].at <= now:
            record = log.inject(pending.pop(0))
            detail = {k: v for k, v in record.items() if k not in ("time", "kind", "t")}
            print(f"[{record['t']:5.0f}s] fault {record['kind']}: {detail}", flush=True)
        if now >= next_progress:
            stats = cluster.stats(quiet=True) if cluster.admin else None
            record_rss(opts.results / "rss.csv", now - start, stats)
            print(progress_line(now - start, fleet, stats, log), flush=True)
            next_progress += opts.progress_every
        due = [next_progress] + ([start + pending[0].at] if pending else [])
        fleet.wait(max(0.05, min(due) - time.time()))


@dataclass
class Outcome:
    """What a run leaves behind besides Locust's files."""

    stats_start: dict[str, Any] | None = None
    stats_end: dict[str, Any] | None = None
    exit_code: int | None = None
    ran_s: float = 0.0  # seconds of load actually run (less than --duration if cut short)


def run(opts: argparse.Namespace) -> Summary:
    """Do the run described by ``opts`` (see ``build_parser``) and return its summary."""
    opts.results.mkdir(parents=True, exist_ok=True)
    if any(opts.results.iterdir()):
        raise RunError(f"results folder {opts.results} is not empty; give a new one")
    try:
        cluster = open_cluster(opts)
    except ClusterError as exc:
        raise RunError(str(exc)) from exc
    log = FaultLog(cluster, opts.results / "faults.jsonl", time.time())
    out = Outcome()
    fleet: LocustFleet | None = None
    try:
        fleet = LocustFleet(_shape(opts, cluster), opts.results)
        out.stats_start = cluster.settled_stats() if cluster.admin else None
        fleet.start()
        print(f"Locust: 1 master + {opts.locust_workers} workers -> {cluster.url}", flush=True)
        load_start = fleet.wait_started(timeout=90)
        if load_start is None:
            raise RunError(f"Locust did not start; see {opts.results / 'locust-master.log'}")
        log.load_start = load_start
        plan = schedule(opts.duration, opts.reload_every, opts.kill_worker_every, opts.ttin_ttou)
        drive(fleet, cluster, plan, log, opts)
        out.ran_s = min(opts.duration, time.time() - load_start)
        out.exit_code = fleet.wait(timeout=5)
    finally:
        if fleet is not None:
            fleet.stop()
        if cluster.admin:
            out.stats_end = cluster.settled_stats()
        cluster.stop()
    return _finish(opts, cluster, fleet, log, out)


def _shape(opts: argparse.Namespace, cluster: Cluster) -> LoadShape:
    return LoadShape(
        host=cluster.url,
        users=opts.users,
        spawn_rate=opts.spawn_rate,
        duration=opts.duration,
        workers=opts.locust_workers,
        drain_timeout=opts.drain_timeout,
        user_classes=tuple(opts.user_class),
    )


def _finish(
    opts: argparse.Namespace, cluster: Cluster, fleet: LocustFleet, log: FaultLog, out: Outcome
) -> Summary:
    """Write the snapshots, summary files and chart; return the summary."""
    for name, stats in (("stats-start.json", out.stats_start), ("stats-end.json", out.stats_end)):
        if stats is not None:
            (opts.results / name).write_text(json.dumps(stats, indent=1))
    data = RunData(
        stats_rows=read_csv(fleet.stats_csv),
        rss_samples=read_csv(opts.results / "rss.csv"),
        failure_rows=read_csv(fleet.failures_csv),
        stats_start=out.stats_start,
        stats_end=out.stats_end,
        faults=log.counts(),
        kill_connection_bound=log.kill_connection_bound(),
        duration_s=round(out.ran_s, 1),
        users=opts.users,
        locust_workers=opts.locust_workers,
        owned_cluster=cluster.owned,
        locust_exit_code=out.exit_code,
    )
    summary = summarize(data, opts.max_failures, opts.max_p95_ms)
    doc: dict[str, Any] = summary.to_dict()
    (opts.results / "summary.json").write_text(json.dumps(doc, indent=1))
    (opts.results / "summary.txt").write_text(render_text(summary) + "\n")
    (opts.results / "summary.md").write_text(render_markdown(summary))
    if not opts.no_plot:
        chart = plot_run(opts.results, opts.results / "chart.png", opts.title)
        print(f"chart: {chart}" if chart else "chart: skipped (pip install matplotlib)")
    return summary


def _terminate(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds run(): every process is stopped by pid


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    opts = parse_args(argv)
    # TERM (a CI timeout) and INT, even where a background job inherits INT ignored, clean up too
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    try:
        summary = run(opts)
    except RunError as exc:
        print(f"loadtests.run: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("loadtests.run: interrupted; processes stopped, no summary", file=sys.stderr)
        return 130
    print(render_text(summary))
    print(f"results: {opts.results}")
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
