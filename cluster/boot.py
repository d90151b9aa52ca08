"""Start-up of the supervisor: logging, sockets, pid file, privileges, the admin endpoint, the banner.

Everything here runs once in the supervisor's main thread before the first fork (logging also again on
reload and USR1). :class:`cluster.arbiter.Arbiter` calls :func:`open_sockets`, :func:`start_admin` and
:func:`banner` in that order, so a start-up error is reported before anything is printed as listening.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from webcluster.cluster.listeners import BindError, Listeners, raise_nofile_limit
from webcluster.cluster.process import WorkerTarget
from webcluster.cluster.steering import tcp_migrate_req_enabled
from webcluster.worker.version import version

if TYPE_CHECKING:
    from webcluster.cluster.admin import Health

try:  # stats and admin are separate subsystems; the supervisor works without them
    from webcluster.cluster.admin import AdminServer
    from webcluster.cluster.stats import StatsAggregator
except ImportError:  # pragma: no cover
    AdminServer = StatsAggregator = None  # type: ignore[assignment,misc]

log = logging.getLogger("webcluster.supervisor")

# Descriptors the supervisor holds besides the per-slot ones: signal pipe, epoll, admin socket, log
# files, the admin's connections; per slot: its listening sockets and a worker's pipe (two in a reload).
FD_RESERVE = 64
FD_PER_SLOT = 2


class StartupError(Exception):
    """A setting the server cannot start with, found before the banner; ``str()`` names the fix."""


LOG_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"  # gunicorn's line format
LOG_DATEFMT = "%Y-%m-%d %H:%M:%S %z"


def open_sockets(
    cfg: Any, target: WorkerTarget | None, handoff: Any = None
) -> tuple[Listeners, WorkerTarget | None]:
    """umask, descriptor limit, listening sockets, pid file, then the privilege drop.

    ``handoff``: the sockets of a binary upgrade (:mod:`cluster.upgrade`), adopted instead of binding;
    the pid file is then written once the new workers are ready, not here.
    Returns the listeners and the worker target (imported here when privileges are dropped).
    Raises :class:`BindError` or :class:`StartupError` with a one-line message."""
    if cfg.umask is not None:
        os.umask(cfg.umask)
    check_fd_limit(cfg.procs, len(cfg.bind), raise_nofile_limit())
    uid, gid = resolve_ids(cfg.user, cfg.group)
    if handoff is not None:
        from webcluster.cluster.upgrade import inherit_listeners

        listeners = inherit_listeners(handoff, cfg.backlog, uid)
    else:
        listeners = Listeners.open(
            cfg.bind,
            slots=cfg.procs,
            backlog=cfg.backlog,
            reuse_port=cfg.reuse_port,
            owner_uid=uid,  # so that TTIN can still add a slot's socket after the switch
        )
    if cfg.pid and handoff is None:
        write_pid_file(cfg.pid)
    if uid is not None or gid is not None:
        # Import the worker code while still privileged: after the drop, an interpreter or
        # checkout readable only by root (say under /root) would fail at the first fork instead.
        # The same holds for what is otherwise imported on first use (psutil for the stats, ssl).
        target = target or default_target()
        import_lazy_modules(tls=bool(cfg.certfile))
        listeners.chown_unix(uid if uid is not None else -1, gid if gid is not None else -1)
        drop_privileges(uid, gid)
    return listeners, target


def check_fd_limit(procs: int, binds: int, limit: int) -> None:
    """Refuse a --procs that the descriptor limit cannot hold, before any socket is opened."""
    need = FD_RESERVE + binds + procs * (binds + FD_PER_SLOT)
    if need > limit:
        raise StartupError(
            f"setting procs: {procs} workers need about {need} file descriptors in the supervisor, "
            f"more than its limit of {limit} (RLIMIT_NOFILE); lower --procs, or raise the limit "
            "(ulimit -n, or LimitNOFILE= in a systemd unit)"
        )


def check_tls(cfg: Any) -> None:
    """Load the certificate and key as a worker will (after the privilege drop, so as --user), so a
    bad file stops the server before the banner says it listens on https://."""
    if not cfg.certfile:
        return
    from webcluster.worker.main import tls_from
    from webcluster.worker.tlscommon import TLSConfigError

    try:
        tls_from(cfg)
    except TLSConfigError as exc:
        raise StartupError(str(exc)) from None


def start_admin(
    cfg: Any, generation: int, healthy: Callable[[], Health], sock: Any = None
) -> tuple[Any, Any, str]:
    """(stats aggregator, admin server, its URL for the banner); (None, None, "off") when disabled.

    ``sock``: the admin socket inherited in a binary upgrade. Raises :class:`BindError` when the
    admin address is taken."""
    if cfg.admin == "off" or StatsAggregator is None:
        if sock is not None:
            sock.close()
        return None, None, "off"
    stats = StatsAggregator()
    stats.set_generation(generation)
    admin = AdminServer(cfg.admin, stats, healthy, allow_ips=cfg.admin_allow_ips)
    try:
        admin.start(sock)
    except OSError as exc:
        raise BindError(
            f"admin address {cfg.admin} is unavailable ({exc.strerror or exc}); "
            "stop the other server or pass --admin ADDR (or --admin off)"
        ) from None
    address = admin.address
    if isinstance(address, str):
        return stats, admin, f"unix:{address}"
    host = f"[{address[0]}]" if ":" in address[0] else address[0]
    return stats, admin, f"http://{host}:{address[1]}"


