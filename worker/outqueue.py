"""A connection's pending output: bytes, then at most one file, then what was queued behind the file.

One ``OutputQueue`` per connection, used by whichever thread owns the connection (waitress's output buffers
and high watermark, reduced to what we need). A pool thread writes what the socket takes now and leaves
the rest; it waits for the client only when more than ``HIGH_WATER`` bytes are queued, so a small
response never holds a thread and a large one is paced by the client. A file is sent with ``sendfile``: the
part the socket does not take at once stays here as a duplicated fd, offset and length, and the loop sends
it (``write_some``) once the thread has handed the connection back, so a slow reader of a large file holds a
socket and a file descriptor, not a thread.

A response the loop thread makes itself (inline or static, ``Loop._dispatch``) may be *held*: its last
send, after which nothing of the handler or the application runs, only queues it, and the loop writes what
it held at the end of its poll pass (``Loop.handle``). The clients then get the responses of one pass
close together instead of one every few tens of microseconds, which costs both them and us less CPU a
request (BENCHMARKS.md, thirteenth pass).

A response that ends the connection, served on the loop thread (``on_loop``), has its last bytes sent with
``MSG_MORE``: the loop closes the connection (or shuts down writing, ``worker.linger``) right after them,
and the kernel tacks the FIN onto the segment it kept (``tcp_send_fin``), so response and FIN leave as one
segment and the client answers both with one ACK (BENCHMARKS.md, fifteenth pass). A pool thread's
response goes out at once: its hand-back to the loop, and so the close, may wait for a poll pass.
"""

from __future__ import annotations

import fcntl
import os
import select
import socket
import struct
import termios
from collections.abc import Callable

from webcluster.worker.handlers.base import ClientDisconnected
from webcluster.worker.http.errors import LocalProtocolError

HIGH_WATER = 256 * 1024
SENDFILE_CHUNK = 1 << 20  # per os.sendfile call from the loop, so one fast download cannot hog it
_RELEASE_ABOVE = 4096  # a buffer grown beyond this is replaced between responses
# A larger last send goes out at once: holding would copy it into the queue first.
HOLD_MAX = 16 * 1024


