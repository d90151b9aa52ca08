"""Binary upgrade on USR2: the supervisor starts its successor on the same listening sockets.

One signal does it all (nginx and gunicorn need USR2, then WINCH, then QUIT/TERM by hand):

1. The old supervisor forks, and the child executes the command line the server was started with
   (``sys.orig_argv`` from the directory it was started in): new code, new Python, new config. The
   listening sockets, the admin socket and the write end of a "ready" pipe are passed as descriptors
   3, 4, ... with systemd's socket-activation variables (``LISTEN_PID``, ``LISTEN_FDS``,
   ``LISTEN_FDNAMES`` = ``webcluster.g<group>.s<slot>``, ``webcluster.g<group>.shared``,
   ``webcluster.admin``, ``webcluster.ready``), so no address is ever closed or bound twice.
2. The new supervisor adopts those sockets (:func:`take_handoff`, :func:`inherit_listeners`) instead
   of binding, forks its workers, and once all of them are ready writes its pid file and ``ready`` on
   the pipe. Both generations of workers accept from the same sockets meanwhile: nothing is refused.
3. The old supervisor reads ``ready``, tells systemd ``MAINPID=<new>`` and ``READY=1`` (it is still the
   main pid, so the default ``NotifyAccess=main`` accepts it), then stops gracefully and exits.
   If the pipe closes without ``ready`` (the new one failed to boot) or nothing comes within the
   deadline, the old supervisor logs why and keeps serving.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import socket
import stat
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from webcluster.cluster import sdnotify, signals
from webcluster.cluster.listeners import BindAddress, Listeners, _Group
from webcluster.cluster.process import WorkerTable

log = logging.getLogger("webcluster.supervisor")

PREFIX = "webcluster."
READY = b"ready\n"
_START = (os.getcwd(), tuple(sys.orig_argv))  # the command to run again, and where it ran


def remember_command() -> None:
    """Record the directory and command line now, before anything changes directory (--chdir)."""
    global _START
    _START = (os.getcwd(), tuple(sys.orig_argv))


# -- the old supervisor ----------------------------------------------------------------------------


class Upgrade:
    """The successor being started: its pid and the read end of its "ready" pipe."""

    def __init__(self, pid: int, ready_fd: int, deadline: float, timeout: float) -> None:
        self.pid = pid
        self.ready_fd = ready_fd
        self.deadline = deadline
        self.timeout = timeout
        self._buffer = b""

    def fileno(self) -> int:
        return self.ready_fd

    def finish(self, now: float, workers: WorkerTable) -> bool | None:
        """Called by the arbiter's loop: True once the successor is ready (systemd is told its
        pid), False when it failed (logged; the caller keeps serving), None while it boots."""
        done = self.read()
        if done is None and now < self.deadline:
            return None
        workers.unwatch(self.ready_fd)
        self.close()
        if done:
            log.info(
                "upgrade: the new supervisor (pid %d) serves; this one drains and exits", self.pid
            )
            sdnotify.notify(f"MAINPID={self.pid}", "READY=1")
            return True
        if done is None:  # still booting at the deadline: give up on it
            os.kill(self.pid, signal.SIGQUIT)
            why = f"no ready workers within {self.timeout:.0f}s, stopped it"
        else:
            why = f"it exited before its workers were ready ({workers.exit_status(self.pid)})"
        log.error("upgrade failed: the new supervisor (pid %d): %s; still serving", self.pid, why)
        sdnotify.notify("READY=1")  # ends the RELOADING=1 of begin(): we are the service still
        return False

    def read(self) -> bool | None:
        """True once "ready" arrived, False at EOF without it (the successor died), else None."""
        try:
            chunk = os.read(self.ready_fd, 64)
        except BlockingIOError:
            return None
        self._buffer += chunk
        if self._buffer.startswith(READY):
            return True
        return False if not chunk else None

    def close(self) -> None:
        os.close(self.ready_fd)


def begin(
    listeners: Listeners, admin: socket.socket | None, timeout: float, workers: WorkerTable
) -> Upgrade | None:
    """USR2: start the successor and watch its pipe in the arbiter's selector (None if fork fails)."""
    sdnotify.notify(*sdnotify.reloading())
    try:
        up = start(listeners, admin, time.monotonic() + timeout, timeout)
    except OSError as exc:
        log.error("upgrade failed: cannot fork the new supervisor (%s); still serving", exc)
        sdnotify.notify("READY=1")
        return None
    workers.watch(up.fileno())
    log.info("upgrade: started the new supervisor, pid %d", up.pid)
    return up


def start(
    listeners: Listeners, admin: socket.socket | None, deadline: float, timeout: float
) -> Upgrade:
    """Fork and exec the successor with the sockets; returns at once (raises OSError if fork fails)."""
    named = handoff_sockets(listeners, admin)
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child, ends in exec or _exit
        _exec_successor([*named, (PREFIX + "ready", write_fd)])
    os.close(write_fd)
    return Upgrade(pid, read_fd, deadline, timeout)


