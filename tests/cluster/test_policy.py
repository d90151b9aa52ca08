"""Table tests of cluster.policy: pure decisions, no process, no clock, no sleep."""

from __future__ import annotations

import pytest

from webcluster.cluster.policy import (
    ABORT_GRACE_S,
    ABORTED,
    BOOTING,
    DRAINING,
    READY,
    RESPAWN_INTERVAL_S,
    STOPPING,
    Abort,
    Backoff,
    CloseSlot,
    Cluster,
    Drain,
    ExitReason,
    Halt,
    Kill,
    Rollback,
    Spawn,
    Stop,
    WorkerView,
    after_exit,
    classify_exit,
    decide,
    exit_reason,
    next_deadline,
    reloading,
)

NOW = 1000.0


def w(pid, slot, gen=1, state=READY, started=900.0, hb=NOW - 0.5, **kw) -> WorkerView:
    return WorkerView(pid, slot, gen, state, started, hb, **kw)


def kinds(actions) -> list[tuple]:
    """Actions without their free-text reasons, for comparison."""
    out = []
    for a in actions:
        key = getattr(a, "pid", None)
        out.append((type(a).__name__, key if key is not None else a.slot))
    return out


# -- filling slots and backoff ------------------------------------------------------------------------

FILL = [
    ("start: every slot empty", Cluster(3, 1), [("Spawn", 0), ("Spawn", 1), ("Spawn", 2)]),
    ("all slots filled", Cluster(2, 1, (w(10, 0), w(11, 1))), []),
    (
        "booting counts as filled",
        Cluster(2, 1, (w(10, 0, state=BOOTING, started=NOW), w(11, 1))),
        [],
    ),
    ("dead worker refilled at once", Cluster(2, 1, (w(11, 1),)), [("Spawn", 0)]),
    (
        "slot in backoff is not refilled",
        Cluster(2, 1, (w(11, 1),), backoff={0: Backoff(0.4, NOW + 0.1)}),
        [],
    ),
    (
        "backoff expired",
        Cluster(2, 1, (w(11, 1),), backoff={0: Backoff(0.4, NOW)}),
        [("Spawn", 0)],
    ),
    (
        "a draining worker does not fill its slot",
        Cluster(1, 1, (w(10, 0, state=DRAINING, stop_requested_at=NOW),)),
        [("Spawn", 0)],
    ),
]


@pytest.mark.parametrize("cluster,expected", [c[1:] for c in FILL], ids=[c[0] for c in FILL])
def test_fill(cluster, expected):
    assert kinds(decide(cluster, NOW)) == expected


BACKOFF = [
    # (previous, lived, expected, was_ready, new delay, not_before - NOW)
    ("first quick death before ready", Backoff(), 0.5, False, False, 0.1, 0.1),
    ("second quick death doubles", Backoff(0.1, 0), 0.3, False, False, 0.2, 0.2),
    ("keeps doubling", Backoff(3.2, 0), 1.0, False, False, 6.4, 6.4),
    ("capped at 30 s", Backoff(20.0, 0), 1.0, False, False, 30.0, 30.0),
    ("long boot then death resets", Backoff(30.0, 0), 60.0, False, False, 0.0, 0.0),
    ("an exit we asked for changes nothing", Backoff(0.8, 5), 0.1, True, True, 0.8, -995),
    ("ready worker dying late: at once", Backoff(), 60.0, False, True, 0.0, 0.0),
    ("ready worker dying at once: rate bound", Backoff(), 0.05, False, True, 0.0, 0.15),
    ("ready worker dying clears a boot backoff", Backoff(6.4, 0), 0.5, False, True, 0.0, 0.0),
    ("ready worker never waits long", Backoff(30.0, NOW + 30), 0.0, False, True, 0.0, 0.2),
]


@pytest.mark.parametrize(
    "prev,lived,expected,was_ready,delay,wait",
    [b[1:] for b in BACKOFF],
    ids=[b[0] for b in BACKOFF],
)
def test_backoff(prev, lived, expected, was_ready, delay, wait):
    got = after_exit(prev, lived=lived, now=NOW, expected=expected, was_ready=was_ready)
    assert got.delay == pytest.approx(delay)
    assert got.not_before == pytest.approx(NOW + wait)


def test_backoff_sequence_of_crashes_reaches_cap_then_resets():
    b = Backoff()
    delays = []
    for _ in range(12):
        b = after_exit(b, lived=0.01, now=NOW, expected=False, was_ready=False)
        delays.append(b.delay)
    assert delays[:4] == pytest.approx([0.1, 0.2, 0.4, 0.8])
    assert delays[-1] == 30.0 and max(delays) == 30.0
    reset = after_exit(b, lived=10.0, now=NOW, expected=False, was_ready=False)
    assert reset == Backoff(0.0, NOW)


