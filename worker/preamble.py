"""Before HTTP, on the loop thread: the PROXY header (``--proxy-protocol``) and the TLS handshake.

Both come before the first request byte and are read one non-blocking step per readiness event, so a
client that stalls in them holds a socket and a header-timeout entry, never a thread. The header timeout
runs from accept through both to the end of the request head. After them a connection is READING.
"""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING

from webcluster.worker.http.errors import RemoteProtocolError
from webcluster.worker.poller import ONESHOT, READ, WRITE
from webcluster.worker.proxyproto import ProxyProtocolError, ProxyReader
from webcluster.worker.proxyread import apply as apply_proxy_header
from webcluster.worker.proxyread import read_step as read_proxy_step
from webcluster.worker.tlscommon import HS_DONE, HS_PLAIN_HTTP, HS_READ, HS_WRITE
from webcluster.worker.transport import State

if TYPE_CHECKING:
    from webcluster.worker.connection import Conn
    from webcluster.worker.handlers.forwarded import ForwardedPolicy
    from webcluster.worker.loop import Loop
    from webcluster.worker.stats import WorkerStats
    from webcluster.worker.tls import TLSAcceptor

log = logging.getLogger("webcluster.error")

HANDSHAKING, READING, PROXY_HEADER = State.HANDSHAKING, State.READING, State.PROXY_HEADER


class Preamble:
    """What a new connection goes through before its first request: PROXY header, TLS handshake."""

    def __init__(
        self,
        loop: Loop,
        tls: TLSAcceptor | None,
        proxy_trust: ForwardedPolicy | None,
        stats: WorkerStats | None,
    ) -> None:
        self._loop = loop
        self.tls = tls
        self.proxy_trust = proxy_trust  # --proxy-protocol: whose PROXY headers are believed
        # Neither: a new connection is READING at once, and admit/start need not be called for it
        self.plain = tls is None and proxy_trust is None
        self._stats = stats

    def admit(self, sock: socket.socket, remote: tuple[str, int]) -> bool:
        """False (socket closed, counted) for a peer whose PROXY header we may not believe."""
        if self.proxy_trust is not None and not self.proxy_trust.trusts(remote[0]):
            self.rejected(sock, f"PROXY header from untrusted peer {remote[0]}")
            return False
        return True

    def start(self, conn: Conn) -> State:
        """The first state of a new connection (a PROXY reader is attached when one is expected)."""
        if self.proxy_trust is not None:
            conn.proxy = ProxyReader()
            return PROXY_HEADER
        return READING if self.tls is None else HANDSHAKING

    def on_proxy_header(self, conn: Conn) -> None:
        """--proxy-protocol: one step of reading the header; then TLS or HTTP as without it."""
        loop = self._loop
        try:
            header = read_proxy_step(conn.sock, conn.proxy)
        except BlockingIOError:
            header = None
        except (ProxyProtocolError, OSError) as exc:
            loop.close(conn)
            self.rejected(None, f"{exc} (from {conn.remote[0]})")
            return
        if header is None:
            loop.arm(conn, READ | ONESHOT)  # adds the fd on its first wait (read at accept)
            return
        conn.remote, conn.proxy = apply_proxy_header(header, conn.remote), None
        if self.tls is not None:
            loop.enter(conn, HANDSHAKING, restart=False)
            self.on_handshake(conn)
        else:
            loop.enter(conn, READING, restart=False)
            loop.on_readable(conn)  # the request may have come in the same segment

    def rejected(self, sock: socket.socket | None, reason: str) -> None:
        """Log and count a connection refused for its PROXY header (and close ``sock``, if given)."""
        log.info("connection closed: %s", reason)
        if sock is not None:
            sock.close()
        if self._stats is not None:
            self._stats.count("proxy_rejected")

    def on_handshake(self, conn: Conn) -> None:
        """TLS: one non-blocking handshake step per readiness event; a stalled client holds no thread."""
        loop = self._loop
        outcome, sock = self.tls.handshake(conn.sock)
        conn.use_socket(sock)
        if outcome == HS_READ:
            loop.arm(conn, READ | ONESHOT)  # adds the fd on its first wait (read at accept)
        elif outcome == HS_WRITE:
            loop.arm(conn, WRITE | ONESHOT)
        elif outcome == HS_DONE:
            loop.enter(conn, READING, restart=False)
            loop.on_readable(conn)  # the first request may have come with the client's Finished
        elif outcome == HS_PLAIN_HTTP:
            loop.fail(conn, RemoteProtocolError("plain HTTP request sent to the HTTPS port", 400))
        else:
            loop.close(conn)
