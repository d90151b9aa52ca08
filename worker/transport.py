"""The contract between the loop and the connections it lends to pool threads.

A ``Conn`` and the ``Runner`` serving it never see the ``Loop``. They see a ``Host``: the loop's settings,
its clock, whether the worker is draining, and two calls: ``begin_request`` (a request head was parsed on
this connection) and ``hand_back`` (a pool thread is done with it). ``LoopHost`` is the loop's
implementation; a benchmark or a test builds one with its own ``hand_back``. The connection states are here
too, so both sides name them the same way (docs/ARCHITECTURE.md, "who owns which state").
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from webcluster.worker.http.events import Request
from webcluster.worker.http.protocol import Limits

if TYPE_CHECKING:
    from webcluster.worker.connection import Conn


@dataclass(frozen=True)
class LoopSettings:
    """Everything the loop needs from the configuration (``worker.main`` builds it from ``Config``)."""

    keepalive: float = 5.0
    keepalive_requests: int = 1000
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    body_min_rate: int = 0  # bytes/s a request body must average after its first second (0 = off)
    send_timeout: float = 30.0
    max_connections: int = 10000
    # Seconds the kernel holds a new TCP connection until its first bytes arrive (TCP_DEFER_ACCEPT, Apache
    # httpd's default on Linux, nginx's "deferred"): we accept it with its request already there, and one
    # that sends nothing is accepted at the end of it (its --header-timeout starts then). 0 = off.
    defer_accept: int = 1
    # A request body up to this size is read by the loop before the request goes to a pool thread, so a
    # client trickling a small body holds a socket, not a thread; like the 64 KiB head limit, it bounds
    # what one connection makes us hold (nginx's client_body_buffer_size plays the same role).
    body_preread: int = 65536
    graceful_timeout: float = 30.0
    # After a response that ends the connection we half-close and read until the client's FIN, at most
    # this long, so unread input does not turn our close into an RST that eats the response (RFC 9112 §9.6).
    linger_timeout: float = 2.0
    # On graceful stop, an idle keep-alive connection is closed after this grace: a request already on
    # its way then still gets an answer (with Connection: close) instead of a reset.
    drain_idle_grace: float = 1.0
    # A request without a body is first run on the poller's thread; one running longer than this moves
    # the poller to a standby thread and sends requests through the pool for a while (worker.leader).
    # 0: every request goes through the pool.
    # 5 ms: the watcher wakes every 2.5 ms, and each wake takes the GIL from a busy leader (at 1 ms,
    # c64 lost 5 % of its requests per second to it; BENCHMARKS.md, issue 9 third pass).
    inline_budget: float = 0.005
    limits: Limits = field(default_factory=Limits)
    server_header: bytes = b"webcluster"


class State(enum.Enum):
    """Where a connection is; only its owner thread changes it (the loop, except for BUSY)."""

    HANDSHAKING = "handshaking"  # TLS: the loop drives the handshake; then READING (worker.tls)
    READING = "reading"  # waiting for (the rest of) a request head, or idle keep-alive
    PROXY_HEADER = "proxy-header"  # --proxy-protocol: the loop reads the PROXY header first
    BODY = "body"  # head parsed; the loop reads a small body before a thread gets it
    BUSY = "busy"  # owned by a pool thread
    FLUSHING = "flushing"  # the loop writes leftover output, then reads / lingers / closes
    LINGERING = "lingering"  # output done, write side shut down, discarding input (RFC 9112 §9.6)
    CLOSED = "closed"

    # Identity hash: the loop looks up its event handler by state on every event, and Enum's own
    # __hash__ is a Python call on the name.
    __hash__ = object.__hash__


class Host(Protocol):
    """What a connection and the runner may ask of the loop that owns them."""

    settings: LoopSettings
    url_scheme: str  # "http" or "https"
    can_sendfile: bool  # False under TLS: sendfile would bypass the encryption
    stopping: bool  # graceful stop: every next response carries Connection: close (RFC 9112 §9.6)
    draining: (
        bool  # the host leaves its load balancer (--drain-delay): the same, while still serving
    )

    def clock(self) -> float:
        """Monotonic seconds (the loop's clock, so tests can drive time)."""

    def begin_request(self, conn: Conn) -> None:
        """A request head was parsed on ``conn`` (by its owner thread): count it, decide if it is the last."""

    def hand_back(self, conn: Conn, close: bool) -> None:
        """Pool thread: done with ``conn``; the loop flushes what is left, then reads on or closes."""

    def shed(self, conn: Conn, event: str, waited: float) -> None:
        """Pool thread: the request waited too long for a thread (--queue-timeout) and must not run;
        the loop answers 503 + Retry-After and closes. ``event`` names the /stats counter."""


class LoopHost:
    """The loop's ``Host``: settings and clock, the stopping/draining flags, a thread-safe hand-back."""

    __slots__ = ("settings", "url_scheme", "can_sendfile", "stopping", "draining", "clock",
                 "_call_soon", "_resume", "_shed", "_rearm")  # fmt: skip

    def __init__(
        self,
        settings: LoopSettings,
        call_soon: Callable[..., None],
        resume: Callable[[Conn, bool], None],
        shed: Callable[[Conn, str, float], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        url_scheme: str = "http",
        can_sendfile: bool = True,
        rearm: Callable[[Conn], bool] | None = None,
    ) -> None:
        self.settings = settings
        self.url_scheme = url_scheme
        self.can_sendfile = can_sendfile
        self.stopping = False
        self.draining = False
        self.clock = clock
        self._call_soon = call_soon  # runs a call on the loop thread (Poller.call_soon)
        self._resume = resume
        self._shed = shed
        self._rearm = rearm  # re-arms a keep-alive connection from the pool thread (worker.rearm)

    def begin_request(self, conn: Conn) -> None:
        if conn.body_start is not None or conn.early is not None:  # the last request's body state
            conn.new_request()
        conn.requests += 1
        s = self.settings
        if (
            self.stopping
            or self.draining
            or s.keepalive <= 0
            or conn.requests >= s.keepalive_requests
        ):
            conn.h1.request_close()

    def hand_back(self, conn: Conn, close: bool) -> None:
        if not close and self._rearm is not None and self._rearm(conn):
            return
        self._call_soon(self._resume, conn, close)

    def shed(self, conn: Conn, event: str, waited: float) -> None:
        self._call_soon(self._shed, conn, event, waited)


def reads_body_first(request: Request) -> bool:
    """True when the loop pre-reads this request's body before a thread gets it (a slow body then holds
    no thread). With ``Expect: 100-continue`` the application decides (RFC 9110 §10.1.1): not pre-read."""
    return not request.expect_continue and bool(request.chunked or request.content_length)
