"""The worker's event loop: the one thread that owns the poller.

ASYNCHRONOUS (loop thread): accept (paused at ``--max-connections``), read until a request head is complete,
keep idle keep-alive connections, flush output a pool thread left behind, linger before closing, and run the
timers (head-read 408, keep-alive idle, send, linger, drain). A complete head goes to the pool; the thread hands
the connection back through ``Poller.call_soon(loop.resume, ...)``. Idle connections therefore cost a socket
and a few hundred bytes, never a thread. With TLS the loop also drives each handshake, non-blocking, before
the connection starts READING (``worker.tls``); the header timeout bounds it.
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import logging
import socket
import struct
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from worker.connection import (
    BODY,
    BUSY,
    CLOSED,
    FLUSHING,
    HANDSHAKING,
    LINGERING,
    PROXY_HEADER,
    READING,
    RECV_SIZE,
    Conn,
)
from worker.http.errors import LocalProtocolError, RemoteProtocolError
from worker.http.events import NEED_DATA, ConnectionClosed, Request
from worker.http.protocol import H1Connection, Limits
from worker.http.state import DONE, MUST_CLOSE, SEND_BODY
from worker.httpdate import http_date
from worker.logthrottle import LogThrottle
from worker.poller import ONESHOT, READ, WRITE, Poller
from worker.proxyproto import ProxyProtocolError, ProxyReader
from worker.proxyread import apply as apply_proxy_header
from worker.proxyread import read_step as read_proxy_step
from worker.runner import Runner
from worker.threadpool import ThreadPool
from worker.timers import DeadlineQueue
from worker.tls import HS_DONE, HS_PLAIN_HTTP, HS_READ, HS_WRITE, TLSAcceptor, WantWrite
from worker.watchdog import shed_response

if TYPE_CHECKING:
    from worker.handlers.forwarded import ForwardedPolicy

log = logging.getLogger("webcluster.error")

# Accepts per readiness event, so one busy listener cannot starve the rest of the loop.
ACCEPT_BATCH = 64
# The client's request was read to its end (MUST_CLOSE: it ended and asked to close, or was HTTP/1.0).
_REQUEST_COMPLETE = frozenset((DONE, MUST_CLOSE))
ACCEPT_RETRY = 0.1  # seconds to pause accepting after EMFILE/ENFILE
# Out of fds, a worker retries accept() 10 times a second: one log line per this many seconds, with a count.
ACCEPT_ERROR_LOG_INTERVAL = 10.0


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
    limits: Limits = field(default_factory=Limits)
    server_header: bytes = b"webcluster"


def unsent_bytes(sock: socket.socket) -> int:
    """Bytes in the socket's send queue the peer has not acknowledged yet (Linux SIOCOUTQ)."""
    try:
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
    except (OSError, ValueError):
        return 0


