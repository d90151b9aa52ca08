"""The cluster under test, seen from the load runner: start/stop it, read its /stats, inject faults.

``Cluster`` either starts ``supervisor.py`` itself (``Cluster.start``) or attaches to a running one
(``Cluster.attach``: a supervisor pid and an admin address; faults need the pid). All calls come from
the runner's main thread.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
DEMO_APP = "loadtests.demoapp:app"
STATIC_DIR = REPO / "loadtests" / "static"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def demo_server_args(procs: int, threads: int) -> list[str]:
    """``supervisor.py`` arguments that serve the demo app and its static assets."""
    return [
        "--procs", str(procs), "--threads", str(threads),
        "--app", DEMO_APP, "--chdir", str(REPO), "--static", f"/static={STATIC_DIR}",
    ]  # fmt: skip


@dataclass(frozen=True)
class KillRecord:
    """One ``kill -9``: the worker, and how many TCP connections it held at that instant."""

    pid: int
    slot: int | None
    connections: int | None  # None: psutil could not read them


class ClusterError(RuntimeError):
    """The cluster did not start, or cannot be reached."""


class Cluster:
    """A webcluster supervisor plus its admin endpoint."""

    def __init__(
        self, url: str, admin: str, pid: int | None, proc: subprocess.Popen | None = None
    ) -> None:
        self.url = url  # base URL of the public port, e.g. http://127.0.0.1:8080
        self.admin = admin  # HOST:PORT of the admin endpoint
        self.pid = pid  # supervisor pid (None: faults cannot be injected)
        self._proc = proc  # set when we started it (then we stop it)
        self._rng = random.Random()

    # -- lifecycle ---------------------------------------------------------------------------------

    @classmethod
    def start(
        cls, procs: int, threads: int, log_path: Path, extra_args: list[str], timeout: float = 60.0
    ) -> Cluster:
        """Start ``supervisor.py`` with the demo app and static assets on free loopback ports and wait
        until ``procs`` workers report ``running`` in /stats."""
        port, admin_port = free_port(), free_port()
        admin = f"127.0.0.1:{admin_port}"
        cmd = [
            sys.executable, str(REPO / "supervisor.py"), *demo_server_args(procs, threads),
            "--bind", f"127.0.0.1:{port}", "--admin", admin, *extra_args,
        ]  # fmt: skip
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        cluster = cls(f"http://127.0.0.1:{port}", admin, proc.pid, proc)
        try:
            cluster.wait_ready(procs, timeout, log_path)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    @classmethod
    def attach(cls, url: str, admin: str, pid: int | None) -> Cluster:
        """A cluster somebody else runs: we read its stats and (with ``pid``) signal it, never stop it."""
        return cls(url.rstrip("/"), admin, pid)

    @property
    def owned(self) -> bool:
        return self._proc is not None

    def wait_ready(self, procs: int, timeout: float, log_path: Path | None = None) -> None:
        """Poll /stats until ``procs`` workers are running, or raise ``ClusterError``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-2000:] if log_path else ""
                raise ClusterError(f"supervisor exited with {self._proc.returncode}:\n{tail}")
            stats = self.stats(quiet=True)
            if stats and len(running_workers(stats)) >= procs:
                return
            time.sleep(0.1)
        raise ClusterError(
            f"{procs} workers not running within {timeout:.0f} s (admin {self.admin})"
        )

    def stop(self, timeout: float = 40.0) -> int | None:
        """TERM the supervisor we started, KILL it (and any worker left) after ``timeout``."""
        if self._proc is None or self.pid is None:
            return None
        try:
            children = psutil.Process(self.pid).children(recursive=True)
        except psutil.Error:
            children = []
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        for child in children:  # orphans of a supervisor that had to be killed
            try:
                child.kill()
            except psutil.Error:
                pass
        return self._proc.returncode

    # -- observation -------------------------------------------------------------------------------

    def stats(self, quiet: bool = False) -> dict[str, Any] | None:
        """The /stats document, or None when the admin endpoint does not answer (``quiet``) ."""
        try:
            with urllib.request.urlopen(f"http://{self.admin}/stats", timeout=5) as response:
                doc = json.load(response)
            doc["_fetched_at"] = time.time()  # ours, not the server's: places its history in time
            return doc
        except (OSError, urllib.error.URLError, ValueError) as exc:
            if quiet:
                return None
            raise ClusterError(f"GET http://{self.admin}/stats: {exc}") from exc

    def settled_stats(self, timeout: float = 15.0) -> dict[str, Any] | None:
        """/stats once every live worker has reported after this call began: a worker's counters
        include every request it finished before its report (exited workers flushed theirs on a clean
        exit), so the totals then cover everything answered before the call."""
        began = time.monotonic()
        while True:
            stats = self.stats(quiet=True)
            elapsed = time.monotonic() - began
            if stats is None or elapsed > timeout:
                return stats
            ages = [w.get("heartbeat_age_s") for w in stats.get("workers", [])]
            # 0.2 s margin: a request is counted just after its last byte is handed to the kernel
            if all(age is None or age < elapsed - 0.2 for age in ages):
                return stats
            time.sleep(0.1)

    def worker_pids(self) -> dict[int, int | None]:
        """Running worker pid -> slot: the supervisor's children that /stats lists as running
        (children it has not listed yet are still booting; they are left alone)."""
        if self.pid is None:
            return {}
        try:
            children = {p.pid for p in psutil.Process(self.pid).children()}
        except psutil.Error:
            return {}
        stats = self.stats(quiet=True)
        if stats is None:
            return dict.fromkeys(children)
        listed = {w["pid"]: w.get("slot") for w in running_workers(stats)}
        return {pid: slot for pid, slot in listed.items() if pid in children}

    # -- faults ------------------------------------------------------------------------------------

    def signal(self, signum: signal.Signals) -> None:
        """Send ``signum`` (HUP, TTIN, TTOU) to the supervisor."""
        if self.pid is None:
            raise ClusterError("no supervisor pid: pass --supervisor-pid to inject faults")
        os.kill(self.pid, signum)

    def kill_random_worker(self) -> KillRecord | None:
        """``kill -9`` a random running worker. It is first frozen with SIGSTOP so that counting its
        TCP connections and killing it see the same set: the count bounds the requests the kill can
        fail (each Locust user has at most one request in flight, on one connection)."""
        workers = self.worker_pids()
        if not workers:
            return None
        pid = self._rng.choice(sorted(workers))
        try:
            os.kill(pid, signal.SIGSTOP)
            try:
                held = _established(pid)
            finally:
                os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # it exited between the listing and the kill
            return None
        return KillRecord(pid=pid, slot=workers[pid], connections=held)


def _established(pid: int) -> int | None:
    """ESTABLISHED TCP connections of ``pid`` (a request in flight needs one; listening sockets and
    half-closed ones cannot fail a request), or None when psutil may not look."""
    try:
        conns = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return None
    return sum(1 for c in conns if c.status == psutil.CONN_ESTABLISHED)


def running_workers(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """The workers of a /stats document whose state is ``running``."""
    return [w for w in stats.get("workers", []) if w.get("state") == "running"]
