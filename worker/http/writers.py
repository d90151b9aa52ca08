"""Events -> bytes: the response head and the body framings (RFC 9112 §4, §6, §7).

Nothing the application supplies reaches the wire unchecked: header names must be tokens, values and
the reason phrase must not contain CR, LF, NUL or other CTLs (RFC 9110 §5.5), so a response can never be
split. Validation happens before any state changes, so a refused head can still be replaced by a 500.
Framing is ours, not the application's (RFC 9112 §6.1, §6.3): hop-by-hop fields it sets are dropped and
rewritten.
"""

from __future__ import annotations

from http import HTTPStatus

from webcluster.worker.http.errors import LocalProtocolError
from webcluster.worker.http.events import Request
from webcluster.worker.http.grammar import BAD_VALUE_CHAR_RE, CONTENT_LENGTH_RE, TOKEN_RE
from webcluster.worker.http.memo import remember

# The one table of reason phrases (RFC 9110 §15), with the names RFC 9110 gave the codes that
# http.HTTPStatus still calls by their RFC 7231/7233 names.
REASONS: dict[int, str] = {s.value: s.phrase for s in HTTPStatus} | {
    413: "Content Too Large",
    414: "URI Too Long",
    416: "Range Not Satisfiable",
    422: "Unprocessable Content",
}
# Fields the application may not set as-is: framing and persistence belong to the connection.
_WATCHED = frozenset(
    ("content-length", "connection", "transfer-encoding", "keep-alive", "date", "server")
)
# Checked lines by (name, value) and status lines by (code, reason): responses repeat the same fields, and
# a line that passed the checks once is the same text the next time. Emptied when full, so bounded.
_LINES: dict[tuple[str, str], str] = {}
_STATUS_LINES: dict[tuple[int, str], str] = {}
_CACHE_MAX = 1024
# Whole response heads, but for the Date line, by everything that decides them: status, reason, the
# application's headers, HEAD or not, HTTP version, keep-alive and Server. Most responses repeat one of a
# few heads; a head that passed the checks once is the same bytes the next time. Bounded like the above.
# An application that echoes what clients send into its headers (a Location) makes a new head each time:
# 256 heads of at most 2 KiB bound what that can hold.
_HEADS: dict[tuple, tuple] = {}
_HEADS_MAX = 256
_CACHE_HEAD = 2048
_CACHE_LINE = 512  # longer lines are checked every time: the caches stay small whatever apps send


class FixedLengthWriter:
    """Content-Length framing: exactly ``remaining`` bytes, never more."""

    __slots__ = ("remaining",)

    def __init__(self, length: int) -> None:
        self.remaining = length

    def write(self, data: bytes) -> bytes:
        if len(data) > self.remaining:
            raise LocalProtocolError("response body longer than its Content-Length")
        self.remaining -= len(data)
        return data

    def frame(self, count: int) -> tuple[bytes, bytes] | None:
        """Account for ``count`` body bytes sent out of band (sendfile); return (prefix, suffix)."""
        if count > self.remaining:
            raise LocalProtocolError("response body longer than its Content-Length")
        self.remaining -= count
        return b"", b""

    def finish(self) -> tuple[bytes, bool]:
        """(bytes to send, framing complete?) - short of the length means the connection must close."""
        return b"", self.remaining == 0


class ChunkedWriter:
    """Transfer-Encoding: chunked (RFC 9112 §7.1); an empty write is skipped, never a 0-size chunk."""

    __slots__ = ()

    def write(self, data: bytes) -> bytes:
        if not data:
            return b""
        return b"".join((b"%x\r\n" % len(data), data, b"\r\n"))

    def frame(self, count: int) -> tuple[bytes, bytes] | None:
        return (b"%x\r\n" % count, b"\r\n") if count else (b"", b"")

    def finish(self) -> tuple[bytes, bool]:
        return b"0\r\n\r\n", True


class CloseDelimitedWriter:
    """No length (HTTP/1.0 client, or after 101): the body ends when we close (RFC 9112 §6.3 rule 8)."""

    __slots__ = ()

    def write(self, data: bytes) -> bytes:
        return data

    def frame(self, count: int) -> tuple[bytes, bytes] | None:
        return b"", b""

    def finish(self) -> tuple[bytes, bool]:
        return b"", True


