"""Bytes -> events: the request head, Content-Length bodies and chunked bodies (RFC 9112).

Line-ending policy: **strict CRLF**. RFC 9112 §2.2 lets a recipient accept a bare LF as a line
terminator, but a parser that does so disagrees with one that doesn't about where a head (or a chunk-size
line) ends - the root of several request-smuggling attacks. So a bare LF anywhere in a head, trailer
section or chunk-size line is a 400, and so is a bare CR (§2.2: "MUST ... reject the message"). The only
leniency is the one §2.2 asks for: a few empty lines (CRLF) before the request-line are skipped.

Every reader works on the connection's ``bytearray`` and deletes what it consumed from the front
(CPython makes that O(1)); all offsets are relative to the start of the buffer. Each reader returns an
event, ``None`` ("need more data") or raises ``RemoteProtocolError``.
"""

from __future__ import annotations

from typing import NoReturn

from webcluster.worker.http.errors import RemoteProtocolError
from webcluster.worker.http.events import Data, EndOfMessage, Request
from webcluster.worker.http.grammar import CHUNK_LINE_RE, HTTP_VERSION_RE, REQUEST_LINE_RE, TOKEN_RE
from webcluster.worker.http.headers import build_request, check_target, parse_field_lines

# HTTP/1.x minor versions other than 0 are answered as 1.1 (RFC 9110 §2.5: a recipient "SHOULD process"
# a higher minor version "as if it were the highest minor version ... to which the recipient is conformant").
_VERSIONS = {"HTTP/1.0": "1.0", "HTTP/1.1": "1.1"}
_NOT_IN_TRAILERS = frozenset(("content-length", "transfer-encoding", "host"))


class HeadRules:
    """The limits a head (or a trailer section) is held to. Immutable, and shared: ``Limits`` makes one
    for request heads and one for trailers, and every connection's ``HeadScanner`` refers to them (one
    per connection cost as much as the rest of a new connection's parser)."""

    __slots__ = (
        "total_limit",
        "line_limit",
        "count_limit",
        "first_line_limit",
        "short_limit",
        "what",
    )

    def __init__(
        self,
        *,
        total_limit: int,
        line_limit: int,
        count_limit: int,
        first_line_limit: int = 0,
        what: str = "head",
    ) -> None:
        self.what = what  # for error messages: "head" or "trailer section"
        self.total_limit = total_limit  # whole head incl. the final CRLF CRLF -> 431
        self.line_limit = line_limit  # one field line -> 431
        self.count_limit = count_limit  # number of field lines -> 431
        self.first_line_limit = first_line_limit  # request-line -> 414 (0: no request-line)
        # a line no longer than this fits whichever limit applies to it (fits)
        self.short_limit = min(line_limit, first_line_limit) if first_line_limit else line_limit


