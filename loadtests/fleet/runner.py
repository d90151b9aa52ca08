"""``python -m loadtests.fleet``: N webcluster hosts behind HAProxy, under distributed Locust load, with
fleet-level faults; see ``loadtests/fleet/__init__.py`` and the README section "Beyond one machine".

Exit status: 0 the run passed its checks (no failure unless a crash was injected, counts agree), 1 a
check failed, 2 the run could not be made (no root, no ``ip netns``, no haproxy, a host did not start).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loadtests.cluster import REPO
from loadtests.fleet import faults as fl
from loadtests.fleet.haproxy import Backend, HAProxy, counts, haproxy_binary, render
from loadtests.fleet.hosts import ADMIN_PORT, PORT, Host, host_args
from loadtests.fleet.netns import NetnsCaller, NetnsError, Network, check_support
from loadtests.fleet.summary import render_markdown, render_text, summarize
from loadtests.locusts import LoadShape, LocustFleet
from loadtests.report import read_csv
from loadtests.run import duration

LB_OCTET, LOAD_OCTET, FIRST_HOST_OCTET = 2, 3, 11
_RUNS = itertools.count()
FRONT_PORT = 80


class FleetError(RuntimeError):
    """The run could not be made (exit status 2)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.fleet",
        description="N webcluster hosts (network namespaces) behind HAProxy, under distributed "
        "Locust load, with rolling restarts, rolling HUPs, host crashes and hosts added. Needs root.",
    )
    p.add_argument("--hosts", type=int, default=3, help="hosts at the start (default 3)")
    p.add_argument("--procs", type=int, default=2, help="workers per host (default 2)")
    p.add_argument("--threads", type=int, default=8, help="threads per worker (default 8)")
    p.add_argument("--drain-delay", type=float, help="host --drain-delay in s "
                   "(default inter x (fall + 2)); 0 = the baseline without drain")  # fmt: skip
    p.add_argument("--inter-ms", type=int, default=1000, help="HAProxy check interval (1000)")
    p.add_argument("--fall", type=int, default=2, help="HAProxy failed checks to mark down (2)")
    p.add_argument("--rise", type=int, default=2, help="HAProxy good checks to mark up (2)")
    p.add_argument("--no-redispatch", action="store_true",
                   help="drop `option redispatch` from haproxy.cfg (HAProxy's default: a refused "
                   "connection is retried on the same host only)")  # fmt: skip
    p.add_argument("-u", "--users", type=int, default=60, help="Locust users (default 60)")
    p.add_argument("-r", "--spawn-rate", type=float, default=20.0, help="users started per s")
    p.add_argument("-t", "--duration", type=duration, default=60.0, help="load time, e.g. 5m")
    p.add_argument("--locust-workers", type=int, default=2, help="Locust worker processes")
    p.add_argument("--user-class", action="append", default=[], metavar="NAME",
                   help="run only these locustfile users (repeatable)")  # fmt: skip
    f = p.add_argument_group("faults (seconds after the load began; each at most once)")
    f.add_argument("--rolling-restart", type=duration, metavar="S",
                   help="TERM each host in turn, wait until it stopped, start it again")  # fmt: skip
    f.add_argument("--rolling-hup", type=duration, metavar="S", help="HUP each host in turn")
    f.add_argument("--crash", type=duration, metavar="S",
                   help="kill -9 every process of one host (the last), then start it again")  # fmt: skip
    f.add_argument("--add-host", type=duration, metavar="S", help="add one host under load")
    o = p.add_argument_group("output")
    o.add_argument(
        "--results", type=Path, help="results folder (default loadtests/results/fleet-<time>)"
    )
    o.add_argument("--progress-every", type=duration, default=5.0, help="seconds between lines")
    o.add_argument("--no-plot", action="store_true", help="skip chart.png")
    o.add_argument("--title", default="", help="chart title")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    opts = build_parser().parse_args(argv)
    if opts.drain_delay is None:
        opts.drain_delay = opts.inter_ms / 1000 * (opts.fall + 2)
    if opts.results is None:
        opts.results = REPO / "loadtests" / "results" / time.strftime("fleet-%Y%m%d-%H%M%S")
    opts.results = opts.results.resolve()  # HAProxy reads a relative socket path as host:port
    return opts


def fault_plan(opts: argparse.Namespace) -> list[tuple[float, str]]:
    """(seconds after the load began, fault) in time order."""
    plan = [(getattr(opts, name), name) for name in
            ("rolling_restart", "rolling_hup", "crash", "add_host")]  # fmt: skip
    return sorted((at, name) for at, name in plan if at is not None)


