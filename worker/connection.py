"""One client connection: socket, HTTP state machine, pending output, request-body intake. Glue only.

A connection is owned by exactly one thread at a time. The loop thread owns it while it waits for a request
head, idles between requests, flushes leftover output or lingers before closing; a pool thread owns it from
dispatch until it hands it back with ``Host.hand_back``. Because the fd is armed with EPOLLONESHOT, or
disarmed before the hand-over when the loop had armed it level-triggered (``Conn.level``), or not in the
epoll set yet (``Conn.polled``), the loop never sees events for a connection a thread is using. A
connection knows the loop only as a ``Host`` (``worker.transport``) and keeps its output in an
``OutputQueue`` (``worker.outqueue``).
"""

from __future__ import annotations

import select
import socket
from collections import deque
from typing import TYPE_CHECKING

from webcluster.worker.handlers.base import ClientDisconnected
from webcluster.worker.http.errors import RemoteProtocolError
from webcluster.worker.http.events import NEED_DATA, PAUSED, Data, EndOfMessage
from webcluster.worker.http.protocol import H1Connection
from webcluster.worker.outqueue import OutputQueue, wait_fd
from webcluster.worker.tlscommon import WantWrite
from webcluster.worker.transport import State

if TYPE_CHECKING:
    from webcluster.worker.proxyproto import ProxyReader
    from webcluster.worker.tls import TLSStream
    from webcluster.worker.transport import Host

RECV_SIZE = 65536
INF = float("inf")

# --body-min-rate is enforced only after this grace: a body's first second may arrive in one burst or not.
BODY_RATE_GRACE = 1.0


