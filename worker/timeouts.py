"""What happens when a connection's deadline passes (loop thread).

One ``DeadlineQueue`` per kind of timeout (``worker.timers``): head read (408, or a plain close for a
connection that never sent a byte), request body (408), keep-alive idle, send (a client that stopped
reading), linger after an error response, and the idle grace while draining. An entry acts only if its
connection is still live and has not changed state since (same token, ``Loop.enter``); the keep-alive
entries, which a connection keeps through the requests it serves (``arm_idle``), only if they are its
newest (same ``Conn.idle_seq``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from webcluster.worker.http.errors import RemoteProtocolError
from webcluster.worker.outqueue import reset_on_close, unread_bytes, unsent_bytes
from webcluster.worker.timers import DeadlineQueue
from webcluster.worker.transport import LoopSettings, State

if TYPE_CHECKING:
    from webcluster.worker.connection import Conn
    from webcluster.worker.loop import Loop

log = logging.getLogger("webcluster.error")

INF = float("inf")
# A deadline is acted on up to this late: the queues are looked at most once per SLACK. Each request
# leaves a voided entry behind (its connection changed state since), so under steady load an entry comes
# due every few microseconds; popping them on every pass of the loop cost a sixth of a request at one
# connection (hotpath, with entries expiring). nginx's timer_resolution makes the same trade.
SLACK = 0.01
# The keep-alive deadline is moved lazily, as nginx's timers are (NGX_TIMER_LAZY_DELAY, 300 ms): a
# connection keeps its pending entry while that comes due no more than this before the deadline it would
# set now (``arm_idle``). Every request used to add an entry and void the last: appending it and later
# popping it cost 4 % of a keep-alive request. An idle connection is closed at most this late.
LAZY = 0.25

HANDSHAKING, READING, BODY, BUSY = State.HANDSHAKING, State.READING, State.BODY, State.BUSY
PROXY_HEADER = State.PROXY_HEADER
FLUSHING, LINGERING = State.FLUSHING, State.LINGERING


class Timeouts:
    """The loop's deadline queues and what each does when an entry expires."""

    def __init__(self, settings: LoopSettings, loop: Loop, queue_timeout: float = 0.0) -> None:
        self._loop = loop
        self.header = DeadlineQueue(settings.header_timeout)
        self.body = DeadlineQueue(settings.body_timeout)
        self.idle = DeadlineQueue(settings.keepalive)
        # Keep-alive re-checks, for an entry that came due early (the connection was busy since it was
        # added, and went idle again less than ``lazy`` before). Both are valid by ``Conn.idle_seq``.
        self.lazy = min(LAZY, settings.keepalive / 4)
        self.idle_recheck = DeadlineQueue(self.lazy)
        self.send = DeadlineQueue(settings.send_timeout)
        self.linger = DeadlineQueue(settings.linger_timeout)
        self.drain = DeadlineQueue(settings.drain_idle_grace)
        # (queue, action, valid by Conn.idle_seq rather than the token): a connection keeps its
        # keep-alive entry through the requests it serves meanwhile.
        self._queues = (
            (self.header, self._on_header_timeout, False),
            (self.body, self._on_body_timeout, False),
            (self.idle, self._on_idle_entry, True),
            (self.idle_recheck, self._on_idle_entry, True),
            (self.send, self._on_send_timeout, False),
            (self.linger, self._on_linger_timeout, False),
            (self.drain, self._on_idle_timeout, False),
        )
        # --queue-timeout: a request still waiting for a thread is answered 503 (worker.watchdog).
        self.queue = DeadlineQueue(queue_timeout)
        if queue_timeout:
            self._queues += ((self.queue, self._on_queue_timeout, False),)
        # No entry of any queue is due before this. Kept up to date by ``add`` and recomputed by ``run``,
        # so the loop's pass after each request costs one comparison, not a look at every queue. It may
        # be early (an entry voided since only wakes the loop early), never late.
        self.earliest = INF

    def add(self, queue: DeadlineQueue, conn: Conn, now: float) -> None:
        """Schedule ``conn`` in ``queue`` from ``now``, valid while its token holds (loop thread)."""
        self._push(queue, conn.serial, conn.token, now)

    def _push(self, queue: DeadlineQueue, serial: int, token: int, now: float) -> float:
        deadline = queue.add(serial, token, now)
        if deadline < self.earliest:
            self.earliest = deadline
        return deadline

    def arm_idle(self, conn: Conn, since: float) -> None:
        """``conn`` is an idle keep-alive connection since ``since``: its --keepalive deadline. A pending
        entry due no more than ``lazy`` before the new deadline is kept (it re-checks when it comes due);
        otherwise a new entry replaces it (loop thread)."""
        conn.idle_since = since
        deadline = since + self.idle.duration
        if conn.idle_due >= deadline - self.lazy:
            return
        conn.idle_seq += 1
        conn.idle_due = self._push(self.idle, conn.serial, conn.idle_seq, since)

    def run(self, now: float, live: dict[int, Any]) -> None:
        """Pop every due entry; act on its connection if that is still live with the entry's token
        (its ``idle_seq``, for the keep-alive queues)."""
        if now < self.earliest:
            return
        for queue, action, by_seq in self._queues:
            deadline = queue.next_deadline()
            if deadline is not None and deadline <= now:
                for serial, token in queue.expired(now):
                    conn = live.get(serial)
                    if conn is not None and (conn.idle_seq if by_seq else conn.token) == token:
                        action(conn)  # may schedule again: ``add`` lowers ``earliest``
        heads = [d for q, _, _ in self._queues if (d := q.next_deadline()) is not None]
        self.earliest = max(min(heads), now + SLACK) if heads else INF

    def _on_header_timeout(self, conn: Conn) -> None:
        loop = self._loop
        if conn.state is not READING:
            if conn.state is HANDSHAKING:
                loop.close(conn)  # no TLS session yet, so no channel for a 408
            elif conn.state is PROXY_HEADER:
                loop.close(conn)
                loop.preamble.rejected(None, f"no PROXY header in time from {conn.remote[0]}")
            return
        if conn.idle and not conn.h1.trailing_data[0]:
            # A connection that never sent a byte gets no 408 (nginx does the same).
            loop.close(conn)
        else:
            loop.fail(conn, RemoteProtocolError("request head timeout", 408))

    def _on_body_timeout(self, conn: Conn) -> None:
        loop = self._loop
        if conn.state is BODY:
            loop.fail(conn, RemoteProtocolError("request body timeout", 408))

    def _on_idle_entry(self, conn: Conn) -> None:
        """A connection's pending keep-alive entry came due: close it if it has been idle for --keepalive,
        else, when it is idle, re-check at its deadline (at most ``lazy`` away, see ``arm_idle``)."""
        conn.idle_due = -INF  # consumed: the next arm_idle adds an entry
        if conn.state is not READING or not conn.idle:
            return
        now = self._loop.clock()
        if conn.idle_since + self.idle.duration > now:  # never early: re-check, at most lazy late
            conn.idle_seq += 1
            conn.idle_due = self._push(self.idle_recheck, conn.serial, conn.idle_seq, now)
            return
        self._on_idle_timeout(conn)

    def _on_idle_timeout(self, conn: Conn) -> None:
        loop = self._loop
        if conn.state is not READING or not conn.idle:
            return
        # The idle timer starts when the response is in the kernel, not when the client has it. A slow
        # reader may still be reading megabytes; closing now would race its next request (it would see
        # a reset). While the send queue still holds bytes and shrinks, give it another period.
        unacked = unsent_bytes(conn.sock)
        if unacked and unacked != conn.last_unsent:
            conn.last_unsent = unacked
            self.arm_idle(conn, loop.clock())
            return
        if unread_bytes(conn.sock):
            # A request came in after this pass's poll (the timers run once the pass's events are
            # handled, milliseconds at many connections): its fd is armed, so the next poll reports it,
            # and it gets an answer (Connection: close when stopping) instead of our close as a reset.
            return
        loop.close(conn)

    def _on_send_timeout(self, conn: Conn) -> None:
        loop = self._loop
        if conn.state is not FLUSHING:
            return
        now = loop.clock()
        if conn.out.file_left and now - conn.out.sent_at < self.send.duration:
            # A file goes out as long as the client takes some of it every --send-timeout
            # (checked once per period, so it is dropped 1-2 periods after it stops).
            loop.enter(conn, FLUSHING, self.send, now)
            return
        reset_on_close(conn.fd)  # drop what the kernel still holds for it
        log.info("closing %s: client did not read its response within --send-timeout", conn.remote)
        loop.close(conn)

    def _on_linger_timeout(self, conn: Conn) -> None:
        loop = self._loop
        if conn.state is LINGERING:
            loop.close(conn)

    def _on_queue_timeout(self, conn: Conn) -> None:
        loop = self._loop
        if conn.state is BUSY:  # still queued, unless a thread claimed it: then the claim fails
            loop.shedding.on_queue_timeout(conn)
