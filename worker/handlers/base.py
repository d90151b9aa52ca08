"""The seam between handlers (WSGI, static files) and the transport.

A handler is ``Callable[[Exchange], None]`` run on a pool thread. It sees the parsed request, a body stream
and response methods; never a socket. ``worker.exchange.ConnExchange`` is the real one; tests provide a fake
that records what was sent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import BinaryIO, Protocol

from webcluster.worker.http.errors import LocalProtocolError
from webcluster.worker.http.events import Request


class BodyReader(Protocol):
    """The request body as a file object bounded to the message (chunked framing already removed).

    The first read sends ``100 Continue`` when the client asked for it (RFC 9110 §10.1.1).
    Raises ``worker.http.errors.RemoteProtocolError`` (status 400/413/408) on a broken or slow body.
    """

    def read(self, size: int = -1, /) -> bytes: ...
    def readline(self, size: int = -1, /) -> bytes: ...
    def readlines(self, hint: int = -1, /) -> list[bytes]: ...
    def __iter__(self): ...


class Exchange(Protocol):
    """One request/response cycle as seen by a handler (called only from the pool thread running it)."""

    request: Request
    body: BodyReader
    remote_addr: tuple[str, int]  # (host, port); ("", 0) for unix sockets
    server_addr: tuple[str, int]
    url_scheme: str  # "http" or "https"
    can_sendfile: bool  # False under TLS: use write() instead
    headers_sent: bool  # True once the status line has gone to the client

    def start_response(self, status: int, reason: str, headers: list[tuple[str, str]]) -> None:
        """Set the response head. Raises LocalProtocolError on CR/LF/NUL in names or values.
        The head is sent with the first write()/sendfile()/finish() (so a 0-byte first write sends it)."""

    def write(self, data: bytes) -> None:
        """Send body bytes (framed by the core: chunked on 1.1 when no Content-Length; dropped for HEAD)."""

    def sendfile(self, file: BinaryIO, offset: int, count: int) -> None:
        """Send ``count`` bytes of ``file`` from ``offset`` (os.sendfile when possible, else reads+write)."""

    def finish(self, data: bytes = b"", hold: bool = False) -> None:
        """End the response (terminating chunk if chunked), after ``data``: the last body bytes, which
        then go out in the same send as the head (a whole response, usually) and the end. ``hold``:
        nothing of the handler or the application runs after this call (no iterable ``close()``, no
        waiting), so the transport may keep the response a moment to send it together with others."""

    def abort(self) -> None:
        """Something went wrong after the head was sent: close the connection without finishing."""


Handler = Callable[[Exchange], None]


class ClientDisconnected(ConnectionError):
    """Raised by Exchange methods when the client went away or stopped reading (send timeout).

    Not an application error: handlers stop, call the app iterable's close(), and do not log a traceback.
    """


_ERROR_BODY = b"Internal Server Error\n"


def send_internal_error(exchange: Exchange, *, close: bool = True) -> None:
    """The server's one answer to an application or handler failure (the caller logs it): a bare 500
    if no head was sent yet, else abort, which closes the connection without finishing the response.
    ``close`` adds ``Connection: close`` (after a WSGI app failed, its state and the unread body are
    suspect; a failing handler of our own leaves the connection usable)."""
    if exchange.headers_sent:
        exchange.abort()
        return
    headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(_ERROR_BODY))),
    ]
    if close:
        headers.append(("Connection", "close"))
    try:
        exchange.start_response(500, "Internal Server Error", headers)
        exchange.write(_ERROR_BODY)
        exchange.finish()
    except Exception:  # the client is gone, or the head was handed over meanwhile: just close
        exchange.abort()


READ_BLOCK = 65536


def copy_file(file: BinaryIO, offset: int, count: int, write: Callable[[bytes], None]) -> None:
    """The read-and-write fallback where ``sendfile`` cannot be used (TLS): ``count`` bytes of ``file``
    from ``offset``, in blocks. Raises LocalProtocolError if the file is shorter than that."""
    file.seek(offset)
    while count > 0:
        block = file.read(min(READ_BLOCK, count))
        if not block:
            raise LocalProtocolError("file shorter than announced")
        write(block)
        count -= len(block)
