"""A fixed pool of threads fed by one queue.

The pool never grows: ``size`` threads are started once. The queue holds at most one entry per connection
(a connection is queued only while the loop has handed it off), so its length is bounded by
``--max-connections``. The threads are daemons: they end with the worker process.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("webcluster.error")


class ThreadPool:
    """``submit(fn, arg)`` runs ``fn(arg)`` on one of ``size`` threads. Exceptions are logged, never lost."""

    def __init__(self, size: int, name: str = "webcluster-worker") -> None:
        if size < 1:
            raise ValueError("thread pool size must be >= 1")
        self.size = size
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._busy = 0
        self._busy_lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True) for i in range(size)
        ]
        for t in self._threads:
            t.start()

    @property
    def busy(self) -> int:
        """Threads currently running a task."""
        return self._busy

    @property
    def queued(self) -> int:
        """Tasks waiting for a thread."""
        return self._queue.qsize()

    def submit(self, fn: Callable[[Any], None], arg: Any) -> None:
        self._queue.put((fn, arg))

    def _run(self) -> None:
        get = self._queue.get
        lock = self._busy_lock
        while True:
            fn, arg = get()
            with lock:
                self._busy += 1
            try:
                fn(arg)
            except BaseException:  # a task must never kill its thread: the pool is fixed-size
                log.exception("unhandled error in pool thread")
            finally:
                with lock:
                    self._busy -= 1