def banner(cfg: Any, listeners: Listeners, workers: int, admin_url: str) -> str:
    """The start line users copy the address from (tests read the port from it)."""
    urls = listeners.urls()
    if cfg.certfile:  # TLS is on every bind: say so where users copy the address from
        urls = [u.replace("http://", "https://", 1) for u in urls]
    if listeners.per_slot and not tcp_migrate_req_enabled():
        log.debug("net.ipv4.tcp_migrate_req=0: a removed slot is drained before its socket closes")
    threads = f"{plural(workers, 'worker')} x {plural(cfg.threads, 'thread')}"
    return f"webcluster {version()} listening on {', '.join(urls)} ({threads}, admin {admin_url})"


def plural(n: int, noun: str) -> str:
    """``1 worker``, ``2 workers``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def root_path_hint(cfg: Any) -> tuple[int, str] | None:
    """(log level, line) telling a user whose app is mounted under ``--root-path`` about its static files.

    Frameworks prefix the URLs they generate with SCRIPT_NAME (Django's relative STATIC_URL, Flask's
    ``url_for("static")``), so the browser asks for ``/app/static/...``: a mount outside the root path
    is never reached by those links."""
    root = cfg.root_path
    if not root or not cfg.app:
        return None
    outside = [prefix for prefix, _ in cfg.static if not (prefix + "/").startswith(root + "/")]
    if outside:
        return logging.WARNING, (
            f"--root-path {root}: the app's links to static files start with {root}/ but "
            f"--static mounts {', '.join(outside)} outside it; mount them as e.g. "
            f"--static {root}{outside[0]}=DIR"
        )
    if not cfg.static:
        return logging.INFO, (
            f"--root-path {root}: static files the app links to are under {root}/ "
            f"(Django's STATIC_URL, Flask's url_for); serve them with --static {root}/static=DIR"
        )
    return None


def default_target() -> WorkerTarget:
    """``worker.main.run``, imported on first use (config errors need no server code)."""
    from webcluster.worker.main import run

    return run


def prefork(target: WorkerTarget, cfg: Any) -> None:
    """Before forking a real worker: build what workers share (the TLS context and its ticket key)."""
    if target is default_target():
        from webcluster.worker.main import prefork as worker_prefork

        worker_prefork(cfg)


def setup_logging(cfg: Any) -> None:
    """The "webcluster" logger (workers log under it too): gunicorn's line format, to cfg.error_log.

    Called again on reload and on USR1, which reopens the file (logrotate)."""
    root = logging.getLogger("webcluster")
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    if cfg.error_log in (None, "", "-"):
        handler = logging.StreamHandler(sys.stderr)
    else:
        handler = logging.FileHandler(cfg.error_log)
    handler.setFormatter(logging.Formatter(LOG_FORMAT, LOG_DATEFMT))
    root.addHandler(handler)
    root.setLevel(cfg.log_level.upper())
    root.propagate = False


def write_pid_file(path: str) -> None:
    """Write our pid to ``path`` atomically (a reader never sees a partial file)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(tmp, path)


def remove_pid_file(path: str) -> None:
    """Remove ``path`` if it still names this process."""
    try:
        with open(path) as f:
            if f.read().strip() == str(os.getpid()):
                os.unlink(path)
    except OSError:
        pass


def resolve_ids(user: str | None, group: str | None) -> tuple[int | None, int | None]:
    """(uid, gid) for --user/--group given as names or numbers; a user implies its primary group."""
    uid = gid = None
    if user:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        uid, gid = entry.pw_uid, entry.pw_gid
    if group:
        gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    return uid, gid


def import_lazy_modules(*, tls: bool) -> None:
    """Import now the modules the supervisor and its workers otherwise import on first use."""
    import difflib  # noqa: F401 - cluster.config, "did you mean" for a misspelt setting at a reload

    import psutil  # noqa: F401 - cluster.stats, at the first sample

    if tls:
        import webcluster.worker.tls  # noqa: F401 - ssl, in the supervisor's TLS check and in workers


def drop_privileges(uid: int | None, gid: int | None) -> None:
    """setgid/setuid after binding (ports below 1024 need root only to bind)."""
    if gid is not None and gid != os.getgid():
        os.setgroups([gid])
        os.setgid(gid)
    if uid is not None and uid != os.getuid():
        if gid is None:
            os.setgroups([])
        os.setuid(uid)
