"""Deadline queues for connection timeouts. Every call takes ``now``; nothing here reads a clock.

Each queue holds one kind of timeout with a fixed duration (keep-alive idle, head read, send), so entries are
appended in deadline order and expiry pops from the left: O(1) per operation, no heap. Entries are
invalidated lazily: a connection bumps its ``timer_token`` whenever its state changes, and a popped entry whose
token no longer matches is ignored.
"""

from __future__ import annotations

from collections import deque
from typing import Any


class DeadlineQueue:
    """FIFO of (deadline, obj, token) for one fixed timeout duration."""

    __slots__ = ("duration", "_q")

    def __init__(self, duration: float) -> None:
        self.duration = duration
        self._q: deque[tuple[float, Any, int]] = deque()

    def add(self, obj: Any, token: int, now: float) -> None:
        self._q.append((now + self.duration, obj, token))

    def next_deadline(self) -> float | None:
        return self._q[0][0] if self._q else None

    def expired(self, now: float) -> list[tuple[Any, int]]:
        """Pop and return every (obj, token) whose deadline is <= now (the caller checks tokens)."""
        q = self._q
        out = []
        while q and q[0][0] <= now:
            _, obj, token = q.popleft()
            out.append((obj, token))
        return out

    def __len__(self) -> int:
        return len(self._q)
