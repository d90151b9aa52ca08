"""Fleet-level faults, run one after another on their own thread while the load runs.

Each fault appends records to the run's fault log (``faults.jsonl``: ``t`` = seconds since the load
began, ``kind``, ``host`` and what was measured). Every wait is bounded; a fault that cannot finish
records ``error`` and the run goes on (the summary then shows it).
"""

from __future__ import annotations

import json
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests.fleet.haproxy import HAProxy
from loadtests.fleet.hosts import Host
from loadtests.fleet.netns import NetnsCaller, Network


@dataclass
class Fleet:
    """What the faults act on (owned by the runner)."""

    net: Network
    haproxy: HAProxy
    hosts: list[Host]
    probe: NetnsCaller
    procs: int
    inter_s: float
    fall: int
    rise: int
    drain_delay: float
    graceful_timeout: float = 30.0

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def wait_ready(self, host: Host, timeout: float = 60.0) -> bool:
        """Until the host's workers all run (polling its /stats)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if host.running_workers(self.probe) >= self.procs:
                return True
            time.sleep(0.2)
        return False


class FaultLog:
    def __init__(self, path: Path, load_start: float) -> None:
        self.path, self.load_start = path, load_start
        self.records: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def add(self, kind: str, **detail: Any) -> dict[str, Any]:
        record = {"t": round(time.time() - self.load_start, 2), "kind": kind, **detail}
        with self._lock:
            self.records.append(record)
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        print(f"[{record['t']:5.0f}s] {kind}: "
              + " ".join(f"{k}={v}" for k, v in detail.items()), flush=True)  # fmt: skip
        return record


def restart_host(fleet: Fleet, host: Host, log: FaultLog) -> None:
    """TERM one host, see HAProxy mark it down, let it stop, start it again, see it marked up."""
    began = time.monotonic()
    log.add("term", host=host.name)
    host.signal(signal.SIGTERM)
    timeout = fleet.drain_delay + fleet.inter_s * (fleet.fall + 2) + 5
    down = fleet.haproxy.wait_status(host.name, "DOWN", timeout)
    log.add("marked_down", host=host.name, after_s=_round(down))
    deadline = began + fleet.drain_delay + fleet.graceful_timeout + 10
    while host.wait_exit(0.2) is None and time.monotonic() < deadline:
        host.observe(fleet.probe)  # the last reading before it exits is this life's count
    code = host.wait_exit(5)
    host.lives[-1].ended = "stopped"
    final = host.final_count()
    if final is not None and code == 0:
        host.lives[-1].requests = final
    log.add("stopped", host=host.name, exit_code=code, after_s=round(time.monotonic() - began, 2))
    host.start()
    ready = fleet.wait_ready(host)
    up = fleet.haproxy.wait_status(host.name, "UP", fleet.inter_s * (fleet.rise + 2) + 10)
    log.add("marked_up", host=host.name, ready=ready, after_s=_round(up))


def rolling_restart(fleet: Fleet, log: FaultLog) -> None:
    for host in list(fleet.hosts):
        if host.proc is not None and host.proc.poll() is None:
            restart_host(fleet, host, log)


def rolling_hup(fleet: Fleet, log: FaultLog) -> None:
    """HUP one host at a time; next once its new generation runs every slot."""
    for host in list(fleet.hosts):
        doc = host.observe(fleet.probe) or {}
        generation = doc.get("generation", 0)
        log.add("hup", host=host.name, generation=generation)
        host.signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            doc = host.observe(fleet.probe) or {}
            running = [w for w in doc.get("workers", []) if w.get("state") == "running"]
            if len(running) >= fleet.procs and all(
                w.get("generation") == generation + 1 for w in doc.get("workers", [])
            ):
                break
            time.sleep(0.2)
        log.add("reloaded", host=host.name, generation=doc.get("generation"))


def crash_host(fleet: Fleet, log: FaultLog, name: str) -> None:
    """kill -9 every process of one host; see HAProxy mark it down; then start it again.

    Records two measures of what was in flight on the host: the connections it held when killed
    (host side) and the requests HAProxy lost on it (its ``eresp`` + ``econ`` for that server, from
    just before the kill until a second after it was marked down: requests it had sent there that got
    no complete answer). The summary checks the failures against the larger of the two (see
    ``summary.crash_checks`` for the loss only the first one sees)."""
    host = fleet.host(name)
    before = _lost(fleet.haproxy.stats().get(host.name, {}))
    killed, held = host.crash(fleet.net)
    began = time.monotonic()
    log.add("crash", host=host.name, processes=killed, connections_held=held)
    down = fleet.haproxy.wait_status(host.name, "DOWN", fleet.inter_s * (fleet.fall + 2) + 5)
    time.sleep(1.0)  # answers still on their way back count as lost or not by now
    lost = _lost(fleet.haproxy.stats().get(host.name, {})) - before
    log.add("marked_down", host=host.name, after_s=_round(down),
            bound_s=fleet.inter_s * fleet.fall, in_flight=lost)  # fmt: skip
    time.sleep(max(0.0, 2.0 - (time.monotonic() - began)))
    host.start()
    ready = fleet.wait_ready(host)
    up = fleet.haproxy.wait_status(host.name, "UP", fleet.inter_s * (fleet.rise + 2) + 10)
    log.add("marked_up", host=host.name, ready=ready, after_s=_round(up))


def _lost(row: dict[str, str]) -> int:
    return int(row.get("eresp") or 0) + int(row.get("econ") or 0)


def add_host(fleet: Fleet, log: FaultLog, host: Host) -> None:
    """A host declared ``disabled`` in HAProxy gets its namespace, starts, and is put in rotation."""
    host.ns, host.address = fleet.net.add(host.name, int(host.address.rsplit(".", 1)[1]))
    fleet.hosts.append(host)
    log.add("add_host", host=host.name, address=host.address)
    host.start()
    ready = fleet.wait_ready(host)
    fleet.haproxy.enable(host.name)
    up = fleet.haproxy.wait_status(host.name, "UP", fleet.inter_s * (fleet.rise + 2) + 10)
    log.add("marked_up", host=host.name, ready=ready, after_s=_round(up))


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
