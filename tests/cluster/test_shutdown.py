"""cluster.shutdown: the stop's deadlines and exit code, with fake workers (no process, no clock)."""

from __future__ import annotations

import signal
from dataclasses import dataclass, field

from webcluster.cluster.policy import WorkerState
from webcluster.cluster.shutdown import FAST_STOP_S, REAP_AFTER_KILL_S, Shutdown

NOW = 1000.0


@dataclass
class FakeWorker:
    pid: int
    state: WorkerState = WorkerState.READY
    signals: list[int] = field(default_factory=list)

    def signal(self, sig: int) -> bool:
        self.signals.append(sig)
        return True


def test_graceful_stop_then_kill_at_the_deadline_then_exit_anyway():
    s, w = Shutdown(), FakeWorker(10)
    assert not s.stopping and not s.leaving
    assert s.begin(graceful=True, graceful_timeout=30, now=NOW)
    assert s.stopping and s.deadlines() == [NOW + 30]
    assert s.check([w], NOW + 29) is None and w.signals == []
    assert s.check([w], NOW + 30) is None and w.signals == [signal.SIGKILL]
    assert s.deadlines() == [NOW + 30 + REAP_AFTER_KILL_S]
    assert s.check([w], NOW + 30 + REAP_AFTER_KILL_S) == 0


def test_exit_code_when_every_worker_is_gone_and_after_a_halt():
    s = Shutdown()
    s.begin(graceful=True, graceful_timeout=30, now=NOW)
    assert s.check([], NOW) == 0
    s.halt_code = 3
    assert s.check([], NOW) == 3


def test_a_fast_stop_overrides_a_graceful_one_but_not_the_reverse():
    s = Shutdown()
    s.begin(graceful=True, graceful_timeout=30, now=NOW)
    assert not s.begin(graceful=True, graceful_timeout=30, now=NOW + 1)
    assert s.begin(graceful=False, graceful_timeout=30, now=NOW + 1)
    assert s.deadline == NOW + 1 + FAST_STOP_S


def test_drain_delay_signals_ready_workers_then_falls_due():
    s, ready, booting = Shutdown(), FakeWorker(10), FakeWorker(11, WorkerState.BOOTING)
    s.begin_drain(5.0, [ready, booting], NOW)
    assert s.leaving and not s.stopping
    assert ready.signals == [signal.SIGUSR2] and booting.signals == []
    assert s.deadlines() == [NOW + 5] and not s.drain_due(NOW + 4.9) and s.drain_due(NOW + 5)
    s.begin(graceful=True, graceful_timeout=30, now=NOW + 5)
    assert s.drain_until is None and s.stopping
