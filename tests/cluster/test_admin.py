"""cluster.admin: routes from snapshots, Prometheus text checked by a strict parser, and the server over
real loopback sockets (all endpoints, 404, 405, HEAD, keep-alive, healthz 503, stop)."""

from __future__ import annotations

import http.client
import json
import math
import os
import re
import socket
from dataclasses import dataclass, field

import pytest

from webcluster.cluster.admin import AdminServer, Health, route
from webcluster.cluster.metrics import render_metrics
from webcluster.cluster.snapshot import ProcInfo, StatsSnapshot
from webcluster.cluster.stats import StatsAggregator
from webcluster.worker import ipc
from webcluster.worker.stats import WorkerStats


def SERVING() -> Health:  # noqa: N802 (the arbiter's answer while a worker is ready)
    return Health.SERVING


def DRAINING() -> Health:  # noqa: N802
    return Health.DRAINING


# --- a strict Prometheus text format 0.0.4 parser ---------------------------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\["\\n])*)"'
_SAMPLE = re.compile(rf"({_NAME})(?:\{{((?:{_LABEL},)*(?:{_LABEL})?)\}})? (\S+)(?: (-?\d+))?")
_TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}
_SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("", "_sum", "_count")}


@dataclass
class Family:
    name: str
    type: str = "untyped"
    help: str | None = None
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)


def _value(text: str) -> float:
    if text in ("+Inf", "-Inf", "NaN"):
        return float(text.replace("Inf", "inf").replace("NaN", "nan"))
    if not re.fullmatch(r"-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", text):
        raise ValueError(f"bad sample value {text!r}")
    return float(text)


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), value)


def _family_of(name: str, families: dict[str, Family], current: Family | None) -> Family:
    if current is None:
        raise ValueError(f"sample {name} before any TYPE line")
    allowed = [current.name + s for s in _SUFFIXES.get(current.type, ("",))]
    if name not in allowed:
        raise ValueError(f"sample {name} outside its family block ({current.name})")
    return current


def parse_prometheus(text: str) -> dict[str, Family]:
    """Parse exposition text strictly: HELP/TYPE before samples, families contiguous, no duplicates."""
    if not text.endswith("\n"):
        raise ValueError("exposition must end with a newline")
    families: dict[str, Family] = {}
    current: Family | None = None
    seen: set[tuple[str, tuple]] = set()
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            _, kind, name, *rest = line.split(" ", 3)
            if not re.fullmatch(_NAME, name):
                raise ValueError(f"bad metric name {name!r}")
            if current is None or current.name != name:
                if name in families:
                    raise ValueError(f"family {name} is not contiguous")
                current = families[name] = Family(name)
            if kind == "TYPE":
                if current.samples or rest[0] not in _TYPES:
                    raise ValueError(f"bad or late TYPE line: {line!r}")
                current.type = rest[0]
            else:
                current.help = rest[0] if rest else ""
            continue
        if not line or line.startswith("#"):
            raise ValueError(f"unexpected line {line!r}")
        match = _SAMPLE.fullmatch(line)
        if not match:
            raise ValueError(f"malformed sample {line!r}")
        name, label_text = match.group(1), match.group(2) or ""
        labels = {k: _unescape(v) for k, v in re.findall(_LABEL, label_text)}
        key = (name, tuple(sorted(labels.items())))
        if key in seen:
            raise ValueError(f"duplicate sample {line!r}")
        seen.add(key)
        family = _family_of(name, families, current)
        family.samples.append((name, labels, _value(match.group(len(match.groups()) - 1))))
    for family in families.values():
        if family.type == "histogram":
            _check_histogram(family)
    return families


def _check_histogram(family: Family) -> None:
    buckets = [(float(lb["le"]), v) for n, lb, v in family.samples if n.endswith("_bucket")]
    counts = [v for _, v in buckets]
    if counts != sorted(counts) or not buckets or buckets[-1][0] != math.inf:
        raise ValueError(f"{family.name}: buckets must be cumulative and end with le=+Inf")
    (count,) = [v for n, _, v in family.samples if n == family.name + "_count"]
    if count != counts[-1]:
        raise ValueError(f"{family.name}: _count != +Inf bucket")