def test_crash_storm_of_ready_workers_is_rate_bounded_not_backed_off():
    """Each replacement is killed right after it is ready: starts stay RESPAWN_INTERVAL_S apart."""
    b, now, starts = Backoff(), NOW, []
    for _ in range(50):
        start = max(now, b.not_before)
        starts.append(start)
        now = start + 0.01  # ready and killed by a queued request 10 ms later
        b = after_exit(b, lived=now - start, now=now, expected=False, was_ready=True)
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert min(gaps) == pytest.approx(RESPAWN_INTERVAL_S)
    assert max(gaps) == pytest.approx(RESPAWN_INTERVAL_S)  # no growing gap while clients wait
    assert b.delay == 0.0


# -- boot errors --------------------------------------------------------------------------------------

EXITS = [
    (
        "crash is not a halt",
        dict(was_ready=False, code=1, boot_error=None, generation=1, workers=()),
        None,
    ),
    (
        "signal death is not a halt",
        dict(was_ready=False, code=None, boot_error=None, generation=1, workers=()),
        None,
    ),
    (
        "boot_error message halts",
        dict(
            was_ready=False,
            code=3,
            boot_error="ModuleNotFoundError: No module named 'nope'",
            generation=1,
            workers=(),
        ),
        Halt("ModuleNotFoundError: No module named 'nope'"),
    ),
    (
        "exit code 3 without a message halts",
        dict(
            was_ready=False,
            code=3,
            boot_error=None,
            generation=1,
            workers=(w(11, 1, state=BOOTING),),
        ),
        Halt("worker failed to boot (exit code 3)"),
    ),
    (
        "failed reload rolls back to the serving generation",
        dict(
            was_ready=False,
            code=3,
            boot_error="boom",
            generation=3,
            workers=(w(11, 0, gen=2), w(12, 1, gen=1)),
        ),
        Rollback(2, "boom"),
    ),
    (
        "older workers that are draining do not count",
        dict(
            was_ready=False,
            code=3,
            boot_error="boom",
            generation=2,
            workers=(w(11, 0, gen=1, state=DRAINING, stop_requested_at=NOW),),
        ),
        Halt("boom"),
    ),
]


EXITS += [
    (
        "ready worker exiting 3 does not halt",
        dict(was_ready=True, code=3, boot_error=None, generation=1, workers=()),
        None,
    ),
    (
        "ready worker exiting 3 during a reload does not roll back",
        dict(was_ready=True, code=3, boot_error=None, generation=2, workers=(w(11, 0, gen=1),)),
        None,
    ),
    (
        "exit code 3 before ready still halts",
        dict(was_ready=False, code=3, boot_error=None, generation=1, workers=()),
        Halt("worker failed to boot (exit code 3)"),
    ),
]


@pytest.mark.parametrize("kw,expected", [e[1:] for e in EXITS], ids=[e[0] for e in EXITS])
def test_classify_exit(kw, expected):
    assert classify_exit(**kw) == expected


# -- liveness -----------------------------------------------------------------------------------------

LIVENESS = [
    ("heartbeat fresh", (w(10, 0, hb=NOW - 29),), []),
    ("heartbeat stale -> abort, refill", (w(10, 0, hb=NOW - 31),), [("Abort", 10), ("Spawn", 0)]),
    (
        "booting too long -> abort",
        (w(10, 0, state=BOOTING, started=NOW - 31, hb=None),),
        [("Abort", 10), ("Spawn", 0)],
    ),
    (
        "aborted within the grace: wait for it to die",
        (w(10, 0, state=ABORTED, hb=NOW - 40, stop_requested_at=NOW - 0.5), w(11, 0, started=NOW)),
        [],
    ),
    (
        "aborted and still there -> kill",
        (w(10, 0, state=ABORTED, hb=NOW - 40, stop_requested_at=NOW - 1.5), w(11, 0, started=NOW)),
        [("Kill", 10)],
    ),
    ("booting within timeout", (w(10, 0, state=BOOTING, started=NOW - 5, hb=None),), []),
    (
        "draining past graceful_timeout + grace -> kill",
        (w(10, 0, state=DRAINING, stop_requested_at=NOW - 33), w(11, 0)),
        [("Kill", 10)],
    ),
    (
        "draining within graceful_timeout",
        (w(10, 0, state=DRAINING, hb=NOW - 100, stop_requested_at=NOW - 20), w(11, 0)),
        [],
    ),
    ("already killed: nothing more", (w(10, 0, state=STOPPING, hb=NOW - 100), w(11, 0)), []),
]


