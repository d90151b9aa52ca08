"""One client connection: socket, HTTP state machine, pending output, deadlines. Glue only, no parsing.

A connection is owned by exactly one thread at a time. The loop thread owns it while it waits for a request
head, idles between requests, flushes leftover output or lingers before closing; a pool thread owns it from
dispatch until it hands it back with ``Loop.resume``. Because the fd is armed with EPOLLONESHOT, the loop
never sees events for a connection a thread is using.
"""

from __future__ import annotations

import os
import select
import socket
import struct
from collections import deque
from typing import TYPE_CHECKING

from worker.exchange import sendfile_all, wait_fd
from worker.handlers.base import ClientDisconnected
from worker.http.errors import LocalProtocolError, RemoteProtocolError
from worker.http.events import NEED_DATA, PAUSED, Data, EndOfMessage
from worker.http.protocol import H1Connection
from worker.tls import WantWrite

if TYPE_CHECKING:
    from worker.loop import Loop
    from worker.proxyproto import ProxyReader
    from worker.tls import TLSStream

# Output a pool thread may leave queued in user space before it must wait for the client (waitress's
# high watermark idea): small responses never hold a thread, large ones are paced by the client.
OUT_HIGH_WATER = 256 * 1024
RECV_SIZE = 65536
SENDFILE_CHUNK = 1 << 20  # per os.sendfile call from the loop, so one fast download cannot hog it

# Loop-side states.
READING = 1  # waiting for (the rest of) a request head, or idle keep-alive
BUSY = 2  # owned by a pool thread
FLUSHING = 3  # the loop writes leftover output, then reads / lingers / closes
LINGERING = 4  # output done, write side shut down, discarding input until EOF (RFC 9112 §9.6)
CLOSED = 5
HANDSHAKING = 6  # TLS: the loop drives the handshake; then READING (worker.tls)
BODY = 7  # head parsed; the loop reads a small body before a thread gets it (preread_body)
PROXY_HEADER = 8  # --proxy-protocol: the loop reads the PROXY header first (worker.proxyread)

# --body-min-rate is enforced only after this grace: a body's first second may arrive in one burst or not.
BODY_RATE_GRACE = 1.0