class HeadScanner:
    """Finds the end of a head (or trailer section) in a growing buffer and enforces its limits
    (``HeadRules``) as soon as the buffer proves them, so memory stays bounded even when the terminator
    never comes.

    The fast path is one ``find(b"\\r\\n\\r\\n")`` resumed where the previous call stopped. While the head
    is incomplete, new complete lines are checked once each (length, count, bare CR/LF). The same line
    checks, run over a complete head, give the canonical error for it (``scan_lines``), so feeding a head
    whole or byte by byte yields the same status.
    """

    __slots__ = ("rules", "_search", "_pos", "_count")

    def __init__(self, rules: HeadRules) -> None:
        self.rules = rules
        self._search = 0  # as reset(), without the call: one scanner per connection
        self._pos = 0
        self._count = 0

    def reset(self) -> None:
        self._search = 0  # resume the terminator search here
        self._pos = 0  # start of the first line not yet checked
        self._count = 0  # lines checked so far

    def find_end(self, buf: bytearray) -> int:
        """Offset just past the head's final CRLF CRLF, or -1 (raises once the buffer proves an error)."""
        idx = buf.find(b"\r\n\r\n", self._search)
        if idx >= 0:
            return idx + 4
        self.scan_lines(buf, len(buf))
        self._search = max(0, len(buf) - 3)
        return -1

    def scan_lines(self, buf: bytearray, stop: int) -> None:
        """Check the lines in ``buf[:stop]`` not checked before; a partial last line too if stop is the end.

        Raises the violation a byte-by-byte feed would have proved first, so the status never depends on
        how the bytes were segmented.
        """
        pos, count = self._pos, self._count
        find = buf.find
        while True:
            lf = find(b"\n", pos, stop)
            if lf < 0:
                break
            crlf = lf > pos and buf[lf - 1] == 13
            self._raise_first(buf, pos, lf - 1 if crlf else lf, count, lf + 1, bare_lf=not crlf)
            if crlf and lf - 1 == pos:
                return  # the empty line: end of head
            count += 1
            pos = lf + 1
        self._pos, self._count = pos, count
        if stop == len(buf) and stop > pos:  # partial line: a trailing CR may yet be followed by LF
            end = stop - 1 if buf[stop - 1] == 13 else stop
            self._raise_first(buf, pos, end, count, stop, bare_lf=False)

    def fits(self, text: str, lines: list[str], end: int) -> bool:
        """Quick limit and CR/LF checks of a complete head (``text`` split into ``lines``)."""
        rules = self.rules
        separators = len(lines) - 1
        if (
            end > rules.total_limit
            or text.count("\r") != separators
            or text.count("\n") != separators
        ):
            return False
        first = rules.first_line_limit
        if separators + (not first) > rules.count_limit:  # field lines: all but the request-line
            return False
        # every line within both limits (the usual case): no need to tell the request-line apart. A
        # head no longer than the shorter limit proves it without a look at each line.
        if len(text) <= rules.short_limit or max(map(len, lines)) <= rules.short_limit:
            return True
        fields = lines[1:] if first else lines
        too_long = fields and max(map(len, fields)) > rules.line_limit
        return not (too_long or (first and len(lines[0]) > first))

    def _raise_first(
        self, buf: bytearray, start: int, end: int, count: int, reach: int, *, bare_lf: bool
    ) -> None:
        """Raise the earliest-proved violation of the line ``buf[start:end]`` seen up to ``reach``."""
        found = self._line_error(buf, start, end, count)
        total = self.rules.total_limit
        if reach > total and (found is None or found[0] > total + 1):
            found = (total + 1, RemoteProtocolError(f"{self.rules.what} too large", 431))
        if bare_lf and (found is None or found[0] >= reach):
            raise RemoteProtocolError("bare LF as line terminator (strict CRLF, RFC 9112 §2.2)")
        if found is not None:
            raise found[1]

    def _line_error(
        self, buf: bytearray, start: int, end: int, count: int
    ) -> tuple[int, RemoteProtocolError] | None:
        """The first violation in a line and the buffer length at which a byte-wise feed proves it."""
        if end <= start:
            return None
        rules = self.rules
        request_line = count == 0 and rules.first_line_limit > 0
        if not request_line and count - (rules.first_line_limit > 0) >= rules.count_limit:
            proved = start + 1 if buf[start] != 13 else start + 2
            return proved, RemoteProtocolError(f"too many fields in {rules.what}", 431)
        limit = rules.first_line_limit if request_line else rules.line_limit
        cr = buf.find(b"\r", start, end)
        if 0 <= cr <= start + limit:  # beyond that, the line was too long before the CR arrived
            return cr + 2, RemoteProtocolError(f"bare CR in {rules.what} (RFC 9112 §2.2)")
        if end - start > limit:
            if request_line:
                return start + limit + 1, RemoteProtocolError("request-line too long", 414)
            return start + limit + 1, RemoteProtocolError(
                f"field line too long in {rules.what}", 431
            )
        return None


