"""Worker -> supervisor messages: a sans-IO codec both sides share.

A message is a JSON object encoded as compact UTF-8. Framing is not done here: the worker sends each
encoded message with ``multiprocessing.connection.Connection.send_bytes`` (which adds a 4-byte length
prefix) and the supervisor reads it back with ``recv_bytes(MAX_MESSAGE_BYTES)``.

``MAX_MESSAGE_BYTES`` is kept below ``PIPE_BUF`` (4096 on Linux) minus that 4-byte prefix, so every
message is written to the pipe by one atomic ``write()``: with the pipe non-blocking, a full pipe makes
the write fail as a whole (EAGAIN) instead of leaving half a frame behind (POSIX ``write()``, O_NONBLOCK
with nbyte <= PIPE_BUF).

Message types (all carry ``"type"`` and ``"pid"``):

- ``ready``      {pid, slot, generation}: the app loaded and accept is live.
- ``boot_error`` {pid, message}: the app could not be loaded; the worker then exits EXIT_BOOT_ERROR.
- ``retire``     {pid, reason}: the worker wants a replacement: it reached its request budget
  (``"max_requests"``) or its pool is stuck (``"request_timeout"``, see worker.watchdog).
- ``stats``      {pid, slot, generation, time, <counters>, <gauges>}: every second; doubles as heartbeat.
  Counters are cumulative since the worker started: ``requests``, ``status`` ({"1xx".."5xx": n}),
  ``bytes_in``, ``bytes_out``, ``latency_buckets`` (PER-BUCKET counts, not cumulative: entry i counts
  durations d with LATENCY_BUCKETS_S[i-1] < d <= LATENCY_BUCKETS_S[i], Prometheus ``le`` semantics; the
  last bucket is +Inf), ``latency_sum`` (seconds), ``events`` ({name: n} for every EVENT_FIELDS name:
  rare things an operator must see counted, see below). Gauges: ``active_connections``,
  ``idle_connections``, ``busy_threads``, ``queue_depth``, ``threads``, ``stuck_threads`` (pool threads
  running a request for longer than --request-timeout; equal to ``threads`` = the pool is saturated).

Events: ``request_timeouts`` (requests that ran past --request-timeout, counted once each),
``shed_queue_timeout`` (503: waited longer than --queue-timeout for a thread), ``shed_stuck_pool`` (503:
queued behind a pool whose every thread is stuck), ``client_gone`` (queued requests dropped unrun because
the client had disconnected), ``accept_errors`` (accept() failures such as EMFILE),
``access_log_errors`` (access-log lines that could not be written), ``proxy_rejected`` (connections
closed for a missing, malformed, late or untrusted PROXY protocol header), ``poller_moved`` (requests run on
the poller's thread that blocked past --inline-budget, so the poller moved to the standby thread and
the worker served through its pool for a back-off: worker/leader.py).
"""

from __future__ import annotations

import json
import math
from typing import Any

# Upper bounds (seconds) of the request-duration histogram; the last one is +Inf (Prometheus default
# buckets, extended down to 1 ms because a static file on loopback answers well under 5 ms).
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, math.inf,
)  # fmt: skip

# Exit status of a worker that could not load the app (gunicorn's 3): at first boot the supervisor
# halts with it instead of fork-looping; during a reload it rolls back to the serving generation.
EXIT_BOOT_ERROR = 3

STATUS_CLASSES: tuple[str, ...] = ("1xx", "2xx", "3xx", "4xx", "5xx")

# PIPE_BUF (4096) minus the 4-byte length prefix multiprocessing adds: one atomic pipe write.
MAX_MESSAGE_BYTES = 4092

MESSAGE_TYPES = frozenset({"ready", "boot_error", "retire", "stats"})
COUNTER_FIELDS: tuple[str, ...] = ("requests", "bytes_in", "bytes_out")
GAUGE_FIELDS: tuple[str, ...] = (
    "active_connections", "idle_connections", "busy_threads", "queue_depth", "threads",
    "stuck_threads",
)  # fmt: skip
EVENT_FIELDS: tuple[str, ...] = (
    "request_timeouts", "shed_queue_timeout", "shed_stuck_pool", "client_gone", "accept_errors",
    "access_log_errors", "proxy_rejected", "poller_moved",
)  # fmt: skip

