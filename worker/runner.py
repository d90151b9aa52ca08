"""What a pool thread does with a connection: serve its request, then any pipelined ones, then hand back.

SYNCHRONOUS: ``Runner.run`` is the pool-thread entry point (``serve_on_loop`` the loop thread's, for
handlers that never wait). The loop has already parsed a complete request
head; the thread runs the handler, finishes the response, consumes what the app left of the body, and either
serves the next request already buffered (pipelining, RFC 9112 §9.3.2: answered in order, no wait for a socket
event) or returns the connection to the loop with ``Host.hand_back``.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from webcluster.worker.accesslog import AccessLog, format_line, refused_head
from webcluster.worker.exchange import ConnExchange
from webcluster.worker.handlers.base import ClientDisconnected, Handler, send_internal_error
from webcluster.worker.hooks import RequestHooks
from webcluster.worker.http.errors import ProtocolError, RemoteProtocolError
from webcluster.worker.http.events import NEED_DATA, Request
from webcluster.worker.http.state import DONE
from webcluster.worker.httpdate import http_date
from webcluster.worker.logformat import Entry
from webcluster.worker.statsd import Statsd
from webcluster.worker.transport import reads_body_first
from webcluster.worker.watchdog import PoolWatch, admission, peer_gone

if TYPE_CHECKING:
    from webcluster.worker.connection import Conn
    from webcluster.worker.inflight import Inflight
    from webcluster.worker.stats import WorkerStats

log = logging.getLogger("webcluster.error")

# Unread request body we read and drop to keep a connection alive (nginx discards too); beyond it, close.
DISCARD_BUDGET = 256 * 1024


class Runner:
    """Runs requests on pool threads. One instance per worker, shared by all threads (no mutable state)."""

    def __init__(
        self,
        handler: Handler,
        stats: WorkerStats | None,
        access_log: AccessLog | None,
        inflight: Inflight | None = None,
        watch: PoolWatch | None = None,
        hooks: RequestHooks | None = None,
        statsd: Statsd | None = None,
    ) -> None:
        self.handler = handler
        self.stats = stats
        self.access_log = access_log
        # What each thread runs: for the supervisor's log if we die, and for the watchdog
        # (--request-timeout). None: neither reads it.
        self.inflight = inflight
        self.watch = watch  # queue waits, watched by worker.watchdog (None: not watched)
        self.hooks = hooks  # --hooks pre_request/post_request; None when the module has neither
        self.statsd = statsd  # --statsd-host
        # Looked up once: getattr with a default costs a raised AttributeError when it is absent (WSGI).
        self._route = getattr(handler, "route", None)  # a dispatcher picks a handler per target
        self._on_loop = getattr(handler, "runs_on_loop", False)
        self.never_on_loop = self._route is None and not self._on_loop
        # When the stats are all there is to record (no access log, no statsd): _serve_one records
        # into them directly, one call fewer on every request
        self._stats_only = stats if access_log is None and statsd is None else None

    def run(self, conn: Conn) -> None:
        """Pool-thread entry point: serve until no complete request is buffered, then hand back."""
        waited: float | None = 0.0
        if self.watch is not None:
            waited = self._admit(conn, self.watch)
            if waited is None:
                return
        close = True
        try:
            close = self._serve_all(conn, waited)
        except Exception:  # a bug here must not leak the connection or the thread
            log.exception("error while serving a connection")
        conn.host.hand_back(conn, close)

    def on_loop(self, conn: Conn) -> bool:
        """True when the loop thread may serve this request, which has no body (the caller checked),
        itself, with no hand-off to a pool thread: its handler never waits (``runs_on_loop``: static
        files, whose bodies go out with sendfile and whose unsent rest the loop sends anyway), the
        transport can sendfile (the TLS copy path could fill the output queue and wait for the client),
        and no --hooks run. The caller tests ``never_on_loop`` first (a WSGI app alone: False without
        the call), which this answer agrees with."""
        if not conn.host.can_sendfile or self.hooks is not None:
            return False
        route = self._route
        if route is None:
            return self._on_loop
        return getattr(route(conn.h1.request.target), "runs_on_loop", False)

    def serve_on_loop(self, conn: Conn, record: bool = False) -> bool:
        """Loop-thread entry point (see ``on_loop`` and ``worker.leader``): serve this one request; True
        when the connection must close. Pipelined requests are left for the loop to parse and dispatch
        as usual. ``record``: name the request in the in-flight table, as a pool thread does."""
        try:
            # _serve_all's first round, without its loop (only this one request is served here)
            h1 = conn.h1
            if not self._serve_one(conn, h1.request, 0.0, self.inflight if record else None):
                return True
            if conn.broken or not h1.cycle.keep_alive:
                return True
            h1.start_next_cycle()  # the loop parses and dispatches what follows, as any request
            return False
        except Exception:  # a bug here must not take the loop down
            log.exception("error while serving a connection")
            return True

    def _admit(self, conn: Conn, watch: PoolWatch) -> float | None:
        """Before the app: take ownership of the queued request, then run it unless it waited longer
        than --queue-timeout (the loop answers 503) or its client has gone (dropped, logged as 499).
        Returns the seconds it waited for this thread, or None when it must not run here."""
        host = conn.host
        waited = watch.claim(conn.serial, host.clock())
        if waited is None:
            return None  # the loop owns it: it answered 503 while the request waited
        verdict = admission(waited, watch.queue_timeout)
        if verdict == "run" or (verdict == "check" and not peer_gone(conn.fd)):
            return waited
        if verdict == "shed":
            host.shed(conn, "shed_queue_timeout", waited)
            return None
        conn.broken = True  # nobody can read an answer: the app never sees the request
        if self.stats is not None:
            self.stats.count("client_gone")
        self.record(conn, conn.h1.request, 499, waited, 0, 0)  # nginx's "client closed request"
        host.hand_back(conn, True)
        return None

    def _serve_all(self, conn: Conn, waited: float = 0.0) -> bool:
        """Serve requests while they are buffered; return True when the connection must close.
        ``waited``: how long the first one waited for this thread (part of its latency)."""
        h1 = conn.h1
        inflight = self.inflight
        while True:
            request = h1.request
            if not self._serve_one(conn, request, waited, inflight):
                return True
            waited = 0.0  # pipelined requests follow at once
            if conn.broken or not h1.cycle.keep_alive:
                return True
            h1.start_next_cycle()
            # The loop sends a file left over, then reads on (pipelined bytes are kept)
            if conn.out.file_left:
                return False
            try:
                event = h1.next_event()
            except (
                RemoteProtocolError
            ) as exc:  # a bad pipelined head: answered, counted, then close
                response = h1.error_response(exc, date=http_date())
                conn.send(response)
                self.record(conn, None, exc.status, 0.0, 0, len(response))
                return True
            if event is NEED_DATA:
                return False
            if type(event) is not Request:  # ConnectionClosed
                return True
            conn.host.begin_request(conn)
            if reads_body_first(event):
                return False  # the loop reads its body, so a slow body holds no thread

    def _serve_one(
        self, conn: Conn, request: Request, waited: float, inflight: Inflight | None
    ) -> bool:
        """Run the handler for one request; False when the connection cannot be reused. Its recorded
        duration includes ``waited``, the time it queued for a thread, so an overload shows in /stats."""
        start = time.monotonic()  # the inflight records' clock, shared with the supervisor
        in_before = conn.bytes_in
        ex = ConnExchange(conn, request)
        if inflight is not None:
            record = inflight.begin(request.method, request.target, start)
        hooks = self.hooks
        if hooks is not None:
            hooks.before(request)  # absorbs what the hook raises: the request is still answered
        try:
            self.handler(ex)
            if not (ex.finished or ex.aborted):
                ex.finish()
        except ClientDisconnected:
            conn.broken = True
        except Exception as exc:
            self._on_error(conn, ex, exc)
        finally:
            if inflight is not None:
                inflight.end(record)
        if conn.body_error is not None and not ex.headers_sent and not conn.broken:
            self._send_error(conn, ex, conn.body_error)
        duration = time.monotonic() - start + waited
        if self._stats_only is not None:  # what record() would do, without the call
            self._stats_only.record(ex.status or 500, duration, conn.bytes_in - in_before,
                                    ex.bytes_out)  # fmt: skip
        else:
            self.record(conn, request, ex.status or 500, duration, conn.bytes_in - in_before,
                        ex.bytes_out, ex)  # fmt: skip
        if hooks is not None:
            hooks.after(request, ex.status or 500, ex.response_headers, ex.bytes_out, duration)
        if conn.broken or ex.aborted or conn.body_error is not None:
            return False
        if not request.chunked and not request.content_length and not conn.early:
            conn.h1.end_empty_body()  # no body: nothing to drop
            return True
        return self._consume_body(conn, ex)

    def _on_error(self, conn: Conn, ex: ConnExchange, exc: Exception) -> None:
        if conn.broken:
            return
        if isinstance(exc, ProtocolError) and conn.body_error is exc:
            return  # reported below as the precise 4xx
        if ex.headers_sent:
            log.error("error after the response head was sent; closing: %r", exc)
            ex.abort()
            return
        log.error("handler failed for %s %s", ex.request.method, ex.request.target, exc_info=exc)
        send_internal_error(ex, close=False)

    def _send_error(self, conn: Conn, ex: ConnExchange, exc: ProtocolError) -> None:
        """The body was malformed, too large or too slow: the precise 4xx, then close (RFC 9112 §8)."""
        ex.status = exc.status
        ex.headers_sent = True
        try:
            conn.send(conn.h1.error_response(exc, date=http_date()))
        except ClientDisconnected:
            conn.broken = True

    def _consume_body(self, conn: Conn, ex: ConnExchange) -> bool:
        """Drop the unread rest of a request's body so the next request starts at a message boundary
        (``_serve_one`` ends a bodiless one itself)."""
        h1 = conn.h1
        if ex.body.done or h1.cycle.their_state is DONE:
            return True
        if ex.request.expect_continue and not ex.body.started:
            # The client is still waiting for 100 Continue and we answered without it: it may or may not
            # send the body now (RFC 9110 §10.1.1), so the framing is unknowable. Close.
            h1.request_close()
            return False
        try:
            return ex.body.discard(DISCARD_BUDGET)
        except (RemoteProtocolError, ClientDisconnected):
            return False

    def record(
        self,
        conn: Conn,
        request: Request | None,
        status: int,
        duration: float,
        bytes_in: int,
        bytes_out: int,
        exchange: ConnExchange | None = None,
    ) -> None:
        """Count one answered request and write its access-log line (any thread).

        ``request`` is None when the head itself was refused (400/408/413/414/431...): the line then
        shows what of the refused head arrived (``accesslog.refused_head``), or "-".
        """
        if self.stats is not None:
            self.stats.record(status, duration, bytes_in, bytes_out)
        if self.statsd is not None:
            self.statsd.request(status, duration)
        if self.access_log is None:
            return
        if request is None:
            line, referer, agent = refused_head(conn.h1.trailing_data[0])
        else:
            line = f"{request.method} {request.target} HTTP/{request.http_version}"
            referer, agent = request.get("referer"), request.get("user-agent")
        if self.access_log.line_format is not None:
            entry = _entry(conn, request, line, status, duration, bytes_out, exchange)
            self.access_log.write(self.access_log.line_format(entry))
            return
        self.access_log.write(
            format_line(
                host=conn.remote[0] if conn.remote else "-",
                when=time.time(),
                request=line,
                status=status,
                size=bytes_out,
                referer=referer,
                user_agent=agent,
            )
        )


def _entry(
    conn: Conn,
    request: Request | None,
    line: str,
    status: int,
    duration: float,
    size: int,
    exchange: ConnExchange | None,
) -> Entry:
    """What ``--access-log-format`` may show about one request."""
    return Entry(
        remote=conn.remote[0] if conn.remote else "-",
        when=time.time(),
        request_line=line,
        method=request.method if request else None,
        target=request.target if request else None,
        version=request.http_version if request else None,
        status=status,
        size=size,
        duration=duration,
        request_headers=request.headers if request else (),
        response_headers=exchange.response_headers if exchange else (),
    )
