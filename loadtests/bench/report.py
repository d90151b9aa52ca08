"""Results -> medians, a console table, BENCHMARKS.md sections and a plot.

A run's markdown goes between ``<!-- bench:NAME:start -->`` and ``<!-- bench:NAME:end -->`` in BENCHMARKS.md,
so each suite (procs 2, the issue-2 procs 1 table, the idle test) rewrites only its own section and the prose
around them is left alone.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MIB = 1024 * 1024


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    path: str
    connections: int
    close: bool = False
    static: bool = False  # nginx takes part (as the ceiling)
    tls: bool = (
        False  # https, against the NAME-tls servers (nginx's "/" answers "Hello, World!" itself)
    )


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("ka1", "hello, keep-alive, 1 conn", "/", 1),
        Scenario("ka64", "hello, keep-alive, 64 conns", "/", 64),
        Scenario("ka256", "hello, keep-alive, 256 conns", "/", 256),
        Scenario("close64", "hello, Connection: close, 64 conns", "/", 64, close=True),
        Scenario("flask64", "Flask JSON (1.5 KiB), keep-alive, 64 conns", "/flask/json", 64),
        Scenario("tls64", "hello over TLS, keep-alive, 64 conns", "/", 64, tls=True),
        Scenario("static13", "static 13-byte file, keep-alive, 64 conns", "/static/13b.txt", 64, static=True),
        Scenario("static4k", "static 4 KiB file, keep-alive, 64 conns", "/static/4k.bin", 64, static=True),
        Scenario("static1m", "static 1 MiB file, keep-alive, 64 conns", "/static/1m.bin", 64, static=True),
    )
}  # fmt: skip


@dataclass(frozen=True)
class Run:
    """One wrk run against one server in one round."""

    scenario: str
    server: str
    round: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int
    error_detail: str
    cpu_s: float  # CPU seconds the server's process tree used during the run (psutil, whole tree)
    pss: int  # bytes, summed over the tree, right after the run
    rss: int
    sys_s: float = float("nan")  # of cpu_s, in the kernel (absent from runs recorded before it was)
    # The machine's CPU time left idle during the run, in percent (/proc/stat), and wrk's own CPU
    # seconds: where the cores went that the server did not use (absent from runs before they were)
    idle_pct: float = float("nan")
    client_s: float = float("nan")


@dataclass(frozen=True)
class Summary:
    """Medians over rounds for one (scenario, server); errors are summed, memory is the maximum."""

    scenario: str
    server: str
    rounds: int
    rps: float
    rps_min: float
    rps_max: float
    p50_ms: float
    p99_ms: float
    errors: int
    error_detail: str
    cpu_s: float
    pss: int
    rss: int
    cpu_us: float = float("nan")  # median over rounds of server CPU per request, microseconds
    sys_us: float = float("nan")  # the same for its system (kernel) part
    idle_pct: float = float("nan")  # median over rounds of the machine's idle share, percent
    client_us: float = float("nan")  # median over rounds of wrk's CPU per request, microseconds


def summarize(runs: Iterable[Run]) -> list[Summary]:
    groups: dict[tuple[str, str], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.scenario, r.server), []).append(r)
    out = []
    for (scenario, server), rs in groups.items():
        med = statistics.median
        details = sorted({r.error_detail for r in rs if r.socket_errors})
        out.append(
            Summary(
                scenario=scenario,
                server=server,
                rounds=len(rs),
                rps=med(r.rps for r in rs),
                rps_min=min(r.rps for r in rs),
                rps_max=max(r.rps for r in rs),
                p50_ms=med(r.p50_ms for r in rs),
                p99_ms=med(r.p99_ms for r in rs),
                errors=sum(r.non_2xx + r.socket_errors for r in rs),
                error_detail="; ".join(details),
                cpu_s=med(r.cpu_s for r in rs),
                pss=max(r.pss for r in rs),
                rss=max(r.rss for r in rs),
                cpu_us=med(cpu_us_per_request(r) for r in rs),
                sys_us=med(cpu_us_per_request(r, r.sys_s) for r in rs),
                idle_pct=med(r.idle_pct for r in rs),
                client_us=med(cpu_us_per_request(r, r.client_s) for r in rs),
            )
        )
    order = list(SCENARIOS)
    out.sort(key=lambda s: (order.index(s.scenario), _server_order(s.server)))
    return out


ORDER = ("webcluster", "gunicorn", "waitress", "granian", "uwsgi", "nginx")


def _server_order(name: str) -> int:
    return ORDER.index(name.removesuffix("-tls"))


def is_ours(name: str) -> bool:
    return name in ("webcluster", "webcluster-tls")


def cpu_us_per_request(r: Run, seconds: float | None = None) -> float:
    """Server CPU (whole process tree; or ``seconds`` of it) per answered request, in microseconds."""
    seconds = r.cpu_s if seconds is None else seconds
    return seconds / r.requests * 1e6 if r.requests else float("nan")


def _fmt_cpu_us(s: Summary) -> str:
    """CPU µs a request, "38 (14)", and in parentheses its system part where it was recorded."""
    return f"{s.cpu_us:.0f}" + ("" if math.isnan(s.sys_us) else f" ({s.sys_us:.0f})")


def _fmt_idle(s: Summary) -> str:
    """The machine's idle share and wrk's CPU a request, "3.8 · 9", or "–" where not recorded."""
    if math.isnan(s.idle_pct):
        return "–"
    return f"{s.idle_pct:.1f} · {s.client_us:.0f}"


def ratio(summaries: list[Summary], s: Summary) -> float | None:
    """webcluster's median requests/s divided by ``s``'s, in the same scenario."""
    for w in summaries:
        if w.scenario == s.scenario and is_ours(w.server) and s.rps > 0:
            return w.rps / s.rps
    return None


def _fmt_ms(ms: float) -> str:
    return f"{ms:.2f}" if ms < 10 else f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"


def results_table(summaries: list[Summary], duration: float) -> str:
    """The markdown table: one row per scenario and server."""
    lines = [
        "| scenario | server | req/s (median) | min–max | webcluster ÷ server | p50 ms | p99 ms "
        "| errors | CPU s per run (cores) | CPU µs/req (system) | machine idle % · wrk µs/req "
        "| PSS MiB |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for s in summaries:
        r = ratio(summaries, s)
        ratio_text = "—" if is_ours(s.server) or r is None else f"{r:.2f}×"
        errors = str(s.errors) + (f" ({s.error_detail})" if s.error_detail else "")
        lines.append(
            f"| {SCENARIOS[s.scenario].title} | {s.server} | {s.rps:,.0f} | "
            f"{s.rps_min:,.0f}–{s.rps_max:,.0f} | {ratio_text} | {_fmt_ms(s.p50_ms)} | "
            f"{_fmt_ms(s.p99_ms)} | {errors} | {s.cpu_s:.1f} ({s.cpu_s / duration:.2f}) | "
            f"{_fmt_cpu_us(s)} | {_fmt_idle(s)} | {s.pss / MIB:.0f} |"
        )
    return "\n".join(lines)


def console_table(summaries: list[Summary]) -> str:
    rows = [("scenario", "server", "req/s", "wc÷", "p50ms", "p99ms", "errors", "cpu_s", "cpu_us",
             "idle·wrk", "pssMiB")]  # fmt: skip
    for s in summaries:
        r = ratio(summaries, s)
        rows.append(
            (
                s.scenario,
                s.server,
                f"{s.rps:,.0f}",
                "-" if is_ours(s.server) or r is None else f"{r:.2f}",
                _fmt_ms(s.p50_ms),
                _fmt_ms(s.p99_ms),
                str(s.errors),
                f"{s.cpu_s:.1f}",
                _fmt_cpu_us(s),
                _fmt_idle(s),
                f"{s.pss / MIB:.0f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows
    )


def write_section(path: Path, name: str, body: str) -> None:
    """Replace (or append) the ``bench:NAME`` section of the markdown file at ``path``."""
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _m: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def plot(summaries: list[Summary], path: Path, title: str) -> None:
    """Grouped bars per scenario: requests/s (top) and p99 latency (bottom), log scales."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = [s for s in SCENARIOS if any(x.scenario == s for x in summaries)]
    servers = sorted({x.server.removesuffix("-tls") for x in summaries}, key=ORDER.index)
    colors = {
        "webcluster": "#1f77b4",
        "gunicorn": "#2ca02c",
        "waitress": "#ff7f0e",
        "granian": "#9467bd",
        "uwsgi": "#8c564b",
        "nginx": "#7f7f7f",
    }
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    width = 0.8 / len(servers)
    for i, server in enumerate(servers):
        xs, rps, p99 = [], [], []
        for j, sc in enumerate(scenarios):
            for s in summaries:
                if s.scenario == sc and s.server.removesuffix("-tls") == server:
                    xs.append(j + (i - (len(servers) - 1) / 2) * width)
                    rps.append(s.rps)
                    p99.append(s.p99_ms)
        ax1.bar(xs, rps, width, label=server, color=colors[server])
        ax2.bar(xs, p99, width, label=server, color=colors[server])
    ax1.set_yscale("log")
    ax1.set_ylabel("requests/s (median, log)")
    ax1.legend(ncols=len(servers), loc="upper right", fontsize=8)
    ax1.set_title(title)
    ax2.set_yscale("log")
    ax2.set_ylabel("p99 latency ms (median, log)")
    ax2.set_xticks(range(len(scenarios)), [SCENARIOS[s].title.replace(", ", "\n", 1) for s in scenarios],
                   fontsize=8)  # fmt: skip
    for ax in (ax1, ax2):
        ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def to_json(runs: list[Run], meta: dict[str, Any]) -> dict[str, Any]:
    return {"meta": meta, "runs": [asdict(r) for r in runs]}


def from_json(data: dict[str, Any]) -> tuple[list[Run], dict[str, Any]]:
    return [Run(**r) for r in data["runs"]], data["meta"]
