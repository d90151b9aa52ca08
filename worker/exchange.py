"""The thread side of one request/response cycle: ``ConnExchange`` (the transport's implementation of
the ``worker.handlers.base.Exchange`` protocol that handlers see) and ``BodyStream``.

SYNCHRONOUS: everything here runs on the pool thread that owns the connection while the request is served.
The socket is non-blocking throughout; waits use ``poll()`` on the one fd with a deadline, so a client that
stops sending or reading is dropped after ``--body-timeout`` / ``--send-timeout`` instead of holding a thread.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, BinaryIO

from webcluster.worker.handlers.base import copy_file
from webcluster.worker.http.errors import LocalProtocolError, RemoteProtocolError
from webcluster.worker.http.events import NEED_DATA, Data, EndOfMessage, Request
from webcluster.worker.http.state import IDLE, MUST_CLOSE
from webcluster.worker.httpdate import http_date

if TYPE_CHECKING:
    from webcluster.worker.connection import Conn

CORK_LIMIT = 1 << 20  # files up to this size get their head sent with MSG_MORE (see sendfile)


class BodyStream:
    """``wsgi.input``: the request body, bounded to the message, chunked framing removed as it streams.

    Received pieces are held as they came (``bytes`` from the parser) and a read returns a piece itself
    when it is exactly what was asked for, else one join of the parts that make it up. No buffer grows and
    shrinks with every piece: under uploads those transient copies are most of a worker's allocations
    (see README "Memory under uploads").
    """

    __slots__ = ("_conn", "_pieces", "_offset", "_held", "_done", "_started", "consumed")

    def __init__(self, conn: Conn) -> None:
        self._conn = conn
        self._pieces: deque[bytes] = deque()  # received, not yet read; the first from _offset on
        self._offset = 0
        self._held = 0  # bytes in _pieces not yet read
        self._done = False
        self._started = False
        self.consumed = 0  # body bytes handed to the application

    @property
    def started(self) -> bool:
        """True once the application asked for body bytes (and 100 Continue, if expected, went out)."""
        return self._started

    @property
    def done(self) -> bool:
        """True once the whole body (EndOfMessage) has been received."""
        return self._done

    def _fill(self) -> bool:
        """Hold the next piece of the body; False once the body is complete."""
        if self._done:
            return False
        conn = self._conn
        h1 = conn.h1
        if not self._started:
            self._started = True
            # RFC 9110 §10.1.1: the 100 interim response is sent only once the app wants the body.
            interim = h1.send_continue()
            if interim:
                conn.send(interim)
        while True:
            try:
                event = conn.next_body_event()  # the loop may have parsed the first part
            except RemoteProtocolError as exc:
                conn.body_error = exc
                raise
            if event is NEED_DATA:
                conn.recv_body_bytes()
                continue
            if type(event) is Data:
                data = event.data
                if data:
                    self._pieces.append(data)
                    self._held += len(data)
                return True
            if type(event) is EndOfMessage:
                self._done = True
                return False
            raise RemoteProtocolError(f"unexpected event in body: {event!r}")

    def _take(self, size: int) -> bytes:
        """Remove and return the next ``size`` held bytes (``size <= _held``)."""
        self.consumed += size
        if not size:
            return b""
        pieces = self._pieces
        self._held -= size
        off = self._offset
        if not off and len(pieces[0]) == size:
            return pieces.popleft()  # the common case of a reader asking piece by piece: no copy
        parts: list[bytes | memoryview] = []
        while size:
            piece = pieces[0]
            avail = len(piece) - off
            if avail <= size:
                parts.append(memoryview(piece)[off:] if off else piece)
                pieces.popleft()
                off = 0
                size -= avail
            else:
                parts.append(memoryview(piece)[off : off + size])
                off += size
                size = 0
        self._offset = off
        return b"".join(parts)

    def _find_lf(self, start: int) -> int:
        """Index (in held bytes) of the first LF at or after ``start``, or -1."""
        pos = 0
        off = self._offset
        for piece in self._pieces:
            avail = len(piece) - off
            if pos + avail > start:
                idx = piece.find(b"\n", off + max(0, start - pos))
                if idx >= 0:
                    return pos + idx - off
            pos += avail
            off = 0
        return -1

    def read(self, size: int = -1, /) -> bytes:
        if size is None or size < 0:
            while self._fill():
                pass
            return self._take(self._held)
        while self._held < size and self._fill():
            pass
        return self._take(min(size, self._held))

    def readline(self, size: int = -1, /) -> bytes:
        limit = size if size is not None and size >= 0 else -1
        start = 0
        while True:
            idx = self._find_lf(start)
            if idx >= 0:
                end = idx + 1
                break
            if 0 <= limit <= self._held:
                end = limit
                break
            start = self._held
            if not self._fill():
                end = self._held
                break
        if 0 <= limit < end:
            end = limit
        return self._take(end)

    def readlines(self, hint: int = -1, /) -> list[bytes]:
        lines = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                return lines

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def _drop(self) -> None:
        self._pieces.clear()
        self._offset = self._held = 0

    def discard(self, budget: int) -> bool:
        """Read and drop what the app left unread, up to ``budget`` bytes; True if the body is complete."""
        self._drop()
        while not self._done and budget > 0:
            if self._fill():
                budget -= self._held
                self._drop()
        return self._done


class EmptyBody:
    """``wsgi.input`` of a request that has no body (no Content-Length, not chunked, no Expect): reads
    return nothing. One shared instance, no state: the runner consumes the core's EndOfMessage itself
    (``Runner._consume_body``), so a bodiless request costs no ``BodyStream`` and its buffer."""

    __slots__ = ()
    started = done = False
    consumed = 0

    def read(self, size: int = -1, /) -> bytes:
        return b""

    def readline(self, size: int = -1, /) -> bytes:
        return b""

    def readlines(self, hint: int = -1, /) -> list[bytes]:
        return []

    def __iter__(self):
        return iter(())


EMPTY_BODY = EmptyBody()


class ConnExchange:
    """Implements ``worker.handlers.base.Exchange`` over a ``Conn`` (see that protocol for the contract)."""

    __slots__ = (
        "_conn",
        "request",
        "body",
        "remote_addr",
        "server_addr",
        "url_scheme",
        "can_sendfile",
        "headers_sent",
        "status",
        "bytes_out",
        "finished",
        "aborted",
        "_pending",
    )

    def __init__(self, conn: Conn, request: Request) -> None:
        self._conn = conn
        self.request = request
        has_body = request.chunked or request.content_length or request.expect_continue
        self.body: BodyStream | EmptyBody = BodyStream(conn) if has_body else EMPTY_BODY
        self.remote_addr = conn.remote
        self.server_addr = conn.local
        self.url_scheme = conn.host.url_scheme
        self.can_sendfile = conn.host.can_sendfile
        self.headers_sent = False
        self.status = 0
        self.bytes_out = 0  # body bytes, as in Apache's %b
        self.finished = False
        self.aborted = False
        self._pending: tuple[int, str, list[tuple[str, str]]] | None = None

    @property
    def response_headers(self) -> list[tuple[str, str]]:
        """The headers the handler gave ``start_response`` (for ``%({Name}o)s`` in the access log)."""
        return self._pending[2] if self._pending is not None else []

    def start_response(self, status: int, reason: str, headers: list[tuple[str, str]]) -> None:
        if self.headers_sent:
            raise LocalProtocolError("response head already sent")
        self._pending = (status, reason, headers)

    def _head(self, body: bytes | None = None) -> bytes:
        """Serialise the pending head (validation errors surface here, before anything is sent); with
        ``body``, the whole response: head, body and end (``H1Connection.send_complete``)."""
        if self._pending is None:
            raise LocalProtocolError("start_response was not called before the body")
        status, reason, headers = self._pending
        conn = self._conn
        h1 = conn.h1
        host = conn.host
        if host.stopping or host.draining:
            h1.request_close()  # graceful stop: RFC 9112 §9.6, tell the client before it reuses us
        if body is None:
            head = h1.send_response(status, headers, reason, date=http_date())
        else:
            try:
                head = h1.send_complete(status, headers, reason, body, date=http_date())
            except LocalProtocolError:
                if h1.our_state is not IDLE:  # the head was committed, the body overran it
                    self.status = status
                    self.headers_sent = True
                raise
        self.status = status
        self.headers_sent = True
        return head

    def write(self, data: bytes) -> None:
        h1 = self._conn.h1
        if self.headers_sent:
            if not data:
                return
            framed = h1.send_data(data)
        else:
            framed = self._head() + (h1.send_data(data) if data else b"")
        self.bytes_out += len(data)
        if framed:
            self._conn.send(framed)

    def sendfile(self, file: BinaryIO, offset: int, count: int) -> None:
        conn = self._conn
        head = b"" if self.headers_sent else self._head()
        framing = conn.h1.frame_data(count)
        if framing is None:  # HEAD, or a status without a body: nothing goes on the wire
            if head:
                conn.send(head)
            return
        prefix, suffix = framing
        if head or prefix:
            # With sendfile coming, MSG_MORE lets the head ride in the file's first segment instead of
            # a tiny packet of its own (nginx's tcp_nopush).
            # Only for files one sendfile call may take whole: a larger one can be left to the loop
            # (slow reader), and its head must not wait in the kernel for it.
            conn.send(head + prefix, more=self.can_sendfile and 0 < count <= CORK_LIMIT)
        if self.can_sendfile:
            conn.sendfile(file.fileno(), offset, count)
        else:
            copy_file(file, offset, count, conn.send)
        if suffix:
            conn.send(suffix)
        self.bytes_out += count

    def finish(self, data: bytes = b"", hold: bool = False) -> None:
        if self.finished:
            if data:
                raise LocalProtocolError("response already finished")
            return
        if self.headers_sent:
            h1 = self._conn.h1
            out = h1.send_data(data) + h1.send_end() if data else h1.send_end()
        else:
            out = self._head(data)  # the whole response in one send: head, body and end
        self.bytes_out += len(data)
        self.finished = True
        if out:
            # ends: the response ends the connection (the FIN may ride with it, OutputQueue.send)
            self._conn.send(out, False, hold, self._conn.h1.cycle.our_state is MUST_CLOSE)

    def abort(self) -> None:
        self.aborted = True
        self._conn.h1.request_close()
