"""chart.png of a fleet run: requests/s served by each host (from its /stats, sampled twice a second),
Locust's total, and the faults marked (TERM, crash, HUP, host added)."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

from loadtests.report import read_csv

MARKS = {"term": ("TERM", "tab:orange"), "crash": ("kill -9", "tab:red"),
         "hup": ("HUP", "tab:green"), "add_host": ("added", "tab:purple")}  # fmt: skip


def host_rates(rows: list[dict[str, str]], window: float = 2.0) -> dict[str, tuple[list, list]]:
    """Per host: (t, requests/s over the last ``window`` seconds of the same life). A gap (the host
    was down, or restarted) is a NaN, so the line breaks there instead of bridging it."""
    series: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
    last: dict[str, list[tuple[float, str, int]]] = defaultdict(list)
    for row in rows:
        t, host, life, n = float(row["t"]), row["host"], row["life"], int(row["requests"])
        past = [p for p in last[host] if p[1] == life and t - p[0] <= window + 1e-6]
        if not past and last[host] and series[host][0]:
            series[host][0].append(t)
            series[host][1].append(math.nan)
        if past and t > past[0][0]:
            series[host][0].append(t)
            series[host][1].append((n - past[0][2]) / (t - past[0][0]))
        last[host] = [*past, (t, life, n)]
    return dict(series)


def plot_fleet(results: Path, out: Path, title: str = "") -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for host, (t, rate) in sorted(host_rates(read_csv(results / "hosts.csv"), 5.0).items()):
        ax.plot(t, rate, label=f"host {host}", linewidth=1.2)
    history = [
        r for r in read_csv(results / "locust_stats_history.csv") if r.get("Name") == "Aggregated"
    ]
    faults_path = results / "faults.jsonl"
    records = (
        [json.loads(line) for line in faults_path.read_text().splitlines()]
        if faults_path.exists()
        else []
    )
    if history:
        t0 = float(history[0]["Timestamp"])
        start = _load_start(results) or t0
        ax.plot([float(r["Timestamp"]) - start for r in history],
                [float(r["Requests/s"] or 0) for r in history],
                color="black", linestyle="--", linewidth=1, label="Locust total")  # fmt: skip
    top = ax.get_ylim()[1]
    for record in records:
        if record["kind"] in MARKS:
            text, color = MARKS[record["kind"]]
            ax.axvline(record["t"], color=color, linewidth=0.8, alpha=0.7)
            ax.text(record["t"], top * 0.97, f" {text} {record.get('host', '')}", color=color,
                    fontsize=7, rotation=90, va="top")  # fmt: skip
    ax.set_xlabel("seconds since the load began")
    ax.set_ylabel("requests/s")
    ax.set_title(title or "requests/s per host, faults marked")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _load_start(results: Path) -> float | None:
    marker = results / "load-started"
    try:
        return float(marker.read_text())
    except (OSError, ValueError):
        return None
