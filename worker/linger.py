"""Lingering close (RFC 9112 §9.6): after a response that ends the connection, half-close and read until
the client's FIN, at most --linger-timeout (``worker.timeouts`` closes it then), so input the client sent
that we never read cannot turn our close into an RST that destroys the response before it is read.

ASYNCHRONOUS: loop thread only.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from webcluster.worker.connection import RECV_SIZE
from webcluster.worker.http.state import DONE, MUST_CLOSE
from webcluster.worker.poller import ONESHOT, READ
from webcluster.worker.transport import State

if TYPE_CHECKING:
    from webcluster.worker.connection import Conn
    from webcluster.worker.loop import Loop

# The client's request was read to its end (MUST_CLOSE: it ended and asked to close, or was HTTP/1.0).
_REQUEST_COMPLETE = frozenset((DONE, MUST_CLOSE))


class Linger:
    """The loop's lingering close: ``start`` after the last response, ``on_readable`` while lingering."""

    def __init__(self, loop: Loop) -> None:
        self._loop = loop

    def start(self, conn: Conn) -> None:
        """The response is out: close at once if nothing is unread, else shut down writing and linger."""
        loop = self._loop
        h1 = conn.h1
        if h1.cycle.their_state in _REQUEST_COMPLETE and not h1.buf:  # attributes, not properties
            loop.close(conn)  # nothing unread: a plain close cannot turn into an RST
            return
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            loop.close(conn)
            return
        loop.enter(conn, State.LINGERING, loop.timeouts.linger)
        conn.level = False
        loop.arm(conn, READ | ONESHOT)

    def on_readable(self, conn: Conn) -> None:
        """Discard what the client still sends; close at its FIN or on an error."""
        try:
            data = conn.sock.recv(RECV_SIZE)
        except BlockingIOError:
            data = b"-"
        except OSError:
            data = b""
        if not data:
            self._loop.close(conn)
        else:
            self._loop.arm(conn, READ | ONESHOT)