class NoBodyWriter:
    """HEAD, 204 and 304 responses have no content (RFC 9110 §6.4.1): body bytes are dropped."""

    __slots__ = ()

    def write(self, data: bytes) -> bytes:
        return b""

    def frame(self, count: int) -> tuple[bytes, bytes] | None:
        return None  # nothing may go on the wire

    def finish(self) -> tuple[bytes, bool]:
        return b"", True


BodyWriter = FixedLengthWriter | ChunkedWriter | CloseDelimitedWriter | NoBodyWriter


def status_line(status: int, reason: str) -> str:
    """``HTTP/1.1 <status> <reason>`` after checking both; we always speak 1.1 (RFC 9110 §2.5)."""
    if type(status) is not int or not 100 <= status <= 999:
        raise LocalProtocolError(f"invalid status code {status!r}")
    key = (status, reason)
    line = _STATUS_LINES.get(key) if type(reason) is str else None
    if line is not None:
        return line
    if not reason:
        reason = REASONS.get(status, "")
    elif type(reason) is not str or BAD_VALUE_CHAR_RE.search(reason):
        raise LocalProtocolError("invalid reason phrase")
    line = f"HTTP/1.1 {status} {reason}\r\n"
    _remember(_STATUS_LINES, key, line)
    return line


def _remember(cache: dict, key: object, line: str) -> None:
    if len(line) <= _CACHE_LINE:
        remember(cache, key, line, _CACHE_MAX)


def parse_content_length(value: str) -> int:
    """An application's Content-Length value: digits only, around optional whitespace (RFC 9110
    §8.6); anything else is a LocalProtocolError (answered 500, never sent)."""
    # The usual case first: ASCII digits only, exactly what the pattern accepts.
    if value.isdigit() and value.isascii():
        return int(value)
    value = value.strip(" \t")
    if not CONTENT_LENGTH_RE.fullmatch(value):
        raise LocalProtocolError(f"invalid Content-Length {value!r} from the application")
    return int(value)


class _AppHeaders:
    """The application's headers, validated, with the framing-relevant ones pulled out."""

    __slots__ = ("lines", "content_length", "connection", "has_date", "has_server")

    def __init__(self, headers: list[tuple[str, str]]) -> None:
        self.lines: list[str] = []
        self.content_length: int | None = None
        self.connection: list[str] = []  # lower-cased tokens of the app's Connection header
        self.has_date = self.has_server = False
        token, bad_value = TOKEN_RE.fullmatch, BAD_VALUE_CHAR_RE.search
        append = self.lines.append
        seen = _LINES.get
        for item in headers:
            try:
                line = seen(item)
            except TypeError:  # unhashable: the checks below say what is wrong with it
                line = None
            if line is not None:
                append(line)
                continue
            name, value = item
            if type(name) is not str or not token(name):
                raise LocalProtocolError(f"invalid header name {name!r}")
            if type(value) is not str or bad_value(value):
                raise LocalProtocolError(f"invalid value for header {name!r}")
            lname = name.lower()
            if lname in _WATCHED:
                if self._watched(lname, value):
                    append(f"{name}: {value}\r\n")
                continue
            line = f"{name}: {value}\r\n"
            _remember(_LINES, (name, value), line)
            append(line)

    def _watched(self, lname: str, value: str) -> bool:
        """Record a framing-relevant field; True if it is written as given."""
        if lname == "content-length":
            length = parse_content_length(value)
            if self.content_length is not None and length != self.content_length:
                raise LocalProtocolError("conflicting Content-Length values")
            self.content_length = length
            return False  # rewritten by the framing code (dropped for 1xx/204)
        if lname == "connection":
            self.connection += [t.strip(" \t").lower() for t in value.split(",")]
            return False
        if lname == "date":
            self.has_date = True
        elif lname == "server":
            self.has_server = True
        else:  # transfer-encoding, keep-alive: hop-by-hop, decided by us
            return False
        return True


