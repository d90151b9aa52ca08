"""worker.ipc codec and worker.reporter: round trips, garbage, a full or broken pipe."""

from __future__ import annotations

import json
import multiprocessing
import os

import pytest

from webcluster.worker import ipc
from webcluster.worker.reporter import Reporter
from webcluster.worker.stats import WorkerStats

GAUGES = {
    "active_connections": 3,
    "idle_connections": 2,
    "busy_threads": 1,
    "queue_depth": 0,
    "threads": 32,
}


def _stats_msg(**over: object) -> dict:
    stats = WorkerStats()
    stats.record(200, 0.003, 120, 4000)
    stats.record(404, 0.2, 80, 150)
    msg = ipc.stats(1234, 0, 1, 1700000000.5, stats.snapshot(), GAUGES)
    msg.update(over)
    return msg


@pytest.mark.parametrize(
    "msg",
    [
        ipc.ready(10, 2, 3),
        ipc.boot_error(10, "ModuleNotFoundError: No module named 'nope' – ünïcode"),
        ipc.retire(10),
        _stats_msg(),
    ],
    ids=["ready", "boot_error", "retire", "stats"],
)
def test_round_trip(msg: dict) -> None:
    data = ipc.encode(msg)
    assert isinstance(data, bytes)
    assert len(data) <= ipc.MAX_MESSAGE_BYTES
    assert ipc.decode(data) == msg


def test_stats_message_fields() -> None:
    msg = _stats_msg()
    assert msg["type"] == "stats"
    assert msg["requests"] == 2
    assert msg["status"] == {"1xx": 0, "2xx": 1, "3xx": 0, "4xx": 1, "5xx": 0}
    assert msg["bytes_in"] == 200 and msg["bytes_out"] == 4150
    assert len(msg["latency_buckets"]) == len(ipc.LATENCY_BUCKETS_S)
    assert sum(msg["latency_buckets"]) == 2
    assert msg["latency_sum"] == pytest.approx(0.203)
    for name, value in GAUGES.items():
        assert msg[name] == value


def test_missing_gauges_are_zero() -> None:
    msg = ipc.stats(1, 0, 1, 1.0, WorkerStats().snapshot(), {"busy_threads": 4})
    assert msg["busy_threads"] == 4 and msg["queue_depth"] == 0
    ipc.decode(ipc.encode(msg))


def test_long_boot_error_is_cut_to_fit_keeping_the_end() -> None:
    text = "Traceback:\n" + "x" * 20000 + "\nImportError: the real reason"
    msg = ipc.boot_error(1, text)
    data = ipc.encode(msg)
    assert len(data) <= ipc.MAX_MESSAGE_BYTES
    assert ipc.decode(data)["message"].endswith("ImportError: the real reason")
    wide = ipc.boot_error(1, "€" * 5000 + "end")  # 3 bytes per char in UTF-8
    assert ipc.decode(ipc.encode(wide))["message"].endswith("end")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xfe garbage",
        b"not json",
        b"[1, 2, 3]",
        b'"ready"',
        b'{"type": "nope", "pid": 1}',
        b'{"pid": 1}',
        b'{"type": "ready", "pid": "1", "slot": 0, "generation": 1}',
        b'{"type": "ready", "pid": true, "slot": 0, "generation": 1}',
        b'{"type": "ready", "pid": 1, "slot": 0}',
        b'{"type": "retire", "pid": 1, "reason": 5}',
        b'{"type": "ready", "pid": 1, "slot": 0, "generation": NaN}',
        b"{" * 100,
        b'{"type": "ready", "pid": 1, "slot": 0, "generation": 1, "pad": "'
        + b"a" * ipc.MAX_MESSAGE_BYTES
        + b'"}',
    ],
)
def test_garbage_is_rejected(data: bytes) -> None:
    with pytest.raises(ValueError):
        ipc.decode(data)


@pytest.mark.parametrize(
    "over",
    [
        {"status": {"2xx": 1}},
        {"status": {"1xx": 0, "2xx": -1, "3xx": 0, "4xx": 0, "5xx": 0}},
        {"latency_buckets": [0, 1]},
        {"latency_buckets": [0] * 13 + [1.5]},
        {"requests": -1},
        {"requests": 1.0},
        {"busy_threads": None},
        {"latency_sum": -0.5},
        {"time": "now"},
        {"events": {"request_timeouts": 1}},
        {"events": dict.fromkeys(ipc.EVENT_FIELDS, -1)},
        {"stuck_threads": "all"},
    ],
)
def test_bad_stats_are_rejected_both_ways(over: dict) -> None:
    msg = _stats_msg(**over)
    with pytest.raises(ValueError):
        ipc.encode(msg)
    with pytest.raises(ValueError):
        ipc.decode(json.dumps(msg).encode())


