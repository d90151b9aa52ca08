"""Access log in Apache's "combined" format, the one every log tool reads:

    %h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-agent}i"
    127.0.0.1 - - [29/Nov/2026:13:55:36 +0000] "GET /index.html HTTP/1.1" 200 2326 "-" "curl/8.5.0"

Client-controlled fields are escaped like Apache does (``"``, ``\\`` and non-printable bytes as ``\\xHH``),
so a request cannot forge log lines.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("webcluster.error")

_ESCAPES = {i: f"\\x{i:02x}" for i in [*range(0x20), *range(0x7F, 0x100)]}
_ESCAPES[ord('"')] = '\\"'
_ESCAPES[ord("\\")] = "\\\\"


def escape(value: str) -> str:
    """Escape a client-supplied string for a quoted log field."""
    return value.translate(_ESCAPES)


def format_line(
    *,
    host: str,
    when: float,
    request: str,
    status: int,
    size: int,
    referer: str | None,
    user_agent: str | None,
) -> str:
    """One combined-format line (without the newline); ``request`` is the request line or "-"."""
    ts = time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(when))
    return (
        f'{host or "-"} - - [{ts}] "{escape(request)}" {status} {size or "-"} '
        f'"{escape(referer) if referer else "-"}" "{escape(user_agent) if user_agent else "-"}"'
    )


# A refused request line can be as long as the head limit; the log keeps its start.
MAX_LOGGED_REQUEST_LINE = 2048


def refused_head(raw: bytes) -> tuple[str, str | None, str | None]:
    """(request line, referer, user agent) from the raw bytes of a head the parser refused (413 on a
    too-large Content-Length, 400 on Transfer-Encoding with Content-Length...), for the access log only.

    Lenient on purpose, unlike the parser: whatever complete lines arrived are shown, escaped by
    ``format_line``, so an operator sees who sent what. The request line is "-" until its CRLF came.
    """
    end = raw.find(b"\r\n\r\n")
    lines = (raw if end < 0 else raw[:end]).decode("latin-1").split("\r\n")
    if len(lines) < 2 and end < 0:
        return "-", None, None  # not even the request line is complete
    first = lines[0]
    if len(first) > MAX_LOGGED_REQUEST_LINE:
        first = first[:MAX_LOGGED_REQUEST_LINE] + "..."
    fields: dict[str, str] = {}
    for line in lines[1 : len(lines) if end >= 0 else -1]:  # without end: the last may be cut
        name, sep, value = line.partition(":")
        name = name.lower()
        if sep and name in ("referer", "user-agent") and name not in fields:
            fields[name] = value.strip(" \t")
    return first or "-", fields.get("referer"), fields.get("user-agent")


class AccessLog:
    """Writes combined-format lines to a file or stdout (``-``); ``reopen()`` after logrotate (USR1).

    Each line is one ``os.write`` on an ``O_APPEND`` descriptor: no user-space buffer, so a line either
    reaches the kernel or is dropped whole, lines from several workers never interleave, and closing
    never has a buffer left to flush (so a full disk cannot turn a worker's exit into a traceback).
    A failed write (``ENOSPC``, ``EIO``...) never fails the request: the line is dropped and counted
    through ``on_error``, and the first failure is logged once (again after each reopen).
    """

    def __init__(
        self,
        path: str,
        on_error: Callable[[], None] | None = None,
        line_format: Callable[[Any], str] | None = None,
    ) -> None:
        self.path = path
        self.on_error = on_error
        self.line_format = (
            line_format  # --access-log-format compiled (worker.logformat); None: combined
        )
        self.errors = 0  # lines that could not be written
        self._lock = threading.Lock()
        self._warned = False
        self._fd = self._open()

    def _open(self) -> int:
        if self.path == "-":
            return sys.stdout.fileno()
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def write(self, line: str) -> None:
        data = (line + "\n").encode("utf-8", "replace")
        with self._lock:
            try:
                while data:
                    data = data[os.write(self._fd, data) :]
            except OSError as exc:
                self._failed(exc)

    def _failed(self, exc: OSError) -> None:
        """A full disk must not take requests down with it: count, warn once, keep serving."""
        self.errors += 1
        if self.on_error is not None:
            self.on_error()
        if not self._warned:
            self._warned = True
            log.warning(
                "access log %s: write failed (%s); lines are dropped and counted "
                "(access_log_errors in /stats)",
                self.path,
                exc.strerror or exc,
            )

    def reopen(self) -> None:
        with self._lock:
            if self.path == "-":
                return
            try:
                fd = self._open()
            except OSError as exc:
                log.warning(
                    "access log %s: cannot reopen (%s); keeping the old file", self.path, exc
                )
                return
            old, self._fd, self._warned = self._fd, fd, False
            _close_quietly(old)

    def close(self) -> None:
        with self._lock:
            if self.path != "-":
                _close_quietly(self._fd)


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass  # nothing is buffered: a failed close loses nothing
