"""The stats snapshot in Prometheus text exposition format 0.0.4, for the admin endpoint's /metrics.

Counters end in ``_total``, the latency histogram has ``_bucket``/``_sum``/``_count``, every family has
one HELP and one TYPE line; per-worker series carry ``slot`` and ``pid`` labels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from webcluster.cluster.snapshot import StatsSnapshot
from webcluster.worker.ipc import EVENT_FIELDS, STATUS_CLASSES

METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # Prometheus text exposition 0.0.4

# Worker events (ipc.EVENT_FIELDS) as Prometheus counters: (family, help, labels).
_EVENT_METRICS: dict[str, tuple[str, str, dict[str, str]]] = {
    "request_timeouts": (
        "webcluster_request_timeouts_total", "Requests that ran longer than --request-timeout.", {}
    ),
    "shed_queue_timeout": (
        "webcluster_shed_total", "Requests answered 503 or dropped without reaching the app.",
        {"reason": "queue_timeout"},
    ),
    "shed_stuck_pool": ("webcluster_shed_total", "", {"reason": "stuck_pool"}),
    "client_gone": ("webcluster_shed_total", "", {"reason": "client_gone"}),
    "accept_errors": ("webcluster_accept_errors_total", "accept() failures (EMFILE...).", {}),
    "access_log_errors": (
        "webcluster_access_log_errors_total", "Access-log lines that could not be written.", {}
    ),
    "proxy_rejected": (
        "webcluster_proxy_rejected_total",
        "Connections closed for a missing, malformed or untrusted PROXY protocol header.", {}
    ),
    "poller_moved": (
        "webcluster_poller_moved_total",
        "Requests on the poller's thread that blocked past --inline-budget (the poller moved).", {}
    ),
}  # fmt: skip


def _event_families(family: Callable[..., None], snap: StatsSnapshot) -> None:
    grouped: dict[str, tuple[str, list[Sample]]] = {}
    for i, name in enumerate(EVENT_FIELDS):
        metric, text, labels = _EVENT_METRICS[name]
        entry = grouped.setdefault(metric, (text, []))
        entry[1].append(("", labels, snap.totals.events[i]))
    for metric, (text, samples) in grouped.items():
        family(metric, "counter", text, samples)


Sample = tuple[str, dict[str, str], float | int]  # (name suffix, labels, value)


def render_metrics(snap: StatsSnapshot) -> str:
    """The snapshot in Prometheus text exposition format 0.0.4 (one HELP and TYPE per family)."""
    out: list[str] = []
    totals, gauges = snap.totals, snap.gauges
    family = _family_writer(out)
    family(
        "webcluster_requests_total", "counter", "Requests answered, by status class.",
        [("", {"status": c}, n) for c, n in zip(STATUS_CLASSES, totals.status, strict=True)],
    )  # fmt: skip
    family(
        "webcluster_worker_requests_total", "counter", "Requests answered by each live worker.",
        [("", _wl(w.slot, w.pid), w.counters.requests) for w in snap.workers],
    )  # fmt: skip
    family("webcluster_bytes_in_total", "counter", "Request bytes received.",
           [("", {}, totals.bytes_in)])  # fmt: skip
    family("webcluster_bytes_out_total", "counter", "Response bytes sent.",
           [("", {}, totals.bytes_out)])  # fmt: skip
    family(
        "webcluster_connections", "gauge", "Open client connections, by state.",
        [("", {"state": "active"}, gauges.active_connections),
         ("", {"state": "idle"}, gauges.idle_connections)],
    )  # fmt: skip
    family("webcluster_busy_threads", "gauge", "Pool threads running a request.",
           [("", {}, gauges.busy_threads)])  # fmt: skip
    family("webcluster_queue_depth", "gauge", "Requests waiting for a pool thread.",
           [("", {}, gauges.queue_depth)])  # fmt: skip
    family(
        "webcluster_request_duration_seconds", "histogram",
        "Time from a complete request head to the last response byte queued.",
        _histogram(snap),
    )  # fmt: skip
    _worker_gauges(family, snap)
    _event_families(family, snap)
    family("webcluster_stuck_threads", "gauge",
           "Pool threads running a request for longer than --request-timeout.",
           [("", {}, gauges.stuck_threads)])  # fmt: skip
    family(
        "webcluster_worker_saturated", "gauge",
        "1 when every pool thread of the worker is stuck past --request-timeout.",
        [("", _wl(w.slot, w.pid), int(w.gauges.saturated)) for w in snap.workers],
    )  # fmt: skip
    family(
        "webcluster_worker_restarts_total", "counter", "Workers started in a slot after its first.",
        [("", {"slot": str(slot)}, n) for slot, n in sorted(snap.restarts.items())],
    )  # fmt: skip
    family("webcluster_workers", "gauge", "Live worker processes.",
           [("", {}, len(snap.workers))])  # fmt: skip
    family("webcluster_generation", "gauge", "Configuration generation (raised by each reload).",
           [("", {}, snap.generation)])  # fmt: skip
    family("webcluster_uptime_seconds", "gauge", "Seconds since the supervisor started.",
           [("", {}, snap.uptime_s)])  # fmt: skip
    return "\n".join(out) + "\n"


def _worker_gauges(family: Callable[..., None], snap: StatsSnapshot) -> None:
    sampled = [w for w in snap.workers if w.proc is not None]
    for name, attr, text in (
        ("rss_bytes", "rss_bytes", "Resident set size of each worker."),
        ("cpu_percent", "cpu_percent", "CPU use of each worker since the previous sample (%)."),
        ("open_fds", "open_fds", "Open file descriptors of each worker."),
        ("threads", "num_threads", "OS threads of each worker."),
    ):
        samples = [("", _wl(w.slot, w.pid), getattr(w.proc, attr)) for w in sampled]
        family(f"webcluster_worker_{name}", "gauge", text, samples)


def _histogram(snap: StatsSnapshot) -> list[Sample]:
    samples: list[Sample] = []
    running = 0
    for bound, count in zip(snap.latency_bounds_s, snap.totals.latency_buckets, strict=True):
        running += count  # Prometheus buckets are cumulative; ours are per bucket
        samples.append(("_bucket", {"le": _num(bound)}, running))
    samples.append(("_sum", {}, snap.totals.latency_sum))
    samples.append(("_count", {}, running))
    return samples


def _family_writer(out: list[str]) -> Callable[[str, str, str, Iterable[Sample]], None]:
    def family(name: str, kind: str, text: str, samples: Iterable[Sample]) -> None:
        out.append(f"# HELP {name} {_escape_help(text)}")
        out.append(f"# TYPE {name} {kind}")
        for suffix, labels, value in samples:
            out.append(f"{name}{suffix}{_labels(labels)} {_num(value)}")

    return family


def _wl(slot: int, pid: int) -> dict[str, str]:
    return {"slot": str(slot), "pid": str(pid)}


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    body = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
    return "{" + body + "}"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _num(value: float | int) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value))
