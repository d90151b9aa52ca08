"""loadtests.bench.reaction measures what it says: a request sent while another blocks on the poller's
thread is answered once the poller moves (well before the blocked one's 500 ms), and at once when every
request goes to the pool."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from loadtests.bench.reaction import SLOW_MS, trial

pytestmark = [pytest.mark.system, pytest.mark.timeout(60)]
REPO = Path(__file__).resolve().parents[2]


def test_the_next_request_waits_for_the_poller_to_move_not_for_the_blocked_request():
    """Moved because the request was seen blocked (7-27 ms at the default 5 ms budget), not because
    it ran for the cap (25 budgets: 125 ms), nor only once it ended (500 ms)."""
    waited = trial(str(REPO), [], warm=0.1)
    assert 0 < waited < 100


def test_with_every_request_in_the_pool_the_next_request_does_not_wait():
    assert trial(str(REPO), ["--inline-budget", "0"], warm=0.05) < SLOW_MS * 0.5


def test_the_command_prints_each_trial_and_a_summary():
    out = subprocess.run(
        [sys.executable, "-m", "loadtests.bench.reaction", "--trials", "2", "--warm", "0.05"],
        cwd=REPO, capture_output=True, text=True, timeout=50, check=True,
    ).stdout  # fmt: skip
    assert out.count("the next request waited") == 2
    assert "median" in out.splitlines()[-1]
