"""The admin endpoint: /metrics (Prometheus, rendered by cluster/metrics.py), /stats (JSON), /healthz and
/ (the live dashboard).

Runs in the supervisor on its own socket and its own threads, never on the public port: an accept thread
blocked on a selector (listening socket + a wake-up socketpair for ``stop()``, no polling), and one
short-lived thread per connection, at most ``max_connections`` at once (it is loopback ops traffic;
extra connections are closed at once). Connections have a socket timeout, so a silent client frees its
thread after ``timeout`` seconds.

Requests are routed by ``route()``, a pure function from (method, path) to an ``AdminResponse``, so all
content is testable without sockets. Parsing and serialisation are the project's sans-IO HTTP/1.1 core
(``worker.http.protocol.H1Connection``), driven here by plain blocking socket calls.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import selectors
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from webcluster.cluster.addresses import split_address
from webcluster.cluster.dashboard import PAGE
from webcluster.cluster.metrics import METRICS_TYPE, render_metrics
from webcluster.cluster.snapshot import StatsSnapshot
from webcluster.worker.handlers.forwarded import ForwardedPolicy
from webcluster.worker.http.errors import RemoteProtocolError
from webcluster.worker.http.events import NEED_DATA, PAUSED, ConnectionClosed, EndOfMessage, Request
from webcluster.worker.http.protocol import H1Connection, Limits
from webcluster.worker.httpdate import http_date

log = logging.getLogger(__name__)

# The page must load nothing from elsewhere; the policy makes the browser enforce it.
DASHBOARD_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'"
)


class SnapshotSource(Protocol):
    """What the admin server needs from the aggregator."""

    def snapshot(self) -> StatsSnapshot: ...


class Health(enum.Enum):
    """The supervisor's side of /healthz (the workers' saturation is the other side). The value is the
    text /healthz answers with."""

    STARTING = "starting: no worker is ready yet"
    SERVING = "ok"
    NO_WORKER = "unavailable: no worker is ready"  # they were; all died or hung since
    DRAINING = "draining"  # --drain-delay or stopping

    def next(self, *, leaving: bool, ready: bool) -> Health:
        """The health after this one, given whether the cluster is leaving (draining or stopping)
        and whether any worker is ready."""
        if leaving:
            return Health.DRAINING
        if ready:
            return Health.SERVING
        return Health.STARTING if self is Health.STARTING else Health.NO_WORKER


@dataclass(frozen=True, slots=True)
class AdminResponse:
    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


def route(
    method: str,
    target: str,
    source: SnapshotSource,
    health: Callable[[], Health],
    *,
    allowed: bool = True,
) -> AdminResponse:
    """Answer one request. GET and HEAD only (HEAD gets GET's headers; the transport drops the body).

    ``allowed``: the peer is in ``--admin-allow-ips``; others get only /healthz (a load balancer's
    health check may come from anywhere) and a 403 for everything else."""
    if method not in ("GET", "HEAD"):
        return AdminResponse(405, "text/plain", b"method not allowed\n", (("Allow", "GET, HEAD"),))
    path = target.split("?", 1)[0]
    if path != "/healthz" and not allowed:
        return AdminResponse(403, "text/plain; charset=utf-8", b"forbidden (--admin-allow-ips)\n")
    if path == "/healthz":
        return healthz(source.snapshot(), health())
    if path == "/metrics":
        return AdminResponse(200, METRICS_TYPE, render_metrics(source.snapshot()).encode())
    if path == "/stats":
        return AdminResponse(200, "application/json", source.snapshot().to_json().encode())
    if path in ("/", "/index.html"):
        csp = (("Content-Security-Policy", DASHBOARD_CSP),)
        return AdminResponse(200, "text/html; charset=utf-8", PAGE.encode(), csp)
    return AdminResponse(404, "text/plain; charset=utf-8", b"not found\n")


def healthz(snap: StatsSnapshot, health: Health) -> AdminResponse:
    """200 while the cluster serves; 503 until a worker is ready, while it drains (a load balancer then
    stops sending first) or when every serving worker's pool is saturated by requests stuck past
    --request-timeout. Saturated workers are named in both cases, e.g. ``saturated: worker 4242 (slot 0)``."""
    text = "text/plain; charset=utf-8"
    if health is not Health.SERVING:
        return AdminResponse(503, text, f"{health.value}\n".encode())
    live = [w for w in snap.workers if w.state in ("running", "retiring")]
    stuck = [w for w in live if w.gauges.saturated]
    if not stuck:
        return AdminResponse(200, text, b"ok\n")
    names = ", ".join(f"worker {w.pid} (slot {w.slot})" for w in stuck)
    if len(stuck) == len(live):
        return AdminResponse(503, text, f"saturated: {names}\n".encode())
    return AdminResponse(200, text, f"ok; saturated: {names}\n".encode())


# --- transport --------------------------------------------------------------------------------


class AdminServer:
    """Serves ``route()`` on ``address`` (``HOST:PORT``, ``[v6]:PORT`` or ``unix:/path``).

    ``start()`` binds (raising OSError on failure, for the caller to report) and starts the accept
    thread; ``stop()`` wakes it, closes the listening socket and open connections, and joins.
    """

    def __init__(
        self,
        address: str,
        aggregator: SnapshotSource,
        health: Callable[[], Health],
        *,
        max_connections: int = 16,
        timeout: float = 10.0,
        allow_ips: Iterable[str] = ("127.0.0.1", "::1"),
    ) -> None:
        self._spec = address
        self._allow = ForwardedPolicy(allow_ips)  # the same address/network matching
        self.source = aggregator
        self.health = health
        self.timeout = timeout
        self._slots = threading.BoundedSemaphore(max_connections)
        self._sock: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def address(self) -> tuple[str, int] | str:
        """The bound address: (host, port) for TCP (the real port when 0 was asked), a path for unix."""
        if self._sock is None:
            raise RuntimeError("AdminServer not started")
        name = self._sock.getsockname()
        return name if isinstance(name, str) else (name[0], name[1])

    @property
    def listening_socket(self) -> socket.socket | None:
        """The bound socket (handed to the new supervisor of a binary upgrade)."""
        return self._sock

    def start(self, sock: socket.socket | None = None) -> None:
        """Bind (or serve ``sock``, an inherited listening socket) and start the accept thread."""
        if sock is not None:
            sock.setblocking(False)
        self._sock = sock if sock is not None else _listen(self._spec)
        self._thread = threading.Thread(target=self._serve, name="admin-accept", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._wake_w.send(b"x")
        self._thread.join()
        self._thread = None
        with self._lock:
            for conn in self._conns:
                _shutdown(conn)  # handler threads see EOF/error and end
        for sock in (self._sock, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        if self._spec.startswith("unix:"):
            with contextlib.suppress(OSError):
                os.unlink(self._spec[5:])  # the socket file we created

    # --- accept thread ---

    def _serve(self) -> None:
        assert self._sock is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self._sock, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            while True:
                for key, _ in sel.select():
                    if key.fileobj is self._wake_r:
                        return
                    self._accept()

    def _accept(self) -> None:
        assert self._sock is not None
        try:
            conn, peer = self._sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        if not self._slots.acquire(blocking=False):
            conn.close()  # over the connection cap: refuse rather than queue threads
            return
        conn.setblocking(True)
        conn.settimeout(self.timeout)
        with self._lock:
            self._conns.add(conn)
        allowed = self._allow.trusts(peer[0] if isinstance(peer, tuple) else "")  # unix: trusted
        threading.Thread(
            target=self._handle, args=(conn, allowed), name="admin-conn", daemon=True
        ).start()

    # --- connection threads ---

    def _handle(self, conn: socket.socket, allowed: bool) -> None:
        try:
            _converse(conn, self.source, self.health, allowed)
        except OSError:
            pass  # timeouts, resets, shutdown by stop(): nothing to answer
        except Exception:
            log.exception("admin request failed")
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()
            self._slots.release()


_ADMIN_LIMITS = Limits(max_body=65536)  # the admin endpoint takes no bodies worth the name
_HEADERS = [("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff")]


def _converse(
    conn: socket.socket, source: SnapshotSource, health: Callable[[], Health], allowed: bool
) -> None:
    """Serve one connection with the project's sans-IO HTTP/1.1 core until close, error or timeout."""
    h1 = H1Connection(_ADMIN_LIMITS, server=b"webcluster-admin")
    request: Request | None = None
    try:
        while True:
            event = h1.next_event()
            if event is NEED_DATA:
                h1.receive_data(conn.recv(65536))  # b"" = EOF; a silent client times out (OSError)
            elif isinstance(event, Request):
                request = event  # any body is read and ignored below, keeping the stream in sync
            elif isinstance(event, EndOfMessage) and request is not None:
                resp = route(request.method, request.target, source, health, allowed=allowed)
                conn.sendall(_respond(h1, resp))
                if not h1.keep_alive:
                    return
                h1.start_next_cycle()
            elif isinstance(event, ConnectionClosed) or event is PAUSED:
                return
    except (
        RemoteProtocolError
    ) as exc:  # the one place a protocol error is answered (400/413/431...)
        conn.sendall(h1.error_response(exc, date=http_date()))


def _respond(h1: H1Connection, resp: AdminResponse) -> bytes:
    headers = [
        ("Content-Type", resp.content_type),
        # the GET length, also for HEAD (RFC 9110 §9.3.2); the core drops HEAD bodies
        ("Content-Length", str(len(resp.body))),
        *_HEADERS,
        *resp.headers,
    ]
    if resp.status == 405:
        headers.append(("Connection", "close"))  # an unread POST body must not become a request
    head = h1.send_response(resp.status, headers, date=http_date())
    return head + h1.send_data(resp.body) + h1.send_end()


def _listen(spec: str) -> socket.socket:
    """Bind and listen on ``spec``; the socket is non-blocking for the accept loop."""
    address = split_address(spec, allow_fd=False)
    if address.kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: object = address.path
    else:
        family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        target = (address.host, address.port)
    try:
        sock.bind(target)
        sock.listen(64)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def _shutdown(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
