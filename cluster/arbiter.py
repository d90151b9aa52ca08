"""The supervisor's main loop (gunicorn's Arbiter discipline on nginx's socket model, DESIGN §1, §5).

One thread does everything here: wait on (signal wake-up fd | worker pipes) with a timeout that is the
next real deadline (policy deadlines, the 1 s stats/RSS tick, the stop deadline), then dispatch queued
signals to ``handle_<name>``, read worker messages, reap with ``waitpid(-1, WNOHANG)``, and apply the
actions of the pure :func:`cluster.policy.decide`. Sockets live in :mod:`cluster.listeners`, forking in
:mod:`cluster.process`, stats and the admin endpoint in ``cluster.stats`` / ``cluster.admin`` (optional
imports: the supervisor runs without them).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import time
from typing import Any

from cluster import policy
from cluster.config import ConfigError, reload_config
from cluster.listeners import BindError, Listeners, raise_nofile_limit, tcp_migrate_req_enabled
from cluster.process import (
    WorkerProcess,
    WorkerState,
    WorkerTable,
    WorkerTarget,
    describe_status,
    drop_privileges,
    remove_pid_file,
    resolve_ids,
    setup_logging,
    version,
    write_pid_file,
)
from cluster.signals import SignalQueue, signal_name

try:  # stats and admin are separate subsystems; the arbiter works without them
    from cluster.admin import AdminServer
    from cluster.stats import StatsAggregator
except ImportError:  # pragma: no cover
    AdminServer = StatsAggregator = None  # type: ignore[assignment,misc]

log = logging.getLogger("webcluster.supervisor")

TICK_S = 1.0  # stats sampling, RSS check
FAST_STOP_S = 2.0  # INT/QUIT: workers exit at once; KILL whoever is still there after this
REAP_AFTER_KILL_S = 5.0
RESHAPING = (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU)  # ignored once stopping


class Arbiter:
    """Runs the cluster: ``Arbiter(cfg).run()`` returns the process exit code."""

    def __init__(self, cfg: Any, *, worker_target: WorkerTarget | None = None) -> None:
        self.cfg = cfg
        self._target = worker_target
        self.desired = cfg.procs
        self.generation = 1
        self._last_generation = 1  # never reused, even after a rollback
        self._configs: dict[int, Any] = {1: cfg}
        self.workers = WorkerTable()
        self._backoff: dict[int, policy.Backoff] = {}
        self._draining: dict[int, float] = {}
        self._listeners: Listeners | None = None
        self._signals = SignalQueue()
        self._stats: Any = None
        self._admin: Any = None
        self._healthy = False
        self._stop_deadline: float | None = None
        self._kill_deadline: float | None = None
        self._exit_code: int | None = None
        self._halt_code = 0  # exit code once the workers are gone after a stop or a halt
        self._next_tick = 0.0

    # -- lifecycle ------------------------------------------------------------------------------------

    def run(self) -> int:
        """Bind, fork the workers, serve signals until stopped; return the exit code."""
        setup_logging(self.cfg)
        try:
            self._start()
            while self._exit_code is None:
                self._iterate()
        except BindError as exc:
            log.error("%s", exc)
            self._exit_code = 1
        except KeyboardInterrupt:  # a signal arrived before the handlers were installed
            self._exit_code = 0
        finally:
            self._cleanup()
        return self._exit_code

    def _start(self) -> None:
        cfg = self.cfg
        if cfg.umask is not None:
            os.umask(cfg.umask)
        raise_nofile_limit()
        uid, gid = resolve_ids(cfg.user, cfg.group)
        self._listeners = Listeners.open(
            cfg.bind,
            slots=cfg.procs,
            backlog=cfg.backlog,
            reuse_port=cfg.reuse_port,
            owner_uid=uid,  # so that TTIN can still add a slot's socket after the switch
        )
        if cfg.pid:
            write_pid_file(cfg.pid)
        if uid is not None or gid is not None:
            # Import the worker code while still privileged: after the drop, an interpreter or
            # checkout readable only by root (say under /root) would fail at the first fork instead.
            self._target = self._target or _default_target()
            version()  # reads package metadata (lazy stdlib imports) while files are still readable
            self._listeners.chown_unix(
                uid if uid is not None else -1, gid if gid is not None else -1
            )
            drop_privileges(uid, gid)
        self._signals.install()
        self.workers.watch(self._signals.fileno())
        admin_url = self._start_admin()
        threads = f"{self.desired} workers x {cfg.threads} threads"
        print(
            f"webcluster {version()} listening on {', '.join(self._banner_urls())}"
            f" ({threads}, admin {admin_url})",
            flush=True,
        )
        if self._listeners.per_slot and not tcp_migrate_req_enabled():
            log.debug(
                "net.ipv4.tcp_migrate_req=0: a removed slot is drained before its socket closes"
            )

    def _banner_urls(self) -> list[str]:
        urls = self._listeners.urls()
        if self.cfg.certfile:  # TLS is on every bind: say so where users copy the address from
            urls = [u.replace("http://", "https://", 1) for u in urls]
        return urls

    def _start_admin(self) -> str:
        if self.cfg.admin == "off" or StatsAggregator is None:
            return "off"
        self._stats = StatsAggregator()
        self._stats.set_generation(self.generation)
        self._admin = AdminServer(self.cfg.admin, self._stats, lambda: self._healthy)
        try:
            self._admin.start()
        except OSError as exc:
            self._admin = None
            raise BindError(
                f"admin address {self.cfg.admin} is unavailable ({exc.strerror or exc}); "
                "stop the other server or pass --admin ADDR (or --admin off)"
            ) from None
        address = self._admin.address
        if isinstance(address, str):
            return f"unix:{address}"
        host = f"[{address[0]}]" if ":" in address[0] else address[0]
        return f"http://{host}:{address[1]}"

    def _cleanup(self) -> None:
        for w in self.workers:  # only on an unexpected error: never leave orphans
            w.signal(signal.SIGKILL)
        if self._admin is not None:
            self._admin.stop()
        if self._listeners is not None:
            self._listeners.close()
        self._signals.close()
        self.workers.close()
        if self.cfg.pid:
            remove_pid_file(self.cfg.pid)
        log.info("supervisor exiting with code %s", self._exit_code)

    # -- the loop -------------------------------------------------------------------------------------

    def _iterate(self) -> None:
        now = time.monotonic()
        if self._stop_deadline is None:
            self._apply(policy.decide(self._view(now), now), now)
        woken, ready = self.workers.wait(self._timeout(now))
        if woken:
            for signum in self._signals.drain():
                self._dispatch(signum)
        for w in ready:
            for msg in self.workers.read(w):
                self._on_message(w, msg)
        self.reap_workers()
        now = time.monotonic()
        if now >= self._next_tick:
            self._tick(now)
        if self._stop_deadline is not None:
            self._check_stop(now)
        self._healthy = self._stop_deadline is None and any(
            w.state is WorkerState.READY for w in self.workers
        )

    def _timeout(self, now: float) -> float:
        deadlines = [self._next_tick]
        if self._stop_deadline is not None:
            deadlines.append(self._kill_deadline or self._stop_deadline)
        else:
            deadline = policy.next_deadline(self._view(now), now)
            if deadline is not None:
                deadlines.append(deadline)
        return max(0.0, min(deadlines) - now)

    def _tick(self, now: float) -> None:
        self._next_tick = now + TICK_S
        if self._stats is not None:
            self._stats.sample(now)
        limit = self.cfg.max_worker_memory * 1024 * 1024
        if not limit or self._stats is None:
            return
        for w in self.workers:
            rss = self._stats.rss(w.pid)
            if w.state is WorkerState.READY and not w.retire_reason and rss and rss > limit:
                w.retire_reason = "max_worker_memory"
                log.info("worker %d RSS %d MiB > %d MiB: recycling", w.pid, rss >> 20, limit >> 20)

    def _dispatch(self, signum: int) -> None:
        name = signal_name(signum).lower()
        if signum != signal.SIGCHLD:
            log.info("received SIG%s", name.upper())
        if self._stop_deadline is not None and signum in RESHAPING:
            log.info("stopping: SIG%s ignored", name.upper())
            return
        getattr(self, f"handle_{name}")()

    def _view(self, now: float) -> policy.Cluster:
        assert self._listeners is not None
        workers = tuple(w.view() for w in self.workers)
        draining = {
            slot: policy.Drain(since, self._listeners.queue_length(slot))
            for slot, since in self._draining.items()
        }
        return policy.Cluster(
            desired=self.desired,
            generation=self.generation,
            workers=workers,
            backoff=dict(self._backoff),
            draining=draining,
            open_slots=self._listeners.open_slots(),
            timeout=self.cfg.timeout,
            graceful_timeout=self.cfg.graceful_timeout,
        )

    # -- applying decisions -------------------------------------------------------------------------

    def _apply(self, actions: list[policy.Action], now: float) -> None:
        for action in actions:
            if isinstance(action, policy.Spawn):
                self.spawn_worker(action.slot, action.reason)
            elif isinstance(action, policy.Stop):
                self.stop_worker(self.workers[action.pid], action.reason, now)
            elif isinstance(action, policy.Kill):
                self.kill_worker(self.workers[action.pid], action.reason)
            elif isinstance(action, policy.StartDrain):
                self._draining[action.slot] = now
                self._steer()
                log.info("slot %d removed: new connections go to the other slots", action.slot)
            elif isinstance(action, policy.CancelDrain):
                self._draining.pop(action.slot, None)
                self._steer()
            elif isinstance(action, policy.CloseSlot):
                self._draining.pop(action.slot, None)
                self._listeners.close_slot(action.slot)
                self._steer()
                log.info("slot %d closed", action.slot)

    def _steer(self) -> None:
        self._listeners.set_draining(self._draining)

    def spawn_worker(self, slot: int, reason: str) -> WorkerProcess | None:
        """Fork a worker for ``slot`` with the current config and generation."""
        try:
            sockets = self._listeners.sockets(slot)
        except BindError as exc:
            log.error("cannot add slot %d: %s", slot, exc)
            self.desired = min(self.desired, slot)
            return None
        target = self._target or _default_target()
        try:
            w = self.workers.spawn(
                target,
                self.cfg,
                sockets,
                slot=slot,
                generation=self.generation,
                close_in_child=self._close_in_child,
            )
        except OSError as exc:  # EAGAIN/ENOMEM from fork: retry after a backoff
            log.error("fork failed for slot %d: %s", slot, exc)
            prev = self._backoff.get(slot, policy.Backoff())
            self._backoff[slot] = policy.after_exit(
                prev, lived=0, now=time.monotonic(), expected=False
            )
            return None
        if self._stats is not None:
            self._stats.worker_started(slot, w.pid, w.generation, time.monotonic())
        log.info(
            "spawned worker %d (slot %d, generation %d): %s", w.pid, slot, w.generation, reason
        )
        return w

    def _close_in_child(self) -> list[int]:
        """Runs in a freshly forked worker: the signal pipe (sockets go in close_fds's sweep)."""
        return list(self._signals.fds())

    def stop_worker(self, w: WorkerProcess, reason: str, now: float) -> None:
        """Graceful stop: TERM; the worker finishes in-flight requests within graceful_timeout."""
        log.info("stopping worker %d (slot %d): %s", w.pid, w.slot, reason)
        w.stop_reason = reason
        w.state = WorkerState.DRAINING
        w.stop_requested_at = now
        w.expected_exit = True
        if self._stats is not None:
            self._stats.set_state(w.pid, "draining")
        w.signal(signal.SIGTERM)

    def kill_worker(self, w: WorkerProcess, reason: str) -> None:
        """SIGKILL now (a hung worker); its slot is refilled when it is reaped."""
        log.warning("killing worker %d (slot %d): %s", w.pid, w.slot, reason)
        w.state = WorkerState.STOPPING
        w.kill_reason = reason
        w.signal(signal.SIGKILL)

    # -- messages and exits ---------------------------------------------------------------------------

    def _on_message(self, w: WorkerProcess, msg: dict) -> None:
        w.last_heartbeat = time.monotonic()
        kind = msg.get("type")
        if kind == "ready" and w.state is WorkerState.BOOTING:
            w.state = WorkerState.READY
            log.info("worker %d (slot %d, generation %d) ready", w.pid, w.slot, w.generation)
        elif kind == "boot_error":
            w.boot_error = str(msg.get("message", ""))
        elif kind == "retire" and not w.retire_reason:
            w.retire_reason = str(msg.get("reason") or "retire")
            log.info("worker %d asks to be recycled (%s)", w.pid, w.retire_reason)
        if self._stats is not None:
            self._stats.on_message(w.slot, w.pid, msg, w.last_heartbeat)

    def reap_workers(self) -> None:
        """waitpid(-1, WNOHANG) until no exited child is left; handle each exit."""
        for w, status, messages in self.workers.reap():
            for msg in messages:
                self._on_message(w, msg)
            self._on_exit(w, status)

    def _on_exit(self, w: WorkerProcess, status: int) -> None:
        now = time.monotonic()
        code, _, text = describe_status(status)
        expected = w.expected_exit and not w.kill_reason
        level = logging.INFO if expected else logging.WARNING
        log.log(level, "worker %d (slot %d) exited: %s%s", w.pid, w.slot, text,
                f" after {w.kill_reason}" if w.kill_reason else "")  # fmt: skip
        if self._stats is not None:
            self._stats.worker_exited(w.slot, w.pid, now, _exit_reason(w, expected))
        if self._stop_deadline is not None:
            return
        verdict = policy.classify_exit(
            code=code,
            boot_error=w.boot_error,
            generation=w.generation,
            workers=self._view(now).workers,
        )
        if isinstance(verdict, policy.Halt):
            log.error("worker failed to boot, shutting down: %s", verdict.message)
            self._halt(verdict.code)
        elif isinstance(verdict, policy.Rollback):
            log.error(
                "reload failed, keeping generation %d: %s", verdict.generation, verdict.message
            )
            self.generation = verdict.generation
            self.cfg = self._configs[verdict.generation]
        else:
            prev = self._backoff.get(w.slot, policy.Backoff())
            lived = now - w.started_at
            self._backoff[w.slot] = policy.after_exit(prev, lived=lived, now=now, expected=expected)
            delay = self._backoff[w.slot].delay
            if not expected and delay:
                log.warning("slot %d: worker died %.1fs after start; next start in %.1fs",
                            w.slot, lived, delay)  # fmt: skip

    # -- signals --------------------------------------------------------------------------------------

    def handle_chld(self) -> None:
        self.reap_workers()

    def handle_hup(self) -> None:
        """Graceful reload: re-read the config, then a new generation replaces the workers slot by slot."""
        try:
            new = reload_config(self.cfg)
        except ConfigError as exc:
            log.error("reload failed, configuration unchanged: %s", exc)
            return
        if tuple(new.bind) != tuple(self.cfg.bind) or new.reuse_port != self.cfg.reuse_port:
            log.warning("bind/reuse_port changes need a restart; keeping the current sockets")
            new = dataclasses.replace(new, bind=self.cfg.bind, reuse_port=self.cfg.reuse_port)
        if new.procs != self.cfg.procs:
            self.desired = new.procs
        self.cfg = new
        self._last_generation += 1
        self.generation = self._last_generation
        self._configs = {g: c for g, c in self._configs.items() if g in self._live_generations()}
        self._configs[self.generation] = new
        if self._stats is not None:
            self._stats.set_generation(self.generation)
        setup_logging(new)
        log.info("reloading: generation %d, %d workers", self.generation, self.desired)

    def _live_generations(self) -> set[int]:
        return {w.generation for w in self.workers}

    def handle_ttin(self) -> None:
        self.desired += 1
        log.info("one more worker slot: %d", self.desired)

    def handle_ttou(self) -> None:
        if self.desired > 1:
            self.desired -= 1
            log.info("one worker slot less: %d", self.desired)

    def handle_usr1(self) -> None:
        """Reopen log files (logrotate) here and in every worker."""
        setup_logging(self.cfg)
        for w in self.workers:
            w.signal(signal.SIGUSR1)

    def handle_term(self) -> None:
        self._begin_stop(graceful=True)

    def handle_int(self) -> None:
        self._begin_stop(graceful=False)

    handle_quit = handle_int

    # -- stopping -------------------------------------------------------------------------------------

    def _begin_stop(self, graceful: bool) -> None:
        now = time.monotonic()
        if self._stop_deadline is not None and (graceful or self._kill_deadline is not None):
            return  # already stopping at least as fast
        self._healthy = False
        sig = signal.SIGTERM if graceful else signal.SIGQUIT
        self._stop_deadline = now + (self.cfg.graceful_timeout if graceful else FAST_STOP_S)
        log.info("%s stop: %d workers", "graceful" if graceful else "fast", len(self.workers))
        for w in self.workers:
            w.expected_exit = True
            w.state = WorkerState.DRAINING if graceful else WorkerState.STOPPING
            w.signal(sig)

    def _halt(self, code: int) -> None:
        """Fast stop, then exit with ``code`` (a worker could not boot: no crash loop)."""
        self._halt_code = code
        self._begin_stop(graceful=False)

    def _check_stop(self, now: float) -> None:
        if not self.workers:
            self._exit_code = self._halt_code
        elif self._kill_deadline is None and now >= self._stop_deadline:
            for w in self.workers:
                log.warning("worker %d did not stop in time: SIGKILL", w.pid)
                w.signal(signal.SIGKILL)
            self._kill_deadline = now + REAP_AFTER_KILL_S
        elif self._kill_deadline is not None and now >= self._kill_deadline:
            log.error("workers %s survived SIGKILL; exiting anyway", self.workers.pids())
            self._exit_code = self._halt_code


def _exit_reason(w: WorkerProcess, expected: bool) -> str:
    """The stats' exits-by-reason key."""
    if w.kill_reason:
        return "timeout"
    if w.boot_error:
        return "boot_error"
    if not expected:
        return "crash"
    for prefix, key in (
        ("recycled", "recycle"),
        ("reload", "reload"),
        ("slot removed", "scale_down"),
    ):
        if (w.stop_reason or "").startswith(prefix):
            return key
    return "stop"


def _default_target() -> WorkerTarget:
    from worker.main import run

    return run
