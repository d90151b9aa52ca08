"""Chart of a run: requests/s and p95 over time, with the fault times marked.

The client's view comes from Locust's ``locust_stats_history.csv`` (its "current" figures: requests/s
and percentiles over a sliding window of the last seconds); the server's view, drawn thinner, from the
1 s history in the cluster's ``stats-end.json`` (p95 estimated from its latency histogram). Times are
seconds since the load began (``load-started``); the shaded tail is the drain, when users only finish
their last task.

matplotlib is optional (``pip install '.[load]'``): without it ``plot_run`` returns None and the run
goes on. Usable alone: ``python -m loadtests.plot RESULTS_DIR [OUT.png]``.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from loadtests.report import read_csv

FAULT_STYLE = {  # kind -> (colour, label)
    "reload": ("tab:green", "reload (HUP)"),
    "kill": ("tab:red", "kill -9 of a worker"),
    "ttin": ("tab:purple", "TTIN"),
    "ttou": ("tab:brown", "TTOU"),
}


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def locust_series(results: Path, t0: float) -> dict[str, list[float]]:
    """The Locust history, ``t`` in seconds since ``t0``. Requests/s and failures/s are the growth of
    the running totals from row to row (per second, like the cluster's), not Locust's smoothed
    "current" rate; p95 is Locust's, over its sliding window of the last 10 s."""
    rows = [r for r in read_csv(results / "locust_stats_history.csv") if r["Name"] == "Aggregated"]
    t = [_num(r["Timestamp"]) - t0 for r in rows]
    total = [_num(r["Total Request Count"]) for r in rows]
    failed = [_num(r["Total Failure Count"]) for r in rows]
    return {
        "t": t[1:],
        "rps": _rate(t, total),
        "fps": _rate(t, failed),
        "p95": [_num(r["95%"]) for r in rows[1:]],
    }


def _rate(t: list[float], counts: list[float]) -> list[float]:
    return [
        (counts[i] - counts[i - 1]) / (t[i] - t[i - 1]) if t[i] > t[i - 1] else math.nan
        for i in range(1, len(t))
    ]


def cluster_series(results: Path, t0: float) -> dict[str, list[float]]:
    """The cluster's own 1 s history (from /stats at the end of the run), ``t`` since ``t0``."""
    path = results / "stats-end.json"
    if not path.exists():
        return {"t": [], "rps": [], "p95": []}
    stats = json.loads(path.read_text())
    started = stats.get("_fetched_at", math.nan) - stats.get("uptime_s", math.nan)
    points = [p for p in stats.get("history", []) if started + p["t"] >= t0 - 1]
    return {
        "t": [started + p["t"] - t0 for p in points],
        "rps": [p["requests_per_s"] for p in points],
        "p95": [_num(p["p95_s"]) * 1000 for p in points],
    }


def plot_run(results: Path, out: Path, title: str = "") -> Path | None:
    """Write the chart to ``out``; None when matplotlib is missing or there is no history."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    t0, load_s = _window(results)
    client = locust_series(results, t0)
    if not client["t"]:
        return None
    server = cluster_series(results, t0)
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(10, 6), constrained_layout=True)
    top.plot(client["t"], client["rps"], color="tab:blue", label="requests/s (Locust)")
    top.plot(server["t"], server["rps"], color="tab:blue", alpha=0.45, linewidth=0.8,
             label="requests/s (cluster /stats)")  # fmt: skip
    top.plot(client["t"], client["fps"], color="tab:red", label="failures/s (Locust)")
    top.set_ylabel("requests/s")
    bottom.plot(client["t"], client["p95"], color="tab:orange", label="p95 over 10 s (Locust)")
    bottom.plot(server["t"], server["p95"], color="tab:orange", alpha=0.45, linewidth=0.8,
                label="p95 (cluster histogram)")  # fmt: skip
    bottom.set_ylabel("response time (ms)")
    bottom.set_xlabel("seconds since the load started")
    _mark_faults(results, t0, top, bottom)
    for ax in (top, bottom):
        if load_s is not None:
            ax.axvspan(load_s, max(load_s, max(client["t"])), color="0.9", zorder=0)
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
        ax.set_xlim(left=min(0.0, min(client["t"])))
    top.legend(loc="lower left", fontsize="small", ncol=3)
    bottom.legend(loc="upper left", fontsize="small", ncol=2)
    top.set_title(title or "webcluster under load (Locust, distributed)")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _window(results: Path) -> tuple[float, float | None]:
    """(unix time the load began, its length in seconds or None)."""
    started = results / "load-started"
    history = read_csv(results / "locust_stats_history.csv")
    t0 = (
        _num(started.read_text())
        if started.exists()
        else _num(history[0]["Timestamp"])
        if history
        else 0.0
    )
    summary = results / "summary.json"
    load_s = json.loads(summary.read_text()).get("duration_s") if summary.exists() else None
    return t0, load_s


def _mark_faults(results: Path, t0: float, *axes: Any) -> None:
    path = results / "faults.jsonl"
    records = (
        [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []
    )
    seen: set[str] = set()
    for fault in (r for r in records if "skipped" not in r):
        colour, label = FAULT_STYLE.get(fault["kind"], ("black", fault["kind"]))
        for ax in axes:
            first = ax is axes[0] and fault["kind"] not in seen
            ax.axvline(fault["time"] - t0, color=colour, linestyle="--", linewidth=1,
                       label=label if first else None)  # fmt: skip
        seen.add(fault["kind"])


if __name__ == "__main__":
    folder = Path(sys.argv[1])
    target = Path(sys.argv[2]) if len(sys.argv) > 2 else folder / "chart.png"
    made = plot_run(folder, target)
    print(made or "no chart: matplotlib missing or no stats history")
    sys.exit(0 if made else 1)
