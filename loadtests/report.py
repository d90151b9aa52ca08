"""Turn a finished run (Locust CSVs, /stats snapshots, fault log) into a summary and a verdict.

Pure functions over plain data, so they are testable without running anything: ``summarize`` builds a
``Summary``; ``render_text`` / ``render_markdown`` print it; ``Summary.ok`` is the exit verdict.
"""

from __future__ import annotations

import csv
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MIB = 1024 * 1024

# Failure kinds, first match wins. Locust writes exceptions as their repr and our checks as
# CatchResponseError('status ...') / CatchResponseError('content: ...') (see locustfile.verify).
FAILURE_KINDS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("refused", re.compile(r"ConnectionRefused|Connection refused|NewConnectionError")),
    ("timeout", re.compile(r"Timeout|timed out", re.I)),
    (
        "reset",
        re.compile(
            r"ConnectionReset|BrokenPipe|RemoteDisconnected|ChunkedEncoding|IncompleteRead|"
            r"Connection aborted|Connection broken|ProtocolError|ClientDisconnected"
        ),
    ),
    ("status", re.compile(r"\bstatus \d+ != \d+")),
    ("content", re.compile(r"content: |unparsable body")),
)


def classify(error: str) -> str:
    """The kind of one Locust failure message: refused, timeout, reset, status, content or other."""
    for kind, pattern in FAILURE_KINDS:
        if pattern.search(error):
            return kind
    return "other"


@dataclass(frozen=True)
class Threshold:
    name: str
    limit: float
    value: float
    ok: bool


@dataclass
class Summary:
    """Everything the runner prints and writes to summary.json."""

    duration_s: float
    users: int
    locust_workers: int
    requests: int
    failures: int
    rps: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    failures_by_kind: dict[str, int]
    failure_rows: list[dict[str, Any]]  # Method, Name, Error, Occurrences, kind
    per_request: list[dict[str, Any]]  # name, requests, failures, p50, p95, p99, rps
    faults: dict[str, int]
    kill_connection_bound: int | None
    cluster_requests: int | None
    agreement: str
    counts_agree: bool | None
    restarts: int | None
    exits: dict[str, int]
    rss: list[dict[str, Any]]
    thresholds: list[Threshold] = field(default_factory=list)
    locust_exit_code: int | None = None

    @property
    def ok(self) -> bool:
        return self.locust_exit_code == 0 and all(t.ok for t in self.thresholds)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        return out


def read_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _num(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "", "N/A") else None
    except ValueError:
        return None


