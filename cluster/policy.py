"""Pure decisions of the supervisor: what to spawn, stop and kill, given the worker table and ``now``.

Nothing here forks, signals, reads a clock or logs: the arbiter builds a :class:`Cluster` view, calls
:func:`decide` and applies the returned actions, so every rule is tested with tables (tests/cluster/test_policy.py).

Rules:
- every slot below ``desired`` has one worker of the current generation; a slot left empty by the death
  of a worker that was ready is refilled at once (at most one start per RESPAWN_INTERVAL_S per slot, so
  a request that kills every worker cannot fork-bomb the host); only workers that die before they are
  ready put their slot in exponential backoff (:func:`after_exit`);
- reload and recycling replace workers *one at a time*: the replacement is spawned next to the old worker
  and the old one gets TERM only once the replacement is ready, so capacity never drops;
- a worker silent for ``timeout`` seconds gets SIGABRT, so that it writes every thread's Python stack
  to the error log (faulthandler), then SIGKILL ABORT_GRACE_S later if it is still there; its slot is
  refilled at once. One still draining after ``graceful_timeout`` (+ a small grace) is killed;
- a slot at or above ``desired`` (TTOU) is drained: new connections are steered away, its worker is
  stopped once the accept queue is empty, then its sockets are closed;
- a worker that cannot import the app halts the supervisor, or rolls a reload back; a worker that was
  ready never does, whatever its exit code (:func:`classify_exit`).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from webcluster.worker.ipc import EXIT_BOOT_ERROR


class WorkerState(enum.Enum):
    """Lifecycle of a worker as the supervisor knows it."""

    BOOTING = "booting"  # forked, no "ready" message yet
    READY = "ready"  # accepting connections
    DRAINING = "draining"  # sent TERM: finishing in-flight requests, exits by graceful_timeout
    STOPPING = "stopping"  # sent QUIT or KILL: expected to vanish now
    ABORTED = "aborted"  # silent: sent SIGABRT so it dumps its stacks; SIGKILL after ABORT_GRACE_S


BOOTING, READY, DRAINING, STOPPING, ABORTED = (
    WorkerState.BOOTING, WorkerState.READY, WorkerState.DRAINING, WorkerState.STOPPING,
    WorkerState.ABORTED,
)  # fmt: skip


class ExitReason(enum.Enum):
    """Why a worker ended; the value is the key of the exits-by-reason count in /stats."""

    CRASH = "crash"  # died without being asked to
    BOOT_ERROR = "boot_error"  # could not load the app
    TIMEOUT = "timeout"  # killed: silent past --timeout, or still draining past --graceful-timeout
    RECYCLE = "recycle"  # retired (max requests, memory, a worker's own request) and replaced
    RELOAD = "reload"  # replaced by a newer generation
    SCALE_DOWN = "scale_down"  # its slot was removed (TTOU)
    STOP = "stop"  # the supervisor stops, or a duplicate in its slot


QUICK_DEATH_S = 2.0  # a worker dying sooner after start, before it was ready, is a "quick death"
# Starts of one slot after crashes of ready workers are at least this far apart: 5 a second at most,
# and never a longer gap while clients wait on the slot's socket.
RESPAWN_INTERVAL_S = 0.2
BACKOFF_MIN_S = 0.1
BACKOFF_MAX_S = 30.0
KILL_GRACE_S = 2.0  # after graceful_timeout the worker should have exited by itself
ABORT_GRACE_S = (
    1.0  # a silent worker gets SIGABRT (stacks to the error log), then SIGKILL after this
)
DRAIN_SETTLE_S = 0.2  # handshakes still in flight when steering starts finish within this
DRAIN_POLL_S = 0.05


@dataclass(frozen=True)
class WorkerView:
    """What the policy knows of one live (not yet reaped) worker."""

    pid: int
    slot: int
    generation: int
    state: WorkerState = READY
    started_at: float = 0.0
    last_heartbeat: float | None = None
    stop_requested_at: float | None = None  # when it was sent TERM (DRAINING) or SIGABRT (ABORTED)
    # Set when the worker should be replaced (replacement first, then drain): "max_requests",
    # "max_worker_memory", or the reason a worker's own ``retire`` message gives.
    retire_reason: str | None = None


@dataclass(frozen=True)
class Backoff:
    """Per-slot restart backoff: no spawn before ``not_before``; ``delay`` doubles on quick deaths."""

    delay: float = 0.0
    not_before: float = 0.0


@dataclass(frozen=True)
class Drain:
    """A slot being removed: steered away since ``since``; ``queue`` connections still queued."""

    since: float
    queue: int | None = 0


@dataclass(frozen=True)
class Cluster:
    """The policy's input: desired slot count, generation, workers and per-slot bookkeeping."""

    desired: int
    generation: int
    workers: tuple[WorkerView, ...] = ()
    backoff: Mapping[int, Backoff] = field(default_factory=dict)
    draining: Mapping[int, Drain] = field(default_factory=dict)
    open_slots: frozenset[int] = frozenset()  # slots with their own sockets (reuse-port)
    timeout: float = 30.0
    graceful_timeout: float = 30.0
    drain_timeout: float = 10.0


