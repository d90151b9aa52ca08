"""Many idle keep-alive connections: open them, hold them, probe with fresh clients, then reuse them.

``hold_idle(port, n, hold)`` is the whole experiment, from the client side (one thread + one probe thread):

1. open ``n`` connections (non-blocking, ``CONNECT_WINDOW`` in flight), send one ``GET /`` on each and read
   the answer: the connection is now an idle keep-alive connection in the server's poller;
2. hold them ``hold`` seconds: an epoll set watches every one of them, so a close by the server is seen
   (and timed) as it happens, while a probe thread opens a fresh connection for one request every
   ``1/probe_rate`` s and records its latency;
3. send one more request on every connection still open and count the answers (kept *and* usable).

The age of a connection at its close is measured from the moment its request was *sent*, a lower bound of
the server's own idle start, so "closed before the keep-alive timeout" can never be a false alarm.
Memory and thread figures of the server come from the caller's ``sample`` hook, called before step 1,
after step 1 and at the end of step 2.
"""

from __future__ import annotations

import errno
import resource
import select
import socket
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
CONNECT_WINDOW = 256  # connections being opened at once
OPEN_TIMEOUT = 10.0  # seconds for one connection to be accepted and answered
# After this many timeouts in a row (no success between them) the server has stopped accepting (waitress
# at its connection limit): the rest are not tried and are counted as "not tried".
GIVE_UP_AFTER = 2 * CONNECT_WINDOW


@dataclass
class IdleResult:
    """What ``hold_idle`` saw. Times in seconds, latencies in milliseconds."""

    wanted: int
    opened: int = 0  # answered 200 on the first request: idle keep-alive connections
    failed: dict[str, int] = field(default_factory=dict)  # reason -> count (refused, timeout, ...)
    open_seconds: float = 0.0  # time to open and answer all of them
    hold_s: float = 0.0
    closed_ages: list[float] = field(
        default_factory=list
    )  # age at close, for closes during the hold
    open_at_end: int = 0
    reused_ok: int = 0  # answered a second request after the hold
    probe_ms: list[float] = field(default_factory=list)
    probe_failures: int = 0
    samples: dict[str, Any] = field(default_factory=dict)  # the caller's sample() results by phase

    def probe_percentile(self, q: float) -> float | None:
        if not self.probe_ms:
            return None
        if len(self.probe_ms) == 1:
            return self.probe_ms[0]
        return statistics.quantiles(self.probe_ms, n=100, method="inclusive")[round(q) - 1]


