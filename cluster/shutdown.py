"""How the supervisor leaves: --drain-delay, a graceful or fast stop, SIGKILL at the deadline, the exit code.

:class:`Shutdown` holds the stop's deadlines and decides what is due; :class:`cluster.arbiter.Arbiter`
does the rest of a stop that touches other parts (health, sockets, systemd, signalling the workers).
Main thread only.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterable

from webcluster.cluster.policy import WorkerState
from webcluster.cluster.process import WorkerProcess

log = logging.getLogger("webcluster.supervisor")

FAST_STOP_S = 2.0  # INT/QUIT: workers exit at once; KILL whoever is still there after this
REAP_AFTER_KILL_S = 5.0


class Shutdown:
    """The stop's state: not leaving, draining (--drain-delay), stopping, then SIGKILL, then exit."""

    def __init__(self) -> None:
        self.drain_until: float | None = None  # --drain-delay: the graceful stop begins then
        self.deadline: float | None = None  # workers still there then are SIGKILLed
        self.kill_deadline: float | None = None  # ...and we exit anyway after this
        self.halt_code = 0  # exit code once the workers are gone

    @property
    def stopping(self) -> bool:
        """The workers were told to stop: no new decisions, no reshaping."""
        return self.deadline is not None

    @property
    def leaving(self) -> bool:
        """Draining or stopping: /healthz says 503 and reshaping signals are ignored."""
        return self.stopping or self.drain_until is not None

    def drain_due(self, now: float) -> bool:
        """The --drain-delay is over: time for the graceful stop."""
        return self.drain_until is not None and now >= self.drain_until

    def begin_drain(self, delay: float, workers: Iterable[WorkerProcess], now: float) -> None:
        """--drain-delay: the workers keep serving and end keep-alive connections after their next
        response (SIGUSR2), so a load balancer's pooled connections close cleanly."""
        self.drain_until = now + delay
        log.info("draining for %.1fs before the graceful stop (--drain-delay)", delay)
        for w in workers:
            if w.state is WorkerState.READY:  # a booting worker has no USR2 handler yet
                w.signal(signal.SIGUSR2)

    def begin(self, graceful: bool, graceful_timeout: float, now: float) -> bool:
        """Start (or speed up) the stop; False when already stopping at least as fast."""
        if self.deadline is not None and (graceful or self.kill_deadline is not None):
            return False
        self.drain_until = None
        self.deadline = now + (graceful_timeout if graceful else FAST_STOP_S)
        return True

    def deadlines(self) -> list[float]:
        """When :meth:`check` or :meth:`drain_due` may answer differently."""
        if self.deadline is not None:
            return [self.kill_deadline or self.deadline]
        return [self.drain_until] if self.drain_until is not None else []

    def check(self, workers: list[WorkerProcess], now: float) -> int | None:
        """While stopping: the exit code once the workers are gone (or survived SIGKILL), else None;
        SIGKILL to every worker still there at the deadline."""
        if not workers:
            return self.halt_code
        assert self.deadline is not None
        if self.kill_deadline is None and now >= self.deadline:
            for w in workers:
                log.warning("worker %d did not stop in time: SIGKILL", w.pid)
                w.signal(signal.SIGKILL)
            self.kill_deadline = now + REAP_AFTER_KILL_S
        elif self.kill_deadline is not None and now >= self.kill_deadline:
            log.error("workers %s survived SIGKILL; exiting anyway", sorted(w.pid for w in workers))
            return self.halt_code
        return None
