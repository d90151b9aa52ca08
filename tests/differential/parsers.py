"""Three HTTP/1.1 request parsers behind one interface: where each says every message starts and ends.

``frame(name, stream)`` feeds ``stream`` (then EOF) to one parser playing the server of one connection
and returns an ``Outcome``: the messages it parsed, in order (method, target, version, headers, body,
trailers), and how the stream ended for it:

* ``closed``   - the stream ended cleanly between messages;
* ``stopped``  - a message ended the connection (``Connection: close``, HTTP/1.0): the rest is unread;
* ``rejected`` - a protocol error (``detail`` says which);
* ``incomplete`` - EOF in the middle of a message;
* ``upgrade``  - the parser stops at a CONNECT or ``Upgrade`` request: what follows is another protocol.

The parsers: ``webcluster`` (``worker/http``, default limits), ``llhttp`` (Node.js's parser, through
``httptools``, strict mode: no leniency flags) and ``h11``. Each complete request is answered with an
empty 404 (not 2xx, so CONNECT does not open a tunnel in h11) before the next one is parsed.
Header names are lower-cased and values stripped of surrounding OWS for all three; the values of
``Transfer-Encoding``, ``Connection`` and ``Expect`` are lower-cased too (h11 does, and all three
compare them case-insensitively).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import h11
import httptools

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
PARSERS = ("webcluster", "llhttp", "h11")
ENDS = ("closed", "stopped", "rejected", "incomplete", "upgrade")


@dataclass(frozen=True)
class Message:
    """One complete request as a parser framed it."""

    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    trailers: tuple[tuple[str, str], ...] = ()


@dataclass
class Outcome:
    parser: str
    messages: list[Message] = field(default_factory=list)
    end: str = "closed"
    detail: str = ""
    heads: list[bytes] = field(default_factory=list)  # webcluster only: each message's raw head


_CASELESS = frozenset(("transfer-encoding", "connection", "expect"))


def _norm(items) -> tuple[tuple[str, str], ...]:
    out = []
    for name, value in items:
        if isinstance(name, bytes):
            name, value = name.decode("latin-1"), value.decode("latin-1")
        name, value = name.lower(), value.strip(" \t")
        out.append((name, value.lower() if name in _CASELESS else value))
    return tuple(out)


def frame(parser: str, stream: bytes) -> Outcome:
    """``stream`` (then EOF) through ``parser``: see the module docstring."""
    return {"webcluster": _webcluster, "llhttp": _llhttp, "h11": _h11}[parser](stream)


def _webcluster(stream: bytes) -> Outcome:
    out = Outcome("webcluster")
    conn = H1Connection(Limits())
    conn.receive_data(stream)
    conn.receive_data(b"")
    head: Request | None = None
    body: list[bytes] = []
    start = 0  # where the current message starts in the stream
    try:
        while True:
            event = conn.next_event()
            if type(event) is Request:
                head, body = event, []
                end = len(stream) - len(conn.trailing_data[0])
                out.heads.append(stream[start:end])
            elif type(event) is Data:
                body.append(event.data)
            elif type(event) is EndOfMessage:
                out.messages.append(
                    Message(
                        head.method,
                        head.target,
                        head.http_version,
                        _norm(head.headers),
                        b"".join(body),
                        _norm(event.trailers),
                    )  # fmt: skip
                )
                conn.send_response(404, [("Content-Length", "0")], date=DATE)
                conn.send_end()
                start = len(stream) - len(conn.trailing_data[0])
            elif event is PAUSED:
                if not conn.keep_alive:
                    out.end = "stopped"
                    return out
                conn.start_next_cycle()
            elif type(event) is ConnectionClosed:
                return out
            elif event is NEED_DATA:  # cannot happen after EOF
                out.end, out.detail = "incomplete", "NEED_DATA after EOF"
                return out
    except RemoteProtocolError as exc:
        out.end, out.detail = "rejected", f"{exc.status} {exc}"
    return out


class _Recorder:
    """httptools callbacks: collects messages; trailers are the fields after the head is complete."""

    def __init__(self) -> None:
        self.parser: httptools.HttpRequestParser | None = None
        self.messages: list[Message] = []
        self.open = False
        self._reset()

    def _reset(self) -> None:
        self.url, self.headers, self.trailers, self.body = b"", [], [], []
        self.head_done = False
        self.method = self.version = ""

    def on_message_begin(self) -> None:
        self._reset()
        self.open = True

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        (self.trailers if self.head_done else self.headers).append((name, value))

    def on_headers_complete(self) -> None:
        self.head_done = True
        self.method = self.parser.get_method().decode("latin-1")
        self.version = self.parser.get_http_version()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.messages.append(
            Message(
                self.method,
                self.url.decode("latin-1"),
                self.version,
                _norm(self.headers),
                b"".join(self.body),
                _norm(self.trailers),
            )  # fmt: skip
        )
        self.open = False


def _llhttp(stream: bytes) -> Outcome:
    out = Outcome("llhttp")
    rec = _Recorder()
    rec.parser = httptools.HttpRequestParser(rec)
    try:
        rec.parser.feed_data(stream)
    except httptools.HttpParserUpgrade:
        out.end = "upgrade"
    except httptools.HttpParserError as exc:
        out.end, out.detail = "rejected", f"{type(exc).__name__}: {exc}"
    else:
        if rec.open:
            out.end, out.detail = "incomplete", "EOF in a message"
    out.messages = rec.messages
    return out


def _h11(stream: bytes) -> Outcome:
    out = Outcome("h11")
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=65536)
    conn.receive_data(stream)
    conn.receive_data(b"")
    head = None
    body: list[bytes] = []
    try:
        while True:
            event = conn.next_event()
            if type(event) is h11.Request:
                head, body = event, []
            elif type(event) is h11.Data:
                body.append(event.data)
            elif type(event) is h11.EndOfMessage:
                out.messages.append(
                    Message(
                        head.method.decode("latin-1"),
                        head.target.decode("latin-1"),
                        head.http_version.decode(),
                        _norm(head.headers),
                        b"".join(body),
                        _norm(event.headers),
                    )  # fmt: skip
                )
                conn.send(h11.Response(status_code=404, headers=[("Content-Length", "0")]))
                conn.send(h11.EndOfMessage())
            elif event is h11.PAUSED:
                if conn.their_state is h11.MIGHT_SWITCH_PROTOCOL:
                    out.end = "upgrade"
                    return out
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    out.end = "stopped"
                    return out
                conn.start_next_cycle()
            elif type(event) is h11.ConnectionClosed:
                return out
            elif event is h11.NEED_DATA:
                out.end, out.detail = "incomplete", "NEED_DATA after EOF"
                return out
    except h11.RemoteProtocolError as exc:
        out.end, out.detail = "rejected", f"{exc.error_status_hint} {exc}"
    return out
