"""What each pool thread is running: one record per thread, the one per-request bookkeeping step.

Two readers share it. The supervisor maps a small anonymous ``MAP_SHARED`` region per worker before it
forks (:meth:`Inflight.create`) and reads it when the worker dies, so the log names the request that was
running when a worker crashed or was killed. In the worker, the watchdog thread (--request-timeout,
worker/watchdog.py) reads it to find requests running too long (:meth:`Inflight.by_thread`).

Nothing crosses a pipe and nothing is locked on the request path: each pool thread owns one fixed-size
record and writes it with one ``pack_into`` when a request starts and one byte store when it ends. Each is
a single C call made under the GIL, so the watchdog, another thread of the same process, never reads a
record half-written. The supervisor reads only after the worker is gone; a thread that died mid-write
leaves a record that decodes to garbage, at worst, which is shown with replacement characters.

Record layout (little-endian): ``state`` u8 (0 never used, 1 running, 2 finished), ``started`` f64
(``time.monotonic()``, one clock for every process on Linux), ``length`` u32 (of the whole text: a
reader takes at most ``TEXT_BYTES`` of it), then ``"METHOD TARGET"`` (latin-1, truncated to ``TEXT_BYTES``).
"""

from __future__ import annotations

import itertools
import mmap
import struct
import threading
from dataclasses import dataclass

TEXT_BYTES = 243
_RECORD = struct.Struct(f"<BdI{TEXT_BYTES}s")  # 256 bytes
RECORD_BYTES = _RECORD.size
_FREE, _RUNNING, _FINISHED = 0, 1, 2
# The threads that take turns holding the poller run requests too (worker.leader): a record each.
LEADER_SEATS = 2


@dataclass(frozen=True)
class Running:
    """One request that was running: ``"GET /path"`` and its ``time.monotonic()`` start."""

    request: str
    started: float

    @property
    def method(self) -> str:
        return self.request.partition(" ")[0]

    @property
    def target(self) -> str:
        return self.request.partition(" ")[2]


class Inflight:
    """``threads`` records in a shared mapping; any pool thread calls :meth:`begin` / :meth:`end`."""

    def __init__(self, buffer: mmap.mmap, threads: int) -> None:
        self._buf = buffer
        self.threads = threads
        self._local = threading.local()
        self._next = itertools.count()  # next() on a count is atomic under the GIL
        self._idents = [0] * threads  # the thread that owns each record (in the worker only)

    @classmethod
    def create(cls, threads: int) -> Inflight:
        """A zeroed anonymous shared mapping (the supervisor, before fork: the child inherits it), with
        a record for each of ``threads`` pool threads and each of the loop's ``LEADER_SEATS``."""
        threads = max(1, threads) + LEADER_SEATS
        return cls(mmap.mmap(-1, threads * RECORD_BYTES), threads)

    def _offset(self) -> int:
        try:
            return self._local.offset
        except AttributeError:
            return self._claim()

    def _claim(self) -> int:
        """This thread's first request: claim the next record (-1: none left)."""
        index = next(self._next)
        offset = index * RECORD_BYTES if index < self.threads else -1
        if offset >= 0:
            self._idents[index] = threading.get_ident()
        self._local.offset = offset
        return offset

    def begin(self, method: str, target: str, started: float) -> int:
        """This thread starts ``method target`` at ``started`` (``time.monotonic()``; pool thread, once
        per request). Returns the thread's record, for ``end`` (-1: none, more threads than records)."""
        try:  # _offset, without the call: once per request
            offset = self._local.offset
        except AttributeError:
            offset = self._claim()
        if offset >= 0:
            text = f"{method} {target}".encode("latin-1", "replace")
            # The "243s" field truncates a longer text itself (readers take min(length, TEXT_BYTES));
            # u32 holds any length a request line can have
            _RECORD.pack_into(self._buf, offset, _RUNNING, started, len(text), text)
        return offset

    def end(self, record: int | None = None) -> None:
        """This thread's request is over (pool thread); ``record``: what ``begin`` returned, which
        saves looking the thread's record up again."""
        offset = self._offset() if record is None else record
        if offset >= 0:
            self._buf[offset] = _FINISHED

    def running(self) -> list[Running]:
        """Requests begun and not ended, oldest first (the supervisor, after the worker died)."""
        out = []
        for i in range(self.threads):
            state, started, length, text = _RECORD.unpack_from(self._buf, i * RECORD_BYTES)
            if state == _RUNNING:
                out.append(Running(text[: min(length, TEXT_BYTES)].decode("latin-1"), started))
        return sorted(out, key=lambda r: r.started)

    def by_thread(self) -> list[tuple[int, tuple[float, Running]]]:
        """(thread ident, (start, request)) of each request running now (the worker's watchdog)."""
        out = []
        for index, ident in enumerate(self._idents):
            if ident:
                state, started, length, text = _RECORD.unpack_from(self._buf, index * RECORD_BYTES)
                if state == _RUNNING:
                    request = text[: min(length, TEXT_BYTES)].decode("latin-1")
                    out.append((ident, (started, Running(request, started))))
        return out

    def close(self) -> None:
        """Unmap (each process that holds the mapping closes its own)."""
        self._buf.close()