def serialize_response(
    status: int,
    headers: list[tuple[str, str]],
    reason: str,
    *,
    request: Request,
    keep_alive: bool,
    date: bytes,
    server: str,
) -> tuple[bytes, BodyWriter | None, bool]:
    """Build a response head for ``request``: (head bytes, body writer or None for 1xx, keep-alive).

    Raises LocalProtocolError, without side effects, on anything invalid.
    """
    key = known = None
    if type(status) is int and type(reason) is str:  # 200.0 == 200, but only 200 may hit
        try:  # the same response as before: its head is known but for the Date (see _HEADS)
            key = (status, reason, tuple(headers), request.method == "HEAD", request.http_version,
                   keep_alive, server)  # fmt: skip
            known = _HEADS.get(key)
        except TypeError:  # unhashable: not a list of tuples; the checks below say what is wrong
            key = None
    if known is not None:
        prefix, suffix, make, length, keep_alive = known
        writer = make() if length is None else make(length)
        if suffix is None:  # the application sent its own Date
            return prefix, writer, keep_alive
        return b"".join((prefix, b"Date: ", date, suffix)), writer, keep_alive
    first = status_line(status, reason)
    app = _AppHeaders(headers)
    if status < 200 and status != 101:  # informational: no framing, no content (RFC 9110 §15.2)
        return _encode([first, *app.lines, "\r\n"]), None, keep_alive
    lines = [first, *app.lines]
    writer, keep_alive = _framing(status, request, app, keep_alive, lines)
    tail = [f"Server: {server}\r\n"] if server and not app.has_server else []
    tail.append("\r\n")
    if app.has_date:
        lines += tail
        head = _encode(lines)
        if key is not None:
            _remember_head(key, (head, None, type(writer), _fixed_length(writer), keep_alive))
        return head, writer, keep_alive
    prefix, suffix = _encode(lines), _encode(["\r\n", *tail])
    if key is not None:
        _remember_head(key, (prefix, suffix, type(writer), _fixed_length(writer), keep_alive))
    return b"".join((prefix, b"Date: ", date, suffix)), writer, keep_alive


def _fixed_length(writer: BodyWriter) -> int | None:
    return writer.remaining if type(writer) is FixedLengthWriter else None


def _remember_head(key: tuple, value: tuple) -> None:
    if len(value[0]) <= _CACHE_HEAD:
        remember(_HEADS, key, value, _HEADS_MAX)


def _framing(
    status: int, request: Request, app: _AppHeaders, keep_alive: bool, lines: list[str]
) -> tuple[BodyWriter, bool]:
    """RFC 9112 §6.3 from the sender's side; appends the framing and Connection fields to ``lines``."""
    length = app.content_length
    if "close" in app.connection:
        keep_alive = False
    if (
        status == 101
    ):  # the connection becomes something else: raw bytes until close (RFC 9110 §15.2.2)
        if app.connection:
            lines.append(f"Connection: {', '.join(app.connection)}\r\n")
        return CloseDelimitedWriter(), False
    writer: BodyWriter
    if status == 204:
        writer = NoBodyWriter()  # RFC 9110 §8.6: no Content-Length in a 204
    elif request.method == "HEAD" or status == 304:
        writer = NoBodyWriter()
        if length is not None:  # the length the GET would have had (RFC 9110 §8.6)
            lines.append(f"Content-Length: {length}\r\n")
        elif status != 304 and request.http_version == "1.1":
            lines.append("Transfer-Encoding: chunked\r\n")  # as a GET would be framed
    elif length is not None:
        writer = FixedLengthWriter(length)
        lines.append(f"Content-Length: {length}\r\n")
    elif request.http_version == "1.1":
        writer = ChunkedWriter()
        lines.append("Transfer-Encoding: chunked\r\n")
    else:
        writer = CloseDelimitedWriter()  # a 1.0 client cannot read chunked (RFC 9112 §7)
        keep_alive = False
    if not keep_alive:
        lines.append("Connection: close\r\n")
    elif request.http_version == "1.0":
        lines.append("Connection: keep-alive\r\n")
    return writer, keep_alive


def _encode(lines: list[str]) -> bytes:
    try:
        return "".join(lines).encode("latin-1")
    except UnicodeEncodeError:
        raise LocalProtocolError("response head is not latin-1 encodable") from None


def error_head(status: int, message: str, *, date: bytes, server: str, with_body: bool) -> bytes:
    """A complete, self-contained error response that closes the connection (RFC 9112 §9.6)."""
    reason = REASONS.get(status, "Error")
    body = f"{status} {reason}\n" if status >= 500 else f"{status} {reason}: {message}\n"
    payload = body.encode("utf-8")
    lines = [
        f"HTTP/1.1 {status} {reason}\r\n",
        "Content-Type: text/plain; charset=utf-8\r\n",
        f"Content-Length: {len(payload)}\r\n",
        "Connection: close\r\n",
        f"Date: {date.decode('latin-1')}\r\n",
    ]
    if server:
        lines.append(f"Server: {server}\r\n")
    lines.append("\r\n")
    head = "".join(lines).encode("latin-1")
    return head + payload if with_body else head
