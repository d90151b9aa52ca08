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
    assert "| 38 | 1 |" in table  # CPU µs a request, then PSS: no system part to show
