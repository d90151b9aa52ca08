"""The poller: an epoll set owned by the loop thread, plus a thread-safe ``call_soon``.

Only the loop thread registers, unregisters or polls (docs/ARCHITECTURE.md, Threads); the one exception
is ``worker.rearm``, where a pool thread re-arms (EPOLL_CTL_MOD) the EPOLLONESHOT fd it is handing back. Pool
threads hand work back with ``call_soon(fn, *args)``: the callback is appended to a deque and the loop is
woken through an eventfd. The eventfd is written only when no wake-up is pending, so a burst of hand-backs
costs one syscall.
"""

from __future__ import annotations

import os
import select
from collections import deque
from collections.abc import Callable
from typing import Any

READ = select.EPOLLIN | select.EPOLLRDHUP
WRITE = select.EPOLLOUT
# EPOLLONESHOT: an fd fires once and is then disarmed until modify() re-arms it. Dispatching a
# connection to a pool thread therefore needs no syscall, and the thread can never race the loop
# for the same readiness event. (An idle keep-alive connection whose requests the loop serves itself is
# armed level-triggered instead, and disarmed before a thread holds it: ``Loop._after_flush``.)
ONESHOT = select.EPOLLONESHOT


class Poller:
    """epoll + wake-up fd + call_soon queue. Methods other than ``call_soon``/``wake`` are loop-thread only."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._objects: dict[int, Any] = {}
        # Read by the loop (``Loop.step``: anything for ``run_calls``?), changed only by the methods below
        self.calls: deque[tuple[Callable[..., None], tuple[Any, ...]]] = deque()
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.wake_pending = False  # the eventfd was written and run_calls has not run since
        self._epoll.register(self._wake_fd, select.EPOLLIN)
        # modify(fd, events): re-arm a registered fd (once per keep-alive request). The epoll's own
        # bound method, so the call goes straight to C rather than through a Python wrapper.
        self.modify = self._epoll.modify

    # --- loop thread only -------------------------------------------------------------------
    def register(self, fd: int, events: int, obj: Any) -> None:
        self._objects[fd] = obj
        self._epoll.register(fd, events)

    def unregister(self, fd: int) -> None:
        if self._objects.pop(fd, None) is not None:
            try:
                self._epoll.unregister(fd)
            except (OSError, ValueError):
                pass  # already closed: the kernel dropped it from the set

    def forget(self, fd: int) -> None:
        """Drop ``fd``, which the caller closes right after: closing a socket's last descriptor takes it
        out of the epoll set, so a connection's close costs no EPOLL_CTL_DEL (nginx's close path skips
        it the same way). Should a forked child still hold the descriptor, the set keeps the entry until
        the child closes it; an armed entry can then fire once more, under an fd number we may have
        given to a new connection, which reads nothing and is re-armed."""
        self._objects.pop(fd, None)

    def __len__(self) -> int:
        return len(self._objects)

    def poll(self, timeout: float | None, run_calls: bool = True) -> list[tuple[Any, int]]:
        """Wait for events (timeout in seconds, None = forever); run queued callbacks first-in first-out
        (unless ``run_calls`` is False: the caller runs ``run_calls`` itself before it handles the events,
        as the loop does, so a callback that gives the poller away leaves the events to the next owner)."""
        if self.calls:
            timeout = 0
        try:
            ready = self._epoll.poll(-1 if timeout is None else timeout if timeout > 0.0 else 0.0)
        except InterruptedError:  # pragma: no cover - PEP 475 retries, kept for safety
            ready = []
        out = []
        objects = self._objects
        for fd, events in ready:
            if fd == self._wake_fd:
                self._drain_wake()
                continue
            obj = objects.get(fd)
            if obj is not None:
                out.append((obj, events))
        if run_calls:
            self.run_calls()
        return out

    def run_calls(self) -> None:
        # Clear the flag before draining: a call appended after this point re-writes the eventfd.
        self.wake_pending = False
        calls = self.calls
        while calls:
            fn, args = calls.popleft()
            fn(*args)

    def _drain_wake(self) -> None:
        try:
            os.eventfd_read(self._wake_fd)
        except BlockingIOError:
            pass

    # --- any thread -----------------------------------------------------------------------
    def call_soon(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop thread soon. Safe from any thread and from signal handlers."""
        self.calls.append((fn, args))
        self.wake()

    def defer(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop thread at its next pass, without waking it: for a caller that is
        about to make the loop wake anyway (``worker.rearm``: it arms an fd right after)."""
        self.calls.append((fn, args))

    def wake(self) -> None:
        if not self.wake_pending:
            self.wake_pending = True
            try:
                os.eventfd_write(self._wake_fd, 1)
            except (BlockingIOError, OSError):
                pass
