"""One worker process as the supervisor sees it: fork, the child's side of the fork, exit-status decoding,
and the table of live workers with their message pipes. Called from the supervisor's main thread only.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing.connection
import os
import selectors
import signal
import socket
import stat
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from webcluster.cluster import policy, signals
from webcluster.cluster.policy import ExitReason, WorkerState
from webcluster.worker import ipc
from webcluster.worker.inflight import Inflight

log = logging.getLogger("webcluster.supervisor")

#: ``worker.main.run``'s signature: (cfg, sockets, channel, *, slot, generation, inflight) -> exit code;
#: ``inflight`` is the worker's :class:`worker.inflight.Inflight` records, shared with the supervisor.
WorkerTarget = Callable[..., int]

EXIT_OK = 0
PR_SET_PDEATHSIG = 1  # <sys/prctl.h>


def describe_status(status: int) -> tuple[int | None, int | None, str]:
    """Decode a waitpid status into (exit code, signal number, "exit code 3" / "killed by SIGKILL")."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return None, sig, f"killed by SIG{signals.signal_name(sig)}"
    code = os.waitstatus_to_exitcode(status)
    return code, None, f"exit code {code}"


class WorkerProcess:
    """A forked worker: pid, slot, generation, its message pipe and state (parent side)."""

    def __init__(
        self,
        pid: int,
        slot: int,
        generation: int,
        reader: Any,
        started_at: float,
        inflight: Inflight | None = None,
    ) -> None:
        self.pid = pid
        self.slot = slot
        self.generation = generation
        self.reader: multiprocessing.connection.Connection | None = reader
        self.inflight = inflight  # the requests its threads run, shared memory (worker/inflight.py)
        self.started_at = started_at  # time.monotonic() at fork
        self.state = WorkerState.BOOTING
        self.last_heartbeat: float | None = None  # monotonic time of the last message
        self.ready_at: float | None = None  # when it said "ready"
        self.stop_requested_at: float | None = None
        self.retire_reason: str | None = None
        self.boot_error: str | None = None
        self.stop_reason: ExitReason | None = None  # we asked it to stop (TERM/QUIT): not a failure
        self.kill_detail: str | None = None  # we SIGKILLed it (hung): a failure

    @property
    def expected_exit(self) -> bool:
        """We asked it to stop and did not have to kill it."""
        return self.stop_reason is not None and self.kill_detail is None

    def exit_reason(self) -> ExitReason:
        """The exits-by-reason key once it is reaped."""
        return policy.exit_reason(
            asked=self.stop_reason,
            killed=self.kill_detail is not None,
            boot_error=bool(self.boot_error),
        )

    def view(self) -> policy.WorkerView:
        """The immutable view :func:`cluster.policy.decide` works on."""
        return policy.WorkerView(
            pid=self.pid,
            slot=self.slot,
            generation=self.generation,
            state=self.state,
            started_at=self.started_at,
            last_heartbeat=self.last_heartbeat,
            stop_requested_at=self.stop_requested_at,
            retire_reason=self.retire_reason,
        )

    def __repr__(self) -> str:
        return f"<worker pid={self.pid} slot={self.slot} gen={self.generation} {self.state.value}>"

    @classmethod
    def spawn(
        cls,
        target: WorkerTarget,
        cfg: Any,
        sockets: Sequence[socket.socket],
        *,
        slot: int,
        generation: int,
        close_in_child: Callable[[], Iterable[int]] = tuple,
    ) -> WorkerProcess:
        """Fork; the child runs ``target`` and never returns. ``close_in_child`` lists fds to close."""
        reader, writer = multiprocessing.Pipe(duplex=False)
        inflight = Inflight.create(getattr(cfg, "threads", 1))
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # or buffered text would be written twice, once per process
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, ends in os._exit
            child = (cfg, sockets, writer, reader, slot, generation, inflight)
            _child(target, child, close_in_child, parent)
        writer.close()
        return cls(pid, slot, generation, reader, time.monotonic(), inflight)

    def signal(self, sig: int) -> bool:
        """Send ``sig``; False when the process is already gone."""
        try:
            os.kill(self.pid, sig)
            return True
        except ProcessLookupError:
            return False

    def read_messages(self) -> tuple[list[dict[str, Any]], bool]:
        """(decoded messages waiting on the pipe, True at EOF). A malformed message is logged and
        skipped: each frame arrives whole (one atomic pipe write, see worker/ipc.py), so the next
        one is intact. Blocks only if a frame is half-written, which ipc's size limit rules out."""
        out: list[dict[str, Any]] = []
        try:
            while self.reader is not None and self.reader.poll():
                data = self.reader.recv_bytes(ipc.MAX_MESSAGE_BYTES)
                try:
                    out.append(ipc.decode(data))
                except ValueError as exc:
                    log.warning("worker %d sent a bad message (%s); ignored", self.pid, exc)
        except (EOFError, OSError):  # EOF, or a frame over the size limit: the stream is unusable
            return out, True
        return out, False

    def running_requests(self) -> list[str]:
        """What its threads were running (call once it is reaped): "GET /x (running 1.2s)"."""
        if self.inflight is None:
            return []
        now = time.monotonic()
        return [f"{r.request} (running {now - r.started:.2f}s)" for r in self.inflight.running()]

    def release(self) -> None:
        """Close the pipe and unmap the request records (reaped, or in another worker's child)."""
        self.close_pipe()
        if self.inflight is not None:
            self.inflight.close()
            self.inflight = None

    def close_pipe(self) -> None:
        """Close the read end of the message pipe."""
        if self.reader is not None:
            self.reader.close()
            self.reader = None


