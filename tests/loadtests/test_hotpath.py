"""loadtests.bench.hotpath's request paths run and serve every request they count (a harness that
silently served errors would make the instruction counts in BENCHMARKS.md meaningless)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.system, pytest.mark.timeout(60)]
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "path", ["--serve", "--serve-loop", "--close-loop", "--early-close-loop", "--static-loop"]
)
def test_the_counted_paths_serve_their_requests(path):
    done = subprocess.run([sys.executable, "-m", "loadtests.bench.hotpath", path, "50"], cwd=REPO,
                          capture_output=True, text=True, timeout=50)  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_bytecodes_counts_both_paths_by_function():
    done = subprocess.run([sys.executable, "-m", "loadtests.bench.hotpath", "--bytecodes", "-n", "50"],
                          cwd=REPO, capture_output=True, text=True, timeout=50)  # fmt: skip
    assert done.returncode == 0, done.stderr
    counts = re.findall(r"^(.+): ([\d,]+) bytecodes and (\d+) Python calls", done.stdout, re.M)
    assert [what for what, _, _ in counts] == ["keep-alive", "Connection: close"]
    for what, total, calls in counts:  # hundreds of bytecodes, tens of calls: the server's path
        assert 500 < int(total.replace(",", "")) < 20000 and 10 < int(calls) < 500, what
    assert "handlers/wsgi.py" in done.stdout and "hotpath.py" not in done.stdout