@pytest.mark.parametrize(
    "workers,expected", [x[1:] for x in LIVENESS], ids=[x[0] for x in LIVENESS]
)
def test_liveness(workers, expected):
    c = Cluster(1, 1, workers, timeout=30.0, graceful_timeout=30.0)
    assert kinds(decide(c, NOW)) == expected


def test_abort_reason_names_the_silence():
    (abort, _) = decide(Cluster(1, 1, (w(10, 0, hb=NOW - 42),), timeout=5), NOW)
    assert isinstance(abort, Abort) and abort.reason is ExitReason.TIMEOUT
    assert "42.0s" in abort.detail and "timeout 5s" in abort.detail


def test_kill_after_abort_says_so():
    aborted = w(10, 0, state=ABORTED, hb=NOW - 42, stop_requested_at=NOW - 2)
    (kill, spawn) = decide(Cluster(1, 1, (aborted,), timeout=5), NOW)
    assert kill == Kill(10, ExitReason.TIMEOUT, f"still running {ABORT_GRACE_S:g}s after SIGABRT")
    assert spawn == Spawn(0, "slot empty")  # an aborted worker does not hold its slot


def test_next_deadline_of_an_aborted_worker():
    aborted = w(10, 0, state=ABORTED, hb=NOW - 42, stop_requested_at=NOW - 0.25)
    assert next_deadline(Cluster(1, 1, (aborted,), timeout=0), NOW) == pytest.approx(
        NOW - 0.25 + ABORT_GRACE_S
    )


def test_timeout_zero_disables_heartbeat_kill():
    assert decide(Cluster(1, 1, (w(10, 0, hb=0.0),), timeout=0), NOW) == []


# -- recycle and reload: one at a time, replacement ready before the old one stops --------------------


def test_recycle_spawns_replacement_first():
    c = Cluster(2, 1, (w(10, 0, retire_reason="max_requests"), w(11, 1)))
    assert kinds(decide(c, NOW)) == [("Spawn", 0)]


def test_recycle_waits_while_replacement_boots():
    c = Cluster(2, 1, (w(10, 0, retire_reason="max_requests"), w(12, 0, state=BOOTING), w(11, 1)))
    assert decide(c, NOW) == []


def test_recycle_stops_old_once_replacement_ready():
    c = Cluster(2, 1, (w(10, 0, retire_reason="max_requests"), w(12, 0, started=950.0), w(11, 1)))
    (stop,) = decide(c, NOW)
    assert stop == Stop(10, ExitReason.RECYCLE, "recycled (max_requests), replaced by pid 12")


def test_recycle_one_at_a_time():
    c = Cluster(
        3,
        1,
        (
            w(10, 0, retire_reason="max_requests"),
            w(11, 1, retire_reason="max_worker_memory"),
            w(12, 2, retire_reason="max_requests"),
        ),
    )
    assert kinds(decide(c, NOW)) == [("Spawn", 0)]
    c2 = Cluster(3, 1, (*c.workers, w(13, 0, state=BOOTING, started=NOW)))
    assert decide(c2, NOW) == []  # slot 0's replacement still booting: nobody else yet


RELOAD_STEPS = [
    # generation 2 requested; two slots of generation 1
    ("step 1: replace slot 0 first", (w(10, 0), w(11, 1)), [("Spawn", 0)]),
    ("step 2: slot 0 booting, wait", (w(10, 0), w(11, 1), w(20, 0, 2, BOOTING, NOW)), []),
    (
        "step 3: slot 0 ready -> TERM old 0, start slot 1",
        (w(10, 0), w(11, 1), w(20, 0, 2, READY, NOW)),
        [("Stop", 10), ("Spawn", 1)],
    ),
    (
        "step 4: slot 1 booting, old 0 draining",
        (
            w(10, 0, state=DRAINING, stop_requested_at=NOW),
            w(11, 1),
            w(20, 0, 2),
            w(21, 1, 2, BOOTING, NOW),
        ),
        [],
    ),
    ("step 5: slot 1 ready -> TERM old 1", (w(11, 1), w(20, 0, 2), w(21, 1, 2)), [("Stop", 11)]),
    ("done", (w(20, 0, 2), w(21, 1, 2)), []),
]


@pytest.mark.parametrize(
    "workers,expected", [r[1:] for r in RELOAD_STEPS], ids=[r[0] for r in RELOAD_STEPS]
)
def test_reload_ordering(workers, expected):
    assert kinds(decide(Cluster(2, 2, workers), NOW)) == expected