class Run:
    """One fleet run: build, load, inject, collect. ``execute()`` returns the summary."""

    def __init__(self, opts: argparse.Namespace) -> None:
        self.opts = opts
        self.results: Path = opts.results
        self.net = Network(f"wcf{os.getpid()}x{next(_RUNS)}")  # unique per run
        self.stop = threading.Event()
        self.samples: list[tuple[float, str, int, int]] = []  # (t, host, life, requests)

    def execute(self) -> dict[str, Any]:
        self.results.mkdir(parents=True, exist_ok=True)
        if any(self.results.iterdir()):
            raise FleetError(f"results folder {self.results} is not empty; give a new one")
        with self.net:
            return self._with_network()

    def _with_network(self) -> dict[str, Any]:
        o = self.opts
        lb_ns, lb_addr = self.net.add("lb", LB_OCTET)
        load_ns, load_addr = self.net.add("load", LOAD_OCTET)
        print(
            f"network: bridge in {self.net.hub}, HAProxy {lb_addr}, Locust {load_addr}", flush=True
        )
        total = o.hosts + (1 if o.add_host is not None else 0)
        args = host_args(o.procs, o.threads, o.drain_delay, lb_addr)
        hosts = [Host(f"h{i + 1}", "", f"198.18.0.{FIRST_HOST_OCTET + i}", args,
                      self.results / f"host-h{i + 1}.log") for i in range(total)]  # fmt: skip
        probe = NetnsCaller(lb_ns)
        haproxy = self._haproxy(hosts, lb_ns, lb_addr, o.hosts)
        fleet = fl.Fleet(self.net, haproxy, [], probe, o.procs, o.inter_ms / 1000, o.fall,
                         o.rise, o.drain_delay)  # fmt: skip
        locust: LocustFleet | None = None
        try:
            self._start_hosts(fleet, hosts[: o.hosts])
            locust = LocustFleet(self._shape(lb_addr), self.results, self.net.exec_prefix(load_ns))
            locust.start()
            print(f"Locust: 1 master + {o.locust_workers} workers -> http://{lb_addr}", flush=True)
            load_start = locust.wait_started(timeout=90)
            if load_start is None:
                raise FleetError(f"Locust did not start; see {self.results / 'locust-master.log'}")
            log = fl.FaultLog(self.results / "faults.jsonl", load_start)
            spare = hosts[o.hosts] if o.add_host is not None else None
            injector = threading.Thread(target=self._inject, args=(fleet, log, spare), daemon=True)
            injector.start()
            self._drive(locust, fleet, log)
            injector.join(timeout=o.drain_delay + 120)
            time.sleep(1.5)  # every worker's last one-second report
            for host in fleet.hosts:
                host.observe(probe)
            hap = counts(haproxy.stats(), [h.name for h in hosts])
            (self.results / "haproxy-stats.txt").write_text(haproxy.command("show stat"))
        finally:
            self.stop.set()
            if locust is not None:
                locust.stop()
            for host in hosts:
                host.signal(signal.SIGKILL)
            haproxy.stop()
            probe.close()
        return self._finish(locust, fleet, log, hap, load_start)

    def _haproxy(self, hosts: list[Host], ns: str, addr: str, enabled: int) -> HAProxy:
        if haproxy_binary() is None:
            raise FleetError("haproxy is not installed (apt-get install haproxy)")
        o = self.opts
        backends = [Backend(h.name, h.address, PORT, i < enabled) for i, h in enumerate(hosts)]
        config = self.results / "haproxy.cfg"
        sock = self.results / "haproxy.sock"
        text = render(frontend=f"{addr}:{FRONT_PORT}", stats_socket=sock, servers=backends,
                      admin_port=ADMIN_PORT, inter_ms=o.inter_ms, fall=o.fall, rise=o.rise)  # fmt: skip
        if o.no_redispatch:
            text = text.replace("    option redispatch 1\n", "")
        config.write_text(text)
        haproxy = HAProxy(config, sock, self.results / "haproxy.log", self.net.exec_prefix(ns))
        try:
            haproxy.start()
        except RuntimeError as exc:
            raise FleetError(str(exc)) from None
        return haproxy

    def _start_hosts(self, fleet: fl.Fleet, hosts: list[Host]) -> None:
        for host in hosts:
            host.ns, host.address = self.net.add(host.name, int(host.address.rsplit(".", 1)[1]))
            host.start()
            fleet.hosts.append(host)
        for host in hosts:
            if not fleet.wait_ready(host):
                raise FleetError(f"host {host.name} did not start; see {host.log}")
            if fleet.haproxy.wait_status(host.name, "UP", 30) is None:
                raise FleetError(f"HAProxy did not mark {host.name} up; see haproxy.log")
        print(f"{len(hosts)} hosts up: " + ", ".join(f"{h.name} {h.address}" for h in hosts),
              flush=True)  # fmt: skip

    def _shape(self, lb_addr: str) -> LoadShape:
        o = self.opts
        return LoadShape(host=f"http://{lb_addr}", users=o.users, spawn_rate=o.spawn_rate,
                         duration=o.duration, workers=o.locust_workers,
                         user_classes=tuple(o.user_class))  # fmt: skip

    def _inject(self, fleet: fl.Fleet, log: fl.FaultLog, spare: Host | None) -> None:
        actions: dict[str, Callable[[], None]] = {
            "rolling_restart": lambda: fl.rolling_restart(fleet, log),
            "rolling_hup": lambda: fl.rolling_hup(fleet, log),
            "crash": lambda: fl.crash_host(fleet, log, fleet.hosts[-1].name),
            "add_host": lambda: fl.add_host(fleet, log, spare),
        }
        for at, name in fault_plan(self.opts):
            if self.stop.wait(max(0.0, log.load_start + at - time.time())):
                return
            try:
                actions[name]()
            except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
                log.add("error", fault=name, error=repr(exc))

    def _drive(self, locust: LocustFleet, fleet: fl.Fleet, log: fl.FaultLog) -> None:
        """Until Locust ends: sample every host's count twice a second, print progress lines."""
        o = self.opts
        deadline = log.load_start + o.duration + 150
        next_line = time.time() + o.progress_every
        while locust.running():
            if time.time() > deadline:
                raise FleetError("Locust did not finish in time; see locust-master.log")
            t = time.time() - log.load_start
            if t > 60 and not int((locust.latest() or {}).get("Total Request Count") or 0):
                raise FleetError("Locust sent nothing in 60 s; see locust-master.log")
            for host in list(fleet.hosts):
                if host.observe(fleet.probe) is not None:
                    self.samples.append(
                        (round(t, 2), host.name, len(host.lives), host.lives[-1].requests)
                    )
            if time.time() >= next_line:
                next_line += o.progress_every
                print(self._progress(t, locust, fleet), flush=True)
            locust.wait(0.5)

    def _progress(self, t: float, locust: LocustFleet, fleet: fl.Fleet) -> str:
        row = locust.latest() or {}
        try:
            stats = fleet.haproxy.stats()
        except OSError:
            stats = {}
        hosts = " ".join(
            f"{h.name}:{stats.get(h.name, {}).get('status', '?')}/{h.requests}" for h in fleet.hosts
        )
        return (f"[{t:5.0f}s] req/s {float(row.get('Requests/s') or 0):6.1f} total "
                f"{row.get('Total Request Count', '0')} ({row.get('Total Failure Count', '0')} failed)"
                f" | haproxy {stats.get('FRONTEND', {}).get('req_tot', '?')} | {hosts}")  # fmt: skip

    def _finish(self, locust: LocustFleet, fleet: fl.Fleet, log: fl.FaultLog,
                hap: dict[str, Any], load_start: float) -> dict[str, Any]:  # fmt: skip
        with (self.results / "hosts.csv").open("w") as f:
            f.write("t,host,life,requests\n")
            f.writelines(f"{t},{h},{life},{n}\n" for t, h, life, n in self.samples)
        hosts = {h.name: {"requests": h.requests, "lives": [life.requests for life in h.lives],
                          "crashed": any(life.ended == "crashed" for life in h.lives)}
                 for h in fleet.hosts}  # fmt: skip
        summary = summarize(
            stats_rows=read_csv(locust.stats_csv), failure_rows=read_csv(locust.failures_csv),
            history=read_csv(locust.history_csv), haproxy=hap, hosts=hosts, faults=log.records,
            load_start=load_start, duration_s=self.opts.duration,
        )  # fmt: skip
        summary["drain_delay"] = self.opts.drain_delay
        (self.results / "summary.json").write_text(json.dumps(summary, indent=1))
        (self.results / "summary.md").write_text(render_markdown(summary))
        (self.results / "summary.txt").write_text(render_text(summary))
        if not self.opts.no_plot:
            from loadtests.fleet.plot import plot_fleet

            chart = plot_fleet(self.results, self.results / "chart.png", self.opts.title)
            print(f"chart: {chart}" if chart else "chart: skipped (pip install matplotlib)")
        return summary


def verdict(summary: dict[str, Any]) -> bool:
    """Passed: counts agree (or differ only as a crash explains) and failures only from crashes."""
    crashes = summary["crashes"]
    if not crashes:
        return summary["failures"] == 0 and summary["counts_agree"]
    return all(c["failures_within_bound"] for c in crashes) and not summary["agreement"].startswith(
        "MISMATCH"
    )


def _terminate(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds: namespaces and processes removed


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    try:
        check_support()
    except NetnsError as exc:
        print(f"loadtests.fleet: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    try:
        summary = Run(opts).execute()
    except (FleetError, NetnsError) as exc:
        print(f"loadtests.fleet: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("loadtests.fleet: interrupted; namespaces and processes removed", file=sys.stderr)
        return 130
    print(render_text(summary))
    print(f"results: {opts.results}")
    return 0 if verdict(summary) else 1
