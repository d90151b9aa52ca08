"""The requests a worker's pool threads are running, in memory the supervisor shares.

The supervisor maps a small anonymous ``MAP_SHARED`` region per worker before it forks (:meth:`Inflight.
create`); the worker's pool threads write into it and the supervisor reads it when the worker dies, so
the log names the request that was running when a worker crashed or was killed. Nothing crosses a pipe and nothing is locked on the request path: each pool
thread owns one fixed-size record and writes it with one ``pack_into`` when a request starts and one
byte store when it ends. The supervisor reads only after the worker is gone, so it never sees a record
half-written by a live thread; a thread that died mid-write leaves a record that decodes to garbage, at
worst, which is shown with replacement characters.

Record layout (little-endian): ``state`` u8 (0 never used, 1 running, 2 finished), ``started`` f64
(``time.monotonic()``, one clock for every process on Linux), ``length`` u16, then ``length`` bytes of
``"METHOD TARGET"`` (latin-1, truncated to ``TEXT_BYTES``).
"""

from __future__ import annotations

import itertools
import mmap
import struct
import threading
import time
from dataclasses import dataclass

TEXT_BYTES = 245
_RECORD = struct.Struct(f"<BdH{TEXT_BYTES}s")  # 256 bytes
RECORD_BYTES = _RECORD.size
_FREE, _RUNNING, _FINISHED = 0, 1, 2


@dataclass(frozen=True)
class Running:
    """One request that was running: ``"GET /path"`` and its ``time.monotonic()`` start."""

    request: str
    started: float


class Inflight:
    """``threads`` records in a shared mapping; any pool thread calls :meth:`begin` / :meth:`end`."""

    def __init__(self, buffer: mmap.mmap, threads: int) -> None:
        self._buf = buffer
        self.threads = threads
        self._local = threading.local()
        self._next = itertools.count()  # next() on a count is atomic under the GIL

    @classmethod
    def create(cls, threads: int) -> Inflight:
        """A zeroed anonymous shared mapping (the supervisor, before fork: the child inherits it)."""
        threads = max(1, threads)
        return cls(mmap.mmap(-1, threads * RECORD_BYTES), threads)

    def _offset(self) -> int:
        offset = getattr(self._local, "offset", None)
        if offset is None:
            index = next(self._next)  # first request on this thread: claim the next record
            offset = index * RECORD_BYTES if index < self.threads else -1
            self._local.offset = offset
        return offset

    def begin(self, method: str, target: str) -> None:
        """This thread starts ``method target`` (pool thread, once per request)."""
        offset = self._offset()
        if offset >= 0:
            text = f"{method} {target}".encode("latin-1", "replace")[:TEXT_BYTES]
            _RECORD.pack_into(self._buf, offset, _RUNNING, time.monotonic(), len(text), text)

    def end(self) -> None:
        """This thread's request is over (pool thread)."""
        offset = self._offset()
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

    def close(self) -> None:
        """Unmap (each process that holds the mapping closes its own)."""
        self._buf.close()
