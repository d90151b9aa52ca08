"""The request/response cycle of one server-side HTTP/1.x connection, as a table (h11's ``_state.py``).

Each side (``their`` = the client's request, ``our`` = our response) moves through::

    IDLE --head--> SEND_BODY --EndOfMessage--> DONE

Every change of state is a transition of the tables below, keyed by (state, event type): the event types
are the core's own events (``Request``, ``EndOfMessage``, ``ConnectionClosed``), the error classes, and
two markers for what only our side does (``ResponseHead``, ``ErrorResponse``). Keep-alive is not a loose
boolean next to the states: when it is lost, a side that is (or later gets) ``DONE`` becomes
``MUST_CLOSE``, and ``next_cycle`` is only possible from ``DONE``/``DONE``. ``CLOSED`` is the client's
clean EOF between requests; ``ERROR`` is a client protocol violation (or an error response was sent),
after which nothing more is parsed (RFC 9112 §9.3: a message with bad framing leaves the connection
unusable).
"""

from __future__ import annotations

import enum

from webcluster.worker.http.errors import LocalProtocolError, RemoteProtocolError
from webcluster.worker.http.events import ConnectionClosed, EndOfMessage, Request


class State(enum.Enum):
    """The state of one side of the connection."""

    IDLE = enum.auto()
    SEND_BODY = enum.auto()
    DONE = enum.auto()
    MUST_CLOSE = enum.auto()
    CLOSED = enum.auto()
    ERROR = enum.auto()

    def __repr__(self) -> str:
        return self.name

    # Members are singletons compared by identity; Enum's own __hash__ is a Python call on the name, and
    # the transition tables below are looked up twice per request.
    __hash__ = object.__hash__


IDLE, SEND_BODY, DONE, MUST_CLOSE, CLOSED, ERROR = State


class ResponseHead:
    """Event type: our response head was serialized."""


class ErrorResponse:
    """Event type: an error response went out (always with ``Connection: close``)."""


_THEIR_TRANSITIONS: dict[tuple[State, type], State] = {
    (IDLE, Request): SEND_BODY,
    (SEND_BODY, EndOfMessage): DONE,
    (IDLE, ConnectionClosed): CLOSED,
    # A violation ends reading in whatever state it is found; after an error response nothing more is
    # read either, but a client that already closed cleanly stays CLOSED.
    **{(state, RemoteProtocolError): ERROR for state in State},
    **{(state, ErrorResponse): CLOSED if state is CLOSED else ERROR for state in State},
}
_OUR_TRANSITIONS: dict[tuple[State, type], State] = {
    (IDLE, ResponseHead): SEND_BODY,
    (SEND_BODY, EndOfMessage): DONE,
    **{(state, ErrorResponse): MUST_CLOSE for state in State},
}
# Events after which the connection is not reused (RFC 9112 §9.6).
_ENDS_KEEP_ALIVE = frozenset((ConnectionClosed, RemoteProtocolError, ErrorResponse))


def _by_event(table: dict[tuple[State, type], State]) -> dict[type, dict[State, State]]:
    """The same table looked up by event, then state: no (state, event) tuple to build and hash on
    each of the four transitions of every request (they cost 1.6 k instructions each that way)."""
    out: dict[type, dict[State, State]] = {}
    for (state, event), new in table.items():
        out.setdefault(event, {})[state] = new
    return out


_THEIR_BY_EVENT = _by_event(_THEIR_TRANSITIONS)
_OUR_BY_EVENT = _by_event(_OUR_TRANSITIONS)
_NONE: dict[State, State] = {}  # an event no transition takes


class CycleState:
    """Both sides' states plus the keep-alive decision. All changes go through these methods."""

    __slots__ = ("their_state", "our_state", "keep_alive")

    def __init__(self) -> None:
        self.their_state = IDLE
        self.our_state = IDLE
        self.keep_alive = True

    def their(self, event: type) -> None:
        """Advance the client's side; an impossible transition is a bug in the caller (500)."""
        new = _THEIR_BY_EVENT.get(event, _NONE).get(self.their_state)
        if new is None:
            raise LocalProtocolError(
                f"client side cannot {event.__name__} in state {self.their_state.name}"
            )
        self.their_state = new
        if event in _ENDS_KEEP_ALIVE:
            self.keep_alive = False
        if not self.keep_alive:  # else nothing to settle (the usual keep-alive cycle)
            # Settle: with keep-alive off, a side that is DONE must close instead. Written out in each
            # of the three methods: a call is ~300 instructions, and a closing connection makes four
            if new is DONE:
                self.their_state = MUST_CLOSE
            if self.our_state is DONE:
                self.our_state = MUST_CLOSE

    def ours(self, event: type) -> None:
        """Advance our side; e.g. sending body bytes before the head raises LocalProtocolError."""
        new = _OUR_BY_EVENT.get(event, _NONE).get(self.our_state)
        if new is None:
            raise LocalProtocolError(f"cannot send {event.__name__} in state {self.our_state.name}")
        self.our_state = new
        if event in _ENDS_KEEP_ALIVE:
            self.keep_alive = False
        if not self.keep_alive:  # else nothing to settle (the usual keep-alive cycle)
            if self.their_state is DONE:  # settle (see their)
                self.their_state = MUST_CLOSE
            if new is DONE:
                self.our_state = MUST_CLOSE

    def disable_keep_alive(self) -> None:
        """Either side asked for close, or the framing makes reuse impossible (RFC 9112 §9.6)."""
        self.keep_alive = False
        if self.their_state is DONE:  # settle (see their)
            self.their_state = MUST_CLOSE
        if self.our_state is DONE:
            self.our_state = MUST_CLOSE

    def remote_error(self) -> None:
        """The client broke the protocol: nothing more is read from this connection."""
        self.their(RemoteProtocolError)

    def error_sent(self) -> None:
        """An error response went out: nothing more is read, our side must close."""
        self.their(ErrorResponse)
        self.ours(ErrorResponse)

    def next_cycle(self) -> None:
        """DONE/DONE with keep-alive -> IDLE/IDLE (RFC 9112 §9.3 persistence); anything else is misuse."""
        if not (self.keep_alive and self.their_state is DONE and self.our_state is DONE):
            raise LocalProtocolError(
                f"cannot start a new cycle: their={self.their_state.name} "
                f"our={self.our_state.name} keep_alive={self.keep_alive}"
            )
        self.their_state = IDLE
        self.our_state = IDLE