def test_parser_rejects_what_it_should() -> None:
    good = "# HELP a_total x\n# TYPE a_total counter\na_total 1\n"
    assert parse_prometheus(good)["a_total"].samples == [("a_total", {}, 1.0)]
    for bad in (
        "# TYPE a counter\na 1",  # no final newline
        "a 1\n",  # no TYPE
        "# TYPE a gauge\na one\n",
        "# TYPE a gauge\na{x=1} 1\n",
        "# TYPE a gauge\na 1\na 2\n",
        "# TYPE a gauge\nb 1\n",
        "# TYPE a gauge\n# TYPE b gauge\n# TYPE a gauge\n",
        '# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_count 1\nh_sum 0\n',
    ):
        with pytest.raises(ValueError):
            parse_prometheus(bad)


# --- fixtures -----------------------------------------------------------------------------------


def _message(pid: int, slot: int, n: int, latency: float) -> dict:
    ws = WorkerStats()
    for i in range(n):
        ws.record(200 if i % 10 else 503, latency, 50, 500)
    gauges = {"active_connections": 2, "idle_connections": 5, "busy_threads": 1, "threads": 8}
    return ipc.decode(ipc.encode(ipc.stats(pid, slot, 1, 0.0, ws.snapshot(), gauges)))


def make_snapshot() -> StatsSnapshot:
    """Two live workers (one restarted slot) with psutil figures for one of them."""
    clock = [100.0]
    procs = {11: ProcInfo(20 << 20, 5.5, 12, 30)}
    agg = StatsAggregator(proc_info=procs.get, clock=lambda: clock[0])
    agg.worker_started(0, 10, 1, 100.0)
    agg.on_message(0, 10, _message(10, 0, 30, 0.02), 100.5)
    agg.worker_exited(0, 10, 101.0, "crash")
    agg.worker_started(0, 11, 2, 101.0)
    agg.worker_started(1, 12, 2, 101.0)
    agg.on_message(0, 11, _message(11, 0, 20, 0.003), 102.0)
    agg.on_message(1, 12, _message(12, 1, 10, 3.0), 102.0)
    agg.sample(102.0)
    clock[0] = 103.0
    return agg.snapshot()


class FakeSource:
    def __init__(self) -> None:
        self.snap = make_snapshot()
        self.calls = 0

    def snapshot(self) -> StatsSnapshot:
        self.calls += 1
        return self.snap


def _values(fam: Family, **labels: str) -> list[float]:
    return [v for _, lb, v in fam.samples if all(lb.get(k) == x for k, x in labels.items())]