# -- actions ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spawn:
    slot: int
    reason: str = "slot empty"


@dataclass(frozen=True)
class Stop:
    """TERM: graceful stop (finish in-flight, Connection: close, exit by graceful_timeout)."""

    pid: int
    reason: ExitReason
    detail: str  # for the log line


@dataclass(frozen=True)
class Abort:
    """SIGABRT now (a silent worker dumps its threads' stacks and dies); SIGKILL follows if needed."""

    pid: int
    reason: ExitReason
    detail: str


@dataclass(frozen=True)
class Kill:
    """SIGKILL now."""

    pid: int
    reason: ExitReason
    detail: str


@dataclass(frozen=True)
class StartDrain:
    """Steer new connections away from ``slot`` before its worker stops (TTOU)."""

    slot: int


@dataclass(frozen=True)
class CancelDrain:
    """``slot`` is wanted again (TTIN after TTOU): accept new connections on it again."""

    slot: int


@dataclass(frozen=True)
class CloseSlot:
    """Close ``slot``'s own sockets: no worker is left to accept on them."""

    slot: int


Action = Spawn | Stop | Abort | Kill | StartDrain | CancelDrain | CloseSlot


# -- the decision -------------------------------------------------------------------------------------


def decide(c: Cluster, now: float) -> list[Action]:
    """All actions to take at ``now``; applying them and calling again yields no duplicates
    as long as the arbiter records them (state, stop time, drains) in the next view."""
    actions: list[Action] = list(_liveness(c, now))
    killed = {a.pid for a in actions}
    live = [w for w in c.workers if w.state in (BOOTING, READY) and w.pid not in killed]
    actions += _removal(c, live, now)
    actions += _fill_and_roll(c, live, now)
    return actions


def _liveness(c: Cluster, now: float) -> list[Action]:
    out: list[Action] = []
    for w in c.workers:
        if w.state in (BOOTING, READY) and c.timeout > 0:
            last = max(w.started_at, w.last_heartbeat or 0.0)
            if now - last > c.timeout:
                silent = f"no heartbeat for {now - last:.1f}s (timeout {c.timeout:g}s)"
                detail = silent if w.state is READY else f"booting, {silent}"
                out.append(Abort(w.pid, ExitReason.TIMEOUT, detail))
        elif w.state is ABORTED and w.stop_requested_at is not None:
            if now - w.stop_requested_at > ABORT_GRACE_S:
                detail = f"still running {ABORT_GRACE_S:g}s after SIGABRT"
                out.append(Kill(w.pid, ExitReason.TIMEOUT, detail))
        elif w.state is DRAINING and w.stop_requested_at is not None:
            if now - w.stop_requested_at > c.graceful_timeout + KILL_GRACE_S:
                detail = f"still running {c.graceful_timeout:g}s after TERM"
                out.append(Kill(w.pid, ExitReason.TIMEOUT, detail))
    return out


