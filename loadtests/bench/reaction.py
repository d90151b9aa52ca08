"""How long a request that blocks on the poller's thread holds up everyone else (``--inline-budget``).

``python -m loadtests.bench.reaction [--tree DIR] [--trials N] [-- SUPERVISOR ARGS]``

Each trial starts one worker (``supervisor.py --procs 1 --app loadtests.demoapp:app``) from ``--tree`` (a
checkout of webcluster, so two commits can be compared), keeps connection B busy with keep-alive requests
for a while (so the inline watcher is awake, as on a loaded server), then sends on connection A a request
whose app sleeps 500 ms (``/api/search?delay_ms=500``: it runs inline, on the thread holding the poller),
and 2 ms later one more request on B. B is answered once the poller has moved to the standby thread
(``worker/leader.py``): its latency is the reaction time a user sees. A fresh server per trial keeps every
trial on the first deposition (no back-off carried over). Prints each trial and the min, median and max.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import time

from loadtests.bench.idle import response_complete
from loadtests.bench.suites import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SLOW_MS = 500  # how long the blocking request sleeps
SLOW = b"GET /api/search?q=x&delay_ms=%d HTTP/1.1\r\nHost: bench\r\n\r\n" % SLOW_MS
FAST = b"GET /api/items/1 HTTP/1.1\r\nHost: bench\r\n\r\n"


def _answer(sock: socket.socket) -> None:
    """Read one response with a Content-Length body (the demo app always sends one)."""
    data = b""
    while not response_complete(data):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before a response")
        data += chunk


def _connect(port: int, deadline: float) -> socket.socket:
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=5)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def trial(tree: str, extra: list[str], warm: float) -> float:
    """One fresh worker; milliseconds B waited while A blocked inline."""
    port = free_port()
    cmd = [sys.executable, "supervisor.py", "--procs", "1", "--app", "loadtests.demoapp:app",
           "--bind", f"127.0.0.1:{port}", "--admin", "off", "--keepalive-requests", "1000000", *extra]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    try:
        b = _connect(port, time.monotonic() + 20)
        a = _connect(port, time.monotonic() + 5)
        end = time.monotonic() + warm
        while time.monotonic() < end:
            b.sendall(FAST)
            _answer(b)
        a.sendall(SLOW)
        time.sleep(0.002)  # A is read first and runs inline
        t0 = time.monotonic()
        b.sendall(FAST)
        _answer(b)
        waited = (time.monotonic() - t0) * 1e3
        _answer(a)
        return waited
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.bench.reaction", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--tree", default=ROOT, help="webcluster checkout to run (default: this one)")
    p.add_argument("--trials", type=int, default=15, help="fresh workers to measure (default 15)")
    p.add_argument("--warm", type=float, default=0.3, help="seconds of keep-alive load first")
    p.add_argument("extra", nargs="*", help="more supervisor arguments, after --")
    args = p.parse_args(argv)
    waits = []
    for i in range(args.trials):
        waits.append(trial(args.tree, args.extra, args.warm + i * 0.0037))  # vary the phase
        print(
            f"trial {i + 1}/{args.trials}: the next request waited {waits[-1]:.1f} ms", flush=True
        )
    print(f"{args.tree}: waited min {min(waits):.1f} ms, median {statistics.median(waits):.1f} ms, "
          f"max {max(waits):.1f} ms over {len(waits)} trials")  # fmt: skip


if __name__ == "__main__":
    main()
