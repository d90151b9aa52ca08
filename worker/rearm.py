"""Re-arming a keep-alive connection from the pool thread that served it.

The usual hand-back queues ``Loop.resume`` and wakes the loop, which re-arms the fd and waits for the next
request. For the common case, a keep-alive response that went out whole with nothing of the next request
buffered, that wake-up does nothing the pool thread cannot: EPOLL_CTL_MOD is thread-safe in the kernel, and
with EPOLLONESHOT the fd is disarmed while the thread holds it, so only one thread ever arms it. The pool
thread therefore re-arms the fd itself and leaves the loop's bookkeeping (state, token, keep-alive timer) as
a call for the loop's next pass, without waking it. At one connection that saves a wake-up of the loop per
request; under load, the loop's Python work for the hand-back.

Ordering. The bookkeeping is queued *before* the fd is armed: the loop runs queued calls after
``epoll_wait`` returns and before it handles the events it got, so a request that arrives at once finds the
connection READING. The keep-alive deadline counts from the hand-back, not from when the loop gets to it.
While a thread is between the two steps, ``conn.arming`` is set and the loop defers closing that connection
to its next pass, so the fd cannot be closed and reused under the thread's EPOLL_CTL_MOD.

Registering and unregistering fds, and polling, stay with the loop thread (docs/ARCHITECTURE.md, Threads).
"""

from __future__ import annotations

import _socket
import socket
from typing import TYPE_CHECKING

from webcluster.worker.http.state import IDLE
from webcluster.worker.poller import ONESHOT, READ
from webcluster.worker.transport import State

if TYPE_CHECKING:
    from webcluster.worker.connection import Conn
    from webcluster.worker.loop import Loop

READING, CLOSED = State.READING, State.CLOSED
# Plain TCP or unix sockets: what the acceptor makes (the C type) and what tests and tools may pass.
PLAIN_SOCKETS = (_socket.socket, socket.socket)
# Below this keep-alive timeout the loop is woken as before: its deadline must be in the timer queue
# before the loop's longest sleep (1 s) could overshoot it.
MIN_KEEPALIVE = 1.0


class Rearm:
    """The pool-thread side (``from_pool``) and the loop-thread side (``settle``) of a direct re-arm."""

    def __init__(self, loop: Loop) -> None:
        self._loop = loop

    def from_pool(self, conn: Conn) -> bool:
        """Pool thread, handing back ``conn`` to keep it alive: re-arm it here if nothing is left for the
        loop to do but wait. False: hand it back the usual way (output to flush, bytes of a next request
        buffered, a body to read, TLS, a stop or drain under way, a short keep-alive timeout)."""
        loop = self._loop
        h1, host = conn.h1, loop.host
        if (
            conn.out
            or not conn.polled  # served inline from accept, then its leader deposed: the loop adds it
            or h1.cycle.their_state is not IDLE
            or h1.buf
            or host.stopping
            or host.draining
            or type(conn.sock) not in PLAIN_SOCKETS  # TLS may hold decrypted bytes epoll cannot see
            or loop.settings.keepalive < MIN_KEEPALIVE
        ):
            return False
        conn.arming = True
        poller = loop.poller
        poller.defer(self.settle, conn, loop.clock())
        try:
            poller.modify(conn.fd, READ | ONESHOT)
        except OSError:  # closed under us by a stopping loop: nothing to wait for
            pass
        conn.arming = False
        return True

    def settle(self, conn: Conn, since: float) -> None:
        """Loop thread: the connection a pool thread re-armed at ``since`` is now an idle keep-alive one."""
        if conn.state is CLOSED:
            return
        loop = self._loop
        conn.idle = True
        conn.after_flush = READING
        if loop.host.stopping:
            loop.enter(conn, READING, loop.timeouts.drain, since)
        else:
            loop.enter(conn, READING)
            loop.timeouts.arm_idle(conn, since)