class OutputQueue:
    """Bytes, an optional file (fd, offset, left) and the bytes queued after it, in wire order."""

    __slots__ = ("sock", "send_timeout", "clock", "buf", "file_fd", "file_off", "file_left",
                 "tail", "sent_at", "holding", "on_loop")  # fmt: skip

    def __init__(self, sock, send_timeout: float, clock: Callable[[], float]) -> None:
        self.sock = sock  # a socket or a worker.tls.TLSStream
        self.send_timeout = send_timeout
        self.clock = clock
        self.buf = bytearray()
        self.file_fd = -1
        self.file_off = 0
        self.file_left = 0
        self.tail: bytearray | None = (
            None  # made when bytes queue behind a file (idle connections: none)
        )
        self.sent_at = 0.0  # loop: when the client last took bytes of the file
        # The loop thread serves the request now and writes held output at the end of its pass (see the
        # module docstring); a pool thread never holds.
        self.holding = False
        # The loop thread serves the request now: a close would follow its response at once.
        self.on_loop = False

    # ---- pool thread ---------------------------------------------------------------------
    def send(self, data: bytes, more: bool = False, hold: bool = False, ends: bool = False) -> None:
        """Queue ``data`` and write what the socket takes now; wait only above the high watermark.

        ``more``: a file follows at once, so the kernel may hold a partial segment (MSG_MORE). ``hold``:
        the response's last bytes, nothing of the application runs after them; while ``holding``, a small
        one is only queued, for the loop to write at the end of its pass. ``ends``: they end the
        connection; ``on_loop``, the close follows at once, so they wait for its FIN (MSG_MORE)."""
        if hold:
            if self.holding and len(data) <= HOLD_MAX and not self.file_left:
                self.buf += data
                return
            if ends and self.on_loop:
                more = True
        if self.file_left:  # behind a file the loop will send: keep the order
            if self.tail is None:
                self.tail = bytearray()
            self.tail += data
            if len(self.tail) > HIGH_WATER:
                self.drain_blocking()
            return
        buf = self.buf
        if buf:
            buf += data
            self._send_some()
        else:
            try:
                n = self.sock.send(data, socket.MSG_MORE) if more else self.sock.send(data)
            except BlockingIOError:
                n = 0
            except OSError as exc:
                raise ClientDisconnected(str(exc)) from exc
            if n < len(data):
                buf += memoryview(data)[n:]
        if len(buf) > HIGH_WATER:
            self.flush_blocking()

    def _send_some(self) -> None:
        buf = self.buf
        try:
            n = self.sock.send(buf)
        except BlockingIOError:
            return
        except OSError as exc:
            raise ClientDisconnected(str(exc)) from exc
        del buf[:n]

    def flush_blocking(self) -> None:
        """Write all queued bytes, waiting at most ``send_timeout`` for each bit of progress."""
        while self.buf:
            before = len(self.buf)
            self._send_some()
            if len(self.buf) == before and not wait_fd(self.sock.fileno(), select.POLLOUT,
                                                       self.send_timeout):  # fmt: skip
                raise ClientDisconnected("send timeout: the client stopped reading")

    def sendfile(self, file_fd: int, offset: int, count: int) -> None:
        """Send ``count`` bytes of the file at ``offset``: what the socket takes now; the rest is kept (a dup
        of the fd) for the loop to send once the connection is handed back."""
        if self.file_left:  # a second file before the first went out: finish the first here
            self.drain_blocking()
        if self.buf:
            self._send_some()
        if not self.buf:
            try:
                sent = _sendfile_now(self.sock.fileno(), file_fd, offset, count)
            except OSError as exc:
                raise ClientDisconnected(str(exc)) from exc
            offset, count = offset + sent, count - sent
        if count:
            self.file_fd, self.file_off, self.file_left = os.dup(file_fd), offset, count

    def drain_blocking(self) -> None:
        """Write everything queued (bytes, file, what followed it) in this thread: used only when a
        response queues more than the high watermark behind a file."""
        self.flush_blocking()
        if self.file_left:
            try:
                _sendfile_all(self.sock.fileno(), self.file_fd, self.file_off, self.file_left,
                              self.send_timeout)  # fmt: skip
            except TimeoutError as exc:
                raise ClientDisconnected("send timeout: the client stopped reading") from exc
            except (BrokenPipeError, ConnectionResetError) as exc:
                raise ClientDisconnected(str(exc)) from exc
            finally:
                self.drop_file()
        if self.tail:
            self.buf, self.tail = self.tail, None
            self.flush_blocking()

    # ---- loop thread, once the connection was handed back --------------------------------
    def __bool__(self) -> bool:
        return bool(self.buf or self.file_left or self.tail)

    def write_some(self, ends: bool = False) -> bool:
        """Write, in order, bytes, file and what followed it, as far as the socket takes them now; True
        once all is written. Raises OSError when the client is gone (LocalProtocolError: file shrank).
        ``ends``: the loop closes the connection once all is written, so the last bytes (none behind
        them) wait for its FIN (MSG_MORE, see the module docstring)."""
        while True:
            buf = self.buf
            if buf:
                try:
                    if ends and not self.file_left and not self.tail:
                        del buf[: self.sock.send(buf, socket.MSG_MORE)]
                    else:
                        del buf[: self.sock.send(buf)]
                except BlockingIOError:
                    return False
                if buf:
                    return False
            if not self.file_left:
                if not self.tail:
                    if buf.__sizeof__() > _RELEASE_ABOVE:
                        self.buf = bytearray()  # release a large buffer between requests
                    return True
                self.buf, self.tail = self.tail, None
                continue
            count = min(self.file_left, SENDFILE_CHUNK)
            sent = _sendfile_now(self.sock.fileno(), self.file_fd, self.file_off, count)
            if not sent:
                return False
            self.file_off += sent
            self.file_left -= sent
            self.sent_at = self.clock()
            if self.file_left:
                return False  # back to the poller between chunks: other connections get their turn
            self.drop_file()

    def drop_file(self) -> None:
        """Forget the pending file (sent, or the connection is closing)."""
        if self.file_fd >= 0:
            os.close(self.file_fd)
        self.file_fd, self.file_left = -1, 0


def wait_fd(fd: int, events: int, timeout: float) -> bool:
    """Block this (pool) thread until ``fd`` is ready for ``events`` or ``timeout`` expires."""
    p = select.poll()
    p.register(fd, events)
    return bool(p.poll(max(timeout, 0.0) * 1000.0))


def unsent_bytes(sock) -> int:
    """Bytes in the socket's send queue the peer has not acknowledged yet (Linux SIOCOUTQ)."""
    try:
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
    except (OSError, ValueError):
        return 0


def unread_bytes(sock) -> int:
    """Bytes the peer sent that nobody has read yet (Linux SIOCINQ / FIONREAD)."""
    try:
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
    except (OSError, ValueError):
        return 0


def reset_on_close(fd: int) -> None:
    """SO_LINGER 0: close() then resets and drops unsent data (nginx reset_timedout_connection), so a
    reader that timed out does not keep MiBs queued in the kernel's send buffer."""
    sock = socket.socket(fileno=fd)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    finally:
        sock.detach()


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


def _sendfile_all(sock_fd: int, file_fd: int, offset: int, count: int, timeout: float) -> None:
    """os.sendfile until ``count`` bytes went out, waiting at most ``timeout`` for each bit of progress."""
    while count > 0:
        sent = _sendfile_now(sock_fd, file_fd, offset, count)
        offset, count = offset + sent, count - sent
        if count and not sent and not wait_fd(sock_fd, select.POLLOUT, timeout):
            raise TimeoutError("send timeout")
