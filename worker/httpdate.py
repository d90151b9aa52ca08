"""IMF-fixdate for the ``Date`` header (RFC 9110 §5.6.7), formatted once per second.

Like nginx's ``ngx_cached_http_time``: one process-wide cache, replaced atomically (a tuple swap under the
GIL), so every pool thread reads it without a lock.
"""

from __future__ import annotations

import time
from email.utils import formatdate


class _DateCache:
    __slots__ = ("entry",)

    def __init__(self) -> None:
        self.entry: tuple[int, bytes] = (0, b"")

    def get(self, now: float | None = None) -> bytes:
        second = int(time.time() if now is None else now)
        entry = self.entry
        if entry[0] != second:
            entry = (second, formatdate(second, usegmt=True).encode("ascii"))
            self.entry = entry
        return entry[1]


http_date = _DateCache().get