def parse_request_head(buf: bytearray, end: int, scanner: HeadScanner, max_body: int) -> Request:
    """Parse ``buf[:end]`` (a complete head ending in CRLF CRLF) into a validated Request."""
    text = buf[: end - 4].decode("latin-1")
    lines = text.split("\r\n")
    if not scanner.fits(text, lines, end):
        scanner.scan_lines(buf, end)  # raises the first error in stream order
        raise RemoteProtocolError("malformed head")  # unreachable unless the two checks disagree
    fields = lines[1:]
    m = REQUEST_LINE_RE.fullmatch(lines[0])
    if m is None:
        _diagnose_request_line(lines[0])
    method, target, version_text = m.groups()
    version = _VERSIONS.get(version_text) or _check_version(version_text)
    if method == "CONNECT" or target[0] != "/":  # origin-form needs no check (RFC 9112 §3.2.1)
        check_target(method, target)
    headers = parse_field_lines(fields) if fields else []
    return build_request(method, target, version, headers, max_body)


def _check_version(text: str) -> str:
    """RFC 9110 §2.5/§6.2: another major version -> 505; another 1.x minor -> served as 1.1."""
    m = HTTP_VERSION_RE.fullmatch(text)
    if m is None:
        raise RemoteProtocolError("invalid HTTP version")
    if m[1] != "1":
        raise RemoteProtocolError("HTTP version not supported", 505)
    return "1.1"


def _diagnose_request_line(line: str) -> NoReturn:
    """Raise the right error for a request-line REQUEST_LINE_RE refused (slow path)."""
    if "\r" in line or "\n" in line:
        raise RemoteProtocolError("bare CR or LF in request-line (strict CRLF, RFC 9112 §2.2)")
    parts = line.split(" ")
    if len(parts) == 3 and HTTP_VERSION_RE.fullmatch(parts[2]):
        _check_version(parts[2])  # a well-formed but unsupported version is a 505 whatever the rest
    if len(parts) != 3:
        raise RemoteProtocolError(
            "request-line needs exactly three parts separated by one SP (RFC 9112 §3)"
        )
    if not TOKEN_RE.fullmatch(parts[0]):
        raise RemoteProtocolError("method is not a token (RFC 9110 §9.1)")
    if not HTTP_VERSION_RE.fullmatch(parts[2]):
        raise RemoteProtocolError("invalid HTTP version (RFC 9112 §2.3)")
    raise RemoteProtocolError("invalid character in request-target (RFC 9112 §3.2)")


def _take(buf: bytearray, limit: int) -> bytes:
    """Remove and return up to ``limit`` bytes from the front of ``buf``."""
    if len(buf) <= limit:
        data = bytes(buf)
        buf.clear()
    else:
        data = bytes(buf[:limit])
        del buf[:limit]
    return data


class ContentLengthReader:
    """A body of exactly ``remaining`` bytes (RFC 9112 §6.2)."""

    __slots__ = ("remaining",)

    def __init__(self, length: int) -> None:
        self.remaining = length

    def __call__(self, buf: bytearray, eof: bool) -> Data | EndOfMessage | None:
        remaining = self.remaining
        if remaining == 0:
            return EndOfMessage()
        if not buf:
            if eof:
                raise RemoteProtocolError("connection closed in the middle of the body")
            return None
        data = _take(buf, remaining)
        self.remaining = remaining - len(data)
        return Data(data)


