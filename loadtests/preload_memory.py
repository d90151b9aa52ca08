"""Memory of the workers with and without ``--preload``, serving the Django example project.

``python -m loadtests.preload_memory [--procs 4] [--requests 200]`` migrates a throwaway SQLite
database, then for each mode starts ``supervisor.py --chdir docs/examples/django_project
mysite.wsgi:application``, sends the same requests (the admin login page, the index, the admin
redirect), and reads each worker's PSS, USS and RSS from ``/proc/PID/smaps_rollup`` (psutil). PSS
divides a shared page among the processes that map it, so the sum over the workers is what they
really cost; USS is what each one alone holds. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ROOT / "docs" / "examples" / "django_project"
PATHS = ("/admin/login/", "/", "/admin/")
MIB = 1024 * 1024


def _env(db: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEBCLUSTER_")}
    env.update(EXAMPLE_DB=db, PYTHONUNBUFFERED="1", DJANGO_SETTINGS_MODULE="mysite.settings")
    return env


def _start(
    procs: int, preload: bool, env: dict[str, str], log: Path
) -> tuple[subprocess.Popen, int]:
    args = [sys.executable, "supervisor.py", "--chdir", str(PROJECT), "mysite.wsgi:application"]
    args += ["--procs", str(procs), "--threads", "4", "--bind", "127.0.0.1:0", "--admin", "off"]
    args += ["--preload"] if preload else []
    out = open(log, "wb")  # noqa: SIM115 - closed with the process below
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        match = re.search(r"listening on http://127\.0\.0\.1:(\d+)", log.read_text())
        if match and len(psutil.Process(proc.pid).children()) == procs:
            return proc, int(match.group(1))
        if proc.poll() is not None:
            raise SystemExit(f"supervisor exited:\n{log.read_text()}")
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"supervisor did not start:\n{log.read_text()}")


def _load(port: int, requests: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for i in range(requests):
        conn.request("GET", PATHS[i % len(PATHS)])
        resp = conn.getresponse()
        resp.read()
        if resp.status >= 400:
            raise SystemExit(f"GET {PATHS[i % len(PATHS)]}: {resp.status}")
        if resp.will_close:
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.close()


def _measure(pid: int) -> dict[str, float]:
    workers = psutil.Process(pid).children()
    rows = [w.memory_full_info() for w in workers]
    n = len(rows)
    return {
        "pss": sum(r.pss for r in rows) / n / MIB,
        "uss": sum(r.uss for r in rows) / n / MIB,
        "rss": sum(r.rss for r in rows) / n / MIB,
        "supervisor_pss": psutil.Process(pid).memory_full_info().pss / MIB,
    }


def run(procs: int, requests: int) -> dict[bool, dict[str, float]]:
    results: dict[bool, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = _env(str(Path(tmp) / "db.sqlite3"))
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "-v0"], cwd=PROJECT, env=env, check=True
        )
        for preload in (False, True):
            proc, port = _start(procs, preload, env, Path(tmp) / f"log-{preload}.txt")
            try:
                _load(port, requests * procs)
                time.sleep(2.0)  # the one-second stats tick and lazy imports settle
                results[preload] = _measure(proc.pid)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.preload_memory", description=__doc__)
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--requests", type=int, default=200, help="requests per worker")
    args = parser.parse_args(argv)
    r = run(args.procs, args.requests)
    print(f"Django example, {args.procs} workers x 4 threads, {args.requests} requests per worker")
    print("| | PSS per worker | USS per worker | RSS per worker | supervisor PSS | total PSS |")
    print("|---|--:|--:|--:|--:|--:|")
    for preload in (False, True):
        m = r[preload]
        name = "--preload" if preload else "without --preload"
        print(
            f"| {name} | {m['pss']:.1f} MiB | {m['uss']:.1f} MiB | {m['rss']:.1f} MiB "
            f"| {m['supervisor_pss']:.1f} MiB | {m['supervisor_pss'] + args.procs * m['pss']:.1f} MiB |"
        )
    saved = r[False]["pss"] - r[True]["pss"]
    print(f"PSS saved per worker: {saved:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