def test_metrics_parse_and_carry_the_snapshot() -> None:
    fams = parse_prometheus(render_metrics(make_snapshot()))
    for name, kind in {
        "webcluster_requests_total": "counter",
        "webcluster_worker_requests_total": "counter",
        "webcluster_bytes_in_total": "counter",
        "webcluster_bytes_out_total": "counter",
        "webcluster_connections": "gauge",
        "webcluster_busy_threads": "gauge",
        "webcluster_queue_depth": "gauge",
        "webcluster_request_duration_seconds": "histogram",
        "webcluster_worker_rss_bytes": "gauge",
        "webcluster_worker_cpu_percent": "gauge",
        "webcluster_worker_open_fds": "gauge",
        "webcluster_worker_threads": "gauge",
        "webcluster_worker_restarts_total": "counter",
        "webcluster_generation": "gauge",
        "webcluster_uptime_seconds": "gauge",
    }.items():
        assert fams[name].type == kind and fams[name].help, name
    assert _values(fams["webcluster_requests_total"], status="2xx") == [54]
    assert _values(fams["webcluster_requests_total"], status="5xx") == [6]
    assert sum(_values(fams["webcluster_requests_total"])) == 60  # includes the exited worker
    assert _values(fams["webcluster_worker_requests_total"], slot="0", pid="11") == [20]
    assert _values(fams["webcluster_worker_requests_total"], slot="1", pid="12") == [10]
    assert _values(fams["webcluster_bytes_in_total"]) == [3000]
    assert _values(fams["webcluster_connections"], state="active") == [4]
    assert _values(fams["webcluster_connections"], state="idle") == [10]
    hist = fams["webcluster_request_duration_seconds"]
    assert _values(hist, le="0.005") == [20] and _values(hist, le="0.025") == [50]
    assert _values(hist, le="+Inf") == [60] and hist.samples[-1][2] == 60
    assert _values(hist)[-2] == pytest.approx(20 * 0.003 + 30 * 0.02 + 10 * 3.0)  # _sum
    assert _values(fams["webcluster_worker_rss_bytes"], pid="11") == [20 << 20]
    assert _values(fams["webcluster_worker_rss_bytes"], pid="12") == []  # not sampled: omitted
    assert _values(fams["webcluster_worker_restarts_total"], slot="0") == [1]
    assert _values(fams["webcluster_worker_restarts_total"], slot="1") == [0]
    assert _values(fams["webcluster_generation"]) == [2]
    assert _values(fams["webcluster_uptime_seconds"]) == [3.0]


def test_peers_outside_admin_allow_ips_get_only_healthz() -> None:
    source = FakeSource()
    for path in ("/stats", "/metrics", "/", "/index.html", "/nope"):
        assert route("GET", path, source, SERVING, allowed=False).status == 403, path
    assert route("GET", "/healthz", source, SERVING, allowed=False).status == 200
    assert route("GET", "/healthz", source, DRAINING, allowed=False).status == 503


def test_health_starts_as_starting_and_says_no_worker_only_after_one_was_ready() -> None:
    h = Health.STARTING
    steps = []
    for leaving, ready in [
        (False, False),
        (False, True),
        (False, False),
        (False, True),
        (True, True),
    ]:
        h = h.next(leaving=leaving, ready=ready)
        steps.append(h)
    assert steps == [
        Health.STARTING,
        Health.SERVING,
        Health.NO_WORKER,
        Health.SERVING,
        Health.DRAINING,
    ]
    assert Health.DRAINING.next(leaving=True, ready=False) is Health.DRAINING


def test_routes() -> None:
    source = FakeSource()
    up = route("GET", "/healthz", source, SERVING)
    assert (up.status, up.body) == (200, b"ok\n")
    down = route("GET", "/healthz", source, DRAINING)
    assert (down.status, down.body) == (503, b"draining\n")
    stats = route("GET", "/stats?x=1", source, SERVING)
    assert stats.content_type == "application/json"
    assert json.loads(stats.body)["totals"]["requests"] == 60
    page = route("GET", "/", source, SERVING)
    assert page.content_type.startswith("text/html")
    assert dict(page.headers)["Content-Security-Policy"].startswith("default-src 'none'")
    assert route("GET", "/nope", source, SERVING).status == 404
    post = route("POST", "/stats", source, SERVING)
    assert post.status == 405 and ("Allow", "GET, HEAD") in post.headers


def test_dashboard_is_self_contained() -> None:
    html = route("GET", "/", FakeSource(), SERVING).body.decode()
    # no external scripts, styles, images or fonts: every URL-ish attribute is local or data:
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:|stats|#)""", html)
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in html and "@import" not in html and "url(" not in html
    for hook in ('id="workers"', 'id="chart-rps"', 'id="chart-latency"', "dataset.pid"):
        assert hook in html


# --- the server over real sockets -----------------------------------------------------------


@pytest.fixture
def server():
    source = FakeSource()
    healthy = [Health.SERVING]
    srv = AdminServer("127.0.0.1:0", source, lambda: healthy[0], timeout=5.0)
    srv.start()
    try:
        yield srv, source, healthy
    finally:
        srv.stop()


