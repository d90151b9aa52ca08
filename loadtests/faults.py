"""Fault injection on a schedule: which faults fall due when (pure), and doing and logging them.

Kinds: ``reload`` (SIGHUP to the supervisor), ``kill`` (``kill -9`` of a random running worker),
``ttin`` / ``ttou`` (one worker slot more / less; ``--ttin-ttou`` alternates them, TTIN first, so the
slot count returns to ``--procs`` after every pair).
"""

from __future__ import annotations

import json
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests.cluster import Cluster


@dataclass(frozen=True, order=True)
class Fault:
    """A fault due ``at`` seconds after the load started."""

    at: float
    kind: str  # reload | kill | ttin | ttou


def schedule(
    duration: float,
    reload_every: float | None = None,
    kill_every: float | None = None,
    ttin_ttou_every: float | None = None,
) -> list[Fault]:
    """Every fault of a run of ``duration`` seconds, in time order: each periodic kind at every
    multiple of its period strictly inside the run (none at 0, none at the very end)."""
    faults: list[Fault] = []
    for kinds, period in (
        (("reload",), reload_every),
        (("kill",), kill_every),
        (("ttin", "ttou"), ttin_ttou_every),
    ):
        if not period or period <= 0:
            continue
        k = 1
        while k * period < duration:
            faults.append(Fault(round(k * period, 3), kinds[(k - 1) % len(kinds)]))
            k += 1
    return sorted(faults)


_SIGNALS = {"reload": signal.SIGHUP, "ttin": signal.SIGTTIN, "ttou": signal.SIGTTOU}


class FaultLog:
    """Injects faults into ``cluster`` and appends one JSON line per fault to ``path``."""

    def __init__(self, cluster: Cluster, path: Path, load_start: float) -> None:
        self.cluster = cluster
        self.path = path
        self.load_start = load_start  # time.time() when the load began
        self.records: list[dict[str, Any]] = []

    def inject(self, fault: Fault) -> dict[str, Any]:
        """Do ``fault`` now; return (and log) what happened."""
        now = time.time()
        record: dict[str, Any] = {
            "t": round(now - self.load_start, 3),
            "time": now,
            "kind": fault.kind,
            "scheduled_t": fault.at,
        }
        if fault.kind == "kill":
            killed = self.cluster.kill_random_worker()
            if killed is None:
                record["skipped"] = "no running worker to kill"
            else:
                record.update(pid=killed.pid, slot=killed.slot, connections=killed.connections)
        else:
            self.cluster.signal(_SIGNALS[fault.kind])
            record["pid"] = self.cluster.pid
        self.records.append(record)
        with self.path.open("a") as log:
            log.write(json.dumps(record) + "\n")
        return record

    def counts(self) -> dict[str, int]:
        """Faults actually injected, by kind."""
        out: dict[str, int] = {}
        for record in self.records:
            if "skipped" not in record:
                out[record["kind"]] = out.get(record["kind"], 0) + 1
        return out

    def kill_connection_bound(self) -> int | None:
        """Sum of the connections the killed workers held: the most requests the kills can fail."""
        kills = [r for r in self.records if r["kind"] == "kill" and "skipped" not in r]
        if any(r["connections"] is None for r in kills):
            return None
        return sum(r["connections"] for r in kills)
