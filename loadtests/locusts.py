"""A distributed, headless Locust run as subprocesses: one master and N workers on this machine.

The same commands work across machines: start the master here and ``locust -f loadtests/locustfile.py
--worker --master-host <this host>`` elsewhere. Every process is started by us and killed by its pid.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from loadtests.cluster import REPO, free_port

LOCUSTFILE = REPO / "loadtests" / "locustfile.py"


@dataclass(frozen=True)
class LoadShape:
    """What Locust is asked to do."""

    host: str
    users: int
    spawn_rate: float
    duration: float  # seconds
    workers: int
    drain_timeout: float = (
        30.0  # most seconds users get to finish their last task (locustfile Drain)
    )
    user_classes: tuple[str, ...] = field(default=())


class LocustFleet:
    """Master + workers. ``prefix`` is the results path prefix of Locust's CSV files."""

    def __init__(self, shape: LoadShape, results: Path, wrap: tuple[str, ...] = ()) -> None:
        self.shape = shape
        self.wrap = list(
            wrap
        )  # a command prefix, e.g. ("ip", "netns", "exec", NS) (it execs: same pid)
        self.results = results
        self.prefix = results / "locust"
        self.html = results / "locust-report.html"
        self.started_file = results / "load-started"
        self.master: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self._logs: list = []

    @property
    def history_csv(self) -> Path:
        return Path(f"{self.prefix}_stats_history.csv")

    @property
    def stats_csv(self) -> Path:
        return Path(f"{self.prefix}_stats.csv")

    @property
    def failures_csv(self) -> Path:
        return Path(f"{self.prefix}_failures.csv")

    def start(self) -> None:
        """Start the master, then the workers; the master starts the load once all are connected."""
        s = self.shape
        port = free_port()
        common = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE)]
        master = [
            *common, "--master", "--headless",
            "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
            "--expect-workers", str(s.workers), "--expect-workers-max-wait", "60",
            "-H", s.host, "-u", str(s.users), "-r", str(s.spawn_rate),
            # users stop starting tasks at `duration`; the master quits once all are idle, and
            # --run-time is only the backstop for a user that never finishes (it cuts requests off)
            "--drain-after", f"{s.duration:g}", "-t", f"{s.duration + s.drain_timeout:g}s",
            "--started-file", str(self.started_file),
            # full history: per-second rows whose percentiles cover the last 10 s, not the whole run
            "--csv", str(self.prefix), "--csv-full-history", "--html", str(self.html),
            "--only-summary", "--exit-code-on-error", "0",
            *s.user_classes,
        ]  # fmt: skip
        self.master = self._spawn(master, "locust-master.log")
        worker = [
            *common, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port),
            "--drain-after", f"{s.duration:g}",
        ]  # fmt: skip
        for i in range(s.workers):
            self.workers.append(self._spawn([*worker, *s.user_classes], f"locust-worker-{i}.log"))

    def _spawn(self, cmd: list[str], log_name: str) -> subprocess.Popen:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        log = (self.results / log_name).open("ab")
        self._logs.append(log)
        return subprocess.Popen(
            [*self.wrap, *cmd], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
        )

    def running(self) -> bool:
        return self.master is not None and self.master.poll() is None

    def wait_started(self, timeout: float) -> float | None:
        """Wait until the master says the load began (the locustfile writes ``started_file`` on
        ``test_start``); return that unix time, or None if the master exited or the deadline passed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.running():
            text = self.started_file.read_text() if self.started_file.exists() else ""
            if text.endswith("\n"):
                return float(text)
            time.sleep(0.1)
        return None

    def latest(self) -> dict[str, str] | None:
        """The newest ``Aggregated`` row of the stats history (None before the first one)."""
        if not self.history_csv.exists():
            return None
        with self.history_csv.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("Name") == "Aggregated"]
        return rows[-1] if rows else None

    def wait(self, timeout: float) -> int | None:
        """Wait for the master to exit; its exit code, or None at the deadline."""
        if self.master is None:
            return None
        try:
            return self.master.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace: float = 10.0) -> None:
        """End every Locust process by its pid. After a normal run they are exiting already (workers
        quit with the master); otherwise the master gets SIGTERM (Locust then writes its reports and
        tells the workers to quit), and whatever is left after ``grace`` seconds gets SIGKILL."""
        if self.master is not None and self.master.poll() is None:
            self.master.terminate()
        deadline = time.monotonic() + grace
        for proc in [p for p in (self.master, *self.workers) if p is not None]:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in self._logs:
            log.close()