def _removal(c: Cluster, live: list[WorkerView], now: float) -> list[Action]:
    out: list[Action] = []
    occupied = {w.slot for w in c.workers}
    for slot in sorted(set(c.draining) | c.open_slots | {w.slot for w in live}):
        if slot < c.desired:
            if slot in c.draining:
                out.append(CancelDrain(slot))
            continue
        workers = [w for w in live if w.slot == slot]
        drain = c.draining.get(slot)
        if workers and drain is None:
            out.append(StartDrain(slot))
        elif workers and drain is not None:
            settled = now - drain.since >= DRAIN_SETTLE_S and not drain.queue
            if settled or now - drain.since >= c.drain_timeout:
                out += [Stop(w.pid, ExitReason.SCALE_DOWN, "slot removed") for w in workers]
        elif slot not in occupied and (slot in c.open_slots or slot in c.draining):
            out.append(CloseSlot(slot))
    return out


def _fill_and_roll(c: Cluster, live: list[WorkerView], now: float) -> list[Action]:
    out: list[Action] = []
    rolling_candidates: list[int] = []
    rolling_in_progress = 0
    for slot in range(c.desired):
        workers = [w for w in live if w.slot == slot]
        current = [w for w in workers if w.generation == c.generation and w.retire_reason is None]
        old = [w for w in workers if w not in current]
        if not current:
            if c.backoff.get(slot, Backoff()).not_before > now:
                continue
            if old:
                rolling_candidates.append(slot)
            else:
                out.append(Spawn(slot, "slot empty"))
            continue
        ready = sorted((w for w in current if w.state is READY), key=lambda w: w.started_at)
        if not ready:
            rolling_in_progress += bool(old)
            continue
        keep = ready[0]
        for w in workers:
            if w is not keep:
                out.append(_replace(w, keep, c.generation))
    if rolling_candidates and not rolling_in_progress:
        slot = rolling_candidates[0]
        old = [w for w in live if w.slot == slot]
        out.append(Spawn(slot, _spawn_reason(old, c.generation)))
    return out


def _replace(old: WorkerView, new: WorkerView, generation: int) -> Stop:
    if old.retire_reason:
        detail = f"recycled ({old.retire_reason}), replaced by pid {new.pid}"
        return Stop(old.pid, ExitReason.RECYCLE, detail)
    if old.generation != generation:
        detail = f"reload to generation {generation}, replaced by pid {new.pid}"
        return Stop(old.pid, ExitReason.RELOAD, detail)
    return Stop(old.pid, ExitReason.STOP, f"duplicate in slot {old.slot}, pid {new.pid} kept")


def _spawn_reason(old: list[WorkerView], generation: int) -> str:
    retiring = [w.retire_reason for w in old if w.retire_reason]
    if retiring and all(w.generation == generation for w in old):
        return f"replacing a worker to recycle ({retiring[0]})"
    return f"reload to generation {generation}"


def reloading(c: Cluster) -> bool:
    """A reload is still replacing workers: some worker, even one draining, is of another generation.

    The arbiter coalesces the HUPs that arrive meanwhile into one more reload once this turns False:
    each reload replaces slot by slot (old + new per slot), so a slot never has more than two workers
    and the cluster never more than twice ``desired``, however fast HUPs arrive."""
    return any(w.generation != c.generation for w in c.workers)


