"""Serving a request on the poller's own thread, and moving the poller away from one that runs long.

Handing a request to a pool thread costs more than a hello-world request itself: a wake-up (futex), two
threads contending for the GIL at every system call either makes, and the hand-back. So a request without a
body is first served by the thread that read it, the one that holds the poller (the *leader*), with no
hand-off at all. Nothing guarantees an application returns quickly, though, and while it runs nobody
accepts, reads or times out connections. So a watcher thread checks every ``WATCH_INTERVAL`` (or half
``--inline-budget``, if longer); when the inline request it finds has been running for the budget and,
watched for a ``PROBE``, is *blocked* (sleeping, waiting on I/O or a lock), or has been running for the
cap (``CPU_CAP_FACTOR`` budgets), it *deposes* the leader: a standby thread takes the poller, with
the events the old leader had not handled yet (``Loop.take_pending``), and runs the loop; the old leader,
once its request ends, hands the connection back like any pool thread (``Host.hand_back``) and parks as
the next standby. This is the leader/followers pattern (Schmidt et al., "Leader/Followers", PLoP 2000)
with promotion made lazy: the next leader is woken only when a request blocks, not before every request.

After a deposition the worker serves through the pool (``worker.threadpool``) for a while (1 s, doubling up
to 60 s while depositions keep coming), so an application that often blocks pays the budget at most once per
back-off, and no inline request starts while a deposed thread is still serving: at most one request ever
runs outside the pool. Exactly two threads (*seats*) take turns as leader, so leadership never creates a
thread on the request path. The main thread only waits for the loop to end: signal handlers, which CPython
runs on the main thread, never wait behind an application.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from webcluster.worker.inflight import LEADER_SEATS

if TYPE_CHECKING:
    from webcluster.worker.connection import Conn
    from webcluster.worker.loop import Loop

__all__ = ["SEATS", "Deposed", "Leadership"]

log = logging.getLogger("webcluster.error")

SEATS = LEADER_SEATS  # threads that take turns holding the poller (each has an in-flight record)
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 60.0  # seconds of pool-only serving after a deposition
CPU_CAP_FACTOR = 25  # a request on CPU keeps the poller up to this many budgets (at least 50 ms)
# The watcher checks at least this far apart. Each check takes the GIL from the leader, which then waits
# for it back: at every half budget (400 a second at 5 ms) that cost about 10 % of small-request throughput
# at 64 connections (BENCHMARKS.md, tenth pass). Each inline request records when it started, so a
# check knows at once which request has run for the budget, and probes only that one (``_probe``); what
# the longer interval costs is the reaction time: a blocked request moves the poller at the first check
# after it has run for the budget, plus the probe: at the default 5 ms budget the next request waited
# 7-27 ms (median 17), against 4-8 ms when checks came every half budget
# (``python -m loadtests.bench.reaction``).
WATCH_INTERVAL = 0.02
PROBE = 0.002  # how long the watcher watches a request that has run for the budget (``_probe``)
IDLE_SECONDS = 1.0  # with no inline request for this long, the watcher sleeps until the next one


class Deposed(Exception):  # noqa: N818 - a signal between two methods of the loop, not an error
    """Raised on a leader whose inline request outlived the budget: another thread has the poller now."""


class _Seat:
    __slots__ = ("index", "promoted", "thread")

    def __init__(self, index: int) -> None:
        self.index = index
        self.promoted = threading.Lock()
        self.promoted.acquire()  # held until this seat is given the poller
        self.thread: threading.Thread | None = None


class _Seen:
    """What the watcher saw at its last check."""

    __slots__ = ("seq", "idle")

    def __init__(self) -> None:
        self.seq = 0  # inline requests started by then
        self.idle = 0  # checks in a row with no inline request


class Leadership:
    """Runs ``loop`` on one of two seat threads at a time; see the module docstring."""

    def __init__(
        self, loop: Loop, budget: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.loop = loop
        self.budget = budget
        self.clock = clock
        self.ended = threading.Event()
        # run() was called, so the watcher runs (a loop stepped by hand never serves inline)
        self.active = False
        self.error: BaseException | None = None  # what ended the loop, if it failed
        self.depositions = 0
        self._lock = threading.Lock()  # guards everything below, between leader and watcher
        self._seats = [_Seat(i) for i in range(SEATS)]
        self._leader = 0
        # The leading seat's kernel thread id and CPU-time clock: they tell a blocked request from a busy one.
        self._leader_ids: tuple[int, int] = (0, 0)
        # A request still computing (runnable) moves the poller only after this long: moving it then
        # would not make the CPU it waits for any freer. One blocked (sleeping: I/O, locks) moves it
        # after the budget.
        self.cap = max(CPU_CAP_FACTOR * budget, 0.05)
        self._seq = 0  # inline requests started
        self._serving = 0  # the seq of the inline request running now; 0: none
        self._started = 0.0  # when it started (self.clock)
        self._conn: Conn | None = None  # its connection
        self._deposed = 0  # the seq of the request whose thread lost the poller
        self._stray = False  # a deposed thread is still serving: no inline request until it is done
        self._quiet_until = 0.0  # no inline serving before this (back-off after a deposition)
        self._quiet = False  # _quiet_until is still ahead, as far as the leader knows
        self._backoff = 0.0
        self._interval = max(WATCH_INTERVAL, budget / 2)  # between the watcher's checks
        self._watch_parked = False
        self._watch_wake = threading.Lock()
        self._watch_wake.acquire()

    # ---- the main thread ----------------------------------------------------------------
    def run(self) -> None:
        """Start the first seat and the watcher; return once the loop has ended (on whichever seat)."""
        self.active = True
        threading.Thread(target=self._watch, name="webcluster-inline-watch", daemon=True).start()
        self._promote(self._seats[0])
        # Wake each second: a process signal may be delivered to another thread, and CPython runs its
        # Python handler only when the main thread next runs bytecode.
        while not self.ended.wait(1.0):
            pass
        if self.error is not None:  # as when the loop ran on this thread: the worker exits with it
            raise self.error

    @property
    def running(self) -> int:
        """1 while a request runs outside the pool (on the leader, or on a deposed leader), else 0."""
        return 1 if self._serving else 0

    # ---- the leader -----------------------------------------------------------------------
    def may_inline(self) -> bool:
        """True when the leader may serve a request itself now (leader thread)."""
        if not self.active or self._stray:
            return False
        if self._quiet:  # a back-off is running (``_depose``): read the clock only then
            if self.clock() < self._quiet_until:
                return False
            # Over. No race with _depose: it runs only while this thread serves inline, not here.
            self._quiet = False
        return True

    def serve_inline(self, conn: Conn) -> None:
        """Serve ``conn``'s request on this (the leader's) thread. Raises ``Deposed`` when the poller
        was given to another seat meanwhile: the connection went back like a pool thread's."""
        lock = self._lock  # acquire/release, not "with": half the cost, twice per request
        lock.acquire()
        try:
            self._seq += 1
            seq = self._serving = self._seq
            self._started = self.clock()  # a vDSO read: ~50 ns, against a check per budget/2
            self._conn = conn
            if self._watch_parked:
                self._watch_parked = False
                self._watch_wake.release()
        finally:
            lock.release()
        close = self.loop.runner.serve_on_loop(conn, record=True)
        lock.acquire()
        try:
            self._serving = 0
            deposed = self._deposed == seq
            if deposed:
                self._stray = False
        finally:
            lock.release()
        if not deposed:
            self.loop.resume(conn, close)
            return
        # Handed back as from a pool thread: what it held is flushed the usual way (``Loop.resume``),
        # and a later request of this connection on the pool must not hold. A closing response's last
        # bytes, sent to wait for the FIN (OutputQueue.send), wait for that pass too: a deposition's
        # one delay, after a request that already blocked longer than --inline-budget.
        conn.out.holding = conn.out.on_loop = False
        conn.host.hand_back(conn, close)
        raise Deposed

    # ---- seats ------------------------------------------------------------------------------
    def _promote(self, seat: _Seat) -> None:
        """Give ``seat`` the poller (under ``_lock``, or before anything else runs)."""
        self._leader = seat.index
        seat.promoted.release()
        if seat.thread is None:
            seat.thread = threading.Thread(target=self._sit, args=(seat,), daemon=True,
                                           name=f"webcluster-loop-{seat.index}")  # fmt: skip
            seat.thread.start()

    def _sit(self, seat: _Seat) -> None:
        """A seat's thread: wait for the poller, lead until deposed or the loop ends."""
        loop = self.loop
        ids = (threading.get_native_id(), _cpu_clock())
        while True:
            seat.promoted.acquire()
            if self.ended.is_set():
                return
            self._leader_ids = ids
            try:
                while loop.step():
                    pass
                loop.close_all()
            except Deposed:
                continue
            except BaseException as exc:  # a bug: end the loop and let the main thread raise it
                self.error = exc
            with self._lock:
                self.ended.set()
                for other in self._seats:
                    if other.thread is not None and other is not seat and other.promoted.locked():
                        other.promoted.release()  # it returns at once
            return

    # ---- the watcher ----------------------------------------------------------------------
    def _watch(self) -> None:
        """Every ``_interval``, one check (``_check``), and a probe (``_probe``) of a request that has run
        for the budget; sleeps until the next inline request once none ran for IDLE_SECONDS."""
        seen = _Seen()
        while not self.ended.is_set():
            time.sleep(self._interval)
            suspect = 0
            with self._lock:
                if self.ended.is_set():
                    return
                try:
                    suspect, park = self._check(seen, self.clock())
                except Exception:  # a bug here must not leave blocked requests holding the poller
                    log.exception("inline-serving watcher")
                    park = False
            if suspect:
                try:
                    self._probe(suspect)
                except Exception:
                    log.exception("inline-serving watcher")
            if park:
                self._watch_wake.acquire()
                seen.idle = 0

    def _check(self, seen: _Seen, now: float) -> tuple[int, bool]:
        """Under ``_lock``: depose the leader when its inline request has run for the cap; name it for a
        probe when it has run for the budget. Returns (the request to probe or 0, whether the watcher
        may sleep until the next inline request)."""
        serving = self._serving if self._serving != self._deposed else 0  # deposed: left alone
        suspect = 0
        if serving:
            elapsed = now - self._started
            if elapsed >= self.cap:
                self._depose(serving)
            elif elapsed >= self.budget:
                suspect = serving
        seen.idle = seen.idle + 1 if not serving and self._seq == seen.seq else 0
        seen.seq = self._seq
        self._watch_parked = seen.idle * self._interval >= IDLE_SECONDS
        return suspect, self._watch_parked

    def _probe(self, seq: int) -> None:
        """Depose the leader if its request ``seq`` (run for the budget) is *blocked* (neither on a CPU
        nor computing: I/O, sleep, a lock). A request that computes, or only waits for a CPU, keeps the
        poller until the cap: moving it would not free the CPU the request waits for. "Computing": the
        leader uses a quarter of a PROBE on CPU while this thread sleeps. It is measured over a window
        of its own, with the GIL left to the leader: a state sampled alone would show a computing thread
        as blocked, waiting for the GIL the check holds, and CPU time since the last check would count
        the loop's work before the request began."""
        ids = self._leader_ids
        cpu = _cpu_time(ids[1])
        time.sleep(PROBE)
        with self._lock:
            if self._serving != seq or self._deposed == seq or self._leader_ids != ids:
                return  # it ended meanwhile (or the cap moved the poller)
            if _cpu_time(ids[1]) - cpu < PROBE / 4 and not _running(ids[0]):
                self._depose(seq)

    def _depose(self, seq: int) -> None:
        """Under ``_lock``: the leader's request ``seq`` ran past the budget; give the poller to the other
        seat and serve through the pool for a back-off that doubles while depositions keep coming."""
        now = self.clock()
        recent = now < self._quiet_until + 2 * self._backoff
        self._backoff = min(self._backoff * 2, BACKOFF_MAX) if recent else BACKOFF_FIRST
        self._quiet_until = now + self._backoff
        self._quiet = True
        self._deposed = seq
        self._stray = True
        self.depositions += 1
        conn = self._conn
        if conn is not None and conn.level:  # the next leader must see no event for it meanwhile
            self.loop.disarm(conn)
        stats = self.loop.runner.stats
        if stats is not None:
            stats.count("poller_moved")
        held = self.loop.take_held()  # responses it held in this pass: the next leader writes them
        if held:
            self.loop.poller.call_soon(self.loop.release, held)
        rest = self.loop.take_pending()  # the blocked leader's unhandled events: the next leader's
        if rest:
            self.loop.poller.call_soon(self.loop.handle, rest)
        self._promote(self._seats[1 - self._leader])
        log.debug("a request ran past --inline-budget: the poller moved to another thread; "
                  "requests go to the pool for %.0f s", self._backoff)  # fmt: skip


def _running(tid: int) -> bool:
    """True when kernel thread ``tid`` of this process is running or runnable (state R in
    /proc/self/task/TID/stat, proc(5)): busy on CPU or preempted, not blocked. A request of a thread that
    only waits for a CPU gains nothing from moving the poller (on a busy 2-core machine a thread is often
    preempted for milliseconds). False when it cannot be told: then the budget alone decides."""
    try:
        with open(f"/proc/self/task/{tid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] == b"R"


def _cpu_clock() -> int:
    """The calling thread's CPU-time clock id (0 where there is none: then no request counts as busy)."""
    try:
        return time.pthread_getcpuclockid(threading.get_ident())
    except (AttributeError, OSError):
        return 0


def _cpu_time(clock: int) -> float:
    try:
        return time.clock_gettime(clock) if clock else 0.0
    except OSError:
        return 0.0