def handoff_sockets(listeners: Listeners, admin: socket.socket | None) -> list[tuple[str, int]]:
    """(name, fd) of every listening socket; per-slot sockets in the kernel's reuse-port order."""
    named: list[tuple[str, int]] = []
    for g, group in enumerate(listeners._groups):  # noqa: SLF001 - same package, one reader
        if group.shared is not None:
            named.append((f"{PREFIX}g{g}.shared", group.shared.fileno()))
        for slot in group.order:
            named.append((f"{PREFIX}g{g}.s{slot}", group.slots[slot].fileno()))
    if admin is not None:
        named.append((PREFIX + "admin", admin.fileno()))
    return named


def _exec_successor(named: list[tuple[str, int]]) -> None:  # pragma: no cover - child
    try:
        signals.reset_in_child()
        count = len(named)
        base = max(fd for _, fd in named) + count + 3
        moved = [fcntl.fcntl(fd, fcntl.F_DUPFD, base) for _, fd in named]  # out of the way first
        for i, fd in enumerate(moved):
            os.dup2(fd, 3 + i)  # inheritable, as sd_listen_fds(3) hands them over
        os.closerange(3 + count, max(moved) + 1)  # every other inherited socket stays behind
        cwd, argv = _START
        env = dict(os.environ)
        env.update(
            LISTEN_PID=str(os.getpid()),
            LISTEN_FDS=str(count),
            LISTEN_FDNAMES=":".join(name for name, _ in named),
        )
        os.chdir(cwd)
        os.execve(sys.executable, [sys.executable, *argv[1:]], env)
    except BaseException as exc:
        print(f"webcluster: upgrade: cannot start the new supervisor: {exc}", file=sys.stderr)
    os._exit(127)


# -- the new supervisor ----------------------------------------------------------------------------


@dataclass
class Handoff:
    """What the old supervisor passed: listening sockets per bind group, the admin socket, the pipe."""

    groups: list[dict[int | None, socket.socket]] = field(default_factory=list)
    admin: socket.socket | None = None
    ready_fd: int | None = None

    def announce_ready(self) -> None:
        """Tell the old supervisor that every new worker is ready (it then drains and exits)."""
        if self.ready_fd is None:
            return
        try:
            os.write(self.ready_fd, READY)
        except OSError:
            pass  # the old supervisor is gone already: nothing to hand over
        os.close(self.ready_fd)
        self.ready_fd = None


def take_handoff(environ: Mapping[str, str] | None = None) -> Handoff | None:
    """The sockets of a binary upgrade, or None when this is not one (``LISTEN_*`` are then left for
    systemd socket activation). The variables are removed so the workers do not see them."""
    environ = os.environ if environ is None else environ
    names = environ.get("LISTEN_FDNAMES", "").split(":")
    if environ.get("LISTEN_PID") != str(os.getpid()) or not names[0].startswith(PREFIX):
        return None
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(key, None)
    handoff = Handoff()
    for fd, name in enumerate(names, start=3):
        kind = name.removeprefix(PREFIX)
        if kind == "ready":
            os.set_inheritable(fd, False)
            handoff.ready_fd = fd
            continue
        sock = socket.socket(fileno=fd)
        sock.set_inheritable(kind != "admin")
        if kind == "admin":
            handoff.admin = sock
            continue
        group, _, slot = kind[1:].partition(".")
        while len(handoff.groups) <= int(group):
            handoff.groups.append({})
        handoff.groups[int(group)][None if slot == "shared" else int(slot[1:])] = sock
    return handoff


def inherit_listeners(handoff: Handoff, backlog: int, owner_uid: int | None) -> Listeners:
    """A :class:`Listeners` made of the inherited sockets, each group described by its socket."""
    groups = []
    for sockets in handoff.groups:
        first = next(iter(sockets.values()))
        group = _Group(_address(first), family=first.family, sockaddr=first.getsockname())
        if first.family != socket.AF_UNIX:
            group.port = first.getsockname()[1]
        if first.family == socket.AF_INET6:
            group.v6only = bool(first.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY))
        group.shared = sockets.get(None)
        group.order = [slot for slot in sockets if slot is not None]
        group.slots = {slot: sockets[slot] for slot in group.order}
        if group.address.kind == "unix":  # the last supervisor of the line removes the file
            group.unix_inode = _inode(group.address.path)
        groups.append(group)
    return Listeners(groups, backlog, owner_uid)


def keep_unix_files(listeners: Listeners) -> None:
    """The old supervisor, exiting after a handover: close the sockets but leave their files."""
    for group in listeners._groups:  # noqa: SLF001
        group.unix_inode = None


def _address(sock: socket.socket) -> BindAddress:
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return BindAddress(f"unix:{name}", "unix", path=name)
    host = f"[{name[0]}]" if sock.family == socket.AF_INET6 else name[0]
    return BindAddress(f"{host}:{name[1]}", "tcp", host=name[0], port=name[1])


def _inode(path: str) -> int | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino if stat.S_ISSOCK(st.st_mode) else None
