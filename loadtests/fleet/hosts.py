"""One fleet host: a network namespace running a webcluster supervisor (demo app, PROXY protocol,
drain delay), restarted, reloaded or crashed by the runner, and its request count across restarts."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtests.cluster import REPO, demo_server_args
from loadtests.fleet.netns import NetnsCaller, Network

PORT, ADMIN_PORT = 8080, 9180
_SERVED = re.compile(r"supervisor exiting with code \S+, (\d+) requests served")


@dataclass
class Life:
    """One supervisor run of a host: its pid and the last /stats requests total seen."""

    pid: int
    started: float
    requests: int = 0
    ended: str = ""  # "", "stopped", "crashed"


@dataclass
class Host:
    name: str  # h1, h2...
    ns: str
    address: str
    args: list[str]  # supervisor arguments besides --bind/--admin
    log: Path
    lives: list[Life] = field(default_factory=list)
    proc: subprocess.Popen | None = None

    @property
    def admin(self) -> str:
        return f"{self.address}:{ADMIN_PORT}"

    def start(self) -> None:
        cmd = [
            *Network.exec_prefix(self.ns), sys.executable, str(REPO / "supervisor.py"),
            "--bind", f"{self.address}:{PORT}", "--admin", self.admin, *self.args,
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        self.lives.append(Life(self.proc.pid, time.time()))

    def final_count(self) -> int | None:
        """The request total the supervisor that just exited logged ("N requests served"): exact,
        unlike a /stats reading, which can miss the workers' last report before the exit."""
        found = _SERVED.findall(self.log.read_text(errors="replace"))
        return int(found[-1]) if found else None

    def signal(self, signum: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signum)

    def wait_exit(self, timeout: float) -> int | None:
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def crash(self, net: Network) -> tuple[int, int]:
        """kill -9 every process of the host (its namespace): (processes, connections they held).

        The processes are frozen (SIGSTOP) first, so counting their ESTABLISHED TCP connections and
        killing them see the same set (in flight, or pooled by HAProxy)."""
        pids = net.pids(self.ns)
        for pid in pids:
            _kill(pid, signal.SIGSTOP)
        held = _established(pids[0]) if pids else 0
        for pid in pids:
            _kill(pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()
        if self.lives:
            self.lives[-1].ended = "crashed"
        return len(pids), held

    @property
    def requests(self) -> int:
        """Requests counted over all lives (each life's last /stats reading)."""
        return sum(life.requests for life in self.lives)

    def observe(self, caller: NetnsCaller) -> dict[str, Any] | None:
        """Read /stats (from the balancer's namespace) and remember this life's count."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        try:
            doc = caller.call(_get_json, f"http://{self.admin}/stats")
        except Exception:  # noqa: BLE001 - not up yet, or just gone: the last reading stands
            return None
        self.lives[-1].requests = int(doc["totals"]["requests"])
        return doc

    def running_workers(self, caller: NetnsCaller) -> int:
        doc = self.observe(caller)
        return sum(1 for w in (doc or {}).get("workers", []) if w.get("state") == "running")


def _kill(pid: int, signum: signal.Signals) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _established(pid: int) -> int:
    """ESTABLISHED TCP connections in the network namespace of ``pid``, from its own view of the
    kernel's tables (/proc/PID/net/tcp*; psutil would read the caller's namespace). Only the host's
    processes live in that namespace, so these are all theirs."""
    count = 0
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        count += sum(1 for line in lines if line.split()[3] == "01")  # TCP_ESTABLISHED
    return count


def _get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def host_args(procs: int, threads: int, drain_delay: float, balancer: str) -> list[str]:
    """Supervisor arguments of a fleet host: the demo app, PROXY protocol from the balancer only,
    its admin endpoint readable from the fleet's subnet."""
    return [
        *demo_server_args(procs, threads),
        "--proxy-protocol", "--forwarded-allow-ips", balancer,
        "--admin-allow-ips", "198.18.0.0/24", "--drain-delay", f"{drain_delay:g}",
        # longer than the balancer's idle keep-alive: the balancer, not the host, ends idle
        # connections, so a request never meets a host-side idle close
        "--keepalive", "75",
    ]  # fmt: skip