def test_reload_replaces_dead_slot_at_once_alongside_rolling():
    # slot 1 lost its worker during a reload: refilled at once, not queued behind the rolling restart
    c = Cluster(2, 2, (w(10, 0), w(20, 0, 2, BOOTING, NOW)))
    assert kinds(decide(c, NOW)) == [("Spawn", 1)]


def test_second_reload_during_first_treats_booting_as_old():
    c = Cluster(1, 3, (w(10, 0, 1), w(20, 0, 2, READY, NOW)))
    actions = decide(c, NOW)
    assert kinds(actions) == [("Spawn", 0)]
    c2 = Cluster(1, 3, (w(10, 0, 1), w(20, 0, 2), w(30, 0, 3, READY, NOW)))
    assert sorted(kinds(decide(c2, NOW))) == [("Stop", 10), ("Stop", 20)]


# -- TTIN / TTOU ---------------------------------------------------------------------------------------


def test_ttin_spawns_new_slot():
    c = Cluster(3, 1, (w(10, 0), w(11, 1)), open_slots=frozenset({0, 1}))
    assert kinds(decide(c, NOW)) == [("Spawn", 2)]


TTOU = [
    ("drain starts first", {}, [("StartDrain", 2)]),
    ("queue not empty: wait", {2: Drain(NOW - 1, 3)}, []),
    ("queue empty but not settled: wait", {2: Drain(NOW - 0.05, 0)}, []),
    ("queue empty and settled: stop", {2: Drain(NOW - 0.3, 0)}, [("Stop", 12)]),
    ("queue unknown, settled: stop", {2: Drain(NOW - 0.3, None)}, [("Stop", 12)]),
    ("drain timeout: stop anyway", {2: Drain(NOW - 11, 5)}, [("Stop", 12)]),
]


@pytest.mark.parametrize("draining,expected", [t[1:] for t in TTOU], ids=[t[0] for t in TTOU])
def test_ttou_drains_before_stop(draining, expected):
    workers = (w(10, 0), w(11, 1), w(12, 2))
    c = Cluster(2, 1, workers, draining=draining, open_slots=frozenset({0, 1, 2}))
    assert kinds(decide(c, NOW)) == expected


def test_ttou_closes_slot_after_worker_exits():
    c = Cluster(
        2, 1, (w(10, 0), w(11, 1)), draining={2: Drain(NOW - 1)}, open_slots=frozenset({0, 1, 2})
    )
    assert kinds(decide(c, NOW)) == [("CloseSlot", 2)]
    # still draining (TERM sent, not reaped yet): keep the socket
    c2 = Cluster(
        2,
        1,
        (w(10, 0), w(11, 1), w(12, 2, state=DRAINING, stop_requested_at=NOW)),
        draining={2: Drain(NOW - 1)},
        open_slots=frozenset({0, 1, 2}),
    )
    assert decide(c2, NOW) == []


def test_ttin_after_ttou_cancels_drain_and_refills():
    c = Cluster(
        3,
        1,
        (w(10, 0), w(11, 1), w(12, 2, state=DRAINING, stop_requested_at=NOW)),
        draining={2: Drain(NOW - 1)},
        open_slots=frozenset({0, 1, 2}),
    )
    assert kinds(decide(c, NOW)) == [("CancelDrain", 2), ("Spawn", 2)]


def test_removed_slot_without_worker_closes_at_once():
    c = Cluster(1, 1, (w(10, 0),), open_slots=frozenset({0, 1}))
    assert decide(c, NOW) == [CloseSlot(1)]


def test_shared_socket_mode_drains_by_settle_only():
    c = Cluster(1, 1, (w(10, 0), w(11, 1)), draining={1: Drain(NOW - 0.3, None)})
    assert kinds(decide(c, NOW)) == [("Stop", 11)]
    assert decide(Cluster(1, 1, (w(10, 0),), draining={1: Drain(NOW - 1)}), NOW) == [CloseSlot(1)]


def test_spawn_and_stop_reasons_say_why():
    assert decide(Cluster(1, 2, (w(10, 0),)), NOW) == [Spawn(0, "reload to generation 2")]
    retiring = (w(10, 0, retire_reason="max_worker_memory"),)
    assert decide(Cluster(1, 1, retiring), NOW) == [
        Spawn(0, "replacing a worker to recycle (max_worker_memory)")
    ]
    assert decide(Cluster(1, 1), NOW) == [Spawn(0, "slot empty")]


