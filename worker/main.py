"""Worker process entry point: build the components from ``Config``, serve, map failures to exit codes.

The supervisor forks and calls ``run()`` in the child. This is the only module of ``worker`` that reads
``Config`` (a type-only import); every component below it takes plain constructor arguments.
"""

from __future__ import annotations

import faulthandler
import gc
import logging
import os
import random
import signal
import socket
import sys
from dataclasses import dataclass, fields
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, TypeVar

from webcluster.worker import allocator
from webcluster.worker.accesslog import AccessLog
from webcluster.worker.handlers.dispatch import AppImportError, build_handler, load_app
from webcluster.worker.handlers.forwarded import ForwardedPolicy
from webcluster.worker.hooks import HooksError, RequestHooks, ServerInfo, WorkerInfo, load_hooks
from webcluster.worker.http.protocol import Limits
from webcluster.worker.inflight import Inflight
from webcluster.worker.ipc import EXIT_BOOT_ERROR
from webcluster.worker.logformat import compile_format
from webcluster.worker.loop import Loop, LoopSettings
from webcluster.worker.runner import Runner
from webcluster.worker.statsd import Statsd, StatsdError, install_log_counter
from webcluster.worker.threadpool import ThreadPool
from webcluster.worker.tlscommon import TLSConfigError
from webcluster.worker.version import server_software
from webcluster.worker.watchdog import PoolWatch, Watchdog

if TYPE_CHECKING:
    from webcluster.cluster.config import Config
    from webcluster.worker.reporter import Reporter
    from webcluster.worker.stats import WorkerStats
    from webcluster.worker.tls import TLSAcceptor

log = logging.getLogger("webcluster.error")

EXIT_OK = 0
T = TypeVar("T")


def from_settings(cls: type[T], cfg: Config, **values: Any) -> T:
    """A component's settings dataclass (``Limits``, ``LoopSettings``) filled from ``cfg``: every field
    named like a setting takes that setting's value, ``values`` override, the rest keep their defaults.
    One name per setting across the layers is what makes this mapping need no list of its own."""
    given = {f.name: getattr(cfg, f.name) for f in fields(cls) if hasattr(cfg, f.name)}
    return cls(**(given | values))


def loop_settings_from(cfg: Config) -> LoopSettings:
    """The loop's settings (with the HTTP core's limits inside) from ``cfg``."""
    return from_settings(
        LoopSettings,
        cfg,
        limits=from_settings(Limits, cfg),
        server_header=cfg.server_header.encode("latin-1"),
    )


def tls_settings(cfg: Config) -> dict:
    """``worker.tls.server_context``'s arguments from the configuration."""
    return dict(
        certfile=cfg.certfile,
        keyfile=cfg.keyfile,
        ca_certs=cfg.ca_certs,
        cert_reqs=cfg.cert_reqs,
        ciphers=cfg.ciphers,
        min_version=cfg.tls_min_version,
    )


def prefork(cfg: Config) -> None:
    """Supervisor side, before each fork: build what workers can share (the TLS context and its
    session-ticket key, see worker/tls.py)."""
    if cfg.certfile:
        from webcluster.worker.tls import share_context  # only with TLS: see worker/tlscommon.py

        share_context(**tls_settings(cfg))


def tls_from(cfg: Config) -> TLSAcceptor | None:
    """The TLS acceptor when ``--certfile`` is set (raises TLSConfigError), else None (plain TCP)."""
    if not cfg.certfile:
        return None
    from webcluster.worker.tls import TLSAcceptor, worker_context  # see worker/tlscommon.py

    return TLSAcceptor(worker_context(**tls_settings(cfg)))


@dataclass(frozen=True)
class Preloaded:
    """The app the supervisor imported before forking (``--preload``), and the ``--app`` it names."""

    spec: str
    app: Any


def _import_path(cfg: Config) -> None:
    if cfg.chdir:
        os.chdir(cfg.chdir)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like gunicorn: "module:app" resolves from the working dir


def preload_app(cfg: Config) -> Preloaded | None:
    """Import the app in the calling process (the supervisor); raises AppImportError."""
    if not cfg.app:
        return None
    _import_path(cfg)
    return Preloaded(cfg.app, load_app(cfg.app))


