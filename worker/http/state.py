"""The request/response cycle of one server-side HTTP/1.x connection, as a table (h11's ``_state.py``).

Each side (``their`` = the client's request, ``our`` = our response) moves through::

    IDLE --request/response head--> SEND_BODY --end of message--> DONE

Keep-alive is not a loose boolean next to the states: when it is lost, a side that is (or later gets)
``DONE`` becomes ``MUST_CLOSE``, and ``start_next_cycle`` is only possible from ``DONE``/``DONE``.
``CLOSED`` is the client's clean EOF between requests; ``ERROR`` is a client protocol violation (or an
error response was sent), after which nothing more is parsed (RFC 9112 §9.3: a message with bad framing
leaves the connection unusable).
"""

from __future__ import annotations

from worker.http.errors import LocalProtocolError

IDLE = "IDLE"
SEND_BODY = "SEND_BODY"
DONE = "DONE"
MUST_CLOSE = "MUST_CLOSE"
CLOSED = "CLOSED"
ERROR = "ERROR"

# Event names: "head" (request head parsed / response head sent), "end" (EndOfMessage parsed / sent).
_THEIR_TRANSITIONS: dict[tuple[str, str], str] = {
    (IDLE, "head"): SEND_BODY,
    (SEND_BODY, "end"): DONE,
    (IDLE, "eof"): CLOSED,
}
_OUR_TRANSITIONS: dict[tuple[str, str], str] = {
    (IDLE, "head"): SEND_BODY,
    (SEND_BODY, "end"): DONE,
}


class CycleState:
    """Both sides' states plus the keep-alive decision. All changes go through these methods."""

    __slots__ = ("their_state", "our_state", "keep_alive")

    def __init__(self) -> None:
        self.their_state = IDLE
        self.our_state = IDLE
        self.keep_alive = True

    def their(self, event: str) -> None:
        """Advance the client's side; an impossible transition is a bug in the caller (500)."""
        new = _THEIR_TRANSITIONS.get((self.their_state, event))
        if new is None:
            raise LocalProtocolError(f"client side cannot {event!r} in state {self.their_state}")
        self.their_state = new
        if new == CLOSED:
            self.keep_alive = False
        self._settle()

    def ours(self, event: str) -> None:
        """Advance our side; e.g. sending body bytes before the head raises LocalProtocolError."""
        new = _OUR_TRANSITIONS.get((self.our_state, event))
        if new is None:
            raise LocalProtocolError(f"cannot send {event!r} in state {self.our_state}")
        self.our_state = new
        self._settle()

    def disable_keep_alive(self) -> None:
        """Either side asked for close, or the framing makes reuse impossible (RFC 9112 §9.6)."""
        self.keep_alive = False
        self._settle()

    def remote_error(self) -> None:
        """The client broke the protocol: nothing more is read from this connection."""
        self.their_state = ERROR
        self.disable_keep_alive()

    def error_sent(self) -> None:
        """An error response went out (always with ``Connection: close``): nothing more is read."""
        if self.their_state != CLOSED:
            self.their_state = ERROR
        self.our_state = MUST_CLOSE
        self.disable_keep_alive()

    def next_cycle(self) -> None:
        """DONE/DONE with keep-alive -> IDLE/IDLE (RFC 9112 §9.3 persistence); anything else is misuse."""
        if not (self.keep_alive and self.their_state == DONE and self.our_state == DONE):
            raise LocalProtocolError(
                f"cannot start a new cycle: their={self.their_state} our={self.our_state} "
                f"keep_alive={self.keep_alive}"
            )
        self.their_state = IDLE
        self.our_state = IDLE

    def _settle(self) -> None:
        if not self.keep_alive:
            if self.their_state == DONE:
                self.their_state = MUST_CLOSE
            if self.our_state == DONE:
                self.our_state = MUST_CLOSE
