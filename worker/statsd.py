"""``--statsd-host``: gunicorn's statsd metrics over UDP (the statsd line protocol, stdlib only).

Metric names are gunicorn's, so its dashboards and alerts keep working:

- per request, from the worker's pool thread: ``gunicorn.request.duration`` (timer, ms),
  ``gunicorn.requests`` (counter) and ``gunicorn.request.status.<code>`` (counter), sent together as one
  datagram of three lines (statsd's multi-metric packet), where gunicorn sends three;
- each second, from the supervisor: ``gunicorn.workers`` (gauge, live workers);
- per log record at WARNING or above, in either process: ``gunicorn.log.warning`` / ``.error`` /
  ``.critical``, and ``gunicorn.log.exception`` for an error logged with a traceback.

``--statsd-prefix myapp`` turns ``gunicorn.requests`` into ``myapp.gunicorn.requests`` (gunicorn's rule:
a dot is added). Sending never blocks or fails a request: the socket is non-blocking and connected
once, and a datagram the kernel refuses (no daemon listening, full buffer) is dropped, as UDP would.
"""

from __future__ import annotations

import logging
import socket


class StatsdError(Exception):
    """``--statsd-host`` cannot be used (the name does not resolve); ``str(exc)`` says what to fix."""


def split_address(address: str) -> tuple[str, int]:
    """``"HOST:PORT"`` or ``"[v6]:PORT"`` -> (host, port)."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class Statsd:
    """A connected UDP socket and the metric formats; safe to call from any thread."""

    def __init__(self, address: str, prefix: str = "") -> None:
        host, port = split_address(address)
        try:
            info = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        except OSError as exc:
            raise StatsdError(
                f"--statsd-host {address}: cannot resolve {host!r} ({exc}); give an IP address"
            ) from None
        family, kind, proto, _, target = info
        self.sock = socket.socket(family, kind, proto)
        self.sock.setblocking(False)
        self.sock.connect(target)  # resolves once; sends then skip the address lookup
        self.prefix = prefix if not prefix or prefix.endswith(".") else prefix + "."
        self.sent = 0  # datagrams handed to the kernel
        self.dropped = 0

    def request(self, status: int, duration: float) -> None:
        """One answered request (gunicorn's three per-request metrics)."""
        p = self.prefix
        self._send(
            f"{p}gunicorn.request.duration:{duration * 1000.0:.3f}|ms\n"
            f"{p}gunicorn.requests:1|c|@1.0\n"
            f"{p}gunicorn.request.status.{status}:1|c|@1.0"
        )

    def gauge(self, name: str, value: float) -> None:
        self._send(f"{self.prefix}{name}:{value}|g")

    def increment(self, name: str, value: int = 1) -> None:
        self._send(f"{self.prefix}{name}:{value}|c|@1.0")

    def _send(self, text: str) -> None:
        try:
            self.sock.send(text.encode("ascii", "replace"))
            self.sent += 1
        except OSError:  # ECONNREFUSED from an earlier ICMP, EAGAIN: metrics are best effort
            self.dropped += 1

    def close(self) -> None:
        self.sock.close()


class StatsdLogHandler(logging.Handler):
    """Counts log records at WARNING and above as ``gunicorn.log.<level>`` (gunicorn's names)."""

    def __init__(self, statsd: Statsd) -> None:
        super().__init__(logging.WARNING)
        self.statsd = statsd

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.levelno == logging.ERROR:
            self.statsd.increment("gunicorn.log.exception")
        else:
            self.statsd.increment(f"gunicorn.log.{record.levelname.lower()}")


def install_log_counter(statsd: Statsd | None) -> None:
    """Count the warnings and errors of the server's loggers. On the two loggers everything logs
    under, not on their "webcluster" parent, whose handlers are replaced on reload and USR1."""
    for name in ("webcluster.error", "webcluster.supervisor"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if isinstance(handler, StatsdLogHandler):
                logger.removeHandler(handler)  # after a fork: one counter, on this process's socket
        if statsd is not None:
            logger.addHandler(StatsdLogHandler(statsd))
