"""Load shedding on the loop thread (``--queue-timeout``, ``--request-timeout``; ``worker.watchdog``).

A request handed to the pool is registered with the watchdog first; a request that waits longer than
``--queue-timeout`` for a thread, or that is queued while every thread is stuck, never reaches the app: the
loop answers 503 with Retry-After and closes the connection. Who answers is decided by ``PoolWatch.claim``:
the first of the loop and a pool thread to claim a queued request owns it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from webcluster.worker.httpdate import http_date
from webcluster.worker.transport import State
from webcluster.worker.watchdog import shed_response

if TYPE_CHECKING:
    from webcluster.worker.connection import Conn
    from webcluster.worker.loop import Loop
    from webcluster.worker.watchdog import PoolWatch

CLOSED = State.CLOSED


class Shedding:
    """The loop's side of the watchdog: queue registration, 503s, and pausing accepts when stuck."""

    def __init__(self, loop: Loop, watch: PoolWatch | None) -> None:
        self._loop = loop
        self._watch = watch

    def enqueue(self, conn: Conn) -> bool:
        """Before a request goes to the pool: register its wait; False when it was answered 503 instead."""
        loop, watch = self._loop, self._watch
        if loop.acceptor.saturated:
            self.shed(conn, "shed_stuck_pool", 0.0)  # no thread will be free in time
            return False
        now = loop.clock()
        watch.enqueue(conn.serial, now)  # before submit: a thread may claim it at once
        if watch.queue_timeout:
            loop.timeouts.add(loop.timeouts.queue, conn, now)
        return True

    def on_queue_timeout(self, conn: Conn) -> None:
        """--queue-timeout passed: answer 503 unless a thread already claimed the request."""
        waited = self._watch.claim(conn.serial, self._loop.clock())
        if waited is not None:
            self.shed(conn, "shed_queue_timeout", waited)

    def shed(self, conn: Conn, event: str, waited: float) -> None:
        """Answer a request that never reached the app 503 + Retry-After, then close. The caller owns
        ``conn``: it claimed it from the queue, or never queued it."""
        loop = self._loop
        if conn.state is CLOSED:
            return
        if loop.runner.stats is not None:
            loop.runner.stats.count(event)
        loop.answer_and_close(conn, shed_response(conn.h1, date=http_date()), 503, waited)

    def set_saturated(self, saturated: bool) -> None:
        """Loop thread (the watchdog's call_soon): while every pool thread is stuck, accept nothing
        (new clients wait in the kernel queue for this slot's replacement) and answer the queue 503."""
        self._loop.acceptor.saturate(saturated)
        if saturated:
            self.shed_queued()

    def shed_queued(self) -> None:
        """Answer 503 to every request still waiting for a thread (pool stuck, or the loop ends)."""
        now = self._loop.clock()
        for serial in list(self._watch.queued):
            conn = self._loop.live(serial)
            waited = self._watch.claim(serial, now)
            if conn is not None and waited is not None:
                self.shed(conn, "shed_stuck_pool", waited)