def per_request_rows(stats_rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    """One row per request name (and the Aggregated row last), the columns the README table shows."""
    return [
        {
            "name": f"{r['Type']} {r['Name']}".strip()
            if r["Name"] != "Aggregated"
            else "Aggregated",
            "requests": int(r["Request Count"]),
            "failures": int(r["Failure Count"]),
            "rps": _num(r["Requests/s"]) or 0.0,
            "p50_ms": _num(r["50%"]),
            "p95_ms": _num(r["95%"]),
            "p99_ms": _num(r["99%"]),
        }
        for r in stats_rows
    ]


def rss_table(
    start: dict[str, Any] | None,
    end: dict[str, Any] | None,
    samples: list[dict[str, str]] = (),  # type: ignore[assignment]
    warm_at: float = 0.0,
) -> list[dict[str, Any]]:
    """RSS of the running worker of every slot at start (before the load), once warm (the first
    sample at or after ``warm_at`` seconds of load, from ``rss.csv``) and at the end. Growth is
    given only for the same process (a killed or reloaded slot runs a fresh one at the end): from
    start, which includes warming up (thread stacks, buffers, allocator arenas), and from warm, which
    is what a leak would show."""

    def by_slot(stats: dict[str, Any] | None) -> dict[int, tuple[int, int]]:
        workers = (stats or {}).get("workers", [])
        return {
            w["slot"]: (w["pid"], w["rss_bytes"]) for w in workers if w.get("state") == "running"
        }

    warm: dict[int, tuple[int, int]] = {}
    for row in samples:
        if float(row["t"]) >= warm_at and int(row["slot"]) not in warm:
            warm[int(row["slot"])] = (int(row["pid"]), int(row["rss_bytes"]))
    before, after = by_slot(start), by_slot(end)
    return [
        _rss_row(slot, before.get(slot), warm.get(slot), after.get(slot))
        for slot in sorted(set(before) | set(after))
    ]


def _rss_row(slot: int, a: tuple | None, w: tuple | None, b: tuple | None) -> dict[str, Any]:
    def mib(x: tuple | None) -> float | None:
        return round(x[1] / MIB, 1) if x else None

    def growth(x: tuple | None) -> float | None:
        return round((b[1] - x[1]) / MIB, 1) if x and b and x[0] == b[0] else None

    return {
        "slot": slot,
        "pid_start": a[0] if a else None,
        "rss_start_mib": mib(a),
        "rss_warm_mib": mib(w) if w and b and w[0] == b[0] else None,
        "pid_end": b[0] if b else None,
        "rss_end_mib": mib(b),
        "growth_mib": growth(a),
        "growth_since_warm_mib": growth(w),
    }


def agreement(
    locust_requests: int,
    by_kind: dict[str, int],
    cluster_requests: int | None,
    kills: int,
    owned: bool,
) -> tuple[str, bool | None]:
    """Compare what Locust sent with what the cluster counted.

    A refused connection never reached the server. A request whose connection broke (reset, timeout)
    may or may not have been answered and counted. Everything else was answered, so counted. Hence
    ``sent - refused - broken <= counted <= sent - refused``, exact when nothing broke. ``kill -9``
    also loses the killed worker's counts since its last report (at most 1 s), so with kills the
    cluster may count fewer - never more."""
    if cluster_requests is None:
        return "cluster stats unavailable", None
    high = locust_requests - by_kind.get("refused", 0)
    broken = by_kind.get("reset", 0) + by_kind.get("timeout", 0)
    low = high - broken
    diff = cluster_requests - high
    text = f"Locust sent {high} (that reached the server), cluster counted {cluster_requests}"
    if diff == 0 and broken == 0:
        return text + ": exact", True
    if low <= cluster_requests <= high:
        return text + f": consistent ({-diff} of the {broken} broken requests never counted)", True
    if kills and cluster_requests < low:
        return (
            text + f": cluster {-diff} short, expected with {kills} kill -9 "
            "(a killed worker's counts since its last 1 s report die with it)",
            True,
        )
    if not owned:
        return text + f": differ by {diff:+d} (shared cluster: other clients count too)", None
    return text + f": MISMATCH by {diff:+d}", False


@dataclass(frozen=True)
class RunData:
    """The raw material of a summary."""

    stats_rows: list[dict[str, str]]
    rss_samples: list[dict[str, str]]
    failure_rows: list[dict[str, str]]
    stats_start: dict[str, Any] | None
    stats_end: dict[str, Any] | None
    faults: dict[str, int]
    kill_connection_bound: int | None
    duration_s: float
    users: int
    locust_workers: int
    owned_cluster: bool
    locust_exit_code: int | None


def summarize(data: RunData, max_failures: int | None, max_p95_ms: float | None) -> Summary:
    """Build the summary and check the thresholds."""
    per_request = per_request_rows(data.stats_rows)
    total = next((r for r in per_request if r["name"] == "Aggregated"), None) or {
        "requests": 0, "failures": 0, "rps": 0.0, "p50_ms": None, "p95_ms": None, "p99_ms": None,
    }  # fmt: skip
    aggregated = next((r for r in data.stats_rows if r["Name"] == "Aggregated"), {})
    failures = [dict(r, kind=classify(r["Error"])) for r in data.failure_rows]
    by_kind: dict[str, int] = {}
    for row in failures:
        by_kind[row["kind"]] = by_kind.get(row["kind"], 0) + int(row["Occurrences"])
    cluster_requests = _delta(data.stats_start, data.stats_end, "requests")
    text, agree = agreement(
        total["requests"], by_kind, cluster_requests,
        data.faults.get("kill", 0), data.owned_cluster,
    )  # fmt: skip
    summary = Summary(
        duration_s=data.duration_s, users=data.users, locust_workers=data.locust_workers,
        requests=total["requests"], failures=total["failures"], rps=total["rps"],
        p50_ms=total["p50_ms"], p95_ms=total["p95_ms"], p99_ms=total["p99_ms"],
        max_ms=_num(aggregated.get("Max Response Time")),
        failures_by_kind=by_kind, failure_rows=failures,
        per_request=[r for r in per_request if r["name"] != "Aggregated"] + [total],
        faults=data.faults, kill_connection_bound=data.kill_connection_bound,
        cluster_requests=cluster_requests, agreement=text, counts_agree=agree,
        restarts=_restarts(data.stats_start, data.stats_end),
        exits=dict((data.stats_end or {}).get("exits", {})),
        rss=rss_table(
            data.stats_start, data.stats_end, data.rss_samples, min(60.0, data.duration_s / 4)
        ),
        locust_exit_code=data.locust_exit_code,
    )  # fmt: skip
    if max_failures is not None:
        ok = summary.failures <= max_failures
        summary.thresholds.append(Threshold("failures", max_failures, summary.failures, ok))
    if max_p95_ms is not None:
        p95 = summary.p95_ms if summary.p95_ms is not None else float("inf")
        summary.thresholds.append(Threshold("p95_ms", max_p95_ms, p95, p95 <= max_p95_ms))
    return summary


def _delta(start: dict[str, Any] | None, end: dict[str, Any] | None, key: str) -> int | None:
    if start is None or end is None:
        return None
    return int(end["totals"][key]) - int(start["totals"][key])


def _restarts(start: dict[str, Any] | None, end: dict[str, Any] | None) -> int | None:
    if start is None or end is None:
        return None
    return sum(end.get("restarts", {}).values()) - sum(start.get("restarts", {}).values())


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} ms"


