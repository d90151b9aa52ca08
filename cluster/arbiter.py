"""The supervisor's main loop (gunicorn's Arbiter discipline on nginx's socket model; docs/ARCHITECTURE.md).

One thread does everything here: wait on (signal wake-up fd | worker pipes) with a timeout that is the
next real deadline (policy deadlines, the 1 s stats/RSS tick, the stop deadline), then dispatch queued
signals to ``handle_<name>``, read worker messages, reap, and apply the actions of the pure
:func:`cluster.policy.decide`. Start-up lives in :mod:`cluster.boot`, forking/signalling/reaping workers
in :mod:`cluster.lifecycle`, sockets in :mod:`cluster.listeners`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import time
from typing import Any

from webcluster.cluster import boot, policy, sdnotify, upgrade
from webcluster.cluster.admin import Health
from webcluster.cluster.config import ConfigError, reload_config
from webcluster.cluster.lifecycle import Exit, Lifecycle
from webcluster.cluster.listeners import BindError, Listeners
from webcluster.cluster.policy import WorkerState
from webcluster.cluster.process import WorkerTarget
from webcluster.cluster.shutdown import Shutdown
from webcluster.cluster.signals import SignalQueue, signal_name
from webcluster.worker.hooks import Hooks, HooksError, load_hooks
from webcluster.worker.statsd import Statsd, StatsdError, install_log_counter

log = logging.getLogger("webcluster.supervisor")

TICK_S = 1.0  # stats sampling, RSS check
UPGRADE_TIMEOUTS = 2  # the new supervisor's workers must be ready within this many --timeout
RESHAPING = (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR2)  # ignored once stopping


class Arbiter:
    """Runs the cluster: ``Arbiter(cfg).run()`` returns the process exit code."""

    def __init__(self, cfg: Any, *, worker_target: WorkerTarget | None = None) -> None:
        self.cfg = cfg
        self._target = worker_target
        self.desired = cfg.procs
        self.generation = 1
        self._last_generation = 1  # never reused, even after a rollback
        self._configs: dict[int, Any] = {1: cfg}
        self._signals = SignalQueue()
        self.lifecycle = Lifecycle(self._worker_target, lambda: list(self._signals.fds()))
        self.workers = self.lifecycle.workers
        self._listeners: Listeners | None = None
        self._stats: Any = None
        self._admin: Any = None
        self._health = Health.STARTING  # what /healthz says; written here, read by admin threads
        self._shutdown = Shutdown()
        self._exit_code: int | None = None
        self._next_tick = 0.0
        self.hooks: Hooks | None = None  # --hooks, imported at start
        self._statsd: Statsd | None = None  # --statsd-host: gunicorn.workers each tick
        self._reloader: Any = None  # cluster.reloader.Reloader with --reload
        self._handoff: upgrade.Handoff | None = None  # we are the new supervisor of an upgrade
        self._upgrade: upgrade.Upgrade | None = None  # the successor we started (USR2)
        self._handed_over = False  # the successor serves: stop without STOPPING=1 or unlinking
        self._announce = True  # READY=1 (or "ready" to the old supervisor) once the workers serve
        self._reload_pending = False  # HUPs arrived during a reload: one more reload after it

    def _worker_target(self) -> WorkerTarget:
        self._target = self._target or boot.default_target()
        return self._target

    # -- lifecycle ------------------------------------------------------------------------------------

    def run(self) -> int:
        """Bind, fork the workers, serve signals until stopped; return the exit code."""
        boot.setup_logging(self.cfg)
        try:
            self._start()
            while self._exit_code is None:
                self._iterate()
        except BindError as exc:
            log.error("%s", exc)
            self._exit_code = 1
        except (HooksError, StatsdError, boot.StartupError) as exc:
            log.error("%s", exc)
            self._exit_code = 2  # a setting that does not work, like any other bad setting
        except KeyboardInterrupt:  # a signal arrived before the handlers were installed
            self._exit_code = 0
        except Exception:  # a bug: say so, and still leave no worker behind (see _cleanup)
            log.exception("supervisor failed")
            self._exit_code = 1
        finally:
            self._cleanup()
        return self._exit_code

    def _start(self) -> None:
        self.hooks = load_hooks(self.cfg.hooks, self.cfg.chdir)
        if self.cfg.statsd_host:
            self._statsd = Statsd(self.cfg.statsd_host, self.cfg.statsd_prefix)
            install_log_counter(self._statsd)
        if self.hooks is not None:
            self.hooks.call("on_starting", self)
        self._handoff = upgrade.take_handoff()
        self._listeners, self._target = boot.open_sockets(self.cfg, self._target, self._handoff)
        self.lifecycle.listeners = self._listeners
        boot.check_tls(self.cfg)
        self._signals.install()
        self.workers.watch(self._signals.fileno())
        self._stats, self._admin, admin_url = boot.start_admin(
            self.cfg, self.generation, lambda: self._health, self._handoff and self._handoff.admin
        )
        self.lifecycle.stats = self._stats
        if self.cfg.reload:
            from webcluster.cluster.reloader import Reloader

            self._reloader = Reloader(self.cfg)
        print(boot.banner(self.cfg, self._listeners, self.desired, admin_url), flush=True)
        if hint := boot.root_path_hint(self.cfg):
            log.log(*hint)

    def _cleanup(self) -> None:
        self.lifecycle.kill_all()  # only on an unexpected error: never leave orphans
        if self._admin is not None:
            self._admin.stop()
        if self._listeners is not None:
            self._listeners.close()
        self._signals.close()
        self.workers.close()
        if self.cfg.pid:
            boot.remove_pid_file(self.cfg.pid)
        # the final count, after every worker's last report: a fleet's balancer can be checked against it
        served = (
            f", {self._stats.snapshot().totals.requests} requests served" if self._stats else ""
        )
        log.info("supervisor exiting with code %s%s", self._exit_code, served)

    # -- the loop -------------------------------------------------------------------------------------

    def _iterate(self) -> None:
        now = time.monotonic()
        if not self._shutdown.stopping:
            self._apply(policy.decide(self._view(), now), now)
        woken, ready = self.workers.wait(self._timeout(now))
        if woken:
            for signum in self._signals.drain():
                self._dispatch(signum)
        self.lifecycle.read_messages(ready)
        self.reap_workers()
        if self._reload_pending and not self._shutdown.stopping:
            if not policy.reloading(self._view()):
                self._reload()
        now = time.monotonic()
        if now >= self._next_tick:
            self._tick(now)
        if self._shutdown.drain_due(now):
            self._begin_stop(graceful=True)
        if self._upgrade is not None:
            self._check_upgrade(now)
        if self._shutdown.stopping:
            self._exit_code = self._shutdown.check(list(self.workers), now)
        elif self._announce:
            self._check_ready()
        self._health = self._health.next(
            leaving=self._shutdown.leaving,
            ready=any(w.state is WorkerState.READY for w in self.workers),
        )

    def _view(self) -> policy.Cluster:
        return self.lifecycle.view(desired=self.desired, generation=self.generation, cfg=self.cfg)

    def _apply(self, actions: list[policy.Action], now: float) -> None:
        limit = self.lifecycle.apply(actions, self.cfg, self.generation, now)
        if limit >= 0:
            self.desired = min(self.desired, limit)

    def _timeout(self, now: float) -> float:
        deadlines = [self._next_tick, *self._shutdown.deadlines()]
        if self._upgrade is not None:
            deadlines.append(self._upgrade.deadline)
        if not self._shutdown.stopping:
            deadline = policy.next_deadline(self._view(), now)
            if deadline is not None:
                deadlines.append(deadline)
        return max(0.0, min(deadlines) - now)

    def _tick(self, now: float) -> None:
        self._next_tick = now + TICK_S
        if self._statsd is not None:
            self._statsd.gauge("gunicorn.workers", len(self.workers))
        if self._reloader is not None and not self._shutdown.stopping:
            if self._reloader.poll(self.cfg):
                self.handle_hup()
        if self._stats is not None:
            self._stats.sample(now)
        limit = self.cfg.max_worker_memory * 1024 * 1024
        if not limit or self._stats is None:
            return
        for w in self.workers:
            rss = self._stats.rss(w.pid)
            if w.state is WorkerState.READY and rss and rss > limit:
                if self.lifecycle.retire(w, "max_worker_memory"):
                    log.info(
                        "worker %d RSS %d MiB > %d MiB: recycling", w.pid, rss >> 20, limit >> 20
                    )

    def _dispatch(self, signum: int) -> None:
        name = signal_name(signum).lower()
        if signum != signal.SIGCHLD:
            log.info("received SIG%s", name.upper())
        if self._shutdown.leaving and signum in RESHAPING:
            log.info("stopping: SIG%s ignored", name.upper())
            return
        getattr(self, f"handle_{name}")()

    # -- exits ----------------------------------------------------------------------------------------

    def reap_workers(self) -> None:
        """Reap every exited worker; halt, roll back a reload, or let the slot be refilled."""
        for e in self.lifecycle.reap():
            if not self._shutdown.stopping:
                self._on_exit(e)

    def _on_exit(self, e: Exit) -> None:
        now = time.monotonic()
        verdict = policy.classify_exit(
            code=e.code,
            boot_error=e.worker.boot_error,
            was_ready=e.was_ready,
            generation=e.worker.generation,
            workers=self._view().workers,
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
            self.lifecycle.note_exit(e, now)

    # -- signals --------------------------------------------------------------------------------------

    def handle_chld(self) -> None:
        self.reap_workers()

    def handle_hup(self) -> None:
        """Graceful reload: re-read the config, then a new generation replaces the workers slot by slot.

        A HUP during a reload waits for it to finish; any number of them make one more reload, which
        reads the config as it is then (policy.reloading)."""
        if policy.reloading(self._view()):
            if not self._reload_pending:
                log.info("reload under way: reloading again when it is done")
            self._reload_pending = True
            return
        self._reload()

    def _reload(self) -> None:
        self._reload_pending = False
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
        live = {w.generation for w in self.workers}
        self._configs = {g: c for g, c in self._configs.items() if g in live}
        self._configs[self.generation] = new
        if self._stats is not None:
            self._stats.set_generation(self.generation)
        boot.setup_logging(new)
        log.info("reloading: generation %d, %d workers", self.generation, self.desired)
        if self.hooks is not None:
            self.hooks.call("on_reload", self)
        sdnotify.notify(*sdnotify.reloading())
        self._announce = True

    def _check_ready(self) -> None:
        """Once the current generation is complete: READY=1 to systemd, or, in an upgrade, the pid
        file and "ready" to the old supervisor (which tells systemd and leaves)."""
        ready = [w for w in self.workers if w.generation == self.generation]
        if len(ready) < self.desired or any(w.state is not WorkerState.READY for w in ready):
            return
        self._announce = False
        if self._handoff is None:
            sdnotify.notify("READY=1", f"MAINPID={os.getpid()}")
            return
        if self.cfg.pid:
            boot.write_pid_file(self.cfg.pid)
        self._handoff.announce_ready()
        self._handoff = None
        log.info("upgrade: %d workers ready; the old supervisor hands over", len(ready))

    def handle_usr2(self) -> None:
        """Binary upgrade: start a new supervisor on our sockets; see cluster/upgrade.py."""
        if self._upgrade is not None:
            log.warning("upgrade to pid %d already under way: SIGUSR2 ignored", self._upgrade.pid)
            return
        admin = self._admin.listening_socket if self._admin is not None else None
        timeout = UPGRADE_TIMEOUTS * self.cfg.timeout
        self._upgrade = upgrade.begin(self._listeners, admin, timeout, self.workers)

    def _check_upgrade(self, now: float) -> None:
        assert self._upgrade is not None
        done = self._upgrade.finish(now, self.workers)
        if done is None:
            return
        self._upgrade = None
        if done:  # the new supervisor serves on our sockets and told systemd its pid
            self._handed_over = True
            upgrade.keep_unix_files(self._listeners)
            self._begin_stop(graceful=True)

    def handle_ttin(self) -> None:
        self.desired += 1
        log.info("one more worker slot: %d", self.desired)

    def handle_ttou(self) -> None:
        if self.desired > 1:
            self.desired -= 1
            log.info("one worker slot less: %d", self.desired)

    def handle_usr1(self) -> None:
        """Reopen log files (logrotate) here and in every worker."""
        boot.setup_logging(self.cfg)
        for w in self.workers:
            w.signal(signal.SIGUSR1)

    def handle_term(self) -> None:
        if self.cfg.drain_delay > 0 and not self._shutdown.leaving:
            # /healthz 503 now: the load balancer takes this host out first
            self._health = Health.DRAINING
            self._shutdown.begin_drain(self.cfg.drain_delay, self.workers, time.monotonic())
        else:
            self._begin_stop(graceful=True)  # no delay, or a second TERM: skip what is left of it

    def handle_int(self) -> None:
        self._begin_stop(graceful=False)

    handle_quit = handle_int

    # -- stopping -------------------------------------------------------------------------------------

    def _begin_stop(self, graceful: bool) -> None:
        first = not self._shutdown.stopping
        if not self._shutdown.begin(graceful, self.cfg.graceful_timeout, time.monotonic()):
            return  # already stopping at least as fast
        self._health = Health.DRAINING
        if not self._handed_over:  # after a handover the service goes on, under the new pid
            sdnotify.notify("STOPPING=1")
        if first:
            self._close_listeners()  # after --drain-delay, if any: the balancer has moved on
        log.info("%s stop: %d workers", "graceful" if graceful else "fast", len(self.workers))
        self.lifecycle.stop_all(graceful)

    def _close_listeners(self) -> None:
        """Stopping for good: close our copies of the listening sockets; the workers close theirs on
        TERM/QUIT. New clients are then refused at once (nginx closes its listeners on a graceful stop
        too) instead of waiting in a backlog nobody will accept from; accepted connections finish."""
        if self._listeners is not None:
            self._listeners.close()
            if self._handed_over:
                log.info("closed this supervisor's copies of the sockets; the new one serves them")
            else:
                log.info("listening sockets closed: new connections are refused")

    def _halt(self, code: int) -> None:
        """Fast stop, then exit with ``code`` (a worker could not boot: no crash loop)."""
        self._shutdown.halt_code = code
        self._begin_stop(graceful=False)
