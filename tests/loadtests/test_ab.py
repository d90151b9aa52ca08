"""loadtests.bench.ab: trees parsed as documented, rounds counted against the first tree, and a real
run of two trees (the same checkout, one with every request in the pool) prints every run and medians."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from loadtests.bench.ab import _tree, summary

REPO = Path(__file__).resolve().parents[2]


def test_a_tree_is_name_dir_and_extra_arguments():
    assert _tree(f"wide={REPO}#--inline-budget 0.5") == (
        "wide",
        str(REPO),
        ["--inline-budget", "0.5"],
    )
    assert _tree(f"base={REPO}") == ("base", str(REPO), [])
    with pytest.raises(argparse.ArgumentTypeError, match="NAME=DIR"):
        _tree(str(REPO))
    with pytest.raises(argparse.ArgumentTypeError, match="no supervisor.py"):
        _tree("x=/nonexistent")


def test_the_summary_gives_medians_and_rounds_ahead_of_the_first_tree():
    trees = [("a", "", []), ("b", "", [])]
    results = {
        ("a", "ka64"): [
            (100.0, 10.0, 1.0, 12.0),
            (300.0, 30.0, 3.0, 14.0),
            (200.0, 20.0, 2.0, 13.0),
        ],
        ("b", "ka64"): [(150.0, 9.0, 4.0, 11.0), (250.0, 8.0, 6.0, 9.0), (210.0, 7.0, 5.0, 10.0)],
    }
    (line,) = summary(trees, ["ka64"], results)
    assert line == ("ka64     a 200 req/s (20.0 µs, idle 2.0 %, wrk 13.0 µs); "
                    "b 210 req/s (8.0 µs, idle 5.0 %, wrk 10.0 µs), ahead of a in 2 of 3")  # fmt: skip


@pytest.mark.system
@pytest.mark.timeout(120)
def test_two_trees_run_interleaved_and_are_summarised():
    out = subprocess.run(
        [sys.executable, "-m", "loadtests.bench.ab", "--tree", f"inline={REPO}",
         "--tree", f"pool={REPO}#--inline-budget 0", "--rounds", "2", "--duration", "1",
         "--scenarios", "ka1"],
        cwd=REPO, capture_output=True, text=True, timeout=110, check=True,
    ).stdout  # fmt: skip
    runs = [line for line in out.splitlines() if line.startswith("round ")]
    assert len(runs) == 4 and all("req/s" in line for line in runs)
    assert [r.split()[3] for r in runs] == ["inline", "pool", "pool", "inline"]  # order alternates
    assert "ahead of inline in" in out.splitlines()[-1]
