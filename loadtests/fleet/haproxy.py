"""HAProxy for the fleet: its configuration from ``docs/deploy/haproxy.cfg``, the process, and its stats
socket (the runtime API: ``show stat`` for counts and server states, ``set server`` to add a host)."""

from __future__ import annotations

import csv
import io
import shutil
import socket
import string
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from loadtests.cluster import REPO

TEMPLATE = REPO / "docs" / "deploy" / "haproxy.cfg"
BACKEND = "webcluster"
FRONTEND = "web"


def haproxy_binary() -> str | None:
    return shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")


@dataclass(frozen=True)
class Backend:
    """One host as HAProxy knows it."""

    name: str  # h1, h2...
    address: str
    port: int
    enabled: bool = True  # False: declared disabled, enabled later (a host added under load)


def render(
    *, frontend: str, stats_socket: Path, servers: list[Backend], admin_port: int,
    inter_ms: int, fall: int, rise: int,
) -> str:  # fmt: skip
    """The deploy template filled in for ``servers``."""
    lines = [
        f"    server {s.name} {s.address}:{s.port}" + ("" if s.enabled else " disabled")
        for s in servers
    ]
    return string.Template(TEMPLATE.read_text()).substitute(
        frontend=frontend,
        stats_socket=str(stats_socket),
        servers="\n".join(lines),
        admin_port=admin_port,
        inter=f"{inter_ms}ms",
        fall=fall,
        rise=rise,
        drain_hint=f"{(inter_ms * fall + inter_ms) / 1000:g} s",
    )


class HAProxy:
    """The process (started in a namespace by the caller's prefix) and its stats socket."""

    def __init__(self, config: Path, socket_path: Path, log: Path, wrap: tuple[str, ...]) -> None:
        self.config, self.socket_path, self.log = config, socket_path, log
        self.wrap = wrap
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 15.0) -> None:
        binary = haproxy_binary()
        assert binary is not None
        check = subprocess.run(
            [binary, "-c", "-f", str(self.config)], capture_output=True, text=True
        )
        if check.returncode != 0:
            raise RuntimeError(f"haproxy -c: {check.stdout}{check.stderr}")
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [*self.wrap, binary, "-db", "-f", str(self.config)], stdout=log, stderr=log
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"haproxy exited {self.proc.returncode}; see {self.log}")
            try:
                self.command("show info")
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"haproxy stats socket {self.socket_path} did not answer")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def command(self, line: str) -> str:
        """One runtime-API command over the stats socket; its answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.socket_path))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while data := sock.recv(65536):
                chunks.append(data)
        return b"".join(chunks).decode()

    def stats(self) -> dict[str, dict[str, str]]:
        """``show stat`` as {svname: row} for the frontend (``FRONTEND``), backend and servers."""
        text = self.command("show stat").lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return {r["svname"]: r for r in rows if r["pxname"] in (FRONTEND, BACKEND)}

    def status(self, server: str) -> str:
        """UP, DOWN, MAINT, ``UP 1/2``... as HAProxy shows it."""
        return self.stats().get(server, {}).get("status", "")

    def wait_status(self, server: str, want: str, timeout: float) -> float | None:
        """Seconds until ``server``'s status starts with ``want`` (None at the deadline)."""
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            if self.status(server).startswith(want):
                return time.monotonic() - began
            time.sleep(0.05)
        return None

    def enable(self, server: str) -> None:
        """Put a server declared ``disabled`` into rotation (its health checks decide from then on)."""
        self.command(f"set server {BACKEND}/{server} state ready")


def counts(stats: dict[str, dict[str, str]], servers: list[str]) -> dict[str, object]:
    """What HAProxy counted: requests received by the frontend, responses by class (its own 5xx
    included), and per server the responses it returned and its errors."""

    def n(row: dict[str, str], key: str) -> int:
        return int(row.get(key) or 0)

    front = stats.get("FRONTEND", {})
    per_server = {}
    for name in servers:
        row = stats.get(name, {})
        per_server[name] = {
            "responses": sum(n(row, f"hrsp_{c}xx") for c in range(1, 6)) + n(row, "hrsp_other"),
            "5xx": n(row, "hrsp_5xx"),
            "connection_errors": n(row, "econ"),
            "response_errors": n(row, "eresp"),
            "retries": n(row, "wretr"),
            "status": row.get("status", ""),
        }
    return {
        "frontend_requests": n(front, "req_tot"),
        "frontend_5xx": n(front, "hrsp_5xx"),
        "servers": per_server,
        "server_responses": sum(s["responses"] for s in per_server.values()),
    }