def load_handler(cfg: Config, multiprocess: bool, preloaded: Preloaded | None = None):
    """Import the app (if any; a preloaded one of the same ``--app`` is reused) and build the
    request handler; raises AppImportError."""
    _import_path(cfg)
    if preloaded is not None and preloaded.spec == cfg.app:
        app = preloaded.app
    else:  # a HUP may name another app: import it here (modules already imported stay as they are)
        app = load_app(cfg.app) if cfg.app else None
    return build_handler(
        app=app,
        root=cfg.root,
        static_mounts=list(cfg.static),
        root_path=cfg.root_path,
        multiprocess=multiprocess,
        forwarded_allow_ips=cfg.forwarded_allow_ips,
        server_software=server_software(),
    )


def run(
    cfg: Config,
    sockets: list[socket.socket],
    channel: Connection | None,
    *,
    slot: int,
    generation: int,
    inflight: Inflight | None = None,
    preloaded: Preloaded | None = None,
) -> int:
    """Serve on ``sockets`` until TERM (graceful) or INT/QUIT (fast); return the process exit code.

    ``inflight``: the records shared with the supervisor, naming each pool thread's running request."""
    from webcluster.worker.reporter import Reporter
    from webcluster.worker.stats import WorkerStats

    # Before any pool thread allocates: the arena cap only binds arenas not yet made.
    log.debug("worker %d: glibc malloc %s", os.getpid(), allocator.tune() or "left as it was")
    stats = WorkerStats()
    loop: Loop | None = None

    watchdog: Watchdog | None = None

    def gauges() -> dict:
        if loop is None:
            return {}
        return {**loop.gauges(), "stuck_threads": watchdog.stuck if watchdog is not None else 0}

    reporter = (
        Reporter(channel, stats, gauges, slot=slot, generation=generation) if channel else None
    )
    me = WorkerInfo(os.getpid(), slot, generation, cfg)
    server = ServerInfo(cfg, os.getppid())
    try:
        statsd = Statsd(cfg.statsd_host, cfg.statsd_prefix) if cfg.statsd_host else None
        install_log_counter(statsd)  # also drops a counter inherited from the supervisor
        hooks = load_hooks(cfg.hooks, cfg.chdir)  # the supervisor imported it: in sys.modules
        if hooks is not None:
            hooks.call("post_fork", server, me)
        # After the privilege drop: the key must be readable by --user. Loaded per worker so that a
        # HUP reload picks up renewed certificates (and a bad one rolls the reload back).
        tls = tls_from(cfg)
        handler = load_handler(cfg, multiprocess=cfg.procs > 1, preloaded=preloaded)
    except (AppImportError, TLSConfigError, HooksError, StatsdError) as exc:
        log.error("worker %d failed to boot: %s", os.getpid(), exc)
        if reporter is not None:
            reporter.send_boot_error(str(exc))
        return EXIT_BOOT_ERROR
    # The app and everything imported so far live as long as the worker: move them out of the
    # collector's sight so full GC passes only walk objects created while serving (shorter pauses).
    gc.freeze()
    # This process's copy of the supervisor's heap holds the pages it had free at the fork: give them back.
    trim = allocator.trimmer()
    if trim is not None:
        trim()

    access_log = (
        AccessLog(
            cfg.access_log,
            on_error=lambda: stats.count("access_log_errors"),
            line_format=compile_format(cfg.access_log_format) if cfg.access_log_format else None,
        )
        if cfg.access_log
        else None
    )
    pool = ThreadPool(cfg.threads)
    budget = _request_budget(cfg)
    retired = False

    # the loop calls tick at most every 10 ms (loop.TICK_EVERY); the trim runs at most once a second
    trims = allocator.TrimSchedule(trim, lambda: stats.requests) if trim is not None else None

    def tick(now: float) -> None:
        nonlocal retired
        if trims is not None:
            trims.tick(now)
        if reporter is None:
            return
        reporter.tick(now)
        if budget and not retired and stats.requests >= budget:
            retired = True
            log.info("worker %d served %d requests: asking to be recycled", os.getpid(), budget)
            reporter.send_retire("max_requests")

    # Always on: queued requests of clients that left are dropped (cheap); the rest per setting.
    watch = PoolWatch(queue_timeout=cfg.queue_timeout)
    if inflight is None and cfg.request_timeout > 0:  # no supervisor shares the records: our own
        inflight = Inflight.create(cfg.threads)
    loop = Loop(
        sockets,
        Runner(
            handler,
            stats,
            access_log,
            inflight,
            watch,
            RequestHooks(hooks, me) if hooks is not None and hooks.per_request else None,
            statsd,
        ),
        pool,
        loop_settings_from(cfg),
        tick=tick,
        url_scheme="https" if tls else "http",
        tls=tls,
        proxy_trust=ForwardedPolicy(cfg.forwarded_allow_ips) if cfg.proxy_protocol else None,
    )
    _enable_faulthandler(cfg.error_log)
    _install_signals(loop, access_log, cfg.error_log)
    if cfg.request_timeout > 0:
        watchdog = _start_watchdog(cfg, watch, inflight, loop, stats, reporter)
    if reporter is not None:
        reporter.send_ready()
    log.info("worker %d (slot %d, generation %d) serving", os.getpid(), slot, generation)
    loop.run()
    if reporter is not None:
        reporter.flush()  # the last second of counters, so the supervisor's totals stay exact
    if hooks is not None:
        hooks.call("worker_exit", server, me)
    log.info("worker %d exiting", os.getpid())
    if access_log is not None:
        access_log.close()
    return EXIT_OK


