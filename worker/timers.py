"""Deadline queues for connection timeouts. Every call takes ``now``; nothing here reads a clock.

Each queue holds one kind of timeout with a fixed duration (keep-alive idle, head read, send), so entries are
appended in deadline order and expiry pops from the left: O(1) per operation, no heap. Entries are
invalidated lazily: a connection bumps its ``token`` whenever its state changes, and a popped entry whose
token no longer matches is ignored. Entries hold a connection's *serial number*, not the connection: a
reference would keep every closed connection (parser, buffers, socket) alive until its deadline, which at
thousands of connections per second meant ~100k dead objects per worker and long GC pauses.
"""

from __future__ import annotations

from collections import deque


class DeadlineQueue:
    """FIFO of (deadline, key, token) for one fixed timeout duration."""

    __slots__ = ("duration", "_q")

    def __init__(self, duration: float) -> None:
        self.duration = duration
        self._q: deque[tuple[float, int, int]] = deque()

    def add(self, key: int, token: int, now: float) -> None:
        """Schedule ``key`` (a connection serial) at ``now + duration``, valid while ``token`` holds."""
        self._q.append((now + self.duration, key, token))

    def next_deadline(self) -> float | None:
        return self._q[0][0] if self._q else None

    def expired(self, now: float) -> list[tuple[int, int]]:
        """Pop and return every (key, token) whose deadline is <= now (the caller checks tokens)."""
        q = self._q
        out = []
        while q and q[0][0] <= now:
            _, obj, token = q.popleft()
            out.append((obj, token))
        return out

    def __len__(self) -> int:
        return len(self._q)