class _Listener:
    """A listening socket plus what every connection accepted on it shares."""

    __slots__ = ("sock", "tcp", "local")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.tcp = sock.family in (socket.AF_INET, socket.AF_INET6)
        local = sock.getsockname()[:2] if self.tcp else ("", 0)
        # A specific bind address is every connection's local address: no getsockname per accept.
        self.local = None if self.tcp and local[0] in ("0.0.0.0", "::") else local
        if self.tcp:
            # Linux copies TCP_NODELAY to accepted sockets: one setsockopt here, none per connection.
            # Nagle would hold a response's last segment until the client's delayed ACK (~40 ms).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Loop:
    """Owns the poller and every connection not currently in a pool thread."""

    def __init__(
        self,
        listeners: list[socket.socket],
        runner: Runner,
        pool: ThreadPool,
        settings: LoopSettings,
        *,
        poller: Poller | None = None,
        clock: Callable[[], float] = time.monotonic,
        tick: Callable[[float], None] | None = None,
        url_scheme: str = "http",
        can_sendfile: bool = True,
        tls: TLSAcceptor | None = None,
        proxy_trust: ForwardedPolicy | None = None,
    ) -> None:
        self.settings = settings
        self.runner = runner
        self.pool = pool
        self.poller = poller or Poller()
        self.clock = clock
        self.tick = tick
        self.url_scheme = url_scheme
        self.tls = tls
        self.proxy_trust = proxy_trust  # --proxy-protocol: whose PROXY headers are believed
        self.draining = False  # the host is leaving its balancer (--drain-delay): close keep-alives
        self.can_sendfile = can_sendfile and tls is None  # sendfile would bypass the encryption
        self.stopping = False
        self._exit_now = False
        self._stop_deadline = 0.0
        self._listeners = [_Listener(s) for s in listeners]
        self._accepting = False
        self._accept_resume_at: float | None = None
        self._accept_errors = LogThrottle(ACCEPT_ERROR_LOG_INTERVAL)
        # Queue waits (--queue-timeout, gone clients) and stuck pools (--request-timeout): worker.watchdog.
        self._watch = runner.watch
        self._saturated = False  # every pool thread stuck: accept nothing, answer the queue 503
        # Live connections by serial. Timer entries name a serial, never a Conn, so a closed connection
        # is freed at once instead of living (parser, buffers, socket) until its deadline passes.
        self._conns: dict[int, Conn] = {}
        self._serials = itertools.count(1)
        self._header_q = DeadlineQueue(settings.header_timeout)
        self._idle_q = DeadlineQueue(settings.keepalive)
        self._send_q = DeadlineQueue(settings.send_timeout)
        self._linger_q = DeadlineQueue(settings.linger_timeout)
        self._drain_q = DeadlineQueue(settings.drain_idle_grace)
        self._body_q = DeadlineQueue(settings.body_timeout)
        self._queues = (
            (self._header_q, self._on_header_timeout),
            (self._body_q, self._on_body_timeout),
            (self._idle_q, self._on_idle_timeout),
            (self._send_q, self._on_send_timeout),
            (self._linger_q, self._on_linger_timeout),
            (self._drain_q, self._on_idle_timeout),
        )
        queue_timeout = self._watch.queue_timeout if self._watch is not None else 0.0
        if queue_timeout:
            self._queue_q = DeadlineQueue(queue_timeout)
            self._queues += ((self._queue_q, self._on_queue_timeout),)
        for lst in self._listeners:
            lst.sock.setblocking(False)

    # ---- public, any thread ------------------------------------------------------------
    def stop(self, graceful: bool = True) -> None:
        """Ask the loop to stop (safe from signal handlers and other threads)."""
        self.poller.call_soon(self._begin_stop, graceful)

    def drain(self) -> None:
        """The host is leaving its load balancer (--drain-delay): keep serving, but end every
        keep-alive connection after its next response so the balancer's pool empties (any thread)."""
        self.poller.call_soon(setattr, self, "draining", True)

    def gauges(self) -> dict[str, int]:
        """Connection and thread gauges for the stats report (loop thread)."""
        idle = sum(1 for c in self._conns.values() if c.state == READING and c.idle)
        return {
            "active_connections": len(self._conns) - idle,  # idle ones are counted separately
            "idle_connections": idle,
            "busy_threads": self.pool.busy,
            "queue_depth": self.pool.queued,
            "threads": self.pool.size,
        }

    # ---- the loop -----------------------------------------------------------------------
    def run(self) -> None:
        """Serve until stopped: at once for a fast stop, when drained (or at the deadline) for a graceful one."""
        self._start_accepting()
        poll = self.poller.poll
        while not self._exit_now:
            now = self.clock()
            if self.stopping and (not self._conns or now >= self._stop_deadline):
                break
            for obj, events in poll(self._poll_timeout(now)):
                if type(obj) is _Listener:
                    self._accept(obj)
                else:
                    self._on_event(obj, events)
            now = self.clock()
            self._run_timers(now)
            if self.tick is not None:
                self.tick(now)
        self._close_all()

    def _poll_timeout(self, now: float) -> float:
        timeout = 1.0  # the stats/heartbeat tick
        for queue, _ in self._queues:
            deadline = queue.next_deadline()
            if deadline is not None:
                timeout = min(timeout, deadline - now)
        if self._accept_resume_at is not None:
            timeout = min(timeout, self._accept_resume_at - now)
        if self.stopping:
            timeout = min(timeout, self._stop_deadline - now)
        return max(timeout, 0.0)

    # ---- accepting ------------------------------------------------------------------------
    def _start_accepting(self) -> None:
        if self._accepting or self.stopping or self._saturated:
            return
        self._accepting = True
        self._accept_resume_at = None
        for lst in self._listeners:
            self.poller.register(lst.sock.fileno(), READ, lst)

    def _pause_accepting(self) -> None:
        if not self._accepting:
            return
        self._accepting = False
        for lst in self._listeners:
            self.poller.unregister(lst.sock.fileno())

    def _accept(self, lst: _Listener) -> None:
        max_conns = self.settings.max_connections
        for _ in range(ACCEPT_BATCH):
            if len(self._conns) >= max_conns:
                # Backpressure: leave the rest in the kernel queue (other slots may take them).
                self._pause_accepting()
                return
            try:
                sock, addr = lst.sock.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._on_accept_error(exc)
                    self._pause_accepting()
                    self._accept_resume_at = self.clock() + ACCEPT_RETRY
                    return
                continue  # ECONNABORTED and friends: that one client is gone
            self._add_conn(sock, addr, lst)

    def _on_accept_error(self, exc: OSError) -> None:
        """Count every failure; log the first at once, then one line per interval with the count."""
        if self.runner.stats is not None:
            self.runner.stats.count("accept_errors")
        count = self._accept_errors.hit(self.clock())
        if count is not None:
            log.warning(
                "accept failed %d time(s) (%s); pausing accepts for %.1fs after each; "
                "next report in %.0fs at the earliest (accept_errors in /stats)",
                count, exc.strerror or exc, ACCEPT_RETRY, ACCEPT_ERROR_LOG_INTERVAL,
            )  # fmt: skip

    def _add_conn(self, sock: socket.socket, addr, lst: _Listener) -> None:
        sock.setblocking(False)
        if lst.tcp:
            remote = addr[:2]
            local = lst.local or sock.getsockname()[:2]
        else:
            remote, local = ("", 0), ("", 0)
        s = self.settings
        if self.proxy_trust is not None and not self.proxy_trust.trusts(remote[0]):
            self._proxy_rejected(sock, f"PROXY header from untrusted peer {remote[0]}")
            return
        conn = Conn(sock, H1Connection(s.limits, s.server_header), self, remote, local)
        if self.proxy_trust is not None:
            conn.state, conn.proxy = PROXY_HEADER, ProxyReader()  # header timeout bounds it
        elif self.tls is not None:
            conn.state = HANDSHAKING  # the header timeout below bounds the handshake too
        conn.serial = next(self._serials)
        self._conns[conn.serial] = conn
        self.poller.register(conn.fd, READ | ONESHOT, conn)
        self._header_q.add(conn.serial, conn.token, self.clock())

    # ---- connection events ----------------------------------------------------------------
    def _on_event(self, conn: Conn, events: int) -> None:
        state = conn.state
        if state == READING:
            self._on_readable(conn)
        elif state == FLUSHING:
            self._flush(conn)
        elif state == LINGERING:
            self._on_linger_readable(conn)
        elif state == HANDSHAKING:
            self._on_handshake(conn)
        elif state == BODY:
            self._on_body_readable(conn)
        elif state == PROXY_HEADER:
            self._on_proxy_header(conn)

    def _on_proxy_header(self, conn: Conn) -> None:
        """--proxy-protocol: one step of reading the header; then TLS or HTTP as without it."""
        try:
            header = read_proxy_step(conn.sock, conn.proxy)
        except BlockingIOError:
            self.poller.modify(conn.fd, READ | ONESHOT)
            return
        except (ProxyProtocolError, OSError) as exc:
            self._close(conn)
            self._proxy_rejected(None, f"{exc} (from {conn.remote[0]})")
            return
        if header is None:
            self.poller.modify(conn.fd, READ | ONESHOT)
            return
        conn.remote, conn.proxy = apply_proxy_header(header, conn.remote), None
        if self.tls is not None:
            conn.state = HANDSHAKING
            self._on_handshake(conn)
        else:
            conn.state = READING
            self._on_readable(conn)  # the request may have come in the same segment

    def _proxy_rejected(self, sock: socket.socket | None, reason: str) -> None:
        log.info("connection closed: %s", reason)
        if sock is not None:
            sock.close()
        if self.runner.stats is not None:
            self.runner.stats.count("proxy_rejected")

    def _on_handshake(self, conn: Conn) -> None:
        """TLS: one non-blocking handshake step per readiness event; a stalled client holds no thread."""
        outcome, conn.sock = self.tls.handshake(conn.sock)
        if outcome == HS_READ:
            self.poller.modify(conn.fd, READ | ONESHOT)
        elif outcome == HS_WRITE:
            self.poller.modify(conn.fd, WRITE | ONESHOT)
        elif outcome == HS_DONE:
            conn.state = READING
            self._on_readable(conn)  # the first request may have come with the client's Finished
        elif outcome == HS_PLAIN_HTTP:
            self._fail(conn, RemoteProtocolError("plain HTTP request sent to the HTTPS port", 400))
        else:
            self._close(conn)

    def _receive(self, conn: Conn) -> bytes | None:
        """One recv into the parser; None when there was nothing (re-armed) or the socket failed
        (closed). b"" is EOF, which the parser turns into ConnectionClosed or a 400."""
        try:
            data = conn.sock.recv(RECV_SIZE)
        except BlockingIOError as exc:  # WantWrite: TLS must send before it reads on
            self.poller.modify(conn.fd, (WRITE if type(exc) is WantWrite else READ) | ONESHOT)
            return None
        except OSError:
            self._close(conn)
            return None
        conn.bytes_in += len(data)
        conn.h1.receive_data(data)
        return data

    def _on_readable(self, conn: Conn) -> None:
        data = self._receive(conn)
        if data is None:
            return
        if data and conn.idle:
            # First byte of a request: the head must now arrive within --header-timeout.
            conn.idle = False
            conn.token += 1
            self._header_q.add(conn.serial, conn.token, self.clock())
        self._advance(conn)

    def _advance(self, conn: Conn) -> None:
        try:
            event = conn.h1.next_event()
        except RemoteProtocolError as exc:
            self._fail(conn, exc)
            return
        if type(event) is Request:
            self.count_request(conn)
            self._start_body(conn)
        elif event is NEED_DATA:
            self.poller.modify(conn.fd, READ | ONESHOT)
        elif type(event) is ConnectionClosed:
            self._close(conn)
        else:  # PAUSED/Data cannot happen while reading a head; treat as a bug, not a hang
            log.error("unexpected event %r while reading a request head", event)
            self._close(conn)

    def _start_body(self, conn: Conn) -> None:
        """A head is complete: read a body of up to ``body_preread`` bytes here before a thread is given
        to the request (slow-body attacks then hold a socket, not a thread). The pre-read must finish
        within --body-timeout in total and keep --body-min-rate. With ``Expect: 100-continue`` the
        application decides (RFC 9110 §10.1.1), so such a request goes to a thread at once."""
        if not self.reads_body_first(conn.h1.request):
            self._dispatch(conn)
            return
        now = self.clock()
        conn.begin_body(now)
        conn.state = BODY
        conn.token += 1
        self._body_q.add(conn.serial, conn.token, now)
        self._read_body(conn)

    @staticmethod
    def reads_body_first(request: Request) -> bool:
        """True when the loop pre-reads this request's body (a pool thread parsing a pipelined head
        hands such a request back rather than reading the body itself)."""
        return not request.expect_continue and bool(request.chunked or request.content_length)

    def _read_body(self, conn: Conn) -> None:
        try:
            complete = conn.preread_body(self.settings.body_preread)
        except RemoteProtocolError as exc:
            self._fail(conn, exc)
            return
        if complete:
            self._dispatch(conn)
        elif conn.body_too_slow(self.clock()):
            self._fail(conn, RemoteProtocolError("request body too slow (--body-min-rate)", 408))
        else:
            self.poller.modify(conn.fd, READ | ONESHOT)

    def _on_body_readable(self, conn: Conn) -> None:
        # b"" (EOF mid-body): the parser raises, a 400 as from a thread
        if self._receive(conn) is not None:
            self._read_body(conn)

    def _dispatch(self, conn: Conn) -> None:
        conn.state = BUSY
        conn.token += 1
        watch = self._watch
        if watch is not None:  # the wait for a thread is watched: worker.watchdog
            if self._saturated:
                self.shed(conn, "shed_stuck_pool", 0.0)  # no thread will be free in time
                return
            now = self.clock()
            watch.enqueue(conn.serial, now)  # before submit: a thread may claim it at once
            if watch.queue_timeout:
                self._queue_q.add(conn.serial, conn.token, now)
        self.pool.submit(self.runner.run, conn)

    # ---- load shedding (worker.watchdog) ------------------------------------------------------
    def shed(self, conn: Conn, event: str, waited: float) -> None:
        """Loop thread: answer a request that never reached the app 503 + Retry-After, then close.
        The caller owns ``conn``: it claimed it from the queue, or never queued it."""
        if conn.state == CLOSED:
            return
        response = shed_response(conn.h1, date=http_date())
        conn.out += response
        if self.runner.stats is not None:
            self.runner.stats.count(event)
        self.runner.record(conn, conn.h1.request, 503, waited, 0, len(response))
        self._start_flush(conn, LINGERING)

    def _on_queue_timeout(self, conn: Conn) -> None:
        if conn.state == BUSY:  # still queued, unless a thread claimed it: then the claim fails
            waited = self._watch.claim(conn.serial, self.clock())
            if waited is not None:
                self.shed(conn, "shed_queue_timeout", waited)

    def set_saturated(self, saturated: bool) -> None:
        """Loop thread (the watchdog's call_soon): while every pool thread is stuck, accept nothing
        (new clients wait in the kernel queue for this slot's replacement) and answer the queue 503."""
        self._saturated = saturated
        if not saturated:
            if self._accept_resume_at is None and len(self._conns) < self.settings.max_connections:
                self._start_accepting()
            return
        self._pause_accepting()
        self._shed_queued()

    def _shed_queued(self) -> None:
        now = self.clock()
        for serial in list(self._watch.queued):
            conn = self._conns.get(serial)
            waited = self._watch.claim(serial, now)
            if conn is not None and waited is not None:
                self.shed(conn, "shed_stuck_pool", waited)

    def count_request(self, conn: Conn) -> None:
        """A new request starts on ``conn`` (owner thread): decide now whether it is the last one."""
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

    def _fail(self, conn: Conn, exc: RemoteProtocolError) -> None:
        """The one place the loop turns a protocol error into a response: status, Connection: close."""
        log.debug("protocol error from %s: %s (%d)", conn.remote, exc, exc.status)
        response = conn.h1.error_response(exc, date=http_date())
        conn.out += response
        self.runner.record(conn, conn.h1.request, exc.status, 0.0, 0, len(response))
        self._start_flush(conn, LINGERING)

    # ---- hand-back from pool threads ------------------------------------------------------
    def resume(self, conn: Conn, close: bool) -> None:
        """Loop thread (via call_soon): a pool thread is done with ``conn``."""
        if conn.state == CLOSED:
            return
        if close and conn.broken:
            self._close(conn)
            return
        self._start_flush(conn, LINGERING if close else READING)

    def _start_flush(self, conn: Conn, after: int) -> None:
        conn.token += 1
        conn.after_flush = after
        if conn.has_output():
            conn.state = FLUSHING
            conn.sent_at = now = self.clock()
            self._send_q.add(conn.serial, conn.token, now)
            self._flush(conn)
        else:
            self._after_flush(conn)

    def _flush(self, conn: Conn) -> None:
        """Write what a thread left: its output, then a file it handed over (Conn.sendfile), then the
        rest; a slow reader of a large file costs a socket and an fd here, not a thread."""
        try:
            done = conn.write_some()
        except (OSError, LocalProtocolError):  # gone, or the file shrank under us
            self._close(conn)
            return
        if not done:
            self.poller.modify(conn.fd, WRITE | ONESHOT)
            return
        out = conn.out
        if out.__sizeof__() > 4096:
            conn.out = bytearray()  # release a large buffer between requests
        self._after_flush(conn)

    def _after_flush(self, conn: Conn) -> None:
        conn.token += 1
        if conn.after_flush == LINGERING:
            self._linger(conn)
            return
        if conn.h1.their_state is SEND_BODY:  # a pipelined head a thread parsed: body read here
            conn.idle = False
            self._start_body(conn)
            return
        conn.state = READING
        pending, _ = conn.h1.trailing_data
        now = self.clock()
        if pending:
            # Part of the next request is already here: it has --header-timeout to complete.
            conn.idle = False
            self._header_q.add(conn.serial, conn.token, now)
            self._advance(conn)
            return
        conn.idle = True
        if self.stopping:
            self._drain_q.add(conn.serial, conn.token, now)
        else:
            self._idle_q.add(conn.serial, conn.token, now)
        self.poller.modify(conn.fd, READ | ONESHOT)

    def _linger(self, conn: Conn) -> None:
        h1 = conn.h1
        if h1.their_state in _REQUEST_COMPLETE and not h1.trailing_data[0]:
            self._close(conn)  # nothing unread: a plain close cannot turn into an RST
            return
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        conn.state = LINGERING
        self._linger_q.add(conn.serial, conn.token, self.clock())
        self.poller.modify(conn.fd, READ | ONESHOT)

    def _on_linger_readable(self, conn: Conn) -> None:
        try:
            data = conn.sock.recv(RECV_SIZE)
        except BlockingIOError:
            data = b"-"
        except OSError:
            data = b""
        if not data:
            self._close(conn)
        else:
            self.poller.modify(conn.fd, READ | ONESHOT)

    def _close(self, conn: Conn) -> None:
        if conn.state == CLOSED:
            return
        conn.state = CLOSED
        conn.token += 1
        self.poller.unregister(conn.fd)
        conn.drop_file()
        try:
            conn.sock.close()
        except OSError:
            pass
        self._conns.pop(conn.serial, None)
        if not self._accepting and not self.stopping and self._accept_resume_at is None:
            if len(self._conns) < self.settings.max_connections:
                self._start_accepting()

    # ---- timers ---------------------------------------------------------------------------
    def _run_timers(self, now: float) -> None:
        conns = self._conns
        for queue, action in self._queues:
            deadline = queue.next_deadline()
            if deadline is not None and deadline <= now:
                for serial, token in queue.expired(now):
                    conn = conns.get(serial)
                    if conn is not None and conn.token == token:
                        action(conn)
        if self._accept_resume_at is not None and now >= self._accept_resume_at:
            self._accept_resume_at = None
            if len(self._conns) < self.settings.max_connections:
                self._start_accepting()

    def _on_header_timeout(self, conn: Conn) -> None:
        if conn.state != READING:
            if conn.state == HANDSHAKING:
                self._close(conn)  # no TLS session yet, so no channel for a 408
            elif conn.state == PROXY_HEADER:
                self._close(conn)
                self._proxy_rejected(None, f"no PROXY header in time from {conn.remote[0]}")
            return
        if conn.idle and not conn.h1.trailing_data[0]:
            # A connection that never sent a byte gets no 408 (nginx does the same).
            self._close(conn)
        else:
            self._fail(conn, RemoteProtocolError("request head timeout", 408))

    def _on_body_timeout(self, conn: Conn) -> None:
        if conn.state == BODY:
            self._fail(conn, RemoteProtocolError("request body timeout", 408))

    def _on_idle_timeout(self, conn: Conn) -> None:
        if conn.state != READING or not conn.idle:
            return
        # The idle timer starts when the response is in the kernel, not when the client has it. A slow
        # reader may still be reading megabytes; closing now would race its next request (it would see
        # a reset). While the send queue still holds bytes and shrinks, give it another period.
        unacked = unsent_bytes(conn.sock)
        if unacked and unacked != conn.last_unsent:
            conn.last_unsent = unacked
            conn.token += 1
            self._idle_q.add(conn.serial, conn.token, self.clock())
            return
        self._close(conn)

    def _on_send_timeout(self, conn: Conn) -> None:
        if conn.state == FLUSHING:
            now = self.clock()
            if conn.file_left and now - conn.sent_at < self.settings.send_timeout:
                # A file goes out as long as the client takes some of it every --send-timeout
                # (checked once per period, so it is dropped 1-2 periods after it stops).
                conn.token += 1
                self._send_q.add(conn.serial, conn.token, now)
                return
            conn.abort_on_close()  # drop what the kernel still holds for it
            log.info(
                "closing %s: client did not read its response within --send-timeout", conn.remote
            )
            self._close(conn)

    def _on_linger_timeout(self, conn: Conn) -> None:
        if conn.state == LINGERING:
            self._close(conn)

    # ---- stopping -------------------------------------------------------------------------
    def _begin_stop(self, graceful: bool) -> None:
        if not graceful:
            self._exit_now = True
            return
        if self.stopping:
            return
        self.stopping = True
        now = self.clock()
        self._stop_deadline = now + self.settings.graceful_timeout
        self._pause_accepting()
        self._accept_resume_at = None
        # This worker never accepts again: drop its references to the listening sockets. While the
        # supervisor lives it holds its own, so the queue waits for the slot's next worker; when we
        # were orphaned (PR_SET_PDEATHSIG) ours were the last, so new clients are refused at once
        # instead of waiting in a backlog nobody accepts from, and the port is free for a restart.
        for lst in self._listeners:
            lst.sock.close()
        for conn in list(self._conns.values()):
            if conn.state == READING and conn.idle:
                conn.token += 1
                self._drain_q.add(conn.serial, conn.token, now)

    def _close_all(self) -> None:
        self._pause_accepting()
        if self._watch is not None:
            self._shed_queued()  # requests no thread started get a 503 rather than a reset
        for conn in list(self._conns.values()):
            if conn.state != BUSY:
                self._close(conn)
