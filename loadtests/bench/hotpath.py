"""Per-request CPU cost of webcluster's hot path, in one thread, without the network (``python -m
loadtests.bench.hotpath``).

Measures, in microseconds per request, the pieces a keep-alive hello-world request goes through: parsing
the head (``H1Connection.next_event``), the pool-thread side (``Runner.run``: Exchange, WSGI environ, the
app, start_response, response head, ``send`` on a socketpair, stats) and both together, and on their own
the stats ``record`` and the in-flight record (``Inflight.begin``/``end``) every request makes. A socketpair stands
in for the client; its other end is drained after every request. With ``--profile`` it prints a cProfile
of the combined loop. With ``--instructions`` it counts, under valgrind (``apt-get install valgrind``),
the user-space instructions per request of: parse + serve; the whole worker path of a keep-alive request
(``Loop.step``: epoll, recv, parse, serve inline, re-arm); the same for a ``Connection: close`` request
(accept to close; the client's own calls are in the count too); and the same keep-alive path for the
bench's 13-byte static file. A count, unlike a time, does not move with what else the machine runs, so a
change of 1 % is seen in one run. With ``--bytecodes`` it counts the Python bytecodes a keep-alive request
and a ``Connection: close`` one execute on the whole worker path, and which functions execute them (no
valgrind needed). Used to measure the optimisations listed in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import os
import pstats
import re
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # hello.py

from hello import app  # noqa: E402

from webcluster.worker.connection import Conn  # noqa: E402
from webcluster.worker.handlers.dispatch import build_handler  # noqa: E402
from webcluster.worker.handlers.static import SETTLED  # noqa: E402
from webcluster.worker.http.protocol import H1Connection, Limits  # noqa: E402
from webcluster.worker.inflight import Inflight  # noqa: E402
from webcluster.worker.loop import Loop  # noqa: E402
from webcluster.worker.runner import Runner  # noqa: E402
from webcluster.worker.stats import WorkerStats  # noqa: E402
from webcluster.worker.threadpool import ThreadPool  # noqa: E402
from webcluster.worker.transport import LoopHost, LoopSettings  # noqa: E402

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
STATIC_REQUEST = b"GET /static/13b.txt HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
CLOSE_REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: close\r\n\r\n"
REPO = Path(__file__).resolve().parents[2]
# Timeouts of the counted loops, in their fake time: entries come due after about 800 requests, within
# the 1,000 that warm up before the count starts
STEADY_TIMEOUT = 0.05


def _setup() -> tuple[Conn, socket.socket, Runner]:
    ours, client = socket.socketpair()
    ours.setblocking(False)
    handler = build_handler(app=app, forwarded_allow_ips=("127.0.0.1", "::1"))

    # The worker's own Host; the hand-back to the loop is not measured, and the connection never ends.
    def no_loop(*args) -> None:
        pass

    host = LoopHost(LoopSettings(keepalive_requests=1 << 62), no_loop, no_loop, no_loop)
    conn = Conn(ours, H1Connection(Limits(), b"webcluster"), host, ("127.0.0.1", 50000),
                ("127.0.0.1", 8080))  # fmt: skip
    return conn, client, Runner(handler, WorkerStats(), None)


def measure(n: int) -> dict[str, float]:
    """Microseconds per request for: parse only, serve only, parse + serve, stats record, in-flight record."""
    conn, client, runner = _setup()
    h1 = conn.h1
    out: dict[str, float] = {}
    t_parse = t_serve = 0.0
    for _ in range(n):
        t0 = time.perf_counter()
        h1.receive_data(REQUEST)
        h1.next_event()
        conn.host.begin_request(conn)
        t1 = time.perf_counter()
        runner.run(conn)
        t2 = time.perf_counter()
        client.recv(65536)
        t_parse += t1 - t0
        t_serve += t2 - t1
    out["parse (loop thread)"] = t_parse / n * 1e6
    out["serve (pool thread)"] = t_serve / n * 1e6
    out["total"] = out["parse (loop thread)"] + out["serve (pool thread)"]
    # The same, timed by this thread's CPU clock over the whole loop: on a busy machine wall time counts
    # the time other processes ran; this does not.
    t0 = time.thread_time()
    _serve(conn, client, runner, n)
    out["total (thread CPU time)"] = (time.thread_time() - t0) / n * 1e6
    client.close()
    conn.sock.close()
    out["WorkerStats.record"] = _record_cost(n)
    out["Inflight begin + end"] = _inflight_cost(n)
    return out


def _serve(conn: Conn, client: socket.socket, runner: Runner, n: int) -> None:
    """``n`` keep-alive requests, parse and serve, with no timing of their own."""
    h1 = conn.h1
    for _ in range(n):
        h1.receive_data(REQUEST)
        h1.next_event()
        conn.host.begin_request(conn)
        runner.run(conn)
        client.recv(65536)


def _record_cost(n: int) -> float:
    """Microseconds per ``WorkerStats.record`` call: part of "serve", on every request."""
    record = WorkerStats().record
    t0 = time.perf_counter()
    for _ in range(n):
        record(200, 0.0042, 100, 1000)
    return (time.perf_counter() - t0) / n * 1e6


def _inflight_cost(n: int) -> float:
    """Microseconds per request for the record of what a pool thread runs (crash log and watchdog)."""
    table = Inflight.create(1)
    begin, end = table.begin, table.end
    t0 = time.perf_counter()
    for _ in range(n):
        begin("GET", "/", time.monotonic())
        end()
    cost = (time.perf_counter() - t0) / n * 1e6
    table.close()
    return cost


def _loop(settings: LoopSettings, static_root: str | None = None) -> tuple[Loop, WorkerStats]:
    """A worker's loop on a listener of its own, with the bench's handler (the hello app, and the static
    files under ``/static`` when ``static_root`` is given) and a fake clock (10 µs per reading; a request
    reads it about six times, so fake time passes about as fast as real time under load), so the count
    does not depend on how fast the run goes (valgrind runs it fifty times slower). Its header and keep-alive timeouts are STEADY_TIMEOUT of that
    fake time: as in a server that has been under load for longer than its timeouts, the voided entries
    every request leaves behind come due while the requests are counted, but no live connection's
    deadline does. The leader serves inline as under ``Loop.run``, without the watcher thread."""
    settings = replace(settings, keepalive=STEADY_TIMEOUT, header_timeout=STEADY_TIMEOUT)
    readings = itertools.count()
    listener = socket.create_server(("127.0.0.1", 0))
    stats = WorkerStats()
    mounts = (("/static", static_root),) if static_root else ()
    handler = build_handler(app=app, static_mounts=mounts, forwarded_allow_ips=("127.0.0.1", "::1"))
    runner = Runner(handler, stats, None, Inflight.create(1))
    loop = Loop([listener], runner, ThreadPool(1), settings,
                clock=lambda: next(readings) * 1e-5)  # fmt: skip
    assert loop.lead is not None
    loop.lead.active = True
    loop.acceptor.start()
    return loop, stats


def _keepalive(
    request: bytes = REQUEST, static_root: str | None = None
) -> tuple[Callable[[], None], WorkerStats]:
    """One keep-alive request through the whole worker path on one thread, as a call: the client
    sends, one ``Loop.step`` (epoll, recv, parse, the leader serves the request inline, re-arm), the
    client reads."""
    loop, stats = _loop(LoopSettings(keepalive_requests=1 << 62), static_root)
    client = socket.create_connection(loop.acceptor.listeners[0].sock.getsockname())
    while loop.gauges()["active_connections"] + loop.gauges()["idle_connections"] == 0:
        loop.step()
    sink = bytearray(65536)

    def one() -> None:
        client.send(request)
        loop.step()
        client.recv_into(sink)

    return one, stats


def _serve_loop(n: int, request: bytes = REQUEST, static_root: str | None = None) -> None:
    """``n`` keep-alive requests through the whole worker path (``_keepalive``)."""
    one, stats = _keepalive(request, static_root)
    for _ in range(n):
        one()
    _check_served(stats, n)


def _static_loop(n: int) -> None:
    """``_serve_loop`` for the bench's small static file (``static13``: 13 bytes under ``/static``)."""
    with tempfile.TemporaryDirectory() as root:
        path = Path(root, "13b.txt")
        path.write_bytes(b"Hello, file!\n")
        # As in the bench (files made minutes before), the file is old enough to be kept in memory
        time.sleep(max(0.0, SETTLED - (time.time() - path.stat().st_ctime)))
        _serve_loop(n, STATIC_REQUEST, root)


