"""The worker's listening sockets, on the loop thread: accept in batches, pause and resume.

Accepting pauses at ``--max-connections`` (the rest wait in the kernel queue, where another slot may take
them) and for a moment after EMFILE/ENFILE; it resumes when a connection closes or the pause is over, and
stops for good when the worker drains.
"""

from __future__ import annotations

import _socket
import errno
import logging
import socket
from collections.abc import Callable

from webcluster.worker.logthrottle import LogThrottle
from webcluster.worker.poller import READ, Poller

log = logging.getLogger("webcluster.error")

# Accepts per readiness event, so one busy listener cannot starve the rest of the loop.
ACCEPT_BATCH = 64
ACCEPT_RETRY = 0.1  # seconds to pause accepting after EMFILE/ENFILE
# Out of fds, a worker retries accept() 10 times a second: one log line per this many seconds, with a count.
ACCEPT_ERROR_LOG_INTERVAL = 10.0
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class Listener:
    """A listening socket plus what every connection accepted on it shares."""

    __slots__ = ("sock", "tcp", "local", "_kind")

    def __init__(self, sock: socket.socket, defer_accept: int = 0) -> None:
        self.sock = sock
        # socket.accept() converts family and type to enums on every call; accept() below does not.
        self._kind = (int(sock.family), int(sock.type), sock.proto)
        self.tcp = sock.family in (socket.AF_INET, socket.AF_INET6)
        local = sock.getsockname()[:2] if self.tcp else ("", 0)
        # A specific bind address is every connection's local address: no getsockname per accept.
        self.local = None if self.tcp and local[0] in ("0.0.0.0", "::") else local
        if self.tcp:
            # Linux copies TCP_NODELAY to accepted sockets: one setsockopt here, none per connection.
            # Nagle would hold a response's last segment until the client's delayed ACK (~40 ms).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # Set by every worker, 0 included: a reload may change it on the sockets the supervisor keeps.
            # Without it most new connections are accepted before their request is sent (64-81 % under
            # wrk -c64 on loopback): a recv that finds nothing, an epoll entry and a later event each,
            # 15 % more instructions for a `Connection: close` request (BENCHMARKS.md, fourteenth pass).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, defer_accept)
            # Delayed ACKs from the first segment (HAProxy's HTTP listeners do the same; accepted sockets
            # inherit it): a complete request's ACK then rides with its response instead of costing a
            # segment of its own. The loop turns quick ACKs back on for a connection it waits on for more
            # of a request (``Conn.want_more``), so a client with Nagle on is not held ~40 ms for it.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0)
        sock.setblocking(False)

    def accept(self) -> tuple[socket.socket, object]:
        """One connection from the queue (BlockingIOError when it is empty), as ``socket.accept()``
        without its per-call enum conversions and timeout checks (the loop makes it non-blocking).

        The socket is the C type ``_socket.socket``, not its Python subclass ``socket.socket``, whose
        ``__init__`` and ``close`` are Python functions that only keep ``makefile``'s reference count:
        a connection never uses ``makefile``, and making and closing one costs half the instructions
        (3.5 k against 7.2 k)."""
        fd, addr = self.sock._accept()
        return _socket.socket(*self._kind, fd), addr  # type: ignore[return-value]

    def addresses(self, sock: socket.socket, addr) -> tuple[tuple[str, int], tuple[str, int]]:
        """(remote, local) of a connection accepted here; ("", 0) for unix sockets."""
        if not self.tcp:
            return ("", 0), ("", 0)
        return addr[:2], self.local or sock.getsockname()[:2]


class Acceptor:
    """Accepts on every listener and hands each new socket to ``add``; pauses when ``live()`` is full."""

    def __init__(
        self,
        sockets: list[socket.socket],
        poller: Poller,
        add: Callable[[socket.socket, object, Listener], None],
        live: Callable[[], int],
        max_connections: int,
        clock: Callable[[], float],
        count: Callable[[str], None] | None = None,
        defer_accept: int = 0,
    ) -> None:
        self.listeners = [Listener(s, defer_accept) for s in sockets]
        self._poller = poller
        self._add = add
        self._live = live
        self._max = max_connections
        self._clock = clock
        self._count = count  # the worker's event counters (accept_errors)
        self._errors = LogThrottle(ACCEPT_ERROR_LOG_INTERVAL)
        self.accepting = False
        self.stopped = False
        self.saturated = False  # every pool thread stuck (worker.watchdog): accept nothing
        self.resume_at: float | None = None  # end of an EMFILE pause

    def start(self) -> None:
        if self.accepting or self.stopped or self.saturated:
            return
        self.accepting = True
        self.resume_at = None
        for lst in self.listeners:
            self._poller.register(lst.sock.fileno(), READ, lst)

    def pause(self) -> None:
        if not self.accepting:
            return
        self.accepting = False
        for lst in self.listeners:
            self._poller.unregister(lst.sock.fileno())

    def stop(self) -> None:
        """No more accepts, ever (graceful stop): drop our references to the listening sockets. While
        the supervisor lives it holds its own, so the queue waits for the slot's next worker; when we
        were orphaned (PR_SET_PDEATHSIG) ours were the last, so new clients are refused at once instead
        of waiting in a backlog nobody accepts from, and the port is free for a restart."""
        self.stopped = True
        self.resume_at = None
        self.pause()
        for lst in self.listeners:
            lst.sock.close()

    def saturate(self, saturated: bool) -> None:
        """Pause accepting while every pool thread is stuck; resume when one is free again."""
        self.saturated = saturated
        if saturated:
            self.pause()
        elif self.resume_at is None and self._live() < self._max:
            self.start()

    def slot_freed(self) -> None:
        """A connection closed: resume if accepting was paused only because we were full."""
        if not self.accepting and not self.stopped and self.resume_at is None:
            if self._live() < self._max:
                self.start()

    def on_timer(self, now: float) -> None:
        """Loop timer pass: end an EMFILE pause that is over."""
        if self.resume_at is not None and now >= self.resume_at:
            self.resume_at = None
            if self._live() < self._max:
                self.start()

    def accept(self, lst: Listener) -> None:
        """Accept up to ACCEPT_BATCH connections from a readable listener."""
        for _ in range(ACCEPT_BATCH):
            if self._live() >= self._max:
                self.pause()  # backpressure: leave the rest in the kernel queue
                return
            try:
                sock, addr = lst.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:
                    self._on_error(exc)
                    self.pause()
                    self.resume_at = self._clock() + ACCEPT_RETRY
                    return
                continue  # ECONNABORTED and friends: that one client is gone
            self._add(sock, addr, lst)

    def _on_error(self, exc: OSError) -> None:
        """Count every failure; log the first at once, then one line per interval with the count."""
        if self._count is not None:
            self._count("accept_errors")
        count = self._errors.hit(self._clock())
        if count is not None:
            log.warning(
                "accept failed %d time(s) (%s); pausing accepts for %.1fs after each; "
                "next report in %.0fs at the earliest (accept_errors in /stats)",
                count, exc.strerror or exc, ACCEPT_RETRY, ACCEPT_ERROR_LOG_INTERVAL,
            )  # fmt: skip
