"""worker.inflight: per-thread request records in a shared mapping (read by the supervisor on a death)."""

from __future__ import annotations

import mmap
import threading
import time

from webcluster.worker.inflight import LEADER_SEATS, RECORD_BYTES, TEXT_BYTES, Inflight


def test_begin_and_end_per_thread():
    table = Inflight.create(threads=4)
    done = threading.Event()
    started = threading.Barrier(3)

    def serve(target: str, finish: bool) -> None:
        table.begin("GET", target, time.monotonic())
        if finish:
            table.end()
        started.wait(5)
        done.wait(5)

    threads = [
        threading.Thread(target=serve, args=("/a", False)),
        threading.Thread(target=serve, args=("/b", True)),
    ]
    for t in threads:
        t.start()
    started.wait(5)
    assert [r.request for r in table.running()] == ["GET /a"]
    done.set()
    for t in threads:
        t.join(5)
    table.close()


def test_next_request_on_a_thread_reuses_its_record():
    table = Inflight.create(threads=1)
    table.begin("GET", "/first", time.monotonic())
    table.end()
    table.begin("POST", "/second?x=1", time.monotonic())
    (running,) = table.running()
    assert running.request == "POST /second?x=1" and running.started > 0
    table.end()
    assert table.running() == []


def test_end_takes_the_record_begin_returned():
    table = Inflight.create(threads=1)
    first = table.begin("GET", "/a", time.monotonic())
    table.end(first)
    assert table.running() == []
    assert table.begin("GET", "/b", time.monotonic()) == first  # the thread's one record, again
    table.end(first)
    assert table.running() == []
    lone = Inflight(mmap.mmap(-1, RECORD_BYTES), threads=1)
    lone.begin("GET", "/taken", time.monotonic())
    result: list[int] = []
    other = threading.Thread(target=lambda: result.append(lone.begin("GET", "/none", 1.0)))
    other.start()
    other.join(5)
    assert result == [-1]  # no record left: end(-1) must do nothing
    lone.end(-1)
    assert [r.request for r in lone.running()] == ["GET /taken"]


def test_long_targets_are_truncated_and_more_threads_than_records_are_ignored():
    table = Inflight(mmap.mmap(-1, RECORD_BYTES), threads=1)
    table.begin("GET", "/" + "x" * 1000, time.monotonic())
    (running,) = table.running()
    assert len(running.request) == TEXT_BYTES and running.request.startswith("GET /xxx")
    table.begin("GET", "/" + "y" * 70_000, time.monotonic())  # longer than a u16 can count
    (running,) = table.running()
    assert len(running.request) == TEXT_BYTES and running.request.startswith("GET /yyy")
    other = threading.Thread(target=table.begin, args=("GET", "/no-record-left", time.monotonic()))
    other.start()
    other.join(5)
    assert [r.request for r in table.running()] == [running.request]


def test_oldest_first_and_size():
    table = Inflight.create(threads=3)
    # a record for each pool thread and each thread that may hold the poller (worker.leader)
    assert len(table._buf) == (3 + LEADER_SEATS) * RECORD_BYTES == 1280
    threads = [
        threading.Thread(target=table.begin, args=("GET", f"/{i}", time.monotonic()))
        for i in range(3)
    ]
    for t in threads:
        t.start()
        t.join(5)
    assert [r.request for r in table.running()] == ["GET /0", "GET /1", "GET /2"]


def test_by_thread_names_the_thread_of_each_running_request():
    """The watchdog's view of the same records: which thread runs what, since when."""
    table = Inflight.create(threads=2)
    table.begin("GET", "/mine?q=1", 5.0)
    other = threading.Thread(target=lambda: (table.begin("PUT", "/x", 6.0), table.end()))
    other.start()
    other.join(5)
    ((ident, (started, request)),) = table.by_thread()
    assert (ident, started) == (threading.get_ident(), 5.0)
    assert (request.method, request.target) == ("GET", "/mine?q=1")
    table.end()
    assert table.by_thread() == []
    table.close()