def _mib(value: float | None, sign: bool = False) -> str:
    return "n/a" if value is None else f"{value:+.1f} MiB" if sign else f"{value:.1f} MiB"


def _rss_text(row: dict[str, Any]) -> str:
    text = f"{_mib(row['rss_start_mib'])} (pid {row['pid_start']})"
    if row["rss_warm_mib"] is not None:
        text += f" -> warm {_mib(row['rss_warm_mib'])}"
    text += f" -> end {_mib(row['rss_end_mib'])} (pid {row['pid_end']})"
    if row["pid_start"] is None:
        return text + ": slot added during the run"
    if row["growth_mib"] is None:
        return text + ": replaced during the run"
    return (
        text
        + f": {_mib(row['growth_mib'], True)} from start, "
        + (f"{_mib(row['growth_since_warm_mib'], True)} since warm")
    )


def render_text(s: Summary) -> str:
    """The summary printed at the end of a run."""
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(s.failures_by_kind.items())) or "none"
    faults = ", ".join(f"{k} {n}" for k, n in sorted(s.faults.items())) or "none"
    lines = [
        f"duration   {s.duration_s:g} s, {s.users} users on {s.locust_workers} Locust workers",
        f"requests   {s.requests} ({s.rps:.1f}/s), failures {s.failures} ({kinds})",
        f"latency    p50 {_ms(s.p50_ms)}, p95 {_ms(s.p95_ms)}, p99 {_ms(s.p99_ms)}, "
        f"max {_ms(s.max_ms)}",
        f"faults     {faults}",
    ]
    if s.kill_connection_bound is not None and s.faults.get("kill"):
        lines.append(
            f"kill bound failures {s.failures} vs {s.kill_connection_bound} connections held by "
            "the killed workers"
        )
    lines.append(f"restarts   {s.restarts} (exits: {s.exits or 'none'})")
    lines.append(f"counts     {s.agreement}")
    for row in s.rss:
        lines.append(f"rss        slot {row['slot']}: {_rss_text(row)}")
    for row in s.failure_rows[:10]:
        lines.append(f"failure    {row['Occurrences']:>5} x {row['Method']} {row['Name']}: "
                     f"{row['Error'][:100]} [{row['kind']}]")  # fmt: skip
    for t in s.thresholds:
        lines.append(
            f"threshold  {t.name} {t.value:g} <= {t.limit:g}: {'ok' if t.ok else 'MISSED'}"
        )
    if s.locust_exit_code != 0:
        lines.append(f"locust     master exited with {s.locust_exit_code}")
    lines.append("result     " + ("PASS" if s.ok else "FAIL"))
    return "\n".join(lines)


def render_markdown(s: Summary) -> str:
    """A per-request table and the RSS table, as pasted into README.md."""
    out = [
        "| Request | Requests | Failures | req/s | p50 | p95 | p99 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in s.per_request:
        name = f"**{r['name']}**" if r["name"] == "Aggregated" else f"`{r['name']}`"
        out.append(
            f"| {name} | {r['requests']} | {r['failures']} | {r['rps']:.1f} | "
            f"{_ms(r['p50_ms'])} | {_ms(r['p95_ms'])} | {_ms(r['p99_ms'])} |"
        )
    out += [
        "",
        "| Worker slot | RSS at start (idle) | RSS warm | RSS at end | Growth since warm |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in s.rss:
        cells = [_mib(row[k]) for k in ("rss_start_mib", "rss_warm_mib", "rss_end_mib")]
        since = row["growth_since_warm_mib"]
        growth = _mib(since, sign=True)
        if row["growth_mib"] is None:
            growth = "added" if row["pid_start"] is None else "replaced"
        out.append(f"| {row['slot']} | {' | '.join(cells)} | {growth} |")
    return "\n".join(out) + "\n"