def _closing(early: bool = False) -> tuple[Callable[[], None], WorkerStats]:
    """One request with ``Connection: close`` through the whole worker path, on a connection of its
    own, as a call: the client connects and sends, the loop steps (accept, recv, parse, serve inline,
    close) until the client reads the end of the stream. ``early``: with ``--defer-accept 0``, the loop
    accepts the connection before the client sends (its first read finds nothing and it is armed),
    what most connections went through before TCP_DEFER_ACCEPT."""
    loop, stats = _loop(LoopSettings(defer_accept=0) if early else LoopSettings())
    address = loop.acceptor.listeners[0].sock.getsockname()

    def one() -> None:
        client = socket.socket()
        client.connect(address)
        client.settimeout(5)
        while early and not loop._conns:
            loop.step()  # accepted before the request
        client.send(CLOSE_REQUEST)
        while not select.select([client], [], [], 0)[0]:
            loop.step()  # accept, then read, serve and close (a plain close: nothing is left unread)
        while client.recv(65536):
            pass
        client.close()

    return one, stats


def _close_loop(n: int, early: bool = False) -> None:
    """``n`` requests with ``Connection: close`` through the whole worker path (``_closing``)."""
    one, stats = _closing(early)
    for _ in range(n):
        one()
    _check_served(stats, n)


