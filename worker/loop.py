"""The worker's event loop: the one thread that owns the poller (which thread that is: ``worker.leader``).

ASYNCHRONOUS (loop thread): accept (``worker.acceptor``), the PROXY header and TLS handshake
(``worker.preamble``), read until a request head is complete, keep idle keep-alive connections, flush output
a pool thread left behind, linger before closing (``worker.linger``), and run the timers (``worker.timeouts``).
A complete head goes to the pool, unless its handler never waits (static files: ``Runner.on_loop``) or it has
no body and runs here (``worker.leader``); the thread hands the
connection back through ``Host.hand_back``, which queues ``Loop.resume`` on this thread, or re-arms an idle
keep-alive connection itself (``worker.rearm``). Idle connections cost a socket and a few hundred bytes,
never a thread.

Every state change goes through ``Loop.enter``: the token changes with the state (``worker.timers``).
"""

from __future__ import annotations

import itertools
import logging
import socket
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from webcluster.worker.acceptor import Acceptor, Listener
from webcluster.worker.connection import RECV_SIZE, Conn
from webcluster.worker.http.errors import LocalProtocolError, RemoteProtocolError
from webcluster.worker.http.events import NEED_DATA, ConnectionClosed, Request
from webcluster.worker.http.protocol import H1Connection
from webcluster.worker.http.state import SEND_BODY
from webcluster.worker.httpdate import http_date
from webcluster.worker.leader import Leadership
from webcluster.worker.linger import Linger
from webcluster.worker.poller import ONESHOT, READ, WRITE, Poller
from webcluster.worker.preamble import Preamble
from webcluster.worker.rearm import PLAIN_SOCKETS, Rearm
from webcluster.worker.runner import Runner
from webcluster.worker.shedding import Shedding
from webcluster.worker.threadpool import ThreadPool
from webcluster.worker.timeouts import Timeouts
from webcluster.worker.timers import DeadlineQueue
from webcluster.worker.tlscommon import WantWrite
from webcluster.worker.transport import LoopHost, LoopSettings, State, reads_body_first

if TYPE_CHECKING:
    from webcluster.worker.handlers.forwarded import ForwardedPolicy
    from webcluster.worker.tls import TLSAcceptor

__all__ = ["Loop", "LoopSettings"]

log = logging.getLogger("webcluster.error")

TICK_EVERY = 0.01  # seconds between two calls of the loop's tick (stats, trims, retire check)

HANDSHAKING, READING, BODY, BUSY, PROXY_HEADER = (State.HANDSHAKING, State.READING, State.BODY,
                                                  State.BUSY, State.PROXY_HEADER)  # fmt: skip
