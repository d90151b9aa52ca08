"""The supervisor's signal queue: handlers only enqueue, the main loop acts (gunicorn's discipline).

A handler does two things: append the signal number to a deque and (through ``signal.set_wakeup_fd``) let
the C-level handler write a byte to a non-blocking pipe. The main loop waits on :meth:`SignalQueue.fileno`
together with the worker pipes, then calls :meth:`SignalQueue.drain` and dispatches ``handle_<name>``.
Nothing else runs in signal context: no logging, no locks, no I/O beyond that byte.
"""

from __future__ import annotations

import collections
import os
import signal
from types import FrameType

#: The signals the supervisor handles, in the order of the README's signal table.
HANDLED: tuple[signal.Signals, ...] = (
    signal.SIGHUP,
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGCHLD,
)


def signal_name(signum: int) -> str:
    """ "TERM" for SIGTERM (the name used in handle_<name> and in log lines)."""
    try:
        return signal.Signals(signum).name.removeprefix("SIG")
    except ValueError:
        return str(signum)


class SignalQueue:
    """Queue of received signals plus a wake-up descriptor for selectors (main thread only)."""

    def __init__(self, signals: tuple[signal.Signals, ...] = HANDLED) -> None:
        self._signals = signals
        self._queue: collections.deque[int] = collections.deque()
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        self._previous: dict[int, object] = {}
        self._previous_wakeup: int | None = None

    def fileno(self) -> int:
        """Readable when at least one signal arrived since the last :meth:`drain`."""
        return self._read_fd

    def fds(self) -> tuple[int, int]:
        """Both pipe ends (a forked worker closes them)."""
        return self._read_fd, self._write_fd

    def install(self) -> None:
        """Install the handlers and the wake-up fd; must run in the main thread."""
        self._previous_wakeup = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        for signum in self._signals:
            self._previous[signum] = signal.signal(signum, self._handler)

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        # Signal context: append only (deque.append is atomic); the wake-up byte is written by CPython.
        self._queue.append(signum)

    def drain(self) -> list[int]:
        """Signals received since the last call, oldest first; empties the wake-up pipe."""
        try:
            while os.read(self._read_fd, 4096):
                pass
        except BlockingIOError:
            pass
        out = []
        while self._queue:
            out.append(self._queue.popleft())
        return out

    def restore(self) -> None:
        """Put back the previous handlers and wake-up fd (main thread)."""
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)  # type: ignore[arg-type]
        self._previous.clear()
        if self._previous_wakeup is not None:
            signal.set_wakeup_fd(self._previous_wakeup)
            self._previous_wakeup = None

    def close(self) -> None:
        """Restore and close the pipe."""
        self.restore()
        for fd in (self._read_fd, self._write_fd):
            try:
                os.close(fd)
            except OSError:
                pass


def reset_in_child(signals: tuple[signal.Signals, ...] = HANDLED) -> None:
    """In a freshly forked worker: default dispositions and no wake-up fd (the worker installs its own)."""
    signal.set_wakeup_fd(-1)
    for signum in signals:
        signal.signal(signum, signal.SIG_DFL)