def next_deadline(c: Cluster, now: float) -> float | None:
    """The earliest future time at which :func:`decide` could answer differently without a new event."""
    times: list[float] = []
    for w in c.workers:
        if w.state in (BOOTING, READY) and c.timeout > 0:
            times.append(max(w.started_at, w.last_heartbeat or 0.0) + c.timeout)
        elif w.state is DRAINING and w.stop_requested_at is not None:
            times.append(w.stop_requested_at + c.graceful_timeout + KILL_GRACE_S)
        elif w.state is ABORTED and w.stop_requested_at is not None:
            times.append(w.stop_requested_at + ABORT_GRACE_S)
    times += [b.not_before for b in c.backoff.values() if b.not_before > now]
    waiting = {w.slot for w in c.workers if w.state in (BOOTING, READY)}
    for slot, drain in c.draining.items():
        if slot in waiting:  # the accept queue is polled until the worker can be stopped
            times.append(min(now + DRAIN_POLL_S, drain.since + c.drain_timeout))
    future = [t for t in times if t > now]
    return min(future) if future else None


# -- exits ---------------------------------------------------------------------------------------------


def after_exit(
    prev: Backoff, *, lived: float, now: float, expected: bool, was_ready: bool
) -> Backoff:
    """The slot's backoff after one of its workers exited after ``lived`` seconds.

    An exit we asked for (TERM/QUIT for reload, recycle, removal) leaves the backoff alone. A worker
    that was ready and died (a request crashed it) is replaced at once, but no sooner than
    RESPAWN_INTERVAL_S after its own start: requests still queued on the slot's socket may kill the
    replacement too, and must not turn that into a fork loop. A worker that died before it was ready
    within QUICK_DEATH_S of start doubles the delay (0.1 s, 0.2 s, ... capped at 30 s): it cannot
    boot, and waiting is the cure. One that booted for longer than that resets it.
    """
    if expected:
        return prev
    if was_ready:
        return Backoff(0.0, now + max(0.0, RESPAWN_INTERVAL_S - lived))
    if lived < QUICK_DEATH_S:
        delay = BACKOFF_MIN_S if prev.delay <= 0 else min(prev.delay * 2, BACKOFF_MAX_S)
        return Backoff(delay, now + delay)
    return Backoff(0.0, now)


@dataclass(frozen=True)
class Halt:
    """Stop the supervisor with ``code`` and print ``message`` (no crash loop)."""

    message: str
    code: int = EXIT_BOOT_ERROR


@dataclass(frozen=True)
class Rollback:
    """A reload's workers cannot boot: keep serving with ``generation`` (the older config)."""

    generation: int
    message: str


def classify_exit(
    *,
    code: int | None,
    boot_error: str | None,
    was_ready: bool,
    generation: int,
    workers: tuple[WorkerView, ...],
) -> Halt | Rollback | None:
    """Halt or roll back when a worker failed to boot (exit code 3 or a boot_error message).

    A worker that was ready booted fine: whatever its exit code (an app may call ``sys.exit(3)`` on a
    request), its slot is refilled and the cluster keeps serving.

    While a reload is under way, ready workers of an older generation still serve: the reload is rolled
    back to the newest of those generations instead of taking the whole server down. Otherwise halt.
    None = an ordinary exit: refill the slot (with :func:`after_exit`'s backoff).
    """
    if was_ready or (boot_error is None and code != EXIT_BOOT_ERROR):
        return None
    message = boot_error or f"worker failed to boot (exit code {code})"
    older = [w.generation for w in workers if w.state is READY and w.generation < generation]
    if older:
        return Rollback(max(older), message)
    return Halt(message)


def exit_reason(*, asked: ExitReason | None, killed: bool, boot_error: bool) -> ExitReason:
    """Why a reaped worker ended: ``asked`` is the reason we stopped it for (None: we did not),
    ``killed`` that we SIGKILLed it (hung), ``boot_error`` that it reported a failed app import."""
    if killed:
        return ExitReason.TIMEOUT
    if boot_error:
        return ExitReason.BOOT_ERROR
    return asked if asked is not None else ExitReason.CRASH
