"""Access log in Apache's "combined" format, the one every log tool reads:

    %h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-agent}i"
    127.0.0.1 - - [29/Nov/2026:13:55:36 +0000] "GET /index.html HTTP/1.1" 200 2326 "-" "curl/8.5.0"

Client-controlled fields are escaped like Apache does (``"``, ``\\`` and non-printable bytes as ``\\xHH``),
so a request cannot forge log lines.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

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


class AccessLog:
    """Writes combined-format lines to a file or stdout (``-``); ``reopen()`` after logrotate (USR1)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stream: TextIO = self._open()

    def _open(self) -> TextIO:
        if self.path == "-":
            return sys.stdout
        return open(self.path, "a", buffering=1, encoding="utf-8", errors="replace")  # noqa: SIM115

    def write(self, line: str) -> None:
        with self._lock:
            try:
                self._stream.write(line + "\n")
                if self.path == "-":
                    self._stream.flush()
            except (OSError, ValueError):
                pass  # a full disk must not take requests down with it

    def reopen(self) -> None:
        with self._lock:
            if self.path != "-":
                old = self._stream
                self._stream = self._open()
                old.close()

    def close(self) -> None:
        with self._lock:
            if self.path != "-":
                self._stream.close()
