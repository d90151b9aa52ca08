"""Hung app and overload, against webcluster, gunicorn (gthread) or uWSGI: issue 11's two scenarios.

``python -m loadtests.stuckpool hang --server webcluster --timeout 2`` starts the server with
``tests/apps/stuck.py`` (2 processes x 8 threads), sends 30 requests to ``/hang`` (sleeps 300 s) on
their own connections, then one ``GET /`` every 0.25 s for ``--seconds`` (fresh connection, 10 s client
timeout), and prints how many were answered within ``--timeout`` + 2 s, their statuses and the worst
latency. ``--timeout`` is ``--request-timeout`` for webcluster, ``--timeout`` for gunicorn and
``--harakiri`` for uWSGI.

``python -m loadtests.stuckpool overload --server webcluster --queue-timeout 0.5`` starts it with
2 processes x 4 threads, runs ``wrk -t1 -c400 -d5s --latency`` on ``/work?ms=100``, and prints wrk's
p50/p99, the responses and non-2xx count, and how many requests the app ran after wrk had stopped
(queued requests of clients that are gone). ``--queue-timeout`` applies to webcluster only.

The system tests tests/system/test_stuck_pool.py and test_load_shedding.py check the same scenarios.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from loadtests.crashstorm import _free_port, _outcome, stop_session

REPO = Path(__file__).resolve().parent.parent
APP = "tests.apps.stuck:app"


def command(server: str, port: int, threads: int, extra: dict[str, float]) -> list[str]:
    """The server's command line: 2 processes x ``threads`` threads serving ``APP`` on ``port``."""
    bind = f"127.0.0.1:{port}"
    flags = [f"--{k}={v:g}" for k, v in extra.items() if v]
    if server == "webcluster":
        return [sys.executable, "supervisor.py", "--procs", "2", "--threads", str(threads),
                "--app", APP, "--bind", bind, "--admin", "off", "--graceful-timeout", "5", *flags]  # fmt: skip
    if server == "gunicorn":
        return [sys.executable, "-m", "gunicorn", "-w", "2", "-k", "gthread", "--threads",
                str(threads), "--graceful-timeout", "5", "-b", bind, *flags, APP]  # fmt: skip
    if server == "uwsgi":
        uwsgi = shutil.which("uwsgi") or "uwsgi"
        return [uwsgi, "--master", "--processes", "2", "--threads", str(threads), "--http-socket",
                bind, "--module", APP, "--need-app", "--disable-logging", "--die-on-term", *flags]  # fmt: skip
    raise ValueError(server)


def hang(port: int, seconds: float, bound: float) -> str:
    """30 hung requests, then a normal request every 0.25 s; a summary line."""
    hung = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(30)]
    for c in hung:
        c.sendall(b"GET /hang?s=300 HTTP/1.1\r\nHost: t\r\n\r\n")
    time.sleep(0.5)
    results: list[tuple[str, float]] = []

    def probe() -> None:
        start = time.monotonic()
        outcome = _outcome(port, "/", 10.0)
        results.append((outcome, time.monotonic() - start))

    threads, t0 = [], time.monotonic()
    while time.monotonic() - t0 < seconds:
        threads.append(threading.Thread(target=probe, daemon=True))
        threads[-1].start()
        time.sleep(0.25)
    for t in threads:
        t.join(15)
    for c in hung:
        c.close()
    within = sum(1 for s, took in results if s in ("200", "503") and took < bound)
    return (
        f"{len(results)} normal requests: {dict(Counter(s for s, _ in results))}; answered within "
        f"{bound:g}s: {within}; worst {max(took for _, took in results):.2f}s"
    )


def overload(port: int, app_log: Path) -> str:
    """wrk -c400 for 5 s on the 100 ms route; then the app runs that happened after wrk stopped."""
    wrk = subprocess.run(
        ["wrk", "-t1", "-c400", "-d5s", "--timeout", "20s", "--latency",
         f"http://127.0.0.1:{port}/work?ms=100"],
        capture_output=True, text=True, timeout=90, check=True,
    ).stdout  # fmt: skip
    at_end = _lines(app_log)
    time.sleep(6.0)
    after = _lines(app_log) - at_end
    pct = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", wrk, re.M))
    total = re.search(r"(\d+) requests in", wrk)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", wrk)
    return (
        f"p50 {pct.get('50')} p99 {pct.get('99')}, {total[1] if total else '?'} responses "
        f"({non_2xx[1] if non_2xx else 0} non-2xx); app runs after wrk stopped: {after}"
    )


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", choices=("hang", "overload"))
    parser.add_argument(
        "--server", choices=("webcluster", "gunicorn", "uwsgi"), default="webcluster"
    )
    parser.add_argument(
        "--timeout", type=float, default=0.0, help="hang: the server's timeout (0 = none)"
    )
    parser.add_argument(
        "--queue-timeout", type=float, default=0.0, help="overload, webcluster only"
    )
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="hang: how long normal requests go on"
    )
    args = parser.parse_args(argv)
    port = _free_port()
    name = {"webcluster": "request-timeout", "gunicorn": "timeout", "uwsgi": "harakiri"}[
        args.server
    ]
    extra = {name: args.timeout} if args.scenario == "hang" else {}
    if args.server == "webcluster" and args.scenario == "overload":
        extra["queue-timeout"] = args.queue_timeout
    threads = 8 if args.scenario == "hang" else 4
    tmp = Path(tempfile.mkdtemp(prefix="stuckpool-"))
    env = {**os.environ, "STUCK_APP_LOG": str(tmp / "app.log")}
    log = open(tmp / "server.log", "wb")  # noqa: SIM115
    cmd = command(args.server, port, threads, extra)
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=log, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while _outcome(port, "/", 2.0) != "200":
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"server did not start; see {tmp / 'server.log'}")
            time.sleep(0.1)
        if args.scenario == "hang":
            summary = hang(port, args.seconds, (args.timeout or 2.0) + 2.0)
        else:
            summary = overload(port, tmp / "app.log")
        settings = " ".join(f"--{k} {v:g}" for k, v in extra.items() if v) or "defaults"
        print(f"{args.scenario}, {args.server} ({settings}): {summary}")
        print(f"server log: {tmp / 'server.log'}")
        return 0
    finally:
        stop_session(proc)
        log.close()


if __name__ == "__main__":
    sys.exit(main())
