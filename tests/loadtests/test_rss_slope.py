"""loadtests.rss_slope: the least-squares slope and the per-worker summary of an rss.csv."""

from __future__ import annotations

from loadtests.rss_slope import MIB, by_worker, describe, main, slope_per_min


def test_slope_is_per_minute_and_fits_noise() -> None:
    assert slope_per_min([(0.0, 10.0), (60.0, 12.0), (120.0, 14.0)]) == 2.0
    flat = [(t * 10.0, 50.0 + (0.5 if t % 2 else -0.5)) for t in range(31)]
    assert abs(slope_per_min(flat)) < 0.05
    assert slope_per_min([(5.0, 1.0)]) is None and slope_per_min([(5.0, 1.0), (5.0, 2.0)]) is None


def test_summary_per_worker_uses_only_the_last_window(tmp_path, capsys) -> None:
    rows = ["t,slot,pid,rss_bytes"]
    for t in range(10, 910, 10):  # grows 1 MiB/min for 10 minutes, then flat
        rows.append(f"{t},0,100,{int((30 + min(t, 600) / 60) * MIB)}")
        rows.append(f"{t},1,200,{40 * MIB}")
    path = tmp_path / "rss.csv"
    path.write_text("\n".join(rows) + "\n")
    assert main([str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(
        "slot 0 pid 100: start 30.2, 5 min 35.0, 10 min 40.0, end (900 s) 40.0"
    )
    assert out[0].endswith("slope over the last 300 s +0.00 MiB/min")
    assert out[1].endswith("slope over the last 300 s +0.00 MiB/min")
    series = by_worker([{"t": "10", "slot": "0", "pid": "1", "rss_bytes": str(MIB)}])
    assert describe(series[0, 1], 300).endswith("slope over the last 300 s n/a")
