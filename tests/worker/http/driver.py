"""A tiny I/O layer for tests: feeds bytes to an H1Connection, answers every request, records summaries."""

from __future__ import annotations

import random
from collections.abc import Iterator

from tests.worker.http.cases import Req
from worker.http.errors import RemoteProtocolError
from worker.http.events import NEED_DATA, PAUSED, ConnectionClosed, Data, EndOfMessage, Request
from worker.http.protocol import H1Connection, Limits

DATE = b"Sun, 06 Nov 1994 08:49:37 GMT"


class Driver:
    """Pumps events after every feed, like connection.py would: respond with an empty 200 and move on."""

    def __init__(self, limits: Limits) -> None:
        self.conn = H1Connection(limits)
        self.requests: list[Req] = []
        self.closed = False  # ConnectionClosed seen
        self.stopped = False  # PAUSED with keep-alive off: the connection would be closed
        self.error: RemoteProtocolError | None = None
        self._current: Request | None = None
        self._body: list[bytes] = []
        self.wire: list[bytes] = []

    def feed(self, data: bytes) -> None:
        """Feed bytes (b"" = EOF) and pump; a RemoteProtocolError is recorded, not raised."""
        if self.error is not None:
            return
        self.conn.receive_data(data)
        try:
            self.pump()
        except RemoteProtocolError as exc:
            self.error = exc

    def pump(self) -> None:
        conn = self.conn
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                return
            if event is PAUSED:
                if conn.keep_alive:
                    conn.start_next_cycle()
                    continue
                self.stopped = True
                return
            if type(event) is ConnectionClosed:
                self.closed = True
                return
            self._on_event(event)

    def _on_event(self, event: object) -> None:
        if type(event) is Request:
            assert self._current is None, "a Request before the previous one ended"
            self._current, self._body = event, []
        elif type(event) is Data:
            assert event.data, "empty Data event"
            self._body.append(event.data)
        elif type(event) is EndOfMessage:
            self._finish(event)
        else:  # pragma: no cover - a bug in the core
            raise AssertionError(f"unexpected event {event!r}")

    def _finish(self, end: EndOfMessage) -> None:
        request = self._current
        assert request is not None
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
        self._current = None
        conn = self.conn
        self.wire.append(conn.send_response(200, [("Content-Length", "0")], date=DATE))
        self.wire.append(conn.send_end())


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