class ChunkedReader:
    """A chunked body (RFC 9112 §7.1): size lines, data, CRLF after each chunk, last chunk, trailers.

    Chunk sizes are ``1*16HEXDIG`` with no sign, prefix or whitespace; extensions are parsed (and
    ignored) but the whole size line is bounded by ``max_chunk_line`` (400). The running total is
    checked against ``max_body`` as soon as a size line announces it (413). Trailer fields follow the
    header rules and are bounded by ``max_trailer`` (431).
    """

    __slots__ = ("_phase", "_remaining", "_total", "_max_body", "_max_line", "_trailers")

    _SIZE, _DATA, _DATA_END, _TRAILER = range(4)

    def __init__(self, max_body: int, max_chunk_line: int, trailers: HeadScanner) -> None:
        self._phase = self._SIZE
        self._remaining = 0  # bytes left in the current chunk
        self._total = 0  # body bytes announced so far
        self._max_body = max_body
        self._max_line = max_chunk_line
        self._trailers = trailers

    def __call__(self, buf: bytearray, eof: bool) -> Data | EndOfMessage | None:
        while True:
            phase = self._phase
            if phase == self._DATA:
                return self._data(buf, eof)
            if phase == self._SIZE:
                if not self._size_line(buf):
                    break
            elif phase == self._DATA_END:
                if len(buf) < 2:
                    if buf and buf[0] != 13:
                        raise RemoteProtocolError("chunk data not followed by CRLF (RFC 9112 §7.1)")
                    break
                if buf[0] != 13 or buf[1] != 10:
                    raise RemoteProtocolError("chunk data not followed by CRLF (RFC 9112 §7.1)")
                del buf[:2]
                self._phase = self._SIZE
            else:
                event = self._trailer_section(buf)
                if event is None:
                    break
                return event
        if eof:
            raise RemoteProtocolError("connection closed in the middle of a chunked body")
        return None

    def _size_line(self, buf: bytearray) -> bool:
        """Consume one chunk-size line; False if it is not complete yet."""
        limit = self._max_line
        crlf = buf.find(b"\r\n", 0, limit + 2)
        if crlf < 0:
            if len(buf) > limit + 1:
                raise RemoteProtocolError("chunk-size line too long")
            if buf.find(b"\n") >= 0 or buf.find(b"\r", 0, len(buf) - 1) >= 0:
                raise RemoteProtocolError("bare CR or LF in chunk-size line (strict CRLF)")
            return False
        m = CHUNK_LINE_RE.fullmatch(buf, 0, crlf)
        if m is None:
            raise RemoteProtocolError("invalid chunk-size line (RFC 9112 §7.1)")
        size = int(m[1], 16)
        self._total += size
        if self._max_body and self._total > self._max_body:
            raise RemoteProtocolError("chunked body above the body limit", 413)
        del buf[: crlf + 2]
        if size:
            self._remaining = size
            self._phase = self._DATA
        else:
            self._phase = self._TRAILER
        return True

    def _data(self, buf: bytearray, eof: bool) -> Data | None:
        if not buf:
            if eof:
                raise RemoteProtocolError("connection closed in the middle of a chunk")
            return None
        data = _take(buf, self._remaining)
        self._remaining -= len(data)
        if not self._remaining:
            self._phase = self._DATA_END
        return Data(data)

    def _trailer_section(self, buf: bytearray) -> EndOfMessage | None:
        """trailer-section = *( field-line CRLF ) CRLF (RFC 9112 §7.1.2)."""
        if len(buf) < 2:
            if buf and buf[0] != 13:
                self._trailers.find_end(buf)  # may already prove an error (bare LF)
            return None
        if buf[0] == 13 and buf[1] == 10:
            del buf[:2]
            return EndOfMessage()
        end = self._trailers.find_end(buf)
        if end < 0:
            return None
        text = buf[: end - 4].decode("latin-1")
        lines = text.split("\r\n")
        if not self._trailers.fits(text, lines, end):
            self._trailers.scan_lines(buf, end)  # raises the first error in stream order
            raise RemoteProtocolError("malformed trailer section")
        trailers = parse_field_lines(lines)
        if any(name in _NOT_IN_TRAILERS for name, _ in trailers):
            # RFC 9110 §6.5.1: framing and routing fields cannot be trailers; a proxy that merges
            # trailers into the head would see a second Content-Length / Transfer-Encoding / Host.
            raise RemoteProtocolError("framing or Host field in the trailer section")
        del buf[:end]
        return EndOfMessage(trailers)
