"""Deadline queues for connection timeouts. Every call takes ``now``; nothing here reads a clock.

Each queue holds one kind of timeout with a fixed duration (keep-alive idle, head read, send), so entries are
appended in deadline order and expiry pops from the left: O(1) per operation, no heap. Entries are
invalidated lazily: a connection bumps its ``token`` whenever its state changes, and a popped entry whose
token no longer matches is ignored. Entries hold a connection's *serial number*, not the connection: a
reference would keep every closed connection (parser, buffers, socket) alive until its deadline, which at
thousands of connections per second meant ~100k dead objects per worker and long GC pauses.
"""

from __future__ import annotations

from array import array

# Expired entries are cut from the front of the arrays in batches: once at least this many, and at
# least half of what is stored, are dead (amortised O(1) per entry, at most ~2x the live entries held).
_COMPACT_AT = 1024


class DeadlineQueue:
    """FIFO of (deadline, key, token) for one fixed timeout duration.

    Kept in three flat arrays rather than a deque of tuples: a queue holds every entry until its deadline,
    including the ones a later transition voided, so under keep-alive load it holds about requests/s x
    duration entries. As tuples of Python floats and ints each costs several small objects; here it costs
    24 bytes, and the memory goes back in one piece instead of fragmenting the small-object heap.
    """

    __slots__ = ("duration", "_deadlines", "_keys", "_tokens", "_head")

    def __init__(self, duration: float) -> None:
        self.duration = duration
        self._deadlines = array("d")
        self._keys = array("q")
        self._tokens = array("q")
        self._head = 0  # entries before this index were popped

    def add(self, key: int, token: int, now: float) -> float:
        """Schedule ``key`` (a connection serial) at ``now + duration``, valid while ``token`` holds;
        returns that deadline."""
        deadline = now + self.duration
        self._deadlines.append(deadline)
        self._keys.append(key)
        self._tokens.append(token)
        return deadline

    def next_deadline(self) -> float | None:
        head = self._head
        return self._deadlines[head] if head < len(self._deadlines) else None

    def expired(self, now: float) -> list[tuple[int, int]]:
        """Pop and return every (key, token) whose deadline is <= now (the caller checks tokens)."""
        deadlines = self._deadlines
        head = end = self._head
        stored = len(deadlines)
        while end < stored and deadlines[end] <= now:
            end += 1
        if end == head:
            return []
        out = list(zip(self._keys[head:end], self._tokens[head:end], strict=True))
        if end == stored:
            end = 0
            for a in (deadlines, self._keys, self._tokens):
                del a[:]
        elif end >= _COMPACT_AT and 2 * end >= stored:
            for a in (deadlines, self._keys, self._tokens):
                del a[:end]
            end = 0
        self._head = end
        return out

    def __len__(self) -> int:
        return len(self._deadlines) - self._head
