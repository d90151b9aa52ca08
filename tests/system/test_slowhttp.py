"""Slow and hostile clients: what each timeout bounds, and slowhttptest against a real server.

In-process (the real Loop + ThreadPool over loopback, ``tests.support.serve``):
- a slow body is read by the loop, not a pool thread (also a pipelined one), and ends in 408 at
  --body-timeout or --body-min-rate; an ``Expect: 100-continue`` body is bounded by the min rate in its
  thread;
- a large file is sent by the loop after the thread has moved on; a reader that stalls on it is reset
  after --send-timeout; a slow reader of a large generated response holds a thread for a bounded time.

System (supervisor.py in a subprocess, ``tests.conftest.run_supervisor``):
- slowhttptest in slow-headers (-H), slow-body (-B) and slow-read (-X) modes, 1,000 attacking connections
  each, while a client thread measures normal requests (every one answered, p99 < 1 s) and both the
  attacker's sockets and the server's /stats show the attack connections being closed by the timeouts;
- a connection flood beyond --max-connections waits in the kernel backlog.
"""

from __future__ import annotations

import http.client
import os
import resource
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass

import psutil
import pytest

from tests.conftest import poll
from tests.support import is_closed, read_response, serve
from webcluster.worker.handlers.base import Exchange


def echo_length(ex: Exchange) -> None:
    body = str(len(ex.body.read())).encode()
    ex.start_response(200, "OK", [("Content-Length", str(len(body)))])
    ex.write(body)


def post(length: int, extra: bytes = b"") -> bytes:
    return b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n" % (length, extra)


def trickle_until_answer(c: socket.socket, piece: bytes, every: float, limit: float) -> int | None:
    """Send ``piece`` every ``every`` seconds until the server answers; its status (None: no answer)."""
    c.settimeout(every)
    start = time.monotonic()
    while time.monotonic() - start < limit:
        try:
            c.sendall(piece)
            head = c.recv(64)
        except TimeoutError:
            continue
        except OSError:
            return None
        return int(head.split()[1]) if head else None
    return None


# ---- in-process ----------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_slow_bodies_wait_in_the_loop_not_in_threads_and_get_408():
    with serve(echo_length, threads=2, body_timeout=3.0) as srv:
        slow = []
        for _ in range(10):  # five times more slow bodies than threads
            c = srv.connect()
            c.sendall(post(1000) + b"x" * 10)
            slow.append(c)
        start = time.monotonic()
        fresh = srv.connect()
        fresh.sendall(post(5) + b"hello")
        assert read_response(fresh)[2] == b"5"  # answered at once: no thread is waiting on a body
        assert time.monotonic() - start < 1.5
        poll("srv.pool.busy == 0", lambda: srv.pool.busy == 0, 1.0)
        for c in slow:
            status, headers, _ = read_response(c)
            assert status == 408 and headers["connection"] == "close"
            assert is_closed(c)


@pytest.mark.timeout(30)
def test_body_min_rate_cuts_a_trickle_that_the_body_timeout_would_not():
    with serve(echo_length, body_timeout=10.0, body_min_rate=1000) as srv:
        c = srv.connect()
        c.sendall(post(100_000))
        start = time.monotonic()
        # 250 B/s, each gap far below the 10 s body timeout
        assert trickle_until_answer(c, b"x" * 50, 0.2, 8) == 408
        assert 1.0 <= time.monotonic() - start < 5.0


@pytest.mark.timeout(30)
def test_a_fast_body_passes_the_min_rate_and_a_large_one_is_finished_by_a_thread():
    with serve(echo_length, body_min_rate=1000, body_timeout=5.0) as srv:
        size = 3 * 65536 + 7  # above the loop's pre-read budget: a thread reads the rest
        c = srv.connect()
        c.sendall(post(size))
        for i in range(0, size, 50_000):
            c.sendall(b"y" * min(50_000, size - i))
        assert read_response(c)[2] == str(size).encode()
        c.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        )
        assert read_response(c)[2] == b"3"


@pytest.mark.timeout(30)
def test_a_pipelined_slow_body_goes_back_to_the_loop():
    with serve(echo_length, threads=1, body_timeout=3.0) as srv:
        c = srv.connect()
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + post(100) + b"abc")
        assert read_response(c)[0] == 200
        start = time.monotonic()
        other = srv.connect()
        other.sendall(post(2) + b"ok")
        assert read_response(other)[2] == b"2"  # the only thread is free while that body trickles
        assert time.monotonic() - start < 1.5
        assert read_response(c)[0] == 408


