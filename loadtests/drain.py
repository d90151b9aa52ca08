"""Run plumbing for ``loadtests/locustfile.py``: end a run without cutting requests off, say when the
load began, and report often enough to follow the load second by second.

``--drain-after SECONDS`` (given to the master and every worker): after that many seconds users start no
new task; once every user of a Locust worker is idle, the worker tells the master (``drained``), and when
all have, the master quits, which flushes every worker's final stats. Locust's own ``--run-time`` instead
stops users mid-request, and stats a worker sends after the master's 0.5 s quit grace are lost; either
would make "requests sent" disagree with the server's count. ``loadtests.run`` still passes
``--run-time`` (duration + ``--drain-timeout``) as a backstop.

``--started-file PATH``: the master writes the unix time the load began there (``test_start``), which
is when ``loadtests.run`` starts its fault schedule.

Importing this module registers the Locust event listeners; the locustfile wraps every ``wait_time`` in
``draining``. One ``Drain`` per Locust process lives on its ``Environment``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
import locust.runners
import locust.stats
from locust import HttpUser, events
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

# Finer reporting than Locust's defaults (workers report every 3 s, the master flushes its CSVs every
# 5 s), so loadtests.run's progress lines and chart follow the load second by second (Locust documents
# these module settings as tunable from a locustfile).
locust.stats.CSV_STATS_FLUSH_INTERVAL_SEC = 1
locust.runners.WORKER_REPORT_INTERVAL = 1.0
# Locust and the server under test often share a small machine: a worker starved of CPU for 3 s
# (Locust's default) would be declared missing and its users handed to the others, over-counting users;
# a fleet run starts four Locust workers next to three hosts and HAProxy on two cores.
locust.runners.HEARTBEAT_LIVENESS = 60

PARKED_WAIT = 3600.0  # what a drained user "waits": it is killed by the quit long before


class Drain:
    """One per Locust process (kept on the Environment): parks users after ``--drain-after`` seconds
    and ends the run once every user is parked (see the module docstring)."""

    def __init__(self, environment: Environment, after: float) -> None:
        self.environment = environment
        self.after = after  # 0: off
        self.started: float | None = None
        self.parked = 0
        self.announced = False
        self.drained_workers: set[str] = set()

    def wait(self, user: HttpUser, inner: Callable[[Any], float]) -> float:
        """The wait before the user's next task; after the deadline, a wait that never ends."""
        if not self.after or self.started is None or time.monotonic() - self.started < self.after:
            return inner(user)
        if not getattr(user, "_drain_parked", False):
            user._drain_parked = True  # type: ignore[attr-defined]
            self.parked += 1
            self._maybe_announce()
        return PARKED_WAIT

    def _maybe_announce(self) -> None:
        runner = self.environment.runner
        if self.announced or runner is None or self.parked < runner.user_count:
            return
        self.announced = True
        if isinstance(runner, WorkerRunner):
            runner.send_message("drained", {"parked": self.parked})
        else:  # a local (non-distributed) run: quit right away
            gevent.spawn(runner.quit)

    def on_worker_drained(self, environment: Environment, msg: Any, **_kw: Any) -> None:
        """Master: a worker has no request in flight any more; quit when all have said so."""
        runner = environment.runner
        self.drained_workers.add(msg.node_id)
        if isinstance(runner, MasterRunner) and len(self.drained_workers) >= runner.worker_count:
            gevent.spawn(runner.quit)  # outside the message greenlet, which quit() kills


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    parser.add_argument(
        "--drain-after", type=float, default=0.0, include_in_web_ui=False,
        help="seconds after the start users stop starting tasks; the run ends once all are idle",
    )  # fmt: skip
    parser.add_argument(
        "--started-file", default="", include_in_web_ui=False,
        help="the master writes the unix time the load started to this file",
    )  # fmt: skip


@events.init.add_listener
def _on_init(environment: Environment, **_kw: Any) -> None:
    after = getattr(environment.parsed_options, "drain_after", 0.0) or 0.0
    drain = Drain(environment, after)
    environment.drain = drain  # type: ignore[attr-defined]
    if isinstance(environment.runner, MasterRunner):
        environment.runner.register_message("drained", drain.on_worker_drained)


@events.test_start.add_listener
def _on_test_start(environment: Environment, **_kw: Any) -> None:
    drain: Drain | None = getattr(environment, "drain", None)
    if drain is not None and drain.started is None:
        drain.started = time.monotonic()
    marker = getattr(environment.parsed_options, "started_file", None)
    if marker and not isinstance(environment.runner, WorkerRunner):
        Path(marker).write_text(f"{time.time()}\n")  # tells loadtests.run when the load began


def draining(inner: Callable[[Any], float]) -> Callable[[Any], float]:
    """Wrap a ``wait_time`` so the user parks once the drain deadline has passed."""

    def wait_time(user: Any) -> float:
        drain: Drain | None = getattr(user.environment, "drain", None)
        return drain.wait(user, inner) if drain is not None else inner(user)

    return wait_time
