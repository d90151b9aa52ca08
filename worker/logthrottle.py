"""Rate limit for a log line that a persistent condition would repeat many times a second.

``LogThrottle.hit(now)`` is called on every occurrence; it answers how many occurrences the next log
line should report (the first one at once, then at most one line per ``interval`` covering all those
seen since the previous line), or None to stay quiet. Pure: the caller passes ``now``.
"""

from __future__ import annotations

import math


class LogThrottle:
    """At most one log line per ``interval`` seconds for one repeating condition."""

    __slots__ = ("interval", "_next", "_count")

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._next = -math.inf
        self._count = 0

    def hit(self, now: float) -> int | None:
        """Count one occurrence; return the number to report now, or None (counted for later)."""
        self._count += 1
        if now < self._next:
            return None
        count, self._count = self._count, 0
        self._next = now + self.interval
        return count
