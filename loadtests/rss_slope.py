"""``python -m loadtests.rss_slope RESULTS/rss.csv [--last 300]``: per worker, RSS at start, after 5 and
10 minutes and at the end, and the least-squares slope (MiB/min) of its samples over the last ``--last``
seconds: does a worker's memory level off? ``loadtests.run`` writes ``rss.csv`` (one row per worker per
``--progress-every``); a worker replaced during the run is a new pid and gets a line of its own.
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

MIB = 1024 * 1024


def slope_per_min(samples: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (t seconds, value) in value per minute; None with fewer than 2 times."""
    n = len(samples)
    if n < 2:
        return None
    mean_t = sum(t for t, _ in samples) / n
    mean_v = sum(v for _, v in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    if var == 0:
        return None
    return sum((t - mean_t) * (v - mean_v) for t, v in samples) / var * 60


def by_worker(rows: list[dict[str, str]]) -> dict[tuple[int, int], list[tuple[float, float]]]:
    """(slot, pid) -> [(t, RSS MiB)] in time order."""
    out: dict[tuple[int, int], list[tuple[float, float]]] = defaultdict(list)
    for row in rows:
        out[int(row["slot"]), int(row["pid"])].append(
            (float(row["t"]), int(row["rss_bytes"]) / MIB)
        )
    return {k: sorted(v) for k, v in out.items()}


def describe(samples: list[tuple[float, float]], last: float) -> str:
    """One line: start, 5 min, 10 min, end, and the slope over the last ``last`` seconds."""
    end = samples[-1][0]

    def at(t: float) -> str:
        found = next((v for s, v in samples if s >= t), None)
        return f"{found:.1f}" if found is not None and t <= end else "-"

    slope = slope_per_min([(t, v) for t, v in samples if t >= end - last])
    shown = f"{slope:+.2f} MiB/min" if slope is not None else "n/a"
    return (
        f"start {samples[0][1]:.1f}, 5 min {at(300)}, 10 min {at(600)}, end ({end:.0f} s) "
        f"{samples[-1][1]:.1f} MiB, max {max(v for _, v in samples):.1f}; "
        f"slope over the last {last:.0f} s {shown}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.rss_slope", description=__doc__)
    parser.add_argument("csv", type=Path, help="rss.csv from a loadtests.run results folder")
    parser.add_argument(
        "--last", type=float, default=300.0, help="seconds the slope is fitted over"
    )
    args = parser.parse_args(argv)
    with args.csv.open(newline="") as f:
        workers = by_worker(list(csv.DictReader(f)))
    for (slot, pid), samples in workers.items():
        print(f"slot {slot} pid {pid}: {describe(samples, args.last)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
