"""Stuck requests (--request-timeout) and queue waits (--queue-timeout, gone clients).

The loop's heartbeat says nothing about the pool: a loop thread happily reporting every second while all
pool threads sleep in the app is exactly the failure to catch. So detection runs in its own thread and
reads two tables that the hot path fills without a lock:

- ``PoolWatch.queued``: connection serial -> when the loop handed its request to the pool (single dict
  operations, atomic under the GIL). Whoever pops the entry first owns the connection: a pool thread about
  to run it (``claim``), or the loop answering it 503 because it waited too long (see ``Loop.shed``).
  Exactly one of them wins the pop.
- what each pool thread is running: the ``worker.inflight.Inflight`` records, the same ones the supervisor
  reads after a crash (one write when a request starts, one when it ends, for both readers).

``assess`` is the pure decision (tested with a fake clock); ``Watchdog`` is the thread that applies it:
each request running past --request-timeout is logged once at WARNING with its Python stack and counted;
when every thread is stuck the pool is *saturated*: the loop stops accepting (new connections wait in the
kernel queue for the replacement), answers the queued requests 503, and the worker asks the supervisor to
be retired (replacement first, then a graceful stop bounded by --graceful-timeout).
"""

from __future__ import annotations

import logging
import select
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from webcluster.worker.http.protocol import H1Connection
    from webcluster.worker.inflight import Inflight

log = logging.getLogger("webcluster.error")

# A request that waited less than this for a thread is run without asking the kernel whether its client
# is still there: the check costs a syscall (and a GIL hand-off), waits of a few milliseconds are ordinary
# under load, and a client rarely gives up within 100 ms.
GONE_CHECK_AFTER = 0.1
# A shed request is told to come back after this many seconds (RFC 9110 §10.2.3): the queue of an
# overloaded worker turns over within --queue-timeout, and a stuck worker's replacement boots in about 1 s.
RETRY_AFTER_S = 1
# The watchdog looks this many times per --request-timeout (bounded below and above).
CHECKS_PER_TIMEOUT = 4
MIN_PERIOD_S, MAX_PERIOD_S = 0.05, 1.0

_GONE_EVENTS = select.POLLRDHUP | select.POLLHUP | select.POLLERR


class RequestLine(Protocol):
    """What a stuck request is named by (a parsed ``Request`` or an ``Inflight`` record)."""

    @property
    def method(self) -> str: ...

    @property
    def target(self) -> str: ...


class PoolWatch:
    """The queue table described in the module docstring (every method is one dict operation), and the
    setting the hot path reads: ``queue_timeout`` (0 = off)."""

    __slots__ = ("queued", "queue_timeout")

    def __init__(self, *, queue_timeout: float = 0.0) -> None:
        self.queued: dict[int, float] = {}
        self.queue_timeout = queue_timeout

    def enqueue(self, serial: int, now: float) -> None:
        """Loop thread, as the request goes to the pool."""
        self.queued[serial] = now

    def claim(self, serial: int, now: float) -> float | None:
        """Take ownership of a queued request: seconds it waited, or None when another thread did."""
        since = self.queued.pop(serial, None)
        return None if since is None else now - since

    def oldest_queued(self) -> float | None:
        """When the longest-waiting queued request was queued (dicts keep insertion order). Called
        from the watchdog thread while others change the dict: a changed-size error means try again."""
        for _ in range(3):
            try:
                return next(iter(self.queued.values()), None)
            except RuntimeError:
                continue
        return None


def admission(waited: float, queue_timeout: float) -> str:
    """What a pool thread does with a request that waited ``waited`` s: "run", "shed" (503, it waited
    longer than --queue-timeout, 0 = off) or "check" (whether the client is still there, then run)."""
    if waited < GONE_CHECK_AFTER:
        return "run"
    if queue_timeout and waited > queue_timeout:
        return "shed"
    return "check"


def shed_response(h1: H1Connection, *, date: bytes) -> bytes:
    """503 with Retry-After (RFC 9110 §15.6.4, §10.2.3) and Connection: close, for a request that never
    reached the app: the framing of a body nobody read cannot be trusted for a next request."""
    h1.request_close()
    body = b"503 Service Unavailable: the server is overloaded, retry later\n"
    headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Retry-After", str(RETRY_AFTER_S)),
    ]
    return h1.send_response(503, headers, date=date) + h1.send_data(body) + h1.send_end()


def peer_gone(fd: int) -> bool:
    """True when the client closed or reset its side (POLLRDHUP/POLLHUP/POLLERR): it cannot read an
    answer any more. A client that half-closes after its request counts as gone (nginx's 499 does too)."""
    poller = select.poll()
    poller.register(fd, select.POLLRDHUP)
    try:
        return any(events & _GONE_EVENTS for _, events in poller.poll(0))
    except OSError:
        return True


