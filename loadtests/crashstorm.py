"""Crash storm: requests that kill their worker process, then normal traffic. Does the site come back?

Also ``--scenario kill9`` (the master/supervisor is SIGKILLed while a 3 s request runs; how long until a
new server started at once on the same port serves?) and ``--scenario term`` (SIGTERM while a 3 s
request runs; how long until new connections are refused, and does the request finish?).

``python -m loadtests.crashstorm --server webcluster`` (or ``gunicorn``, ``uwsgi``) starts the server
with ``tests/apps/faulty.py`` (2 processes x 8 threads), sends ``--crashes`` requests to ``/crash``
(``os._exit(1)`` in the app) spread over ``--over`` seconds, each from its own client, waits until every
one of them has its answer or error, then sends ``--normal`` ordinary requests (4 clients, fresh
connection each, 5 s timeout) and prints how many succeeded, plus the server's ``/healthz`` for
webcluster. The system test tests/system/test_resilience.py runs the same :func:`storm` and :func:`normal`.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
APP = "tests.apps.faulty:app"


def get(port: int, path: str, timeout: float) -> int:
    """Status of ``GET path`` on a fresh connection (raises OSError / HTTPException)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def _outcome(port: int, path: str, timeout: float) -> str:
    try:
        return str(get(port, path, timeout))
    except (OSError, http.client.HTTPException) as exc:
        return type(exc).__name__


def storm(port: int, count: int = 44, over: float = 6.6, path: str = "/crash") -> Counter:
    """``count`` requests to ``path``, one started every ``over / count`` s, each on its own thread;
    returns their outcomes (status or exception name) once all have ended."""
    results: Counter = Counter()
    lock = threading.Lock()

    def one() -> None:
        outcome = _outcome(port, path, 10.0)
        with lock:
            results[outcome] += 1

    threads = []
    start = time.monotonic()
    for i in range(count):
        delay = start + i * over / count - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        t = threading.Thread(target=one, daemon=True)
        t.start()
        threads.append(t)
    for t in threads:
        t.join(15)
    return results


def normal(port: int, count: int = 100, clients: int = 4, path: str = "/pid") -> Counter:
    """``count`` ordinary requests from ``clients`` threads (5 s timeout each); outcomes counted."""
    results: Counter = Counter()
    lock = threading.Lock()
    left = iter(range(count))

    def client() -> None:
        while True:
            with lock:
                if next(left, None) is None:
                    return
            outcome = _outcome(port, path, 5.0)
            with lock:
                results[outcome] += 1

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(count * 5.0)
    return results


def _command(server: str, port: int, admin: int) -> list[str]:
    bind = f"127.0.0.1:{port}"
    if server == "webcluster":
        return [sys.executable, "supervisor.py", "--procs", "2", "--threads", "8", "--app", APP,
                "--bind", bind, "--admin", f"127.0.0.1:{admin}"]  # fmt: skip
    if server == "gunicorn":
        return [sys.executable, "-m", "gunicorn", "-w", "2", "-k", "gthread", "--threads", "8",
                "-b", bind, APP]  # fmt: skip
    if server == "uwsgi":
        uwsgi = shutil.which("uwsgi") or "uwsgi"
        return [uwsgi, "--master", "--processes", "2", "--threads", "8", "--http-socket", bind,
                "--module", APP, "--need-app", "--disable-logging"]  # fmt: skip
    raise ValueError(server)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_serving(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        if _outcome(port, "/pid", 2.0) == "200":
            return
        time.sleep(0.1)
    raise SystemExit("server did not start")


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return False


def _in_flight(port: int, box: dict) -> threading.Thread:
    def run() -> None:
        box["result"] = _outcome(port, "/sleep?seconds=3", 30.0)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    time.sleep(0.5)  # the request reaches the app
    return t


def _start(server: str, port: int, admin: int, log) -> subprocess.Popen:
    return subprocess.Popen(_command(server, port, admin), cwd=REPO, stdout=log, stderr=log,
                            start_new_session=True)  # fmt: skip


def _served_by(port: int, parent: int) -> bool:
    """A worker of ``parent`` (not an orphan of the killed server) answered ``GET /pid``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
    try:
        conn.request("GET", "/pid", headers={"Connection": "close"})
        pid = int(conn.getresponse().read())
        return psutil.Process(pid).ppid() == parent
    except (OSError, http.client.HTTPException, ValueError, psutil.Error):
        return False
    finally:
        conn.close()


def _until(probe, timeout: float) -> float | None:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if probe():
            return time.monotonic() - start
        time.sleep(0.02)
    return None


def stop_scenario(server: str, scenario: str, log) -> str:
    """kill9 or term, as described in the module docstring; returns the result line."""
    port, admin = _free_port(), _free_port()
    started = time.monotonic()
    procs = [_start(server, port, admin, log)]
    try:
        _until(lambda: _served_by(port, procs[0].pid), 30.0)
        cold = time.monotonic() - started  # the server's own start-up, for comparison
        box: dict = {}
        client = _in_flight(port, box)
        if scenario == "term":
            procs[0].send_signal(signal.SIGTERM)
            took = _until(lambda: _refused(port), 10.0)
            client.join(15)
            what = f"refused {took:.2f}s after TERM" if took is not None else "not refused in 10s"
        else:
            procs[0].kill()
            procs.append(_start(server, port, _free_port(), log))
            took = _until(lambda: _served_by(port, procs[1].pid), 30.0)
            client.join(15)
            what = f"a new server served {took:.2f}s after kill -9" if took else "none in 30s"
            what += f" (its cold start on a free port: {cold:.2f}s)"
        return f"{server} {scenario}: {what}; the request in flight: {box.get('result')}"
    finally:
        for proc in procs:
            stop_session(proc)


def stop_session(proc: subprocess.Popen) -> None:
    """Kill a server started in its own session (the server and its workers) and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--server", choices=("webcluster", "gunicorn", "uwsgi"), default="webcluster"
    )
    parser.add_argument("--scenario", choices=("crash", "kill9", "term"), default="crash")
    parser.add_argument("--crashes", type=int, default=44)
    parser.add_argument(
        "--over", type=float, default=6.6, help="seconds the crashes are spread over"
    )
    parser.add_argument("--normal", type=int, default=100)
    args = parser.parse_args(argv)
    port, admin = _free_port(), _free_port()
    log = open(Path(tempfile.gettempdir()) / f"crashstorm-{args.server}.log", "wb")  # noqa: SIM115
    if args.scenario != "crash":
        with log:
            print(stop_scenario(args.server, args.scenario, log))
        return 0
    proc = _start(args.server, port, admin, log)
    try:
        _wait_serving(port, proc)
        crashes = storm(port, args.crashes, args.over)
        started = time.monotonic()
        results = normal(port, args.normal)
        took = time.monotonic() - started
        ok = results.get("200", 0)
        print(f"{args.server}: storm of {args.crashes} /crash over {args.over}s -> {dict(crashes)}")
        print(f"{args.server}: then {ok}/{args.normal} normal requests OK in {took:.1f}s "
              f"({dict(results)})")  # fmt: skip
        if args.server == "webcluster":
            print(f"webcluster: /healthz {_outcome(admin, '/healthz', 5.0)}")
        return 0 if ok >= 0.99 * args.normal else 1
    finally:
        stop_session(proc)
        log.close()


if __name__ == "__main__":
    sys.exit(main())