@pytest.mark.timeout(30)
def test_expect_continue_body_is_bounded_by_the_min_rate_in_its_thread():
    with serve(echo_length, threads=1, body_timeout=10.0, body_min_rate=1000) as srv:
        c = srv.connect()
        c.sendall(post(100_000, b"Expect: 100-continue\r\n"))
        assert c.recv(64) == b"HTTP/1.1 100 Continue\r\n\r\n"
        start = time.monotonic()
        assert trickle_until_answer(c, b"z" * 20, 0.3, 8) == 408
        assert time.monotonic() - start < 5.0
        poll("srv.pool.busy == 0", lambda: srv.pool.busy == 0, 5.0)


@pytest.mark.timeout(30)
def test_a_slow_reader_holds_a_thread_for_at_most_the_send_timeout():
    big = b"x" * (16 << 20)

    def huge(ex: Exchange) -> None:
        ex.start_response(200, "OK", [("Content-Length", str(len(big)))])
        for i in range(0, len(big), 65536):
            ex.write(big[i : i + 65536])

    with serve(huge, send_timeout=1.0) as srv:
        c = srv.connect()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        poll("the request running", lambda: srv.busy == 1, 5)  # pool or poller thread: both bounded
        stop = threading.Event()

        def trickle() -> None:  # 4 KiB every 0.2 s: steady progress, but 16 MiB would take 800 s
            while not stop.is_set():
                try:
                    if not c.recv(4096):
                        return
                except OSError:
                    return
                stop.wait(0.2)

        reader = threading.Thread(target=trickle, daemon=True)
        reader.start()
        try:
            start = time.monotonic()
            poll("no request running", lambda: srv.busy == 0, 10)
            assert time.monotonic() - start < 6.0
        finally:
            stop.set()
            reader.join(5)


def file_sender(path: str, trailer: bytes = b""):
    """A handler that sends the file at ``path`` with ``Exchange.sendfile`` (chunked: no length)."""

    def handler(ex: Exchange) -> None:
        ex.start_response(200, "OK", [("Content-Type", "application/octet-stream")])
        with open(path, "rb") as f:
            ex.sendfile(f, 0, os.fstat(f.fileno()).st_size)
        ex.write(trailer)

    return handler