FLUSHING, LINGERING, CLOSED = State.FLUSHING, State.LINGERING, State.CLOSED


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
        self.poller = poller if poller is not None else Poller()  # an empty Poller is falsy
        self.clock = clock
        self.tick = tick
        self.preamble = Preamble(self, tls, proxy_trust, runner.stats)
        self.watch = runner.watch
        self.shedding = Shedding(self, self.watch)
        self.linger = Linger(self)  # the lingering close after a connection's last response
        self.rearm = Rearm(self)  # a pool thread re-arms an idle keep-alive connection
        self.host = LoopHost(settings, self.poller.call_soon, self.resume, self.shedding.shed, clock=clock,
                             url_scheme=url_scheme, can_sendfile=can_sendfile and tls is None,  # TLS:
                             rearm=self.rearm.from_pool)  # sendfile would bypass encryption  # fmt: skip
        self.can_sendfile = self.host.can_sendfile
        # --inline-budget: requests run on the poller's thread (worker.leader), once run() started it
        budget = settings.inline_budget
        self.lead = Leadership(self, budget, clock) if budget > 0 else None
        self._pending: list[Iterator] = []  # iterators over the events being handled (see _handle)
        # Connections whose response this thread made in this pass and holds (``outqueue``): written at
        # the end of the pass, so their clients get them together (``handle``). A deposed leader's go
        # to the next one (``take_held``).
        self._held: list[Conn] = []
        self.holds = False  # this pass holds what the loop serves (``handle``)
        self._exit_now = False
        self._tick_due = 0.0  # the next pass that calls tick
        self._stop_deadline = 0.0
        # Live connections by serial. Timer entries name a serial, never a Conn, so a closed connection
        # is freed at once instead of living (parser, buffers, socket) until its deadline passes.
        self._conns: dict[int, Conn] = {}
        self._serials = itertools.count(1)
        stats = runner.stats
        self.acceptor = Acceptor(listeners, self.poller, self._add_conn, self._conns.__len__,
                                 settings.max_connections, clock,
                                 count=stats.count if stats is not None else None,
                                 defer_accept=settings.defer_accept)  # fmt: skip
        # Queue waits (--queue-timeout, gone clients) and stuck pools (--request-timeout): worker.watchdog.
        self.timeouts = Timeouts(settings, self, self.watch.queue_timeout if self.watch else 0.0)
        self._on_event = {READING: self.on_readable, BODY: self._on_body_readable, FLUSHING: self._flush,
                          LINGERING: self.linger.on_readable, HANDSHAKING: self.preamble.on_handshake,
                          PROXY_HEADER: self.preamble.on_proxy_header}  # fmt: skip

    @property
    def stopping(self) -> bool:
        """True once a graceful stop began (responses then carry Connection: close)."""
        return self.host.stopping

    # ---- public, any thread ------------------------------------------------------------
    def stop(self, graceful: bool = True) -> None:
        """Ask the loop to stop (safe from signal handlers and other threads)."""
        self.poller.call_soon(self._begin_stop, graceful)

    def drain(self) -> None:
        """The host is leaving its load balancer (--drain-delay): keep serving, but end every
        keep-alive connection after its next response so the balancer's pool empties (any thread)."""
        self.poller.call_soon(setattr, self.host, "draining", True)

    def gauges(self) -> dict[str, int]:
        """Connection and thread gauges for the stats report (loop thread)."""
        idle = sum(1 for c in self._conns.values() if c.state is READING and c.idle)
        pool = self.pool  # active connections: the idle ones are counted separately
        busy = pool.busy + (self.lead.running if self.lead is not None else 0)
        return {"active_connections": len(self._conns) - idle, "idle_connections": idle,
                "busy_threads": busy, "queue_depth": pool.queued, "threads": pool.size}  # fmt: skip

    # ---- the loop -----------------------------------------------------------------------
    def run(self) -> None:
        """Serve until stopped: at once for a fast stop, when drained (or at the deadline) for a graceful one."""
        self.acceptor.start()
        if self.lead is not None:
            self.lead.run()
            return
        while self.step():
            pass
        self.close_all()

    def step(self) -> bool:
        """One pass: wait for events (at most until the next deadline), handle them, run the timers that
        are due. False, without waiting, once the loop is to end."""
        now = self.clock()
        if self._exit_now or (
            self.host.stopping and (not self._conns or now >= self._stop_deadline)
        ):
            return False
        poller = self.poller
        events = poller.poll(self.poll_timeout(now), run_calls=False)
        # run_calls only when there is something for it: a queued call, or a wake-up whose flag it must
        # clear (a call can be drained before its wake() sets the flag; left set, the flag would stop
        # the next call_soon from writing the eventfd). Usually neither: a call fewer per pass.
        self.handle(events, poller.run_calls if poller.calls or poller.wake_pending else None)
        now = self.clock()
        timeouts = self.timeouts
        if now >= timeouts.earliest:  # run()'s own first test, without the call on every pass
            timeouts.run(now, self._conns)
        if self.acceptor.resume_at is not None:  # an EMFILE pause is running
            self.acceptor.on_timer(now)
        if self.tick is not None and now >= self._tick_due:
            # At most every TICK_EVERY: what it does (stats each second, a malloc trim each second,
            # the retire check) needs no more, and at one connection a pass per request ran it for each.
            self._tick_due = now + TICK_EVERY
            self.tick(now)
        return True

    def handle(self, events: list, first: Callable[[], None] | None = None) -> None:
        """Handle ready events, after ``first`` (the poller's queued callbacks: they run between the wait
        and the events, see ``Poller.defer``)."""
        it = iter(events)
        pending = self._pending  # a deposed leader unwinds this list, the next leader a new one
        pending.append(it)  # what a deposition hands over (take_pending), innermost last
        held = self._held  # likewise (take_held)
        # Hold responses only when the pass has more than one event: a lone connection's makes one,
        # which holding would only delay (and copy). A lone listener's may make several (a batch of
        # accepts), but holding those measured no faster at Connection: close (BENCHMARKS.md).
        self.holds = len(events) > 1
        try:
            if first is not None:
                first()
            for obj, _events in it:
                if type(obj) is Listener:
                    self.acceptor.accept(obj)
                else:
                    on_event = self._on_event.get(obj.state)  # BUSY, CLOSED: no events expected
                    if on_event is not None:
                        on_event(obj)
            if held:
                self.release(held)
        finally:
            pending.pop()

    def take_pending(self) -> list:
        """The ready events this thread has not handled yet (``worker.leader``, while the leader's own
        request blocks: it will not touch them again, it raises ``Deposed`` once the request ends)."""
        pending, self._pending = self._pending, []
        return [event for it in pending for event in it]

    def take_held(self) -> list[Conn]:
        """The connections whose held responses this thread has not written yet (``worker.leader``, as
        ``take_pending``): the next leader writes them (``release``)."""
        held, self._held = self._held, []
        return held

    def release(self, held: list[Conn]) -> None:
        """Write the responses held in this pass, then go on with each connection as ``resume`` would
        have: the next request, an idle wait or the close. Each leaves the list before its turn, so a
        leader deposed meanwhile hands over only the rest."""
        while held:
            conn = held.pop()
            self._start_flush(conn, conn.after_flush)

    def poll_timeout(self, now: float) -> float:
        """Seconds the poller may wait: until the next deadline, at most the 1 s stats/heartbeat tick."""
        # Once per pass: comparisons, not min()/max() calls (the queues' earliest is inf when empty).
        timeout = self.timeouts.earliest - now
        if timeout > 1.0:
            timeout = 1.0
        resume_at = self.acceptor.resume_at
        if resume_at is not None and resume_at - now < timeout:
            timeout = resume_at - now
        if self.host.stopping and self._stop_deadline - now < timeout:
            timeout = self._stop_deadline - now
        return timeout if timeout > 0.0 else 0.0

    def enter(self, conn: Conn, state: State, timer: DeadlineQueue | None = None,
               now: float | None = None, *, restart: bool = True) -> None:  # fmt: skip
        """The one state transition: new state, new token (timer entries of the old state are void), and
        the new state's deadline in ``timer``. ``restart=False`` keeps the running deadline: the TLS
        handshake and the request head share one --header-timeout."""
        conn.state = state
        if restart:
            conn.token += 1
        if timer is not None:
            self.timeouts.add(timer, conn, self.clock() if now is None else now)

    def _add_conn(self, sock: socket.socket, addr, lst: Listener) -> None:
        sock.setblocking(False)
        remote, local = lst.addresses(sock, addr)
        preamble = self.preamble
        if not preamble.plain and not preamble.admit(sock, remote):
            return
        s = self.settings
        conn = Conn(sock, H1Connection(s.limits, s.server_header), self.host, remote, local)
        conn.serial = next(self._serials)
        self._conns[conn.serial] = conn
        if not preamble.plain:  # a PROXY header or a TLS handshake first, under --header-timeout
            self.enter(conn, preamble.start(conn), self.timeouts.header)
            # Its first step now: with --defer-accept the header or ClientHello is here (a PROXY header
            # and the request usually share a segment: served in this pass). The step arms the fd for
            # what it waits for next, which adds it to the epoll set.
            self._on_event[conn.state](conn)
            return
        # With --defer-accept (TCP_DEFER_ACCEPT, the default) the kernel queues a connection only once
        # its first bytes are here, so a plain connection is read now instead of one epoll round later.
        # It is not in the epoll set yet: it joins it when it first waits (``arm``), and a request
        # handed to a pool thread from here joins it disarmed first (``_dispatch``), so the loop never
        # sees events for a connection a thread holds. One answered and closed at once never joins it.
        self.enter(conn, READING)
        token = conn.token
        self.on_readable(conn)
        if conn.token == token:
            # Nothing came yet (armed to wait for it): its --header-timeout starts now. Anything else
            # moved it on (a request begun or served, an error, a close) under its own timer: the
            # usual complete request costs no header-timer entry, which would only wait to expire.
            self.timeouts.add(self.timeouts.header, conn, self.clock())

    # ---- connection events ----------------------------------------------------------------
    def _receive(self, conn: Conn) -> bytes | None:
        """One recv into the parser; None when there was nothing (re-armed) or the socket failed
        (closed). b"" is EOF, which the parser turns into ConnectionClosed or a 400."""
        try:
            data = conn.sock.recv(RECV_SIZE)
        except BlockingIOError as exc:  # WantWrite: TLS must send before it reads on
            if not conn.level:  # (TLS is never level-armed)
                self.arm(conn, (WRITE if type(exc) is WantWrite else READ) | ONESHOT)
            return None
        except OSError:
            self.close(conn)
            return None
        conn.bytes_in += len(data)
        conn.h1.receive_data(data)
        return data

    def on_readable(self, conn: Conn) -> None:
        """READING: one recv, then parse what is there of the request head."""
        data = self._receive(conn)
        if data is None:
            return
        first = bool(data) and conn.idle
        if first:
            conn.idle = False
        self._advance(conn, first)

    def _advance(self, conn: Conn, first: bool = False) -> None:
        """Parse what is buffered of a request head. ``first``: these are the first bytes of it, so an
        incomplete head now starts its --header-timeout (a complete one, the usual case, needs none:
        the next state's timer replaces it)."""
        try:
            event = conn.h1.next_event()
        except RemoteProtocolError as exc:
            self.fail(conn, exc)
            return
        if type(event) is Request:
            self.host.begin_request(conn)
            if event.chunked or event.content_length:  # maybe a body to pre-read (_start_body)
                self._start_body(conn)
            else:  # the usual request: nothing to pre-read
                self._dispatch(conn)
        elif event is NEED_DATA:
            if first:
                self.enter(conn, READING, self.timeouts.header)
                conn.want_more()  # the rest of the head is to come
            if not conn.level:
                self.arm(conn, READ | ONESHOT)
        elif type(event) is ConnectionClosed:
            self.close(conn)
        else:  # PAUSED/Data cannot happen while reading a head; treat as a bug, not a hang
            log.error("unexpected event %r while reading a request head", event)
            self.close(conn)

    def _start_body(self, conn: Conn) -> None:
        """A head is complete: read a body of up to ``body_preread`` bytes here before a thread is given
        to the request (slow-body attacks then hold a socket, not a thread). The pre-read must finish
        within --body-timeout in total and keep --body-min-rate."""
        request = conn.h1.request
        if request.chunked or request.content_length > len(conn.h1.buf):
            conn.want_more()  # more of its body is to come, read here or by a thread
        if not reads_body_first(request):
            self._dispatch(conn)
            return
        now = self.clock()
        conn.begin_body(now)
        self.enter(conn, BODY, self.timeouts.body, now)
        self._read_body(conn)

    def _read_body(self, conn: Conn) -> None:
        try:
            complete = conn.preread_body(self.settings.body_preread)
        except RemoteProtocolError as exc:
            self.fail(conn, exc)
            return
        if complete:
            self._dispatch(conn)
        elif conn.body_too_slow(self.clock()):
            self.fail(conn, RemoteProtocolError("request body too slow (--body-min-rate)", 408))
        elif not conn.level:
            self.arm(conn, READ | ONESHOT)

    def _on_body_readable(self, conn: Conn) -> None:
        # b"" (EOF mid-body): the parser raises, a 400 as from a thread
        if self._receive(conn) is not None:
            self._read_body(conn)

    def _dispatch(self, conn: Conn) -> None:
        """Serve a request whose head is complete (and its body, if pre-read): here when nothing in it
        can wait, else on the leader (no body to wait for: it may be served inline), else on the pool."""
        self.enter(conn, BUSY)
        runner = self.runner
        request = conn.h1.request
        bodiless = not (request.chunked or request.content_length)  # else the pool reads the rest
        # A static file: nothing in it waits, no hand-off. never_on_loop: on_loop's answer for a WSGI
        # app alone, without the call on every request.
        # Served on this thread, its response may be held till the end of the pass (``handle``).
        if bodiless and not runner.never_on_loop and runner.on_loop(conn):
            out = conn.out
            out.holding = self.holds
            out.on_loop = True
            self.resume(conn, runner.serve_on_loop(conn))
        # No Expect: 100-continue either (its client waits for us), and the leader may serve now
        elif (bodiless and not request.expect_continue and self.lead is not None
              and self.lead.may_inline()):  # fmt: skip
            out = conn.out
            out.holding = self.holds
            out.on_loop = True
            self.lead.serve_inline(conn)  # the leader serves it (worker.leader)
        else:
            if conn.level:  # a pool thread will hold it: no event for it until it is handed back
                self.disarm(conn)
            elif not conn.polled:  # into the set, disarmed: the thread re-arms it (worker.rearm)
                self.arm(conn, ONESHOT)
            if self.watch is None or self.shedding.enqueue(conn):
                self.pool.submit(runner.run, conn)

    def fail(self, conn: Conn, exc: RemoteProtocolError) -> None:
        """The one place the loop turns a protocol error into a response: status, Connection: close."""
        log.debug("protocol error from %s: %s (%d)", conn.remote, exc, exc.status)
        self.answer_and_close(conn, conn.h1.error_response(exc, date=http_date()), exc.status, 0.0)

    def answer_and_close(self, conn: Conn, response: bytes, status: int, waited: float) -> None:
        """Send a response the loop made itself (error, 503), count and log it, then linger and close."""
        conn.out.buf += response
        self.runner.record(conn, conn.h1.request, status, waited, 0, len(response))
        self._start_flush(conn, LINGERING)

    def live(self, serial: int) -> Conn | None:
        """The live connection with this serial, if any."""
        return self._conns.get(serial)

    # ---- hand-back from pool threads, flushing, lingering ------------------------------------
    def resume(self, conn: Conn, close: bool) -> None:
        """Loop thread: a pool thread (or the leader, or this loop for a static file) is done with
        ``conn``."""
        if conn.state is CLOSED:
            return
        out = conn.out
        out.on_loop = False
        if out.holding:  # served on this thread (``_dispatch``)
            out.holding = False
            # Its response held, in a pass (no pass: at once): written at the pass's end (``handle``).
            # The connection stays BUSY till then, so no event of this pass reaches it.
            if out.buf and self._pending and not conn.broken:
                conn.after_flush = LINGERING if close else READING
                self._held.append(conn)
                return
        if close:
            if conn.broken:
                self.close(conn)
            else:
                self._start_flush(conn, LINGERING)
        elif out.buf or out.file_left or out.tail:  # OutputQueue.__bool__, no call
            self._start_flush(conn, READING)
        else:  # the usual keep-alive response, sent whole: what follows a flush, one call sooner
            conn.after_flush = READING
            self._after_flush(conn)

    def _start_flush(self, conn: Conn, after: State) -> None:
        conn.after_flush = after
        if (out := conn.out).buf or out.file_left or out.tail:  # OutputQueue.__bool__, no call
            self._flush(conn)
        else:
            self._after_flush(conn)

    def _flush(self, conn: Conn) -> None:
        """Write what a thread left: its output, then a file it handed over, then the rest; a slow
        reader of a large file costs a socket and an fd here, not a thread."""
        try:
            done = conn.out.write_some(conn.after_flush is LINGERING)  # closed once written
        except (OSError, LocalProtocolError):  # gone, or the file shrank under us
            self.close(conn)
            return
        if done:
            self._after_flush(conn)
            return
        # Its first wait: the --send-timeout starts now. Output the socket takes at once (the usual
        # case, and every held response: ``release``) costs no state change and no timer entry.
        if conn.state is not FLUSHING:
            now = self.clock()
            conn.out.sent_at = now
            self.enter(conn, FLUSHING, self.timeouts.send, now)
        conn.level = False
        self.arm(conn, WRITE | ONESHOT)

    def _after_flush(self, conn: Conn) -> None:
        if conn.after_flush is LINGERING:
            self.linger.start(conn)
            return
        h1 = conn.h1
        if h1.cycle.their_state is SEND_BODY:  # a pipelined head a thread parsed: body read here
            conn.idle = False
            self._start_body(conn)
            return
        if h1.buf:  # part of a next request is here: --header-timeout to complete
            conn.idle = False
            self.enter(conn, READING)  # no timer yet: a complete head needs none (_advance)
            self._advance(conn, first=True)
            return
        self.rearm.settle(conn, self.clock())  # idle keep-alive: state, token, keep-alive timer
        if conn.level:  # still armed: the request was served here (inline, static)
            return
        # Armed level-triggered, not EPOLLONESHOT: while the loop serves this connection's requests
        # itself (inline or static), each next one then costs no EPOLL_CTL_MOD. It is disarmed
        # (``disarm``) before a pool thread or a deposed leader holds it, so the rule that the loop never
        # sees events for a connection another thread holds stands. TLS keeps EPOLLONESHOT.
        if type(conn.sock) in PLAIN_SOCKETS:
            conn.level = True
            self.arm(conn, READ)
        else:
            self.arm(conn, READ | ONESHOT)

    def arm(self, conn: Conn, events: int) -> None:
        """Wait for ``events`` on ``conn`` (EPOLLONESHOT, or level-triggered): re-arm its epoll entry, or
        add it on its first wait (``Conn.polled``). Loop thread."""
        if conn.polled:
            self.poller.modify(conn.fd, events)
        else:
            conn.polled = True
            self.poller.register(conn.fd, events, conn)

    def disarm(self, conn: Conn) -> None:
        """Stop events for a level-armed ``conn`` (EPOLLONESHOT with no event: epoll reports nothing,
        not even a hang-up) before another thread holds it. Any thread that may hand it over."""
        conn.level = False
        self.poller.modify(conn.fd, ONESHOT)

    def close(self, conn: Conn) -> None:
        if conn.state is CLOSED:
            return
        if conn.arming:  # a pool thread is re-arming the fd (worker.rearm): on the next pass
            self.poller.call_soon(self.close, conn)
            return
        self.enter(conn, CLOSED)
        if conn.level:
            # A level-armed entry would keep firing should a forked child still hold the descriptor
            # (``Poller.forget``), under an fd number a new connection may get: take it out first.
            conn.level = False
            self.poller.unregister(conn.fd)
        elif conn.polled:  # else never in the set (closed at accept): nothing to forget
            self.poller.forget(conn.fd)  # the close below takes it out of the epoll set
        if conn.out.file_fd >= 0:  # a file left unsent (drop_file's own test, without the call)
            conn.out.drop_file()
        try:
            conn.sock.close()
        except OSError:
            pass
        self._conns.pop(conn.serial, None)
        if not self.acceptor.accepting:  # slot_freed's first test, without the call per connection
            self.acceptor.slot_freed()

    # ---- stopping -------------------------------------------------------------------------
    def _begin_stop(self, graceful: bool) -> None:
        if not graceful:
            self._exit_now = True
            return
        if self.stopping:
            return
        self.host.stopping = True
        now = self.clock()
        self._stop_deadline = now + self.settings.graceful_timeout
        self.acceptor.stop()
        for conn in list(self._conns.values()):
            if conn.state is READING and conn.idle:
                self.enter(conn, READING, self.timeouts.drain, now)

    def close_all(self) -> None:
        """Close every connection no pool thread holds (the loop has ended)."""
        self.acceptor.pause()
        if self.watch is not None:
            self.shedding.shed_queued()  # requests no thread started get a 503 rather than a reset
        for conn in list(self._conns.values()):
            if conn.state is not BUSY:
                self.close(conn)