class WorkerTable:
    """The live workers by pid, their message pipes in one selector, and reaping (main thread)."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self._workers: dict[int, WorkerProcess] = {}
        self._others: dict[int, int] = {}  # exit status of other children, by pid

    def __len__(self) -> int:
        return len(self._workers)

    def __iter__(self) -> Iterator[WorkerProcess]:
        return iter(list(self._workers.values()))

    def __getitem__(self, pid: int) -> WorkerProcess:
        return self._workers[pid]

    def pids(self) -> list[int]:
        return sorted(self._workers)

    def watch(self, fd: int) -> None:
        """Also wake :meth:`wait` when ``fd`` is readable (the signal queue)."""
        self.selector.register(fd, selectors.EVENT_READ, None)

    def unwatch(self, fd: int) -> None:
        """Stop watching ``fd`` (before closing it)."""
        self.selector.unregister(fd)

    def exit_status(self, pid: int) -> str:
        """How ``pid``, a child that is not a worker (an upgrade's new supervisor), exited."""
        status = self._others.pop(pid, None)
        if status is None:
            try:
                _, status = os.waitpid(pid, 0)  # it closed its pipe: exiting, if not gone already
            except ChildProcessError:
                return "exit status unknown"
        return describe_status(status)[2]

    def spawn(
        self,
        target: WorkerTarget,
        cfg: Any,
        sockets: Sequence[socket.socket],
        *,
        slot: int,
        generation: int,
        close_in_child: Callable[[], Iterable[int]],
    ) -> WorkerProcess:
        """Fork a worker; in the child, the selector and the other workers' pipes are closed too."""

        def child_cleanup() -> Iterable[int]:
            self.selector.close()
            for other in self._workers.values():
                other.release()
            return close_in_child()

        w = WorkerProcess.spawn(
            target, cfg, sockets, slot=slot, generation=generation, close_in_child=child_cleanup
        )
        self._workers[w.pid] = w
        self.selector.register(w.reader, selectors.EVENT_READ, w)
        return w

    def wait(self, timeout: float) -> tuple[bool, list[WorkerProcess]]:
        """Block until a watched fd or a worker pipe is readable, or ``timeout``:
        (a watched fd woke us, workers with messages)."""
        woken, ready = False, []
        for key, _ in self.selector.select(timeout):
            if key.data is None:
                woken = True
            else:
                ready.append(key.data)
        return woken, ready

    def read(self, w: WorkerProcess) -> list[dict[str, Any]]:
        """Messages waiting on ``w``'s pipe; at EOF the pipe is closed."""
        messages, eof = w.read_messages()
        if eof:
            self._close_pipe(w)
        return messages

    def reap(self) -> list[tuple[WorkerProcess, int, list[dict[str, Any]]]]:
        """waitpid(-1, WNOHANG) until none is left: (worker, status, its last messages) per exit."""
        out = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return out
            if pid == 0:
                return out
            w = self._workers.pop(pid, None)
            if w is None:
                self._others[pid] = status
            else:  # a boot_error sent just before exiting is still in the pipe
                messages = self.read(w) if w.reader is not None else []
                self._close_pipe(w)  # even if a child of the worker keeps it open
                out.append((w, status, messages))

    def _close_pipe(self, w: WorkerProcess) -> None:
        if w.reader is not None:
            self.selector.unregister(w.reader)
            w.close_pipe()

    def close(self) -> None:
        self.selector.close()


def _child(
    target: WorkerTarget,
    child: tuple[Any, Sequence[socket.socket], Any, Any, int, int, Inflight],
    close_in_child: Callable[[], Iterable[int]],
    parent: int,
) -> None:  # pragma: no cover - child process
    cfg, sockets, writer, reader, slot, generation, inflight = child
    code = 1
    try:
        signals.reset_in_child()
        _die_with_parent(parent)
        reader.close()
        keep = {0, 1, 2, writer.fileno(), *(s.fileno() for s in sockets)}
        close_fds(close_in_child(), keep)
        code = target(
            cfg, list(sockets), writer, slot=slot, generation=generation, inflight=inflight
        )
        code = code if isinstance(code, int) else EXIT_OK
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


def _die_with_parent(parent: int) -> None:  # pragma: no cover - child process
    """Linux: get SIGTERM (a graceful stop) if the supervisor dies, so orphans do not keep serving
    on, and holding, the port. Elsewhere orphans run until stopped by hand."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the supervisor died before prctl: same outcome
        os.kill(os.getpid(), signal.SIGTERM)


def close_fds(fds: Iterable[int], keep: set[int]) -> None:
    """Close ``fds`` and every other inherited socket not in ``keep`` (the child's side of fork).

    A worker must not hold the other slots' listeners (their accept queues would outlive the supervisor),
    the admin socket, or the read ends of the other workers' pipes. Non-socket files (log files) stay.
    """
    for fd in set(fds) - keep:
        try:
            os.close(fd)
        except OSError:
            pass
    try:
        candidates = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        candidates = list(range(3, 1024))
    for fd in candidates:
        if fd in keep:
            continue
        try:
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                os.close(fd)
        except OSError:
            pass