# Required fields per type, with the type each must have (bool is rejected where int is asked).
_REQUIRED: dict[str, dict[str, type | tuple[type, ...]]] = {
    "ready": {"pid": int, "slot": int, "generation": int},
    "boot_error": {"pid": int, "message": str},
    "retire": {"pid": int, "reason": str},
    "stats": {
        "pid": int,
        "time": (int, float),
        "status": dict,
        "latency_buckets": list,
        "latency_sum": (int, float),
        "events": dict,
        **dict.fromkeys(COUNTER_FIELDS + GAUGE_FIELDS, int),
    },
}


def encode(msg: dict[str, Any]) -> bytes:
    """Encode a message. Raises ValueError when it is invalid or larger than MAX_MESSAGE_BYTES."""
    _validate(msg)
    data = json.dumps(msg, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    if len(data) > MAX_MESSAGE_BYTES:
        raise ValueError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    return data


def decode(data: bytes) -> dict[str, Any]:
    """Decode and validate one message. Raises ValueError on oversize, non-UTF-8, non-JSON or bad shape."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise ValueError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        # parse_constant rejects NaN/Infinity, which are not JSON (RFC 8259 §6).
        msg = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"undecodable message: {exc}") from None
    _validate(msg)
    return msg


def ready(pid: int, slot: int, generation: int) -> dict[str, Any]:
    """The worker loaded the app and accepts connections."""
    return {"type": "ready", "pid": pid, "slot": slot, "generation": generation}


def boot_error(pid: int, message: str) -> dict[str, Any]:
    """The app could not be loaded. Long messages (tracebacks) are cut to fit MAX_MESSAGE_BYTES,
    keeping the end, where the exception line is."""
    msg = {"type": "boot_error", "pid": pid, "message": message}
    budget = MAX_MESSAGE_BYTES - 200
    while len(json.dumps(msg, ensure_ascii=False).encode()) > MAX_MESSAGE_BYTES:
        budget //= 2
        msg["message"] = "..." + message[-budget:]
    return msg


def retire(pid: int, reason: str = "max_requests") -> dict[str, Any]:
    """The worker wants to be replaced (it keeps serving until the supervisor sends TERM)."""
    return {"type": "retire", "pid": pid, "reason": reason}


def stats(
    pid: int,
    slot: int,
    generation: int,
    time: float,
    counters: dict[str, Any],
    gauges: dict[str, int],
) -> dict[str, Any]:
    """A stats/heartbeat message from a WorkerStats.snapshot() dict and a gauges dict.
    Missing gauges are sent as 0 so a partial gauges provider cannot make the message invalid."""
    msg: dict[str, Any] = {
        "type": "stats",
        "pid": pid,
        "slot": slot,
        "generation": generation,
        "time": time,
    }
    msg.update(counters)
    for name in GAUGE_FIELDS:
        msg[name] = int(gauges.get(name, 0))
    return msg


def _reject_constant(name: str) -> None:
    raise ValueError(f"non-JSON constant {name}")


def _is(value: Any, kind: type | tuple[type, ...]) -> bool:
    return isinstance(value, kind) and not isinstance(value, bool)


def _validate(msg: Any) -> None:
    if not isinstance(msg, dict):
        raise ValueError("message is not a JSON object")
    kind = msg.get("type")
    if kind not in MESSAGE_TYPES:
        raise ValueError(f"unknown message type {kind!r}")
    for name, expected in _REQUIRED[kind].items():
        if not _is(msg.get(name), expected):
            raise ValueError(f"{kind} message: field {name!r} missing or of the wrong type")
    if kind == "stats":
        _validate_stats(msg)


def _validate_stats(msg: dict[str, Any]) -> None:
    ints = [msg[name] for name in COUNTER_FIELDS + GAUGE_FIELDS]
    status = msg["status"]
    if set(status) != set(STATUS_CLASSES):
        raise ValueError("stats message: status must have exactly the keys 1xx..5xx")
    ints += status.values()
    buckets = msg["latency_buckets"]
    if len(buckets) != len(LATENCY_BUCKETS_S):
        raise ValueError(
            f"stats message: latency_buckets must have {len(LATENCY_BUCKETS_S)} entries"
        )
    ints += buckets
    events = msg["events"]
    if set(events) != set(EVENT_FIELDS):
        raise ValueError("stats message: events must have exactly the keys of EVENT_FIELDS")
    ints += events.values()
    if not all(_is(n, int) and n >= 0 for n in ints):
        raise ValueError("stats message: counters and gauges must be non-negative integers")
    if not math.isfinite(msg["latency_sum"]) or msg["latency_sum"] < 0:
        raise ValueError("stats message: latency_sum must be a non-negative number")