class Conn:
    """State of one accepted socket. See the module docstring for which thread may touch what."""

    __slots__ = (
        "serial",
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
        "last_unsent",
        "early",
        "early_bytes",
        "body_start",
        "body_base",
        "file_fd",
        "file_off",
        "file_left",
        "tail",
        "sent_at",
        "proxy",
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
        self.serial = 0  # set by the loop; timer entries refer to a connection by it
        self.token = 0  # bumped on every state change; stale timer entries are ignored
        self.out = bytearray()
        self.after_flush = READING
        self.idle = True  # no byte of the next request received yet
        self.requests = 0
        self.bytes_in = 0
        self.body_error: RemoteProtocolError | None = None
        self.broken = False  # the peer went away mid-response
        self.last_unsent = 0  # send-queue bytes seen at the last idle timeout (slow readers)
        # Body events the loop parsed before dispatch (preread_body); the thread takes them first.
        self.early: deque[Data | EndOfMessage] = deque()
        self.early_bytes = 0
        self.body_start: float | None = None  # when the current body started to count (rate check)
        self.body_base = 0  # bytes_in at body_start, minus body bytes already buffered then
        # A file the loop sends after ``out`` (see sendfile), then ``tail``: what was queued behind it.
        self.file_fd = -1
        self.file_off = 0
        self.file_left = 0
        self.tail = bytearray()
        self.sent_at = 0.0  # loop: when the client last took bytes of that file
        self.proxy: ProxyReader | None = None  # set while a PROXY header is awaited

    # ---- ASYNCHRONOUS: loop thread, before the request goes to a pool thread -------------
    def new_request(self) -> None:
        """A request head was parsed (by the loop or, for a pipelined one, by the pool thread)."""
        self.early.clear()
        self.early_bytes = 0
        self.body_start = None

    def begin_body(self, now: float) -> None:
        """Start the body clock for --body-min-rate; bytes that came with the head count as body."""
        self.body_start = now
        self.body_base = self.bytes_in - len(self.h1.trailing_data[0])

    def body_too_slow(self, now: float) -> bool:
        """True when, after the grace second, the body arrives slower than --body-min-rate on average."""
        rate = self.loop.settings.body_min_rate
        if not rate or self.body_start is None:
            return False
        elapsed = now - self.body_start - BODY_RATE_GRACE
        return elapsed > 0 and self.bytes_in - self.body_base < rate * elapsed

    def preread_body(self, budget: int) -> bool:
        """Parse the body bytes already received into ``early``; True once the whole body or ``budget``
        bytes of it are held (a pool thread reads the rest). Raises RemoteProtocolError (bad framing).

        This is what keeps a slow-body client (R-U-Dead-Yet) from holding a thread: a body up to
        ``budget`` is read here, by the loop, bounded by --body-timeout and --body-min-rate.
        """
        h1, early = self.h1, self.early
        while True:
            event = h1.next_event()
            if event is NEED_DATA or event is PAUSED:
                return False
            early.append(event)
            if type(event) is EndOfMessage:
                return True
            self.early_bytes += len(event.data)
            if self.early_bytes >= budget:
                return True

    # ---- SYNCHRONOUS: called by the pool thread that owns the connection ----------------
    def next_body_event(self):
        """The next request-body event: those the loop already parsed first, then the parser's."""
        if self.early:
            return self.early.popleft()
        return self.h1.next_event()

    def closing(self) -> bool:
        """True when the worker is stopping or its host draining: responses carry ``Connection: close``."""
        return self.loop.stopping or self.loop.draining

    def send(self, data: bytes, more: bool = False) -> None:
        """Queue ``data`` and write what the socket takes now; wait only above the high watermark.

        ``more``: more data follows at once (a sendfile), so the kernel may hold a partial segment
        (MSG_MORE, plain TCP only)."""
        if self.file_left:  # behind a file the loop will send: keep the order
            self.tail += data
            if len(self.tail) > OUT_HIGH_WATER:
                self.drain_blocking()
            return
        out = self.out
        if out:
            out += data
            self._send_some()
        else:
            try:
                n = self.sock.send(data, socket.MSG_MORE) if more else self.sock.send(data)
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
        """Send ``count`` bytes of the file at ``offset``: what the socket takes now, and the rest by the
        loop once this thread hands the connection back (a dup of the fd is kept), so a client that
        reads a large file slowly holds a socket and a file descriptor, never a pool thread."""
        if self.file_left:  # a second file before the first went out: finish the first here
            self.drain_blocking()
        if self.out:
            self._send_some()
        if not self.out:
            try:
                sent = _sendfile_now(self.fd, file_fd, offset, count)
            except OSError as exc:
                self.broken = True
                raise ClientDisconnected(str(exc)) from exc
            offset, count = offset + sent, count - sent
        if count:
            self.file_fd, self.file_off, self.file_left = os.dup(file_fd), offset, count

    def drain_blocking(self) -> None:
        """Write everything queued (output, file, what followed it) in this thread, as before the loop
        took over large files: used only when a response queues too much behind a file."""
        self.flush_blocking()
        if self.file_left:
            try:
                sendfile_all(
                    self.fd,
                    self.file_fd,
                    self.file_off,
                    self.file_left,
                    self.loop.settings.send_timeout,
                )
            except TimeoutError as exc:
                self.broken = True
                raise ClientDisconnected("send timeout: the client stopped reading") from exc
            except (BrokenPipeError, ConnectionResetError) as exc:
                self.broken = True
                raise ClientDisconnected(str(exc)) from exc
            finally:
                self.drop_file()
        self.out, self.tail = self.tail, self.out
        self.flush_blocking()

    # ---- ASYNCHRONOUS: loop thread, once a pool thread handed the connection back ---------
    def has_output(self) -> bool:
        return bool(self.out or self.file_left or self.tail)

    def write_some(self) -> bool:
        """Write, in order, output, file and what followed it, as far as the socket takes them now;
        True once all is written. Raises OSError when the client is gone."""
        while True:
            out = self.out
            if out:
                try:
                    del out[: self.sock.send(out)]
                except BlockingIOError:
                    return False
                if out:
                    return False
            if not self.file_left:
                if not self.tail:
                    return True
                self.out, self.tail = self.tail, out
                continue
            count = min(self.file_left, SENDFILE_CHUNK)
            sent = _sendfile_now(self.fd, self.file_fd, self.file_off, count)
            if not sent:
                return False
            self.file_off += sent
            self.file_left -= sent
            self.sent_at = self.loop.clock()
            if self.file_left:
                return False  # back to the poller between chunks: other connections get their turn
            self.drop_file()

    def drop_file(self) -> None:
        """Forget the pending file (sent, or the connection is closing)."""
        if self.file_fd >= 0:
            os.close(self.file_fd)
        self.file_fd, self.file_left = -1, 0

    def abort_on_close(self) -> None:
        """SO_LINGER 0: close() then resets and drops unsent data (nginx reset_timedout_connection), so
        a reader that timed out does not keep MiBs queued in the kernel's send buffer."""
        sock = socket.socket(fileno=self.fd)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        finally:
            sock.detach()

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
        now = self.loop.clock()
        if self.body_start is None:  # the thread reads this body from the start (Expect, pipelined)
            self.body_start, self.body_base = now, self.bytes_in - len(data)
        elif data and self.body_too_slow(now):
            self.body_error = RemoteProtocolError("request body too slow (--body-min-rate)", 408)
            raise self.body_error


def _sendfile_now(sock_fd: int, file_fd: int, offset: int, count: int) -> int:
    """os.sendfile on a non-blocking socket until it would block or ``count`` bytes went out."""
    sent = 0
    while sent < count:
        try:
            n = os.sendfile(sock_fd, file_fd, offset + sent, min(count - sent, SENDFILE_CHUNK))
        except BlockingIOError:
            break
        if n == 0:
            raise LocalProtocolError("file shorter than announced")
        sent += n
    return sent
