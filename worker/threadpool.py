"""A fixed-size pool of threads that park one by one and are woken one at a time.

The pool never grows past ``size`` threads. A thread starts when a task finds every started thread busy, and
then lives as long as the worker (daemon). An idle thread parks on a lock of its own; ``submit`` hands the
task to the thread that parked last (LIFO), so one task wakes exactly one thread, and the threads that just
ran, whose stacks and caches are warm, do the work while the rest sleep. A task that finds every thread busy
waits in a FIFO backlog, which threads drain before they park again.

Why not ``queue.SimpleQueue``: with several getters blocked on it, each ``put`` wakes one of them, and that
one, on taking the item, releases the queue's lock again, which wakes a second getter that finds the queue
empty and goes back to sleep. Two wake-ups per task, each a futex call and a context switch, on every request.

The backlog holds at most one entry per connection (a connection is queued only while the loop has handed
it off), so its length is bounded by ``--max-connections``.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger("webcluster.error")

Task = tuple[Callable[[Any], None], Any]


class _Parked:
    """One pool thread's parking place: a lock it blocks on, and the task it is handed."""

    __slots__ = ("wake", "task")

    def __init__(self) -> None:
        self.wake = threading.Lock()
        self.wake.acquire()  # held: the thread blocks on it until submit releases it
        self.task: Task | None = None


class ThreadPool:
    """``submit(fn, arg)`` runs ``fn(arg)`` on one of at most ``size`` threads. Exceptions are logged."""

    def __init__(self, size: int, name: str = "webcluster-worker") -> None:
        if size < 1:
            raise ValueError("thread pool size must be >= 1")
        self.size = size
        self._name = name
        self._lock = threading.Lock()  # guards _idle, _backlog and _threads together
        self._idle: list[_Parked] = []  # a stack: the last thread to park is the first woken
        self._backlog: deque[Task] = deque()
        self._threads: list[threading.Thread] = []
        # One flag per thread, each written only by its own thread: counting busy threads takes no lock.
        self._running = [0] * size

    @property
    def busy(self) -> int:
        """Threads currently running a task."""
        return sum(self._running)

    @property
    def queued(self) -> int:
        """Tasks waiting for a thread."""
        return len(self._backlog)

    @property
    def started(self) -> int:
        """Threads started so far (at most ``size``)."""
        return len(self._threads)

    def submit(self, fn: Callable[[Any], None], arg: Any) -> None:
        with self._lock:
            if self._idle:
                parked = self._idle.pop()
                parked.task = (fn, arg)
                parked.wake.release()
                return
            self._backlog.append((fn, arg))
            if len(self._threads) < self.size:
                self._start()

    def _start(self) -> None:
        index = len(self._threads)
        thread = threading.Thread(
            target=self._run, args=(index,), name=f"{self._name}-{index}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def _next(self, parked: _Parked) -> Task:
        """The next task: from the backlog, else park until ``submit`` hands one over."""
        with self._lock:
            if self._backlog:
                return self._backlog.popleft()
            self._idle.append(parked)
        parked.wake.acquire()
        task = parked.task
        parked.task = None
        assert task is not None
        return task

    def _run(self, index: int) -> None:
        parked = _Parked()
        running = self._running
        while True:
            fn, arg = self._next(parked)
            running[index] = 1
            try:
                fn(arg)
            except BaseException:  # a task must never kill its thread: the pool is fixed-size
                log.exception("unhandled error in pool thread")
            finally:
                running[index] = 0
                fn = arg = None  # a parked thread must not keep its last connection alive