def _get(srv: AdminServer, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    host, port = srv.address
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


@pytest.mark.timeout(30)
def test_server_endpoints(server) -> None:
    srv, source, healthy = server
    status, headers, body = _get(srv, "GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    assert int(headers["content-length"]) == len(body)
    parse_prometheus(body.decode())
    status, headers, body = _get(srv, "GET", "/stats")
    assert status == 200 and json.loads(body)["generation"] == 2
    assert _get(srv, "GET", "/")[0] == 200
    assert _get(srv, "GET", "/healthz")[2] == b"ok\n"
    healthy[0] = Health.DRAINING
    assert _get(srv, "GET", "/healthz")[:1] == (503,)
    assert _get(srv, "GET", "/missing")[0] == 404
    status, headers, body = _get(srv, "DELETE", "/stats")
    assert status == 405 and headers["allow"] == "GET, HEAD"


@pytest.mark.timeout(30)
def test_server_head_has_headers_and_no_body(server) -> None:
    srv, _, _ = server
    _, get_headers, get_body = _get(srv, "GET", "/stats")
    status, headers, body = _get(srv, "HEAD", "/stats")
    assert status == 200 and body == b""
    assert headers["content-length"] == get_headers["content-length"] == str(len(get_body))


@pytest.mark.timeout(30)
def test_server_keep_alive_and_stop(server) -> None:
    srv, source, _ = server
    host, port = srv.address
    conn = http.client.HTTPConnection(host, port, timeout=10)
    for _ in range(3):  # one connection, three requests (HTTP/1.1 persistence, RFC 9112 §9.3)
        conn.request("GET", "/stats")
        assert conn.getresponse().read()
    assert source.calls == 3
    sock = conn.sock
    srv.stop()  # closes the idle keep-alive connection and the listening socket
    sock.settimeout(10)
    assert sock.recv(1) == b""
    conn.close()
    with pytest.raises(OSError):
        socket.create_connection((host, port), timeout=2).close()


def _exchange(srv: AdminServer, raw: bytes) -> bytes:
    host, port = srv.address
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(raw)
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    return data


@pytest.mark.timeout(30)
def test_server_pipelining_and_protocol_errors(server) -> None:
    srv, _, _ = server
    raw = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nHEAD /stats HTTP/1.1\r\nHost: x\r\n\r\n"
    data = _exchange(srv, raw + b"GET /healthz HTTP/1.0\r\n\r\n")  # 1.0: close after it
    assert data.count(b"HTTP/1.1 200 ") == 3 and data.endswith(b"ok\n")
    assert b"\r\nDate: " in data and b"\r\nCache-Control: no-store\r\n" in data
    bad = _exchange(srv, b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n")
    assert bad.startswith(b"HTTP/1.1 400 ") and b"Connection: close" in bad
    post = _exchange(srv, b"POST /stats HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
    assert post.startswith(b"HTTP/1.1 405 ") and b"Allow: GET, HEAD" in post


@pytest.mark.timeout(30)
def test_server_caps_connections() -> None:
    srv = AdminServer("127.0.0.1:0", FakeSource(), SERVING, max_connections=1, timeout=5.0)
    srv.start()
    try:
        host, port = srv.address
        holder = socket.create_connection((host, port), timeout=10)  # takes the only slot
        extra = socket.create_connection((host, port), timeout=10)
        assert extra.recv(1) == b""  # closed at once, no thread spent on it
        extra.close()
        holder.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := holder.recv(4096):
            data += chunk
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"ok\n")
        holder.close()
    finally:
        srv.stop()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("spec", ["[::1]:0", "unix"])
def test_server_ipv6_and_unix(spec: str, tmp_path) -> None:
    if spec == "unix":
        spec = f"unix:{tmp_path}/admin.sock"
    elif not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    srv = AdminServer(spec, FakeSource(), SERVING)
    try:
        srv.start()
    except OSError as exc:
        pytest.skip(f"cannot bind {spec}: {exc}")
    try:
        addr = srv.address
        family = socket.AF_UNIX if isinstance(addr, str) else socket.AF_INET6
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(addr if isinstance(addr, str) else addr[:2])
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"ok\n")
    finally:
        srv.stop()
    if isinstance(addr, str):
        assert not os.path.exists(addr)  # stop() removed the socket file


# --- worker events and saturation ---------------------------------------------------------------


def _event_snapshot(stuck: dict[int, int]) -> StatsSnapshot:
    """Two workers of 4 threads; ``stuck`` maps pid -> threads stuck past --request-timeout."""
    agg = StatsAggregator(proc_info=lambda pid: None, clock=lambda: 10.0)
    for slot, pid in enumerate((11, 12)):
        agg.worker_started(slot, pid, 1, 0.0)
        ws = WorkerStats()
        ws.record(200, 0.01, 10, 10)
        ws.count("request_timeouts", 2)
        ws.count("shed_queue_timeout", 5)
        ws.count("client_gone")
        ws.count("accept_errors", 3)
        gauges = {"threads": 4, "busy_threads": 4, "stuck_threads": stuck.get(pid, 0)}
        msg = ipc.decode(ipc.encode(ipc.stats(pid, slot, 1, 1.0, ws.snapshot(), gauges)))
        agg.on_message(slot, pid, msg, 1.0)
    return agg.snapshot()


def test_worker_events_are_summed_into_stats_and_metrics() -> None:
    snap = _event_snapshot({11: 4})
    totals = snap.to_dict()["totals"]
    assert totals["request_timeouts"] == 4 and totals["shed_queue_timeout"] == 10
    assert totals["client_gone"] == 2 and totals["accept_errors"] == 6
    assert totals["access_log_errors"] == 0 and totals["stuck_threads"] == 4
    workers = snap.to_dict()["workers"]
    assert [(w["pid"], w["saturated"], w["stuck_threads"]) for w in workers] == [
        (11, True, 4),
        (12, False, 0),
    ]
    fams = parse_prometheus(render_metrics(snap))
    assert _values(fams["webcluster_request_timeouts_total"]) == [4]
    assert _values(fams["webcluster_shed_total"], reason="queue_timeout") == [10]
    assert _values(fams["webcluster_shed_total"], reason="stuck_pool") == [0]
    assert _values(fams["webcluster_shed_total"], reason="client_gone") == [2]
    assert _values(fams["webcluster_accept_errors_total"]) == [6]
    assert _values(fams["webcluster_stuck_threads"]) == [4]
    assert _values(fams["webcluster_worker_saturated"], pid="11") == [1]
    assert _values(fams["webcluster_worker_saturated"], pid="12") == [0]


def test_healthz_names_saturated_workers_and_fails_when_all_are() -> None:
    class Source:
        def __init__(self, snap: StatsSnapshot) -> None:
            self.snap = snap

        def snapshot(self) -> StatsSnapshot:
            return self.snap

    def health(stuck: dict[int, int], state: Health = Health.SERVING) -> tuple[int, bytes]:
        resp = route("GET", "/healthz", Source(_event_snapshot(stuck)), lambda: state)
        return resp.status, resp.body

    assert health({}) == (200, b"ok\n")
    assert health({11: 3}) == (200, b"ok\n")  # one thread still free: not saturated
    assert health({11: 4}) == (200, b"ok; saturated: worker 11 (slot 0)\n")
    assert health({11: 4, 12: 4}) == (503, b"saturated: worker 11 (slot 0), worker 12 (slot 1)\n")
    assert health({}, Health.DRAINING) == (503, b"draining\n")
    assert health({}, Health.STARTING) == (503, b"starting: no worker is ready yet\n")
    assert health({}, Health.NO_WORKER) == (503, b"unavailable: no worker is ready\n")
