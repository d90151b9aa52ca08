"""The invariants every fuzzer checks: one driver for the hypothesis tests and the atheris target.

``run(pieces, limits)`` feeds ``pieces`` (then EOF) to a fresh ``H1Connection`` the way the I/O layer does:
after every piece it pulls events until the core needs more data, answers each complete request with an
empty 200 and starts the next cycle while keep-alive lasts. It raises ``AssertionError`` when an invariant
breaks and lets any unexpected exception escape (both are fuzzing finds):

* events are only ``Request`` / ``Data`` / ``EndOfMessage`` / ``ConnectionClosed`` (plus the NEED_DATA and
  PAUSED sentinels), in a legal order, and every Request is well-formed (token method, 1.0/1.1, lower-case
  token header names, values with no CR/LF/NUL/CTL and no surrounding whitespace, a Host on 1.1);
* a Content-Length body yields exactly that many bytes; nothing is ever larger than ``max_body``;
* the only exception is ``RemoteProtocolError`` with a 4xx/5xx status, at most once: afterwards the core
  keeps raising the same status and produces nothing new, and it accepts no more input;
* bounded buffering: whenever the core asks for more data, what it keeps buffered fits the head, chunk-line
  or trailer limit (so memory is bounded by the limits plus one read, whatever the peer sends).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from worker.http.errors import RemoteProtocolError
from worker.http.events import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Request,
)
from worker.http.protocol import H1Connection, Limits

DATE = b"Sun, 06 Nov 1994 08:49:37 GMT"
DEFAULT_LIMITS = Limits()
# Small limits so that random input reaches every limit check (414, 431, 413, chunk line, trailers);
# shared by the hypothesis tests and the atheris target.
SMALL_LIMITS = Limits(
    max_request_line=64,
    max_header_count=6,
    max_header_field=64,
    max_head=256,
    max_body=200,
    max_chunk_line=24,
    max_trailer=96,
)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_LOWER_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


@dataclass(frozen=True)
class Parsed:
    """One complete request as an application would see it."""

    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    trailers: tuple[tuple[str, str], ...]
    chunked: bool


@dataclass
class Outcome:
    """What a byte stream produced: complete requests, then maybe one error status."""

    requests: list[Parsed] = field(default_factory=list)
    error: int | None = None  # status of the RemoteProtocolError, if any
    closed: bool = False  # clean ConnectionClosed between requests
    stopped: bool = False  # a response ended the connection (no keep-alive): later bytes unread
    max_buffered: int = 0  # largest buffer seen while the core waited for data


def buffer_bound(limits: Limits) -> int:
    """Most bytes the core may hold while it waits for more: the largest unit it must see whole."""
    return max(limits.max_head, limits.max_chunk_line + 1, limits.max_trailer)


def check_request(req: Request, limits: Limits) -> None:
    """The head invariants of a Request event."""
    assert _TOKEN.fullmatch(req.method), req.method
    assert req.http_version in ("1.0", "1.1"), req.http_version
    assert req.target and not _BAD_VALUE.search(req.target) and " " not in req.target
    for name, value in req.headers:
        assert _LOWER_TOKEN.fullmatch(name), name
        assert not _BAD_VALUE.search(value), (name, value)
        assert value == value.strip(" \t"), (name, value)
    names = [name for name, _ in req.headers]
    if req.http_version == "1.1":
        assert names.count("host") == 1, "HTTP/1.1 request without exactly one Host"
    assert not (req.chunked and req.content_length is not None)
    if req.chunked:
        assert req.http_version == "1.1" and "content-length" not in names
    if req.content_length is not None:
        assert req.content_length >= 0
        assert not limits.max_body or req.content_length <= limits.max_body


class _Run:
    """State of one driven connection (see the module docstring)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.conn = H1Connection(limits)
        self.out = Outcome()
        self.bound = buffer_bound(limits)
        self.request: Request | None = None
        self.body: list[bytes] = []
        self.body_len = 0

    def feed(self, data: bytes) -> bool:
        """Feed one piece (b"" = EOF) and pump; False once nothing more will be read."""
        self.conn.receive_data(data)
        try:
            self.pump()
        except RemoteProtocolError as exc:
            self.on_error(exc)
            return False
        return not (self.out.closed or self.out.stopped)

    def pump(self) -> None:
        conn = self.conn
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                buffered = len(conn._buf)  # the internal buffer itself (trailing_data copies it)
                assert buffered <= self.bound, f"{buffered} bytes buffered > bound {self.bound}"
                self.out.max_buffered = max(self.out.max_buffered, buffered)
                return
            if event is PAUSED:
                assert self.request is None, "PAUSED in the middle of a request"
                if conn.keep_alive:
                    conn.start_next_cycle()
                    continue
                self.out.stopped = True
                return
            if type(event) is ConnectionClosed:
                assert self.request is None, "ConnectionClosed in the middle of a request"
                self.out.closed = True
                return
            self.on_event(event)

    def on_event(self, event: object) -> None:
        if type(event) is Request:
            assert self.request is None, "a Request before the previous one ended"
            check_request(event, self.limits)
            self.request, self.body, self.body_len = event, [], 0
        elif type(event) is Data:
            assert self.request is not None, "Data outside a request"
            assert event.data, "empty Data event"
            self.body.append(event.data)
            self.body_len += len(event.data)
            assert not self.limits.max_body or self.body_len <= self.limits.max_body
            if self.request.content_length is not None:
                assert self.body_len <= self.request.content_length, "body beyond Content-Length"
        elif type(event) is EndOfMessage:
            self.finish(event)
        else:
            raise AssertionError(f"unexpected event {event!r}")

    def finish(self, end: EndOfMessage) -> None:
        req = self.request
        assert req is not None, "EndOfMessage outside a request"
        if req.content_length is not None:
            assert self.body_len == req.content_length, "Content-Length body length mismatch"
        if end.trailers:
            assert req.chunked, "trailers on a non-chunked body"
        self.out.requests.append(
            Parsed(
                req.method,
                req.target,
                req.http_version,
                tuple(req.headers),
                b"".join(self.body),
                tuple(end.trailers),
                req.chunked,
            )
        )
        self.request = None
        conn = self.conn
        head = conn.send_response(200, [("Content-Length", "0")], date=DATE)
        assert head.startswith(b"HTTP/1.1 200 ")
        conn.send_end()

    def on_error(self, exc: RemoteProtocolError) -> None:
        assert 400 <= exc.status <= 599, exc.status
        self.out.error = exc.status
        conn = self.conn
        response = conn.error_response(exc, date=DATE)
        assert response.startswith(b"HTTP/1.1 %d " % exc.status)
        assert b"\r\nConnection: close\r\n" in response
        assert not conn.keep_alive
        # Never another request after an error: the core keeps refusing, whatever arrives next.
        conn.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        try:
            event = conn.next_event()
        except RemoteProtocolError as again:
            assert again.status == exc.status
        else:
            raise AssertionError(f"event {event!r} after a protocol error")


def run(pieces: Iterable[bytes], limits: Limits = DEFAULT_LIMITS, eof: bool = True) -> Outcome:
    """Feed ``pieces`` (empty ones are skipped), then EOF if ``eof``; return what came out."""
    driver = _Run(limits)
    for piece in pieces:
        if piece and not driver.feed(piece):
            return driver.out
    if eof:
        driver.feed(b"")
    return driver.out


def split(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    """``data`` cut at the given offsets (taken modulo len+1, sorted, deduplicated)."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]