# -- deadlines -----------------------------------------------------------------------------------------


def test_next_deadline_is_earliest_of_heartbeat_backoff_drain():
    c = Cluster(
        2,
        1,
        (w(10, 0, hb=NOW - 25), w(11, 1, state=DRAINING, stop_requested_at=NOW - 1)),
        backoff={2: Backoff(0.4, NOW + 3)},
        timeout=30,
        graceful_timeout=30,
    )
    assert next_deadline(c, NOW) == pytest.approx(NOW + 3)  # backoff before heartbeat (NOW + 5)
    c2 = Cluster(2, 1, c.workers, timeout=30, graceful_timeout=30)
    assert next_deadline(c2, NOW) == pytest.approx(NOW + 5)


def test_next_deadline_polls_queue_only_while_worker_must_drain():
    c = Cluster(1, 1, (w(10, 0), w(11, 1)), draining={1: Drain(NOW)}, timeout=0)
    assert next_deadline(c, NOW) == pytest.approx(NOW + 0.05)
    c2 = Cluster(
        1,
        1,
        (w(10, 0), w(11, 1, state=DRAINING, stop_requested_at=NOW)),
        draining={1: Drain(NOW)},
        timeout=0,
        graceful_timeout=30,
    )
    assert next_deadline(c2, NOW) == pytest.approx(NOW + 32)


def test_next_deadline_none_when_nothing_pending():
    assert next_deadline(Cluster(1, 1, (w(10, 0),), timeout=0), NOW) is None


# -- exit reasons ---------------------------------------------------------------------------------------

EXIT_REASONS = [
    ("died unasked", dict(asked=None, killed=False, boot_error=False), ExitReason.CRASH),
    ("killed while silent", dict(asked=None, killed=True, boot_error=False), ExitReason.TIMEOUT),
    (
        "killed after TERM counts as timeout",
        dict(asked=ExitReason.RELOAD, killed=True, boot_error=False),
        ExitReason.TIMEOUT,
    ),
    ("boot error", dict(asked=None, killed=False, boot_error=True), ExitReason.BOOT_ERROR),
    (
        "recycled",
        dict(asked=ExitReason.RECYCLE, killed=False, boot_error=False),
        ExitReason.RECYCLE,
    ),
    ("reloaded", dict(asked=ExitReason.RELOAD, killed=False, boot_error=False), ExitReason.RELOAD),
    (
        "slot removed",
        dict(asked=ExitReason.SCALE_DOWN, killed=False, boot_error=False),
        ExitReason.SCALE_DOWN,
    ),
    (
        "supervisor stop",
        dict(asked=ExitReason.STOP, killed=False, boot_error=False),
        ExitReason.STOP,
    ),
]


@pytest.mark.parametrize(
    "kw,expected", [e[1:] for e in EXIT_REASONS], ids=[e[0] for e in EXIT_REASONS]
)
def test_exit_reason(kw, expected):
    assert exit_reason(**kw) is expected


def test_stop_actions_carry_their_reason():
    reload = decide(Cluster(1, 2, (w(10, 0), w(20, 0, 2))), NOW)
    assert [(type(a), a.reason) for a in reload] == [(Stop, ExitReason.RELOAD)]
    dup = decide(Cluster(1, 1, (w(10, 0, started=1.0), w(11, 0, started=2.0))), NOW)
    assert [(a.pid, a.reason) for a in dup] == [(11, ExitReason.STOP)]
    removed = decide(Cluster(1, 1, (w(10, 0), w(11, 1)), draining={1: Drain(NOW - 1, 0)}), NOW)
    assert [(a.pid, a.reason) for a in removed] == [(11, ExitReason.SCALE_DOWN)]


# -- reload coalescing ----------------------------------------------------------------------------------

RELOADING = [
    ("every worker current", Cluster(2, 3, (w(10, 0, 3), w(11, 1, 3))), False),
    ("old worker still serving", Cluster(2, 3, (w(10, 0, 2), w(11, 1, 3))), True),
    (
        "old worker draining still counts",
        Cluster(2, 3, (w(10, 0, 2, DRAINING, stop_requested_at=NOW), w(11, 0, 3), w(12, 1, 3))),
        True,
    ),
    ("no workers at all", Cluster(2, 3), False),
    ("current generation booting after a crash", Cluster(1, 3, (w(10, 0, 3, BOOTING),)), False),
]


@pytest.mark.parametrize(
    "cluster,expected", [r[1:] for r in RELOADING], ids=[r[0] for r in RELOADING]
)
def test_reloading(cluster, expected):
    assert reloading(cluster) is expected
