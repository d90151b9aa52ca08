"""The bench's results table: medians, and the system part of the CPU a request where it was recorded."""

from __future__ import annotations

import json

from loadtests.bench.report import Run, from_json, results_table, summarize, to_json


def _run(rnd: int, cpu: float, sys_s: float | None = None, server: str = "webcluster") -> Run:
    extra = {} if sys_s is None else {"sys_s": sys_s}
    return Run(
        "ka64", server, rnd, 10_000.0, 1.0, 5.0, 50_000, 0, 0, "", cpu, 2**20, 2**20, **extra
    )


def test_the_table_gives_the_system_part_of_the_cpu_a_request_as_the_median_of_the_rounds():
    # 50,000 requests a round: 1.9 s of CPU is 38 µs a request, 0.7 s of it in the kernel 14 µs
    runs = [_run(0, 1.9, 0.7), _run(1, 2.0, 0.5), _run(2, 1.8, 0.75)]
    [summary] = summarize(runs)
    assert round(summary.cpu_us) == 38 and round(summary.sys_us) == 14
    assert "| 38 (14) |" in results_table([summary], duration=5.0)


def test_runs_recorded_before_the_split_still_load_and_show_the_total_alone():
    data = to_json([_run(0, 1.9)], {"duration": 5.0})
    for run in data["runs"]:
        del run["sys_s"]  # as the JSON files of earlier passes are
    runs, _meta = from_json(json.loads(json.dumps(data)))
    table = results_table(summarize(runs), duration=5.0)
    assert "| 38 | – | 1 |" in table  # CPU µs a request, then PSS: no system part to show


def test_the_table_gives_the_machines_idle_share_and_wrks_cpu_a_request():
    # 50,000 requests a round: 0.45 s of wrk's CPU is 9 µs a request
    runs = [
        Run(
            "ka64",
            "webcluster",
            rnd,
            10_000.0,
            1.0,
            5.0,
            50_000,
            0,
            0,
            "",
            1.9,
            2**20,
            2**20,
            0.7,
            idle,
            wrk,
        )  # fmt: skip
        for rnd, idle, wrk in ((0, 3.8, 0.45), (1, 5.0, 0.5), (2, 1.0, 0.4))
    ]
    [summary] = summarize(runs)
    assert summary.idle_pct == 3.8 and round(summary.client_us) == 9
    assert "| 38 (14) | 3.8 · 9 | 1 |" in results_table([summary], duration=5.0)


def test_runs_recorded_before_the_idle_share_show_a_dash():
    data = to_json([_run(0, 1.9, 0.7)], {"duration": 5.0})
    for run in data["runs"]:
        del run["idle_pct"], run["client_s"]
    runs, _meta = from_json(json.loads(json.dumps(data)))
    assert "| 38 (14) | – | 1 |" in results_table(summarize(runs), duration=5.0)
