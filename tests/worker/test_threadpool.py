"""ThreadPool: threads start on demand up to ``size``, the last thread to park is woken first, a backlog
forms only when every thread is busy, and a failing task never kills a thread."""

from __future__ import annotations

import threading

import pytest

from tests.conftest import poll
from webcluster.worker.threadpool import ThreadPool

pytestmark = pytest.mark.timeout(20)


def _run_and_wait(pool: ThreadPool, fn) -> None:
    done = threading.Event()

    def task(_: object) -> None:
        try:
            fn()
        finally:
            done.set()

    pool.submit(task, None)
    assert done.wait(5)


def test_threads_start_on_demand_and_never_beyond_size() -> None:
    pool = ThreadPool(3)
    assert pool.started == 0
    release = threading.Event()
    entered = threading.Semaphore(0)

    def block(_: object) -> None:
        entered.release()
        release.wait(5)

    for _ in range(5):
        pool.submit(block, None)
    for _ in range(3):
        assert entered.acquire(timeout=5)
    assert pool.started == 3 and pool.busy == 3
    assert pool.queued == 2  # every thread busy: the rest wait, no fourth thread
    release.set()
    for _ in range(2):
        assert entered.acquire(timeout=5)  # the backlog is drained by the threads that finish
    poll("the pool to go idle", lambda: pool.busy == 0 and pool.queued == 0)
    assert pool.started == 3


def test_sequential_tasks_reuse_the_thread_that_parked_last() -> None:
    pool = ThreadPool(8)
    ran_on: list[str] = []
    for _ in range(20):
        _run_and_wait(pool, lambda: ran_on.append(threading.current_thread().name))
        poll("the thread to park", lambda: pool.busy == 0)
    # LIFO: one task at a time never needs a second thread once the first has parked
    assert len(set(ran_on)) <= 2, ran_on
    assert pool.started <= 2


def test_a_failing_task_is_logged_and_the_thread_lives(caplog) -> None:
    pool = ThreadPool(1)

    def boom() -> None:
        raise RuntimeError("boom")

    _run_and_wait(pool, boom)
    _run_and_wait(pool, lambda: None)
    assert pool.started == 1
    assert "unhandled error in pool thread" in caplog.text


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ThreadPool(0)