class Conn:
    """State of one accepted socket. See the module docstring for which thread may touch what."""

    __slots__ = (
        "serial",
        "sock",
        "fd",
        "h1",
        "host",
        "remote",
        "local",
        "state",
        "token",
        "out",
        "after_flush",
        "idle",
        "requests",
        "broken",
        "last_unsent",
        "bytes_in",
        "body_error",
        "early",
        "early_bytes",
        "body_start",
        "body_base",
        "proxy",
        "arming",
        "idle_since",
        "idle_due",
        "idle_seq",
        "level",
        "polled",
    )

    def __init__(
        self, sock: socket.socket | TLSStream, h1: H1Connection, host: Host, remote, local
    ) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.h1 = h1
        self.host = host
        self.remote = remote
        self.local = local
        self.state = State.READING
        self.serial = 0  # set by the loop; timer entries refer to a connection by it
        self.token = 0  # changed on every transition (Loop._enter); stale timer entries are ignored
        self.out = OutputQueue(sock, host.settings.send_timeout, host.clock)
        self.after_flush = State.READING
        self.idle = True  # no byte of the next request received yet
        # Its keep-alive deadline, kept lazily (``Timeouts.arm_idle``): idle since, when its pending
        # entry in the idle queues comes due (-inf: none), and that entry's number (older ones are void).
        self.idle_since = 0.0
        self.idle_due = -INF
        self.idle_seq = 0
        self.requests = 0
        self.broken = False  # the peer went away mid-response
        self.arming = False  # a pool thread is re-arming the fd this instant (worker.rearm)
        # The fd is armed level-triggered for reading, not EPOLLONESHOT (Loop._after_flush): it stays
        # armed while the loop serves the connection itself, and is disarmed before anyone else does.
        self.level = False
        # Its fd is in the epoll set. A connection read at accept joins it only when it first waits
        # (``Loop.arm``): one answered and closed at once never does (no EPOLL_CTL_ADD, no removal).
        self.polled = False
        self.last_unsent = 0  # send-queue bytes seen at the last idle timeout (slow readers)
        self.bytes_in = 0
        self.body_error: RemoteProtocolError | None = None
        # Body events the loop parsed before dispatch (preread_body); the thread takes them first. Made
        # only for a request with a body: an empty deque is 760 bytes, a third of an idle connection.
        self.early: deque[Data | EndOfMessage] | None = None
        self.early_bytes = 0
        self.body_start: float | None = None  # when the current body started to count (rate check)
        self.body_base = 0  # bytes_in at body_start, minus body bytes already buffered then
        self.proxy: ProxyReader | None = None  # set while a PROXY header is awaited

    def want_more(self) -> None:
        """More of the request is to come: ACK at once again (TCP_QUICKACK). Connections start with
        delayed ACKs (``worker.acceptor``), and a client with Nagle on sends its next small segment only
        once the last one is ACKed: a delayed ACK would hold it for up to 40 ms."""
        try:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        except OSError:  # not TCP (a unix socket)
            pass

    def use_socket(self, sock: socket.socket | TLSStream) -> None:
        """Loop: the TLS handshake wrapped the socket; every later read and write goes through ``sock``."""
        self.sock = self.out.sock = sock

    # ---- ASYNCHRONOUS: loop thread, before the request goes to a pool thread -------------
    def new_request(self) -> None:
        """A request head was parsed (by the loop or, for a pipelined one, by the pool thread)."""
        self.early = None
        self.early_bytes = 0
        self.body_start = None

    def begin_body(self, now: float) -> None:
        """Start the body clock for --body-min-rate; bytes that came with the head count as body."""
        self.body_start = now
        self.body_base = self.bytes_in - len(self.h1.trailing_data[0])

    def body_too_slow(self, now: float) -> bool:
        """True when, after the grace second, the body arrives slower than --body-min-rate on average."""
        rate = self.host.settings.body_min_rate
        if not rate or self.body_start is None:
            return False
        elapsed = now - self.body_start - BODY_RATE_GRACE
        return elapsed > 0 and self.bytes_in - self.body_base < rate * elapsed

    def preread_body(self, budget: int) -> bool:
        """Parse the body bytes already received into ``early``; True once the whole body or ``budget``
        bytes of it are held (a pool thread reads the rest). Raises RemoteProtocolError (bad framing).

        This is what keeps a slow-body client (R-U-Dead-Yet) from holding a thread: a body up to
        ``budget`` is read here, by the loop, bounded by --body-timeout and --body-min-rate.
        """
        h1, early = self.h1, self.early
        if early is None:
            early = self.early = deque()
        while True:
            event = h1.next_event()
            if event is NEED_DATA or event is PAUSED:
                return False
            early.append(event)
            if type(event) is EndOfMessage:
                return True
            self.early_bytes += len(event.data)
            if self.early_bytes >= budget:
                return True

    # ---- SYNCHRONOUS: called by the pool thread that owns the connection ----------------
    def next_body_event(self):
        """The next request-body event: those the loop already parsed first, then the parser's."""
        if self.early:
            return self.early.popleft()
        return self.h1.next_event()

    def send(self, data: bytes, more: bool = False, hold: bool = False, ends: bool = False) -> None:
        """Queue ``data`` for the client (``OutputQueue.send``); ClientDisconnected marks us broken."""
        try:
            self.out.send(data, more, hold, ends)
        except ClientDisconnected:
            self.broken = True
            raise

    def sendfile(self, file_fd: int, offset: int, count: int) -> None:
        """Send part of a file (``OutputQueue.sendfile``): a slow reader holds an fd, never a thread."""
        try:
            self.out.sendfile(file_fd, offset, count)
        except ClientDisconnected:
            self.broken = True
            raise

    def recv_body_bytes(self) -> None:
        """Feed the next piece of the request body to the parser, waiting at most ``--body-timeout``."""
        timeout = self.host.settings.body_timeout
        while True:
            try:
                data = self.sock.recv(RECV_SIZE)
                break
            except BlockingIOError as exc:
                # TLS only: WantWrite = OpenSSL must send something before it can read on.
                want = select.POLLOUT if type(exc) is WantWrite else select.POLLIN
                if not wait_fd(self.fd, want, timeout):
                    self.body_error = RemoteProtocolError("request body timeout", 408)
                    raise self.body_error from None
            except OSError as exc:
                self.broken = True
                raise ClientDisconnected(str(exc)) from exc
        self.bytes_in += len(data)
        self.h1.receive_data(data)
        now = self.host.clock()
        if self.body_start is None:  # the thread reads this body from the start (Expect, pipelined)
            self.body_start, self.body_base = now, self.bytes_in - len(data)
        elif data and self.body_too_slow(now):
            self.body_error = RemoteProtocolError("request body too slow (--body-min-rate)", 408)
            raise self.body_error
