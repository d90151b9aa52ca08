"""The worker side of the supervisor: turn :mod:`cluster.policy` actions into forks and signals, and
worker messages and exits into the bookkeeping the next decision reads (states, backoff, drains).

:class:`Lifecycle` owns the worker table, the per-slot backoff and the slots being drained. It never
decides: :class:`cluster.arbiter.Arbiter` asks :func:`cluster.policy.decide` with :meth:`Lifecycle.view`
and hands the actions to :meth:`Lifecycle.apply`. Main thread only.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from webcluster.cluster import boot, policy
from webcluster.cluster.listeners import BindError, Listeners
from webcluster.cluster.policy import ExitReason, WorkerState
from webcluster.cluster.process import WorkerProcess, WorkerTable, WorkerTarget, describe_status

log = logging.getLogger("webcluster.supervisor")

MAX_RUNNING_LOGGED = 10  # requests named in the log when a worker dies (one line each)


@dataclass(frozen=True)
class Exit:
    """One reaped worker: its exit code (None when a signal killed it) and whether we asked for it."""

    worker: WorkerProcess
    code: int | None
    expected: bool
    lived: float  # seconds from fork to reap
    was_ready: bool  # it said "ready": it booted, so its death is a crash, not a boot failure


class Lifecycle:
    """Forks, stops and kills workers; reads their messages; reaps them."""

    def __init__(self, target: Callable[[], WorkerTarget], close_in_child: Callable[[], list[int]]):
        self.workers = WorkerTable()
        self.backoff: dict[int, policy.Backoff] = {}
        self.draining: dict[int, float] = {}  # slot -> when steering away started
        self.listeners: Listeners | None = None  # set once the sockets are open
        self.stats: Any = None  # the StatsAggregator, when the admin endpoint is on
        self._target = target
        self._close_in_child = close_in_child

    def view(self, *, desired: int, generation: int, cfg: Any) -> policy.Cluster:
        """The immutable input of :func:`cluster.policy.decide`."""
        assert self.listeners is not None
        draining = {
            slot: policy.Drain(since, self.listeners.queue_length(slot))
            for slot, since in self.draining.items()
        }
        return policy.Cluster(
            desired=desired,
            generation=generation,
            workers=tuple(w.view() for w in self.workers),
            backoff=dict(self.backoff),
            draining=draining,
            open_slots=self.listeners.open_slots(),
            timeout=cfg.timeout,
            graceful_timeout=cfg.graceful_timeout,
        )

    # -- applying decisions -------------------------------------------------------------------------

    def apply(self, actions: Iterable[policy.Action], cfg: Any, generation: int, now: float) -> int:
        """Carry out ``actions``; returns the number of slots that could be opened (-1: all of them).

        A slot whose socket cannot be created (TTIN after a privilege drop, say) is reported so the
        arbiter lowers its desired count instead of retrying forever."""
        assert self.listeners is not None
        limit = -1
        for action in actions:
            if isinstance(action, policy.Spawn):
                try:
                    self.spawn(action.slot, action.reason, cfg, generation)
                except BindError as exc:
                    log.error("cannot add slot %d: %s", action.slot, exc)
                    limit = action.slot if limit < 0 else min(limit, action.slot)
            elif isinstance(action, policy.Stop):
                self.stop(self.workers[action.pid], action.reason, action.detail, now)
            elif isinstance(action, policy.Abort):
                self.abort(self.workers[action.pid], action.detail, now)
            elif isinstance(action, policy.Kill):
                self.kill(self.workers[action.pid], action.detail)
            elif isinstance(action, policy.StartDrain):
                self.draining[action.slot] = now
                self.listeners.set_draining(self.draining)
                log.info("slot %d removed: new connections go to the other slots", action.slot)
            elif isinstance(action, policy.CancelDrain):
                self.draining.pop(action.slot, None)
                self.listeners.set_draining(self.draining)
            elif isinstance(action, policy.CloseSlot):
                self.draining.pop(action.slot, None)
                self.listeners.close_slot(action.slot)
                self.listeners.set_draining(self.draining)
                log.info("slot %d closed", action.slot)
        return limit

    def spawn(self, slot: int, reason: str, cfg: Any, generation: int) -> WorkerProcess | None:
        """Fork a worker for ``slot``; None when fork failed (retried after a backoff). Raises
        BindError when the slot's socket cannot be opened."""
        assert self.listeners is not None
        sockets = self.listeners.sockets(slot)
        target = self._target()
        boot.prefork(target, cfg)  # workers forked from one TLS context share its ticket key
        try:
            w = self.workers.spawn(
                target,
                cfg,
                sockets,
                slot=slot,
                generation=generation,
                close_in_child=self._close_in_child,
            )
        except OSError as exc:  # EAGAIN/ENOMEM from fork: retry after a backoff
            log.error("fork failed for slot %d: %s", slot, exc)
            prev = self.backoff.get(slot, policy.Backoff())
            now = time.monotonic()
            self.backoff[slot] = policy.after_exit(
                prev, lived=0, now=now, expected=False, was_ready=False
            )
            return None
        if self.stats is not None:
            self.stats.worker_started(slot, w.pid, w.generation, time.monotonic())
        log.info("spawned worker %d (slot %d, generation %d): %s", w.pid, slot, generation, reason)
        return w

    def stop(self, w: WorkerProcess, reason: ExitReason, detail: str, now: float) -> None:
        """Graceful stop: TERM; the worker finishes in-flight requests within graceful_timeout."""
        log.info("stopping worker %d (slot %d): %s", w.pid, w.slot, detail)
        w.stop_reason = reason
        w.state = WorkerState.DRAINING
        w.stop_requested_at = now
        if self.stats is not None:
            self.stats.set_state(w.pid, "draining")
        w.signal(signal.SIGTERM)

    def abort(self, w: WorkerProcess, detail: str, now: float) -> None:
        """SIGABRT to a silent worker: its faulthandler writes every thread's Python stack to the
        error log (what was it stuck in?) and the process dies; the policy sends SIGKILL if not."""
        log.warning(
            "worker %d (slot %d) silent: %s; SIGABRT (stacks follow in the error log)",
            w.pid, w.slot, detail,
        )  # fmt: skip
        w.state = WorkerState.ABORTED
        w.stop_requested_at = now
        w.kill_detail = detail
        if self.stats is not None:
            self.stats.set_state(w.pid, "aborted")
        w.signal(signal.SIGABRT)

    def kill(self, w: WorkerProcess, detail: str) -> None:
        """SIGKILL now (a hung worker); its slot is refilled when it is reaped."""
        log.warning("killing worker %d (slot %d): %s", w.pid, w.slot, detail)
        w.state = WorkerState.STOPPING
        w.kill_detail = detail
        w.signal(signal.SIGKILL)

    def stop_all(self, graceful: bool) -> None:
        """TERM (graceful) or QUIT (fast) to every worker: the supervisor is stopping."""
        sig = signal.SIGTERM if graceful else signal.SIGQUIT
        for w in self.workers:
            w.stop_reason = w.stop_reason or ExitReason.STOP
            w.state = WorkerState.DRAINING if graceful else WorkerState.STOPPING
            w.signal(sig)

    # -- messages and exits ---------------------------------------------------------------------------

    def read_messages(self, ready: Iterable[WorkerProcess]) -> None:
        """Handle the messages waiting on the pipes of ``ready`` workers."""
        for w in ready:
            for msg in self.workers.read(w):
                self.on_message(w, msg)

    def on_message(self, w: WorkerProcess, msg: dict) -> None:
        """One decoded worker message; any message is a heartbeat."""
        w.last_heartbeat = time.monotonic()
        kind = msg.get("type")
        if kind == "ready" and w.state is WorkerState.BOOTING:
            w.state = WorkerState.READY
            w.ready_at = w.last_heartbeat
            log.info("worker %d (slot %d, generation %d) ready", w.pid, w.slot, w.generation)
        elif kind == "boot_error":
            w.boot_error = str(msg.get("message", ""))
        elif kind == "retire" and self.retire(w, str(msg.get("reason") or "retire")):
            log.info("worker %d asks to be recycled (%s)", w.pid, w.retire_reason)
        if self.stats is not None:
            self.stats.on_message(w.slot, w.pid, msg, w.last_heartbeat)

    @staticmethod
    def retire(w: WorkerProcess, reason: str) -> bool:
        """Mark ``w`` to be replaced: the policy starts its replacement, then stops it gracefully
        (recycling). Any source may ask: a worker's ``retire`` message with its own reason, the RSS
        check. False when it was already marked."""
        if w.retire_reason:
            return False
        w.retire_reason = reason
        return True

    def reap(self) -> list[Exit]:
        """waitpid until no exited child is left: log each exit, count it, update the slot's backoff."""
        out = []
        for w, status, messages in self.workers.reap():
            for msg in messages:  # a boot_error sent just before exiting
                self.on_message(w, msg)
            out.append(self._exited(w, status))
        return out

    def _exited(self, w: WorkerProcess, status: int) -> Exit:
        now = time.monotonic()
        code, _, text = describe_status(status)
        expected = w.expected_exit
        level = logging.INFO if expected else logging.WARNING
        after = f" after {w.kill_detail}" if w.kill_detail else ""
        log.log(level, "worker %d (slot %d) exited: %s%s", w.pid, w.slot, text, after)
        if not expected:  # the request that crashed it is among these: the operator needs its name
            running = w.running_requests()
            for line in running[:MAX_RUNNING_LOGGED]:
                log.warning("worker %d (slot %d) was running %s", w.pid, w.slot, line)
            if len(running) > MAX_RUNNING_LOGGED:
                log.warning(
                    "worker %d: %d more requests were running",
                    w.pid,
                    len(running) - MAX_RUNNING_LOGGED,
                )
        w.release()
        if self.stats is not None:
            self.stats.worker_exited(w.slot, w.pid, now, w.exit_reason().value)
        return Exit(w, code, expected, now - w.started_at, w.ready_at is not None)

    def note_exit(self, e: Exit, now: float) -> None:
        """Update the slot's backoff after an ordinary (not boot-failure) exit."""
        slot = e.worker.slot
        prev = self.backoff.get(slot, policy.Backoff())
        self.backoff[slot] = policy.after_exit(
            prev, lived=e.lived, now=now, expected=e.expected, was_ready=e.was_ready
        )
        delay = self.backoff[slot].delay
        if not e.expected and delay:
            log.warning(
                "slot %d: worker died %.1fs after start before it was ready; next start in %.1fs",
                slot, e.lived, delay,
            )  # fmt: skip

    def kill_all(self) -> None:
        """SIGKILL every worker still there (the stop deadline passed, or an unexpected error)."""
        for w in self.workers:
            w.signal(signal.SIGKILL)
