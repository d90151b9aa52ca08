"""H1Connection: the server side of one HTTP/1.x connection, sans-IO.

Bytes in (``receive_data``), events out (``next_event``); response events in (``send_response`` /
``send_data`` / ``send_end``), bytes out. No socket, selector or thread is imported here.

Typical use by the I/O layer::

    conn = H1Connection(Limits())
    conn.receive_data(sock.recv(65536))          # b"" signals EOF
    ev = conn.next_event()                        # Request | Data | EndOfMessage | ConnectionClosed
                                                  # | NEED_DATA | PAUSED; raises RemoteProtocolError
    out = conn.send_response(200, [("content-type", "text/plain")], date=b"Sun, 06 Nov 1994 08:49:37 GMT")
    out += conn.send_data(b"hello") + conn.send_end()
    if conn.keep_alive: conn.start_next_cycle()   # then next_event() again (pipelined bytes are kept)
    else: close the socket after flushing

On ``RemoteProtocolError`` the I/O layer sends ``conn.error_response(exc, date=...)`` and closes; the core
never parses another request after an error (``next_event`` keeps raising / returns nothing new).

Parsing policies are documented where they are implemented: strict CRLF line endings and limits in
``readers.py``, Content-Length / Transfer-Encoding / Host / Expect rules in ``headers.py``, response
framing in ``writers.py``, the cycle states in ``state.py``. The I/O layer should stop reading from the
socket while ``next_event`` returns PAUSED: pipelined bytes accumulate in the buffer until the next cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from webcluster.worker.http import state as st
from webcluster.worker.http.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from webcluster.worker.http.events import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Request,
    _Sentinel,
)
from webcluster.worker.http.readers import (
    ChunkedReader,
    ContentLengthReader,
    HeadRules,
    HeadScanner,
    parse_request_head,
)
from webcluster.worker.http.writers import (
    BodyWriter,
    FixedLengthWriter,
    error_head,
    serialize_response,
)

# RFC 9112 §2.2: "a server that is expecting to receive and parse a request-line SHOULD ignore at least
# one empty line (CRLF) received prior to the request-line". A few, not an unbounded stream of them.
MAX_LEADING_EMPTY_LINES = 8
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


@dataclass(frozen=True, slots=True)
class Limits:
    """Parser limits. The first five are settings of the same name (cluster/settings.py takes their
    defaults from here, since this package imports nothing outside itself). Precedents: nginx's
    large_client_header_buffers (8 KiB a line), Apache's LimitRequestFields (100), node's 16 KiB head;
    we allow a 64 KiB head."""

    limit_request_line: int = 8192  # longer -> 414
    limit_request_fields: int = 100  # more fields -> 431
    limit_request_field_size: int = 8192  # one field line longer -> 431
    limit_request_head: int = 65536  # whole head longer -> 431
    max_body: int = 1 << 30  # 0 = unlimited; Content-Length or chunked total above -> 413
    max_chunk_line: int = 4096  # chunk-size line incl. extensions -> 400
    max_trailer: int = 16384  # total trailer section -> 431
    # Derived once, shared by every connection's scanners
    head_rules: HeadRules = field(init=False, repr=False, compare=False)
    trailer_rules: HeadRules = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        head = HeadRules(
            total_limit=self.limit_request_head,
            line_limit=self.limit_request_field_size,
            count_limit=self.limit_request_fields,
            first_line_limit=self.limit_request_line,
        )
        trailer = HeadRules(
            total_limit=self.max_trailer,
            line_limit=self.limit_request_field_size,
            count_limit=self.limit_request_fields,
            what="trailer section",
        )
        object.__setattr__(self, "head_rules", head)  # frozen: set once, here
        object.__setattr__(self, "trailer_rules", trailer)


# The reader of every bodiless request: one of zero length never changes (it only says EndOfMessage).
_NO_BODY = ContentLengthReader(0)


class H1Connection:
    """One server-side HTTP/1.x connection: bytes in -> events out, response calls -> bytes out.

    Not thread-safe: the I/O layer calls it from one thread at a time (the poller thread while reading a
    head, the pool thread running the handler while it reads the body and writes the response).

    Two attributes are public for the hot path to *read*: ``cycle`` (both sides' states and the keep-alive
    decision, ``state.CycleState``) and ``buf`` (bytes received and not parsed yet). The properties below
    say the same, but in CPython 3.11 a property read is a Python call, ~600 instructions against ~60
    for an attribute: three of them were 1.4 % of a keep-alive request. Only this class changes either.
    """

    # One per open connection, idle ones included: no __dict__ (smaller, and faster to read)
    __slots__ = ("limits", "_server", "buf", "_eof", "cycle", "_error", "request", "_reader",
                 "_writer", "_continue_sent", "_empty_lines", "_head")  # fmt: skip

    def __init__(self, limits: Limits = Limits(), server: bytes = b"webcluster") -> None:
        self.limits = limits
        self._server = server.decode("latin-1")
        self.buf = bytearray()
        self._eof = False
        self.cycle = st.CycleState()
        self._error: RemoteProtocolError | None = None
        self.request: Request | None = None
        self._reader: ContentLengthReader | ChunkedReader | None = None
        self._writer: BodyWriter | None = None
        self._continue_sent = False
        self._empty_lines = 0
        self._head = HeadScanner(limits.head_rules)

    # --- state ---------------------------------------------------------------------------------

    @property
    def their_state(self) -> st.State:
        return self.cycle.their_state

    @property
    def our_state(self) -> st.State:
        return self.cycle.our_state

    @property
    def keep_alive(self) -> bool:
        """False once either side wants close, the framing forces it, or an error happened."""
        return self.cycle.keep_alive

    @property
    def trailing_data(self) -> tuple[bytes, bool]:
        """(buffered bytes not parsed yet, EOF seen)."""
        return bytes(self.buf), self._eof

    @property
    def buffered(self) -> int:
        """Bytes received and not parsed yet (``trailing_data`` without the copy)."""
        return len(self.buf)

    def request_close(self) -> None:
        """Close after the current response (graceful stop, max requests): ``Connection: close``."""
        self.cycle.disable_keep_alive()

    def start_next_cycle(self) -> None:
        """Both sides DONE and keep-alive: reset for the next request; buffered bytes are kept."""
        self.cycle.next_cycle()
        self.request = None
        self._reader = None
        self._writer = None
        self._continue_sent = False
        self._empty_lines = 0
        self._head.reset()

    # --- receiving (RFC 9112) ------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Add bytes from the peer; ``b""`` means EOF. Ignored after an error or EOF."""
        if self._error is not None or self._eof:
            return
        if data:
            self.buf += data
        else:
            self._eof = True

    def next_event(self) -> Request | Data | EndOfMessage | ConnectionClosed | _Sentinel:
        """The next event, NEED_DATA or PAUSED; raises RemoteProtocolError (again on every later call)."""
        if self._error is not None:
            raise RemoteProtocolError(str(self._error), self._error.status)
        their = self.cycle.their_state
        try:
            if their is st.IDLE:
                return self._next_request()
            if their is st.SEND_BODY:
                event = self._reader(self.buf, self._eof)
                if event is None:
                    return NEED_DATA
                if type(event) is EndOfMessage:
                    self.cycle.their(EndOfMessage)
                return event
        except RemoteProtocolError as exc:
            self._error = exc
            self.cycle.remote_error()
            raise
        if their is st.CLOSED:
            return ConnectionClosed()
        return PAUSED

    def end_empty_body(self) -> None:
        """The end of a request without a body (neither Content-Length nor chunked): what ``next_event``
        would return as its ``EndOfMessage``, without making the event (the usual GET, once per request).
        Nothing when it was read already, or after an error."""
        if self._reader is _NO_BODY and self.cycle.their_state is st.SEND_BODY:
            self.cycle.their(EndOfMessage)

    def _next_request(self) -> Request | ConnectionClosed | _Sentinel:
        buf = self.buf
        while buf.startswith(b"\r\n"):  # RFC 9112 §2.2, see MAX_LEADING_EMPTY_LINES
            if self._empty_lines >= MAX_LEADING_EMPTY_LINES:
                raise RemoteProtocolError("too many empty lines before the request-line")
            self._empty_lines += 1
            del buf[:2]
            self._head.reset()
        if not buf:
            if self._eof:
                self.cycle.their(ConnectionClosed)
                return ConnectionClosed()
            return NEED_DATA
        end = self._head.find_end(buf)
        if end < 0:
            if self._eof:
                raise RemoteProtocolError("connection closed in the middle of the request head")
            return NEED_DATA
        limits = self.limits
        request = parse_request_head(buf, end, self._head, limits.max_body)
        del buf[:end]
        self.request = request
        self.cycle.their(Request)
        if not request.keep_alive:
            self.cycle.disable_keep_alive()
        if request.chunked:
            trailers = HeadScanner(limits.trailer_rules)
            self._reader = ChunkedReader(limits.max_body, limits.max_chunk_line, trailers)
        elif request.content_length:
            self._reader = ContentLengthReader(request.content_length)
        else:
            self._reader = _NO_BODY
        return request

    # --- sending -------------------------------------------------------------------------------

    def send_continue(self) -> bytes:
        """``100 Continue`` once, if a 1.1 client asked for it and no response head went out yet."""
        request = self.request
        if (
            request is None
            or not request.expect_continue
            or self._continue_sent
            or self.cycle.our_state is not st.IDLE
            or self.cycle.their_state is not st.SEND_BODY
        ):
            return b""
        self._continue_sent = True
        return CONTINUE

    def send_response(
        self, status: int, headers: list[tuple[str, str]], reason: str = "", *, date: bytes
    ) -> bytes:
        """Serialize a response head (framing per RFC 9112 §6); LocalProtocolError leaves no trace."""
        request = self.request
        if request is None or self.cycle.our_state is not st.IDLE:
            raise LocalProtocolError(f"no response expected in state {self.cycle.our_state.name}")
        keep_alive = self.cycle.keep_alive
        if request.expect_continue and not self._continue_sent and self._body_pending():
            # RFC 9110 §10.1.1: a final answer without 100 Continue: the client may or may not send the
            # body now, so the rest of the stream cannot be trusted to be a new request.
            keep_alive = False
        head, writer, keep_alive = serialize_response(
            status,
            headers,
            reason,
            request=request,
            keep_alive=keep_alive,
            date=date,
            server=self._server,
        )
        if writer is None:  # informational 1xx: the final response is still to come
            return head
        self._writer = writer
        # Not again when the request's own close did it already
        if not keep_alive and self.cycle.keep_alive:
            self.cycle.disable_keep_alive()
        self.cycle.ours(st.ResponseHead)
        return head

    def send_complete(
        self, status: int, headers: list[tuple[str, str]], reason: str, body: bytes, *, date: bytes
    ) -> bytes:
        """A whole response in one call: ``send_response`` + ``send_data(body)`` + ``send_end``, with the
        same checks and state changes (a one-chunk WSGI response, the usual case, goes out in one send).
        An informational status cannot be a whole response: LocalProtocolError, nothing changed."""
        head = self.send_response(status, headers, reason, date=date)
        writer = self._writer
        if writer is None:  # informational: send_response changed nothing
            raise LocalProtocolError("an informational response is never complete")
        state = self.cycle
        if type(writer) is FixedLengthWriter and len(body) == writer.remaining:
            # The usual whole response: a body of exactly its Content-Length, which is what write()
            # and finish() would find, in two calls fewer.
            writer.remaining = 0
            state.ours(EndOfMessage)
            return head + body
        try:
            data = writer.write(body) if body else b""
        except LocalProtocolError:  # more than the Content-Length: the response cannot be completed
            state.disable_keep_alive()
            raise
        tail, complete = writer.finish()
        if not complete:
            state.disable_keep_alive()
        state.ours(EndOfMessage)
        return head + data + tail

    def _body_pending(self) -> bool:
        """Request body bytes are still to come (not merely an unread EndOfMessage)."""
        if self.cycle.their_state is not st.SEND_BODY:
            return False
        reader = self._reader
        return not (type(reader) is ContentLengthReader and reader.remaining == 0)

    def _body_writer(self) -> BodyWriter:
        if self.cycle.our_state is not st.SEND_BODY or self._writer is None:
            raise LocalProtocolError(f"cannot send body data in state {self.cycle.our_state.name}")
        return self._writer

    def send_data(self, data: bytes) -> bytes:
        """Frame body bytes (chunked: size line + CRLF; HEAD/204/304: dropped; empty: b"")."""
        writer = self._body_writer()
        try:
            return writer.write(data)
        except LocalProtocolError:  # more than the Content-Length: the response cannot be completed
            self.cycle.disable_keep_alive()
            raise

    def frame_data(self, count: int) -> tuple[bytes, bytes] | None:
        """Framing for ``count`` body bytes the I/O layer sends itself (sendfile): (prefix, suffix) to
        write around them, or None when the response has no body (HEAD, 204, 304)."""
        writer = self._body_writer()
        try:
            return writer.frame(count)
        except LocalProtocolError:
            self.cycle.disable_keep_alive()
            raise

    def send_end(self) -> bytes:
        """End the response: ``0\\r\\n\\r\\n`` when chunked; a short Content-Length body forces close."""
        if self.cycle.our_state is not st.SEND_BODY or self._writer is None:
            raise LocalProtocolError(
                f"cannot end the response in state {self.cycle.our_state.name}"
            )
        out, complete = self._writer.finish()
        if not complete:
            self.cycle.disable_keep_alive()
        self.cycle.ours(EndOfMessage)
        return out

    def error_response(self, exc: ProtocolError, *, date: bytes) -> bytes:
        """The one place a protocol error becomes bytes: a short text/plain response + Connection: close.

        Returns b"" when a response head was already sent: all that is left to do then is close.
        """
        if isinstance(exc, RemoteProtocolError) and self.cycle.their_state is not st.ERROR:
            self._error = self._error or exc
            self.cycle.remote_error()
        head_sent = self.cycle.our_state is not st.IDLE
        self.cycle.error_sent()
        if head_sent:
            return b""
        with_body = self.request is None or self.request.method != "HEAD"
        return error_head(exc.status, str(exc), date=date, server=self._server, with_body=with_body)
