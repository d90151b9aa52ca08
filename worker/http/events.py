"""Events exchanged between the sans-IO HTTP core and the I/O layer.

``Request`` is produced once the whole head has been parsed and validated; body bytes follow as ``Data``
events and the message ends with ``EndOfMessage``. ``NEED_DATA`` means "feed me more bytes";
``PAUSED`` means "the current request/response cycle is not finished: call ``start_next_cycle()``
after the response is done before asking for the next request" (pipelined bytes stay buffered).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Request:
    """A validated request head. Header names are lower-case ``str`` (latin-1), values have OWS stripped."""

    method: str
    target: str
    http_version: str  # "1.0" or "1.1"
    headers: list[tuple[str, str]]
    # Framing, decided by the core from the headers (RFC 9112 §6.3):
    content_length: int | None = None  # None when chunked or no body
    chunked: bool = False
    keep_alive: bool = True  # the client's wish (RFC 9112 §9.3); the server may still close
    expect_continue: bool = False  # "Expect: 100-continue" was sent (RFC 9110 §10.1.1)

    def get(self, name: str, default: str | None = None) -> str | None:
        """First value of header ``name`` (lower-case), or ``default``."""
        for key, value in self.headers:
            if key == name:
                return value
        return default


@dataclass(slots=True)
class Data:
    """A piece of the request body (chunked framing already removed)."""

    data: bytes


@dataclass(slots=True)
class EndOfMessage:
    """The request body is complete; ``trailers`` holds chunked trailer fields, if any."""

    trailers: list[tuple[str, str]] = field(default_factory=list)


@dataclass(slots=True)
class ConnectionClosed:
    """The peer closed its side cleanly between requests."""


class _Sentinel:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_DATA = _Sentinel("NEED_DATA")
PAUSED = _Sentinel("PAUSED")

Event = Request | Data | EndOfMessage | ConnectionClosed
