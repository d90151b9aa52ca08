"""One client connection: socket, HTTP state machine, pending output, deadlines. Glue only, no parsing.

A connection is owned by exactly one thread at a time. The loop thread owns it while it waits for a request
head, idles between requests, flushes leftover output or lingers before closing; a pool thread owns it from
dispatch until it hands it back with ``Loop.resume``. Because the fd is armed with EPOLLONESHOT, the loop
never sees events for a connection a thread is using.
"""

from __future__ import annotations

import select
import socket
from typing import TYPE_CHECKING

from worker.exchange import sendfile_all, wait_fd
from worker.handlers.base import ClientDisconnected
from worker.http.errors import RemoteProtocolError
from worker.http.protocol import H1Connection
from worker.tls import WantWrite

if TYPE_CHECKING:
    from worker.loop import Loop
    from worker.tls import TLSStream

# Output a pool thread may leave queued in user space before it must wait for the client (waitress's
# high watermark idea): small responses never hold a thread, large ones are paced by the client.
OUT_HIGH_WATER = 256 * 1024
RECV_SIZE = 65536

# Loop-side states.
READING = 1  # waiting for (the rest of) a request head, or idle keep-alive
BUSY = 2  # owned by a pool thread
FLUSHING = 3  # the loop writes leftover output, then reads / lingers / closes
LINGERING = 4  # output done, write side shut down, discarding input until EOF (RFC 9112 §9.6)
CLOSED = 5
HANDSHAKING = 6  # TLS: the loop drives the handshake; then READING (worker.tls)


class Conn:
    """State of one accepted socket. See the module docstring for which thread may touch what."""

    __slots__ = (
        "sock",
        "fd",
        "h1",
        "loop",
        "remote",
        "local",
        "url_scheme",
        "can_sendfile",
        "state",
        "token",
        "out",
        "after_flush",
        "idle",
        "requests",
        "bytes_in",
        "body_error",
        "broken",
    )

    def __init__(
        self, sock: socket.socket | TLSStream, h1: H1Connection, loop: Loop, remote, local
    ) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.h1 = h1
        self.loop = loop
        self.remote = remote
        self.local = local
        self.url_scheme = loop.url_scheme
        self.can_sendfile = loop.can_sendfile
        self.state = READING
        self.token = 0  # bumped on every state change; stale timer entries are ignored
        self.out = bytearray()
        self.after_flush = READING
        self.idle = True  # no byte of the next request received yet
        self.requests = 0
        self.bytes_in = 0
        self.body_error: RemoteProtocolError | None = None
        self.broken = False  # the peer went away mid-response

    # ---- SYNCHRONOUS: called by the pool thread that owns the connection ----------------
    def closing(self) -> bool:
        """True when the worker is draining: responses must carry ``Connection: close``."""
        return self.loop.stopping

    def send(self, data: bytes) -> None:
        """Queue ``data`` and write what the socket takes now; wait only above the high watermark."""
        out = self.out
        if out:
            out += data
            self._send_some()
        else:
            try:
                n = self.sock.send(data)
            except BlockingIOError:
                n = 0
            except OSError as exc:
                self.broken = True
                raise ClientDisconnected(str(exc)) from exc
            if n < len(data):
                out += memoryview(data)[n:]
        if len(out) > OUT_HIGH_WATER:
            self.flush_blocking()

    def _send_some(self) -> None:
        out = self.out
        try:
            n = self.sock.send(out)
        except BlockingIOError:
            return
        except OSError as exc:
            self.broken = True
            raise ClientDisconnected(str(exc)) from exc
        del out[:n]

    def flush_blocking(self) -> None:
        """Write all queued output, waiting at most ``--send-timeout`` for each bit of progress."""
        timeout = self.loop.settings.send_timeout
        while self.out:
            before = len(self.out)
            self._send_some()
            if len(self.out) == before and not wait_fd(self.fd, select.POLLOUT, timeout):
                self.broken = True
                raise ClientDisconnected("send timeout: the client stopped reading")

    def sendfile(self, file_fd: int, offset: int, count: int) -> None:
        self.flush_blocking()
        try:
            sendfile_all(self.fd, file_fd, offset, count, self.loop.settings.send_timeout)
        except TimeoutError as exc:
            self.broken = True
            raise ClientDisconnected("send timeout: the client stopped reading") from exc
        except (BrokenPipeError, ConnectionResetError) as exc:
            self.broken = True
            raise ClientDisconnected(str(exc)) from exc

    def recv_body_bytes(self) -> None:
        """Feed the next piece of the request body to the parser, waiting at most ``--body-timeout``."""
        timeout = self.loop.settings.body_timeout
        while True:
            try:
                data = self.sock.recv(RECV_SIZE)
                break
            except BlockingIOError as exc:
                # TLS only: WantWrite = OpenSSL must send something before it can read on.
                want = select.POLLOUT if type(exc) is WantWrite else select.POLLIN
                if not wait_fd(self.fd, want, timeout):
                    self.body_error = RemoteProtocolError("request body timeout", 408)
                    raise self.body_error from None
            except OSError as exc:
                self.broken = True
                raise ClientDisconnected(str(exc)) from exc
        self.bytes_in += len(data)
        self.h1.receive_data(data)