@pytest.mark.timeout(30)
def test_a_large_file_is_sent_by_the_loop_in_order(tmp_path):
    data = os.urandom(1 << 20) * 12  # more than the kernel buffers while nobody reads
    (tmp_path / "f").write_bytes(data)
    with serve(file_sender(str(tmp_path / "f"), b"END"), threads=1) as srv:
        c = srv.connect()
        c.sendall(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
        # Both responses are queued (the second behind the first file) and the only thread is
        # free before the client has read a byte: the loop does the sending.
        poll(
            "srv.pool.busy == 0 and srv.loop.gauges()['active_connections'] == 1",
            lambda: srv.pool.busy == 0 and srv.loop.gauges()["active_connections"] == 1,
            5.0,
        )
        for _ in range(2):
            status, headers, body = read_response(c)
            assert status == 200 and headers["transfer-encoding"] == "chunked"
            assert body == data + b"END"


@pytest.mark.timeout(30)
def test_a_reader_that_stalls_on_a_large_file_is_reset_after_the_send_timeout(tmp_path):
    (tmp_path / "f").write_bytes(os.urandom(1 << 20) * 8)
    with serve(file_sender(str(tmp_path / "f")), threads=1, send_timeout=1.0) as srv:
        c = srv.connect()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        poll(
            "srv.loop.gauges()['active_connections'] == 1",
            lambda: srv.loop.gauges()["active_connections"] == 1,
            5.0,
        )
        poll(
            "srv.pool.busy == 0", lambda: srv.pool.busy == 0, 1.0
        )  # no thread waits for this reader
        other = srv.connect()
        other.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(other)[0] == 200
        other.close()
        start = time.monotonic()
        poll(
            "srv.loop.gauges()['active_connections'] == 0",
            lambda: srv.loop.gauges()["active_connections"] == 0,
            5,
        )
        assert 0.5 <= time.monotonic() - start < 4
        # Reset, not closed: what the kernel still held for this client was dropped.
        c.settimeout(5)
        with pytest.raises(ConnectionResetError):
            while c.recv(65536):
                pass


# ---- slowhttptest against a real server ------------------------------------------------------------

SLOWHTTPTEST = shutil.which("slowhttptest")
needs_slowhttptest = pytest.mark.skipif(
    SLOWHTTPTEST is None,
    reason="slowhttptest is not installed (Debian package; .ci/run installs it)",
)
ATTACKERS = 1000
TIMEOUT = 5  # the server's header, body, send and keep-alive timeouts in these tests
LENGTH = 20  # slowhttptest's test length (-l): the attack must be over well before it


def raise_nofile() -> None:
    """1,000 attack sockets plus the probe's: lift the soft fd limit (slowhttptest inherits it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Every(threading.Thread):
    """Calls ``self.step()`` every ``interval`` seconds until ``stop()``."""

    interval = 0.25

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.start_time = time.monotonic()
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.step()
            self._done.wait(self.interval)

    def step(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self._done.set()
        self.join(15)


class Probe(Every):
    """A well-behaved client: one GET on a fresh connection every 20 ms; latency of each answer."""

    interval = 0.02

    def __init__(self, port: int) -> None:
        super().__init__()
        self.port = port
        self.latencies: list[float] = []
        self.failures: list[str] = []

    def step(self) -> None:
        start = time.perf_counter()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            conn.request("GET", "/")
            resp = conn.getresponse()
            answer = resp.status, resp.read()
            conn.close()
        except OSError as exc:
            self.failures.append(repr(exc))
            return
        self.latencies.append(time.perf_counter() - start)
        if answer != (200, b"hello"):
            self.failures.append(f"bad answer {answer!r}")

    def p99(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


class ServerSide(Every):
    """The server's view from /stats: (t, open connections, busy threads)."""

    def __init__(self, sup) -> None:
        super().__init__()
        self.sup = sup
        self.samples: list[tuple[float, int, int]] = []

    def step(self) -> None:
        try:
            totals = self.sup.stats()["totals"]
        except (OSError, AssertionError, ValueError):
            return
        conns = totals["active_connections"] + totals["idle_connections"]
        self.samples.append((time.monotonic() - self.start_time, conns, totals["busy_threads"]))


class ClientSide(Every):
    """The attacker's view: (t, ESTABLISHED sockets slowhttptest holds to the server port). Its own
    counters are not enough: in slow-read mode it does not notice a reset connection."""

    interval = 0.5

    def __init__(self, pid: int, port: int) -> None:
        super().__init__()
        self.proc = psutil.Process(pid)
        self.port = port
        self.samples: list[tuple[float, int]] = []

    def stop(self) -> None:
        super().stop()
        self.step()  # a last look, after slowhttptest exited

    def step(self) -> None:
        try:
            conns = self.proc.net_connections(kind="tcp")
        except psutil.NoSuchProcess:  # it has exited (or is a zombie): it holds nothing any more
            self.samples.append((time.monotonic() - self.start_time, 0))
            return
        held = sum(
            1
            for c in conns
            if c.status == psutil.CONN_ESTABLISHED and c.raddr and c.raddr.port == self.port
        )
        self.samples.append((time.monotonic() - self.start_time, held))


@dataclass
class Attack:
    probe: Probe
    server: ServerSide
    client: ClientSide
    output: str

    def report(self, mode: str) -> str:
        peak_t, peak = max(self.client.samples, key=lambda s: s[1])
        gone = next((t for t, n in self.client.samples if t > peak_t and n <= 10), None)
        return (
            f"slowhttptest {mode}: peak {peak} attack connections at {peak_t:.1f}s, all closed by "
            f"{gone}s; server peak {max(c for _, c, _ in self.server.samples)} connections, "
            f"max busy threads {max(b for _, _, b in self.server.samples)}; normal clients: "
            f"{len(self.probe.latencies)} answered, {len(self.probe.failures)} failed, "
            f"p99 {self.probe.p99() * 1000:.1f} ms"
        )


def run_attack(sup, mode: str, path: str, *extra: str) -> Attack:
    """slowhttptest ``mode`` (-H/-B/-X) against ``path`` with 1,000 connections opened at 400/s, while
    a probe measures normal requests and both sides' connection counts are sampled."""
    raise_nofile()
    cmd = [SLOWHTTPTEST, mode, "-c", str(ATTACKERS), "-r", "400", "-l", str(LENGTH), "-p", "3"]
    cmd += ["-u", f"{sup.url}{path}", *extra]
    probe, server = Probe(sup.port), ServerSide(sup)
    probe.start()
    server.start()
    attacker = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    client = ClientSide(attacker.pid, sup.port)
    client.start()
    try:
        output, _ = attacker.communicate(timeout=LENGTH + 15)
    finally:
        if attacker.poll() is None:
            attacker.kill()
            attacker.wait(5)
        client.stop()
        # the server's figures lag by up to a report interval: let them settle, then stop
        poll(
            "the server to drop the attack",
            lambda: server.samples and server.samples[-1][1] <= 10,
            6,
        )
        probe.stop()
        server.stop()
    attack = Attack(probe, server, client, output)
    print(attack.report(mode))
    return attack


def check(attack: Attack, max_busy: int | None = None) -> None:
    """Normal clients unharmed; ~1,000 attack connections really held, then closed by the server's
    timeouts (within 2 x TIMEOUT of the last one opening, long before slowhttptest's own end)."""
    probe = attack.probe
    assert not probe.failures, probe.failures[:5]
    assert len(probe.latencies) >= 100, len(probe.latencies)
    assert probe.p99() < 1.0, f"p99 {probe.p99():.3f}s over {len(probe.latencies)} requests"
    samples = attack.client.samples
    peak_t, peak = max(samples, key=lambda s: s[1])
    assert peak >= ATTACKERS * 0.95, samples
    gone = [t for t, n in samples if t > peak_t and n <= 10]
    assert gone and gone[0] - peak_t <= 2 * TIMEOUT + 3, samples
    assert gone[0] < LENGTH - 2, samples  # closed by the server, not by slowhttptest's own exit
    assert max(c for _, c, _ in attack.server.samples) >= ATTACKERS * 0.5, attack.server.samples
    if max_busy is not None:  # while the server holds the attack, its pool threads are free
        # (from 1 s after it holds half of it: opening 1,000 connections is real work; the first ones
        # are closed by the timeouts about when the last open, so the full plateau lasts only ~1-2 s)
        held = [s for s in attack.server.samples if s[1] >= ATTACKERS * 0.5]
        settled = [s for s in held if held and s[0] >= held[0][0] + 1.0]
        assert settled and max(busy for _, _, busy in settled) <= max_busy, held


@pytest.fixture
def attacked(run_supervisor, tmp_path):
    """Two workers x 16 threads, 5 s timeouts, the hostile app and an 8 MiB static file."""
    files = tmp_path / "files"
    files.mkdir()
    (files / "big.bin").write_bytes(os.urandom(1 << 16) * 128)
    timeouts = [
        f"--{name}" for name in ("header-timeout", "body-timeout", "send-timeout", "keepalive")
    ]
    args = [arg for name in timeouts for arg in (name, str(TIMEOUT))]
    raise_nofile()
    return run_supervisor(
        "--app",
        "tests.apps.hostile:app",
        "--static",
        f"/files={files}",
        "-w",
        "2",
        "-t",
        "16",
        *args,
    )


@needs_slowhttptest
@pytest.mark.timeout(60)
def test_slow_headers_slowloris(attacked):
    # A new header line every 3 s (< the timeout): only the whole-head deadline (408) can end it.
    check(run_attack(attacked, "-H", "/", "-i", "3"))


@needs_slowhttptest
@pytest.mark.timeout(60)
def test_slow_body_rudy(attacked):
    # 8 KiB announced, body bytes every 2 s: the loop's pre-read deadline (408) ends it, and no pool
    # thread ever waits for one of these bodies.
    check(run_attack(attacked, "-B", "/echo", "-i", "2", "-s", "8192"), max_busy=4)


@needs_slowhttptest
@pytest.mark.timeout(60)
def test_slow_read(attacked):
    # An 8 MiB file read 32 bytes a second through a 512-1024 byte window: the loop sends the file
    # (no thread waits) and resets each connection once it takes nothing for --send-timeout.
    extra = ("-k", "1", "-w", "512", "-y", "1024", "-n", "1", "-z", "32")
    check(run_attack(attacked, "-X", "/files/big.bin", *extra), max_busy=4)


@pytest.mark.timeout(60)
def test_a_connection_flood_is_capped_per_worker(run_supervisor):
    # 150 silent connections against a cap of 50: the worker holds at most 50 (the rest wait in the
    # kernel backlog), closes each silent one at --header-timeout, and a real request that queued
    # behind them is still answered once slots free up.
    sup = run_supervisor(
        "--app",
        "tests.apps.hostile:app",
        "-w",
        "1",
        "--max-connections",
        "50",
        "--header-timeout",
        "2",
    )
    raise_nofile()
    flood = [socket.create_connection(("127.0.0.1", sup.port), timeout=10) for _ in range(150)]
    try:
        real = socket.create_connection(("127.0.0.1", sup.port), timeout=20)
        real.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        highest = 0
        start = time.monotonic()
        while time.monotonic() - start < 3:
            worker = sup.stats()["workers"][0]
            highest = max(highest, worker["active_connections"] + worker["idle_connections"])
            assert worker["open_fds"] <= 50 + 25, worker  # sockets + the worker's own fds
            time.sleep(0.2)
        assert 40 <= highest <= 50
        status, _, body = read_response(real)
        assert (status, body) == (200, b"hello")
        assert time.monotonic() - start < 15
    finally:
        for c in flood:
            c.close()