def _check_served(stats: WorkerStats, n: int) -> None:
    """Every request counted was answered 2xx: a harness serving errors would count the wrong path."""
    status = stats.snapshot()["status"]
    if stats.requests != n or status.get("2xx") != n:
        raise SystemExit(f"served {stats.requests} of {n} requests, by status class {status}")


def instructions(n: int, what: str = "--serve") -> float:
    """User-space instructions per request (``--serve``: parse + serve; ``--serve-loop``: the whole
    worker path): cachegrind's count for ``6 n`` requests less the count for ``n`` (start-up and
    warm-up cancel out), divided by ``5 n``."""

    def count(requests: int) -> int:
        argv = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
                sys.executable, "-m", "loadtests.bench.hotpath", what, str(requests)]  # fmt: skip
        done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=False)
        found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
        if done.returncode != 0 or found is None:
            raise SystemExit(f"valgrind failed ({done.returncode}):\n{done.stderr[-2000:]}")
        return int(found.group(1).replace(",", ""))

    return (count(6 * n) - count(n)) / (5 * n)


def bytecodes(n: int, close: bool = False) -> tuple[float, float, list[tuple[float, str]]]:
    """Python bytecodes a request executes on the whole worker path (``_keepalive``, or ``_closing``
    with ``close``), counted by a trace function (``f_trace_opcodes``) over ``n`` requests after 1,000
    that warm up: (bytecodes, Python-level calls, [(bytecodes, function)] by function, most first), all
    per request. The client's own code (this file, the ``socket`` module) is left out. In CPython 3.11 a
    bytecode costs tens of instructions and a call hundreds, so these say which step costs what."""
    one, stats = _closing() if close else _keepalive()
    for _ in range(1000):
        one()
    ops: Counter = Counter()
    calls: Counter = Counter()

    def trace(frame, event, arg):  # noqa: ANN001, ANN202 (sys.settrace's signature)
        frame.f_trace_opcodes = True
        if event == "opcode":
            ops[frame.f_code] += 1
        elif event == "call":
            calls[frame.f_code] += 1
        return trace

    sys.settrace(trace)
    try:
        for _ in range(n):
            one()
    finally:
        sys.settrace(None)
    _check_served(stats, 1000 + n)
    client = {__file__, socket.__file__}
    ops = Counter({code: count for code, count in ops.items() if code.co_filename not in client})
    served = sum(count for code, count in calls.items() if code.co_filename not in client)
    rows = [(count / n, f"{os.path.relpath(code.co_filename, REPO)}:{code.co_firstlineno} "
                        f"{code.co_name}") for code, count in ops.most_common()]  # fmt: skip
    return sum(ops.values()) / n, served / n, rows