def raise_nofile(need: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE toward ``need`` (up to the hard limit); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def response_complete(buf: bytes) -> bool:
    """True once ``buf`` holds a whole response with a Content-Length body (or none)."""
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return False
    length = 0
    for line in buf[:head_end].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return len(buf) - head_end - 4 >= length


class _Opener:
    """Step 1: a small epoll client that opens connections and completes one request on each."""

    def __init__(self, port: int, result: IdleResult) -> None:
        self.port = port
        self.result = result
        self.ep = select.epoll()
        self.pending: dict[int, tuple[socket.socket, float, bytearray]] = {}
        self.idle: list[tuple[socket.socket, float]] = []  # (socket, time the request was sent)
        self.timeouts_in_a_row = 0

    def run(self, n: int) -> list[tuple[socket.socket, float]]:
        started = 0
        while started < n or self.pending:
            if self.timeouts_in_a_row >= GIVE_UP_AFTER and started < n:
                self.result.failed["not tried"] = n - started
                started = n
            while started < n and len(self.pending) < CONNECT_WINDOW:
                started += 1
                self._start()
            for fd, events in self.ep.poll(0.05):
                self._on_event(fd, events)
            self._expire(time.monotonic())
        self.ep.close()
        return self.idle

    def _fail(self, reason: str) -> None:
        self.result.failed[reason] = self.result.failed.get(reason, 0) + 1

    def _start(self) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        err = s.connect_ex(("127.0.0.1", self.port))
        if err not in (0, errno.EINPROGRESS):
            s.close()
            self._fail(errno.errorcode.get(err, str(err)))
            return
        self.pending[s.fileno()] = (s, time.monotonic(), bytearray())
        self.ep.register(s.fileno(), select.EPOLLOUT)

    def _on_event(self, fd: int, events: int) -> None:
        s, t0, buf = self.pending[fd]
        if events & select.EPOLLOUT:  # connected (or failed): send the request once
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self._drop(fd, errno.errorcode.get(err, str(err)))
                return
            # The time is taken before the send: a lower bound of when the server starts its idle
            # timer even if this thread is preempted right after the send (a loaded machine).
            t_sent = time.monotonic()
            s.send(REQUEST)  # 31 bytes into an empty socket buffer: never partial
            self.pending[fd] = (s, t_sent, buf)
            self.ep.modify(fd, select.EPOLLIN)
            return
        try:
            data = s.recv(65536)
        except OSError as exc:
            self._drop(fd, errno.errorcode.get(exc.errno or 0, "recv error"))
            return
        if not data:
            self._drop(fd, "closed before answering")
            return
        buf += data
        if response_complete(bytes(buf)):
            self.ep.unregister(fd)
            del self.pending[fd]
            self.timeouts_in_a_row = 0
            if buf.startswith(b"HTTP/1.1 200"):
                self.idle.append((s, t0))
            else:
                s.close()
                self._fail("status " + bytes(buf[9:12]).decode("latin-1"))

    def _drop(self, fd: int, reason: str) -> None:
        s, _, _ = self.pending.pop(fd)
        self.ep.unregister(fd)
        s.close()
        self._fail(reason)

    def _expire(self, now: float) -> None:
        for fd, (_, t0, _) in list(self.pending.items()):
            if now - t0 > OPEN_TIMEOUT:
                self.timeouts_in_a_row += 1
                self._drop(fd, "timeout")


def _probe_loop(port: int, rate: float, stop: threading.Event, result: IdleResult) -> None:
    """Fresh clients during the hold: connect, one request, read the answer, close."""
    interval = 1.0 / rate
    next_at = time.monotonic()
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
                c.sendall(REQUEST)
                buf = b""
                while not response_complete(buf):
                    chunk = c.recv(65536)
                    if not chunk:
                        raise ConnectionError("closed")
                    buf += chunk
            if buf.startswith(b"HTTP/1.1 200"):
                result.probe_ms.append((time.monotonic() - t0) * 1000.0)
            else:
                result.probe_failures += 1
        except OSError:
            result.probe_failures += 1
        next_at += interval
        stop.wait(max(0.0, next_at - time.monotonic()))


def _watch(idle: list[tuple[socket.socket, float]], hold: float, result: IdleResult) -> list:
    """Step 2: wait ``hold`` seconds, timing every close; return the connections still open."""
    ep = select.epoll()
    by_fd = {s.fileno(): (s, t_sent) for s, t_sent in idle}
    for fd in by_fd:
        ep.register(fd, select.EPOLLIN | select.EPOLLRDHUP)
    end = time.monotonic() + hold
    while (left := end - time.monotonic()) > 0:
        for fd, _ in ep.poll(min(left, 0.5)):
            s, t_sent = by_fd.pop(fd)
            result.closed_ages.append(time.monotonic() - t_sent)
            ep.unregister(fd)
            s.close()
    ep.close()
    return list(by_fd.values())


def _reuse(open_conns: list[tuple[socket.socket, float]], timeout: float = 30.0) -> int:
    """Step 3: one request on every connection still open; count the 200 answers."""
    ep = select.epoll()
    bufs: dict[int, bytearray] = {}
    for s, _ in open_conns:
        try:
            s.send(REQUEST)
        except OSError:
            continue
        bufs[s.fileno()] = bytearray()
        ep.register(s.fileno(), select.EPOLLIN)
    socks = {s.fileno(): s for s, _ in open_conns}
    ok = 0
    deadline = time.monotonic() + timeout
    while bufs and time.monotonic() < deadline:
        for fd, _ in ep.poll(0.5):
            try:
                data = socks[fd].recv(65536)
            except OSError:
                data = b""
            buf = bufs[fd]
            buf += data
            if not data or response_complete(bytes(buf)):
                ok += buf.startswith(b"HTTP/1.1 200") and bool(data)
                ep.unregister(fd)
                del bufs[fd]
    ep.close()
    return ok


def hold_idle(
    port: int,
    n: int,
    hold: float,
    *,
    probe_rate: float = 50.0,
    sample: Callable[[], Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> IdleResult:
    """Run the experiment of the module docstring against 127.0.0.1:``port``."""
    raise_nofile(n + 1024)
    say = progress or (lambda _msg: None)
    result = IdleResult(wanted=n)
    if sample is not None:
        result.samples["before"] = sample()
    t0 = time.monotonic()
    idle = _Opener(port, result).run(n)
    result.open_seconds = time.monotonic() - t0
    result.opened = len(idle)
    say(f"opened {len(idle)}/{n} idle keep-alive connections in {result.open_seconds:.1f}s")
    if sample is not None:
        result.samples["opened"] = sample()
    stop = threading.Event()
    prober = threading.Thread(
        target=_probe_loop, args=(port, probe_rate, stop, result), daemon=True
    )
    prober.start()
    try:
        t_hold = time.monotonic()
        still_open = _watch(idle, hold, result)
        result.hold_s = time.monotonic() - t_hold
        if sample is not None:
            result.samples["held"] = sample()
    finally:
        stop.set()
        prober.join(10)
    result.open_at_end = len(still_open)
    say(
        f"held {hold:g}s: {len(still_open)} still open, {len(result.closed_ages)} closed by the server"
    )
    try:
        result.reused_ok = _reuse(still_open)
    finally:
        for s, _ in still_open:
            s.close()
    return result