def test_encode_rejects_oversize_and_nan() -> None:
    with pytest.raises(ValueError):
        ipc.encode({**ipc.retire(1), "pad": "a" * ipc.MAX_MESSAGE_BYTES})
    with pytest.raises(ValueError):
        ipc.encode(_stats_msg(latency_sum=float("nan")))


# --- Reporter ---------------------------------------------------------------------------------


class FakeChannel:
    """Records frames; can pretend the pipe is full or gone."""

    def __init__(self) -> None:
        self.sent: list[dict] = []
        self.fail: type[BaseException] | None = None

    def send_bytes(self, buf: bytes) -> None:
        if self.fail is not None:
            raise self.fail()
        self.sent.append(ipc.decode(buf))


def _reporter(channel: object, stats: WorkerStats | None = None) -> Reporter:
    return Reporter(
        channel,  # type: ignore[arg-type]
        stats or WorkerStats(),
        lambda: GAUGES,
        slot=1,
        generation=2,
        clock=lambda: 1700000000.0,
        pid=4321,
    )


def test_reporter_sends_ready_retire_and_stats_every_interval() -> None:
    channel = FakeChannel()
    stats = WorkerStats()
    rep = _reporter(channel, stats)
    rep.send_ready()
    rep.tick(100.0)  # first tick sends at once
    stats.record(201, 0.01, 10, 20)
    rep.tick(100.5)  # too early
    rep.tick(101.0)
    rep.send_retire()
    assert [m["type"] for m in channel.sent] == ["ready", "stats", "stats", "retire"]
    assert channel.sent[0] == {"type": "ready", "pid": 4321, "slot": 1, "generation": 2}
    last = channel.sent[2]
    assert last["requests"] == 1 and last["status"]["2xx"] == 1
    assert last["slot"] == 1 and last["generation"] == 2 and last["time"] == 1700000000.0
    assert last["threads"] == 32
    rep.flush()
    assert channel.sent[-1]["type"] == "stats"


def test_reporter_full_pipe_drops_stats_and_retries_control() -> None:
    channel = FakeChannel()
    rep = _reporter(channel)
    channel.fail = BlockingIOError
    rep.send_ready()
    rep.tick(1.0)
    rep.send_retire()
    assert channel.sent == [] and rep.dropped == 1 and not rep.broken
    channel.fail = None
    rep.tick(1.5)  # pending control messages go first, in order; stats not yet due
    assert [m["type"] for m in channel.sent] == ["ready", "retire"]
    rep.tick(2.0)
    assert channel.sent[-1]["type"] == "stats"


def test_reporter_survives_broken_pipe_and_bad_gauges() -> None:
    channel = FakeChannel()

    def broken_gauges() -> dict[str, int]:
        raise RuntimeError("gauge bug")

    rep = Reporter(channel, WorkerStats(), broken_gauges, slot=0, generation=1, pid=1)
    rep.tick(0.0)
    assert channel.sent[-1]["busy_threads"] == 0  # gauges failed: zeros, heartbeat still sent
    channel.fail = BrokenPipeError
    rep.tick(5.0)
    rep.send_retire()
    rep.flush()
    assert rep.broken
    assert Reporter(None, WorkerStats(), dict, slot=0, generation=1).broken


def test_reporter_over_a_real_pipe_never_blocks_when_full() -> None:
    reader, writer = multiprocessing.Pipe(duplex=False)
    try:
        rep = _reporter(writer)
        assert not os.get_blocking(writer.fileno())
        for i in range(2000):  # ~1 KB each: far more than a 64 KiB pipe holds
            rep.tick(float(i))
        assert rep.dropped > 0 and not rep.broken
        got = 0
        while reader.poll(0):
            msg = ipc.decode(reader.recv_bytes(ipc.MAX_MESSAGE_BYTES))  # every frame intact
            assert msg["type"] == "stats"
            got += 1
        assert got + rep.dropped == 2000
        reader.close()
        rep.tick(5000.0)
        assert rep.broken
    finally:
        writer.close()
        reader.close()