def profile(n: int) -> None:
    conn, client, runner = _setup()
    prof = cProfile.Profile()
    prof.runcall(_serve, conn, client, runner, n)
    pstats.Stats(prof).sort_stats("tottime").print_stats(25)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench.hotpath", description=__doc__)
    p.add_argument("-n", type=int, default=20000, help="requests per repeat")
    p.add_argument("--repeats", type=int, default=5, help="the minimum over repeats is printed")
    p.add_argument("--profile", action="store_true", help="print a cProfile of the combined loop")
    p.add_argument(
        "--instructions",
        action="store_true",
        help="count user-space instructions per request under valgrind (with -n 2000)",
    )
    p.add_argument(
        "--bytecodes",
        action="store_true",
        help="count Python bytecodes and calls per request, by function (with -n 2000)",
    )
    p.add_argument(
        "--serve", type=int, metavar="N", help=argparse.SUPPRESS
    )  # --instructions' child
    p.add_argument("--serve-loop", type=int, metavar="N", help=argparse.SUPPRESS)  # the same
    p.add_argument("--close-loop", type=int, metavar="N", help=argparse.SUPPRESS)  # the same
    p.add_argument("--static-loop", type=int, metavar="N", help=argparse.SUPPRESS)  # the same
    p.add_argument("--early-close-loop", type=int, metavar="N", help=argparse.SUPPRESS)  # the same
    args = p.parse_args(argv)  # fmt: skip
    if args.serve is not None:  # 1000 requests to warm the caches, then N: what valgrind counts
        conn, client, runner = _setup()
        _serve(conn, client, runner, 1000 + args.serve)
        assert runner.stats is not None
        _check_served(runner.stats, 1000 + args.serve)
        return 0
    if args.serve_loop is not None:
        _serve_loop(1000 + args.serve_loop)
        return 0
    if args.close_loop is not None:
        _close_loop(1000 + args.close_loop)
        return 0
    if args.static_loop is not None:
        _static_loop(1000 + args.static_loop)
        return 0
    if args.early_close_loop is not None:
        _close_loop(1000 + args.early_close_loop, early=True)
        return 0
    if args.profile:
        profile(args.n)
        return 0
    if args.bytecodes:
        n = args.n if args.n != p.get_default("n") else 2000
        for what, close in (("keep-alive", False), ("Connection: close", True)):
            total, calls, rows = bytecodes(n, close)
            print(
                f"{what}: {total:,.0f} bytecodes and {calls:.0f} Python calls a request; the most:"
            )
            for count, name in rows[:20]:
                print(f"  {count:7.1f}  {name}")
        return 0
    if args.instructions:
        if shutil.which("valgrind") is None:
            raise SystemExit("--instructions needs valgrind: apt-get install valgrind")
        n = args.n if args.n != p.get_default("n") else 2000
        print(
            f"parse + serve       {instructions(n):9,.0f} instructions/request (valgrind, user space)"
        )
        whole = instructions(n, "--serve-loop")
        print(f"whole worker path   {whole:9,.0f} instructions/request (one Loop.step per request)")
        close = instructions(n, "--close-loop")
        print(
            f"Connection: close   {close:9,.0f} instructions/request (accept to close, and the client)"
        )
        early = instructions(n, "--early-close-loop")
        print(
            f"  accepted early    {early:9,.0f} instructions/request (the same, accepted before the "
            "request: --defer-accept 0)"
        )
        static = instructions(n, "--static-loop")
        print(
            f"static 13 bytes     {static:9,.0f} instructions/request (keep-alive, as --serve-loop)"
        )
        return 0
    best: dict[str, float] = {}
    for _ in range(args.repeats):
        for key, value in measure(args.n).items():
            best[key] = min(best.get(key, value), value)
    for key, value in best.items():
        print(f"{key:22} {value:6.2f} us/request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