@dataclass(frozen=True)
class Stuck:
    """A request past --request-timeout: the thread running it, for how long, and what it is."""

    ident: int
    ran_for: float
    request: RequestLine
    start: float


@dataclass(frozen=True)
class Verdict:
    """One look at the tables: what to log, the gauges, whether to ask for retirement."""

    newly_stuck: list[Stuck] = field(default_factory=list)  # past the timeout, not reported yet
    stuck: int = 0  # threads running a request past the timeout
    saturated: bool = False  # every thread is stuck
    retire: str | None = None  # why the worker should be replaced, or None


def assess(
    now: float,
    running: Iterable[tuple[int, tuple[float, RequestLine]]],
    oldest_wait: float | None,
    *,
    threads: int,
    request_timeout: float,
    reported: set[tuple[int, float]],
) -> Verdict:
    """Pure: which requests are stuck, whether the pool is saturated, whether to retire.

    ``running``: (thread ident, (start, request)) on the clock of ``now``; ``oldest_wait``: seconds the
    oldest queued request has waited. ``reported`` holds the (ident, start) keys already logged; it is
    updated here so that every stuck request is reported exactly once, and pruned of finished ones.
    """
    stuck: list[Stuck] = []
    live: set[tuple[int, float]] = set()
    for ident, (start, request) in running:
        if now - start > request_timeout:
            stuck.append(Stuck(ident, now - start, request, start))
            live.add((ident, start))
    new = [s for s in stuck if (s.ident, s.start) not in reported]
    reported.intersection_update(live)
    reported.update(live)
    saturated = len(stuck) >= threads
    retire = None
    if saturated:
        retire = f"all {threads} threads stuck longer than --request-timeout {request_timeout:g}s"
    elif oldest_wait is not None and oldest_wait > request_timeout:
        retire = f"a request waited {oldest_wait:.1f}s for a thread (--request-timeout {request_timeout:g}s)"
    return Verdict(new, len(stuck), saturated, retire)


class Watchdog:
    """The thread that applies ``assess`` every ``period`` seconds (see the module docstring).

    ``running``: the pool threads' records (``start`` on ``clock``, ``time.monotonic()``). Callbacks
    (called from the watchdog thread; each must be thread-safe): ``on_saturated(bool)`` when
    saturation begins or ends, ``on_retire(reason)`` once, ``count(event, n)`` for ipc events.
    """

    def __init__(
        self,
        watch: PoolWatch,
        running: Inflight,
        *,
        threads: int,
        request_timeout: float,
        on_saturated: Callable[[bool], None],
        on_retire: Callable[[str], None],
        count: Callable[[str, int], None],
        clock: Callable[[], float] = time.monotonic,
        queue_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.watch = watch
        self.running = running
        self.threads = threads
        self.request_timeout = request_timeout
        self.period = min(max(request_timeout / CHECKS_PER_TIMEOUT, MIN_PERIOD_S), MAX_PERIOD_S)
        self.stuck = 0  # gauge: threads stuck past the timeout at the last check
        self.saturated = False
        self._on_saturated = on_saturated
        self._on_retire = on_retire
        self._count = count
        self._clock = clock
        self._queue_clock = queue_clock
        self._reported: set[tuple[int, float]] = set()
        self._retired = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="webcluster-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                self.check()
            except Exception:  # the watchdog must outlive its own bugs; say so, keep looking
                log.exception("watchdog check failed")

    def check(self) -> Verdict:
        """One look: log and count new stuck requests, update the gauges, act on saturation."""
        oldest = self.watch.oldest_queued()
        verdict = assess(
            self._clock(),
            self.running.by_thread(),
            None if oldest is None else self._queue_clock() - oldest,
            threads=self.threads,
            request_timeout=self.request_timeout,
            reported=self._reported,
        )
        if verdict.newly_stuck:
            frames = sys._current_frames()
            for stuck in verdict.newly_stuck:
                log.warning("%s", describe(stuck, self.request_timeout, frames.get(stuck.ident)))
            self._count("request_timeouts", len(verdict.newly_stuck))
        self.stuck = verdict.stuck
        if verdict.saturated != self.saturated:
            self.saturated = verdict.saturated
            self._on_saturated(verdict.saturated)
        if verdict.retire and not self._retired:
            self._retired = True
            self._on_retire(verdict.retire)
        return verdict


def describe(stuck: Stuck, request_timeout: float, frame) -> str:
    """The WARNING for one stuck request: method, path, how long, and the thread's Python stack."""
    request = stuck.request
    stack = "".join(traceback.format_stack(frame)) if frame is not None else "  (thread gone)\n"
    return (
        f"request running for {stuck.ran_for:.1f}s (--request-timeout {request_timeout:g}s): "
        f"{request.method} {request.target} on thread {stuck.ident}; "
        f"stack (most recent call last):\n{stack.rstrip()}"
    )
