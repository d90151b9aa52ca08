"""Run wrk and read its report: requests/s, latency percentiles (``--latency``), errors.

``parse_wrk`` is pure (text in, ``WrkResult`` out) so it is tested on captured output; ``run_wrk`` builds the
exact command line (kept for BENCHMARKS.md) and runs it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_TOTAL = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h),", re.M)
_PERCENTILE = re.compile(r"^\s+(50|75|90|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.M)
_SOCKET_ERRORS = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", re.M
)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)", re.M)


class WrkError(RuntimeError):
    """wrk failed or printed something this parser does not understand."""


@dataclass(frozen=True)
class WrkResult:
    """One wrk run. Latencies in milliseconds; ``socket_errors`` = connect + read + write + timeout."""

    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    error_detail: str  # "connect 0, read 0, write 0, timeout 0"

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS_MS[unit]


def parse_wrk(text: str) -> WrkResult:
    """Parse wrk's report (run with ``--latency``); raises WrkError if a required line is missing."""
    rps = _RPS.search(text)
    total = _TOTAL.search(text)
    if rps is None or total is None:
        raise WrkError(f"no 'Requests/sec' or 'N requests in' line in wrk output:\n{text}")
    pct = {m[1]: _ms(m[2], m[3]) for m in _PERCENTILE.finditer(text)}
    if "50" not in pct or "99" not in pct:
        raise WrkError(f"no latency distribution (was --latency given?) in wrk output:\n{text}")
    sock = _SOCKET_ERRORS.search(text)
    counts = [int(x) for x in sock.groups()] if sock else [0, 0, 0, 0]
    non2xx = _NON_2XX.search(text)
    return WrkResult(
        requests=int(total[1]),
        duration_s=_ms(total[2], total[3]) / 1000.0,
        rps=float(rps[1]),
        p50_ms=pct["50"],
        p99_ms=pct["99"],
        non_2xx=int(non2xx[1]) if non2xx else 0,
        socket_errors=sum(counts),
        error_detail="connect {}, read {}, write {}, timeout {}".format(*counts),
    )


def wrk_command(
    url: str, *, connections: int, duration: float, threads: int = 1, close: bool = False
) -> list[str]:
    """The wrk command line for one run (threads are capped at the connection count, as wrk requires)."""
    cmd = [
        "wrk",
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{duration:g}s",
        "--latency",
        "--timeout",
        "5s",
    ]
    if close:
        cmd += ["-H", "Connection: close"]
    return [*cmd, url]


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(cmd: list[str], timeout: float) -> WrkResult:
    """Run a wrk command line and parse its report."""
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    if proc.returncode != 0:
        raise WrkError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr or proc.stdout}")
    return parse_wrk(proc.stdout)