def _start_watchdog(
    cfg: Config,
    watch: PoolWatch,
    running: Inflight,
    loop: Loop,
    stats: WorkerStats,
    reporter: Reporter | None,
) -> Watchdog:
    """--request-timeout: a thread of its own watches the pool (the loop's heartbeat cannot see it).
    What it decides is carried out by the loop thread, which owns the sockets and the pipe."""

    def retire(reason: str) -> None:
        log.warning("worker %d: %s; asking to be replaced", os.getpid(), reason)
        if reporter is not None:
            loop.poller.call_soon(reporter.send_retire, "request_timeout")

    watchdog = Watchdog(
        watch,
        running,
        threads=cfg.threads,
        request_timeout=cfg.request_timeout,
        on_saturated=lambda saturated: loop.poller.call_soon(
            loop.shedding.set_saturated, saturated
        ),
        on_retire=retire,
        count=stats.count,
        queue_clock=loop.clock,
    )
    watchdog.start()
    return watchdog


def _request_budget(cfg: Config) -> int:
    if cfg.max_requests <= 0:
        return 0
    return cfg.max_requests + random.randint(0, max(cfg.max_requests_jitter, 0))


def _enable_faulthandler(error_log: str | None) -> None:
    """On SIGABRT (the supervisor's answer to a silent worker) or a fatal error, write every thread's
    Python stack to the error log before the process dies: what the worker was stuck in. Works while
    another thread holds the GIL, which is exactly when the loop thread cannot send heartbeats."""
    if error_log in (None, "", "-"):
        faulthandler.enable(file=sys.stderr, all_threads=True)
        return
    # A descriptor of its own: the logging handler closes and reopens its file on USR1.
    faulthandler.enable(file=open(error_log, "a"), all_threads=True)  # noqa: SIM115 - kept open


def _reopen_logs(access_log: AccessLog | None, error_log: str | None) -> None:
    """USR1 (logrotate): reopen the access log and the error-log files this process inherited."""
    if access_log is not None:
        access_log.reopen()
    _enable_faulthandler(error_log)  # the previous file object is released by faulthandler
    for handler in logging.getLogger("webcluster").handlers:
        if isinstance(handler, logging.FileHandler):
            handler.acquire()
            try:
                handler.close()  # FileHandler reopens its file on the next record
            finally:
                handler.release()


def _install_signals(loop: Loop, access_log: AccessLog | None, error_log: str | None) -> None:
    """Handlers only queue work for the loop thread (they run between bytecodes of that thread)."""
    signal.signal(signal.SIGTERM, lambda *_: loop.stop(graceful=True))
    signal.signal(signal.SIGINT, lambda *_: loop.stop(graceful=False))
    signal.signal(signal.SIGQUIT, lambda *_: loop.stop(graceful=False))
    reopen = loop.poller.call_soon
    signal.signal(signal.SIGUSR1, lambda *_: reopen(_reopen_logs, access_log, error_log))
    # The supervisor's --drain-delay: the host is leaving its load balancer, keep-alives must end.
    signal.signal(signal.SIGUSR2, lambda *_: loop.drain())
    for name in ("SIGHUP", "SIGTTIN", "SIGTTOU", "SIGWINCH"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)
