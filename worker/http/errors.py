"""One error hierarchy for the HTTP core (h11's design).

A ``ProtocolError`` carries the status the peer should see. Remote errors (the client sent something we
refuse) become a response with ``Connection: close`` in exactly one place,
``H1Connection.error_response``; local errors (the application misused the API, e.g. CR/LF in a header
value) become a 500 before the head is sent, or a closed connection after.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base class: ``status`` is the HTTP status hint (400 unless said otherwise)."""

    status: int = 400

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class RemoteProtocolError(ProtocolError):
    """The client violated HTTP/1.x: answer ``status`` with ``Connection: close`` and close."""


class LocalProtocolError(ProtocolError):
    """We (the handler/application) tried to send something invalid: a 500, never bytes on the wire."""

    status = 500
