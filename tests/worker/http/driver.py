"""The one test driver of the sans-IO HTTP/1.x core, and the invariants every driven stream must keep.

``Driver(limits)`` plays the I/O layer the way ``worker/connection.py`` does: after every ``feed`` it pulls
events until the core needs more data, answers each complete request with an empty 200 and starts the
next cycle while keep-alive lasts. It records what came out (``requests`` as ``cases.Req`` summaries, the
``error``, ``closed``, ``stopped``, the bytes it sent in ``wire``) and asserts on the way:

* events are only ``Request`` / ``Data`` / ``EndOfMessage`` / ``ConnectionClosed`` (plus the NEED_DATA and
  PAUSED sentinels), in a legal order, and every Request is well-formed (token method, 1.0/1.1, lower-case
  token header names, values with no CR/LF/NUL/CTL and no surrounding whitespace, a Host on 1.1);
* a Content-Length body yields exactly that many bytes; nothing is ever larger than ``max_body``;
* bounded buffering: whenever the core asks for more data, what it keeps buffered fits the head, chunk-line
  or trailer limit (so memory is bounded by the limits plus one read, whatever the peer sends).

``run(pieces, limits)`` drives one stream and also checks the refusal: the only exception is
``RemoteProtocolError`` with a 4xx/5xx status, at most once, after which the core keeps raising the same
status and accepts no more input. The table replays (``test_protocol.py``), the mutation tests, the
hypothesis properties and the atheris target (``tests/fuzz``) all use this module.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Iterator

from tests.worker.http.cases import Req
from webcluster.worker.http.errors import RemoteProtocolError
from webcluster.worker.http.events import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Request,
)
from webcluster.worker.http.protocol import H1Connection, Limits

DATE = b"Sun, 06 Nov 1994 08:49:37 GMT"
DEFAULT_LIMITS = Limits()
# Small limits so that random input reaches every limit check (414, 431, 413, chunk line, trailers);
# shared by the hypothesis tests and the atheris target.
SMALL_LIMITS = Limits(
    limit_request_line=64,
    limit_request_fields=6,
    limit_request_field_size=64,
    limit_request_head=256,
    max_body=200,
    max_chunk_line=24,
    max_trailer=96,
)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_LOWER_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def buffer_bound(limits: Limits) -> int:
    """Most bytes the core may hold while it waits for more: the largest unit it must see whole."""
    return max(limits.limit_request_head, limits.max_chunk_line + 1, limits.max_trailer)


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


class Driver:
    """One driven connection (see the module docstring)."""

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self.conn = H1Connection(limits)
        self.requests: list[Req] = []
        self.error: RemoteProtocolError | None = None
        self.closed = False  # ConnectionClosed seen: a clean close between requests
        self.stopped = False  # PAUSED with keep-alive off: the connection would be closed
        self.max_buffered = 0  # largest buffer seen while the core waited for data
        self.wire: list[bytes] = []  # what the driver sent back
        self._bound = buffer_bound(limits)
        self._request: Request | None = None
        self._body: list[bytes] = []
        self._body_len = 0

    @property
    def status(self) -> int | None:
        """The status of the protocol error, if there was one."""
        return None if self.error is None else self.error.status

    def feed(self, data: bytes) -> bool:
        """Feed bytes (b"" = EOF) and pump; a RemoteProtocolError is recorded, not raised.

        Returns False once nothing more will be read (error, clean close, or the connection ends)."""
        if self.error is not None:
            return False
        self.conn.receive_data(data)
        try:
            self.pump()
        except RemoteProtocolError as exc:
            assert 400 <= exc.status <= 599, exc.status
            self.error = exc
            return False
        return not (self.closed or self.stopped)

    def pump(self) -> None:
        conn = self.conn
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                buffered = len(conn.buf)  # the internal buffer itself (trailing_data copies it)
                assert buffered <= self._bound, f"{buffered} bytes buffered > bound {self._bound}"
                self.max_buffered = max(self.max_buffered, buffered)
                return
            if event is PAUSED:
                assert self._request is None, "PAUSED in the middle of a request"
                if conn.keep_alive:
                    conn.start_next_cycle()
                    continue
                self.stopped = True
                return
            if type(event) is ConnectionClosed:
                assert self._request is None, "ConnectionClosed in the middle of a request"
                self.closed = True
                return
            self._on_event(event)

    def _on_event(self, event: object) -> None:
        if type(event) is Request:
            assert self._request is None, "a Request before the previous one ended"
            check_request(event, self.limits)
            self._request, self._body, self._body_len = event, [], 0
        elif type(event) is Data:
            request = self._request
            assert request is not None, "Data outside a request"
            assert event.data, "empty Data event"
            self._body.append(event.data)
            self._body_len += len(event.data)
            assert not self.limits.max_body or self._body_len <= self.limits.max_body
            if request.content_length is not None:
                assert self._body_len <= request.content_length, "body beyond Content-Length"
        elif type(event) is EndOfMessage:
            self._finish(event)
        else:
            raise AssertionError(f"unexpected event {event!r}")

    def _finish(self, end: EndOfMessage) -> None:
        request = self._request
        assert request is not None, "EndOfMessage outside a request"
        if request.content_length is not None:
            assert self._body_len == request.content_length, "Content-Length body length mismatch"
        if end.trailers:
            assert request.chunked, "trailers on a non-chunked body"
        self.requests.append(
            Req(
                method=request.method,
                target=request.target,
                version=request.http_version,
                headers=tuple(request.headers),
                body=b"".join(self._body),
                trailers=tuple(end.trailers),
                keep_alive=request.keep_alive,
                chunked=request.chunked,
                expect_continue=request.expect_continue,
            )
        )
        self._request = None
        head = self.conn.send_response(200, [("Content-Length", "0")], date=DATE)
        assert head.startswith(b"HTTP/1.1 200 ")
        self.wire += [head, self.conn.send_end()]

    def check_refusal(self) -> None:
        """After an error: a ``Connection: close`` response, and no request ever again."""
        exc, conn = self.error, self.conn
        assert exc is not None
        response = conn.error_response(exc, date=DATE)
        assert response.startswith(b"HTTP/1.1 %d " % exc.status)
        assert b"\r\nConnection: close\r\n" in response
        assert not conn.keep_alive
        conn.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        try:
            event = conn.next_event()
        except RemoteProtocolError as again:
            assert again.status == exc.status
        else:
            raise AssertionError(f"event {event!r} after a protocol error")


def run(pieces: Iterable[bytes], limits: Limits = DEFAULT_LIMITS, eof: bool = True) -> Driver:
    """Feed ``pieces`` (empty ones are skipped), then EOF if ``eof``; check any refusal; return the driver."""
    driver = Driver(limits)
    for piece in pieces:
        if piece and not driver.feed(piece):
            break
    else:
        if eof:
            driver.feed(b"")
    if driver.error is not None:
        driver.check_refusal()
    return driver


def split(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    """``data`` cut at the given offsets (taken modulo len+1, sorted, deduplicated)."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


def splits(raw: bytes, mode: str) -> Iterator[bytes]:
    """``whole``, ``bytes`` (one at a time) or ``random:<seed>`` pieces of ``raw``."""
    if mode == "whole":
        yield raw
    elif mode == "bytes":
        for i in range(len(raw)):
            yield raw[i : i + 1]
    else:
        rng = random.Random(int(mode.split(":")[1]) * 7919 + len(raw))
        i = 0
        while i < len(raw):
            n = rng.randint(1, max(1, min(len(raw) // 3, 4096)))
            yield raw[i : i + n]
            i += n


MODES = ["whole", "bytes"] + [f"random:{seed}" for seed in range(5)]


def same_request(got: Req, want: Req) -> bool:
    """Compare a summary with an expectation; ``headers=None`` in the expectation means "any"."""
    if want.headers is None:
        got = Req(**{**got.__dict__, "headers": None})
    return got == want
