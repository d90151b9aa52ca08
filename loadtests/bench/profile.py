"""Where a webcluster worker spends its time under wrk load (``python -m loadtests.bench.profile``).

Starts webcluster (``--procs 1`` by default), runs wrk keep-alive and ``Connection: close`` loads against
it, and samples the worker with ``py-spy record --gil`` (only the thread holding the GIL is sampled, so
the figures are shares of the Python CPU time that limits a worker, not of wall time of idle threads).
Prints, per load, the functions with the most samples by self time and by inclusive time, as markdown.
Needs ``pip install py-spy`` (and ptrace permission: root, or ``kernel.yama.ptrace_scope=0``).
"""

from __future__ import annotations

import argparse
import collections
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from loadtests.bench.servers import Server, ServerConfig
from loadtests.bench.suites import free_port, make_static_files
from loadtests.bench.wrk import parse_wrk, wrk_command

_LINE = re.compile(r":\d+\)$")


def aggregate(raw: str) -> tuple[int, collections.Counter, collections.Counter]:
    """py-spy ``--format raw`` (collapsed stacks) -> (samples, self counts, inclusive counts)."""
    own: collections.Counter = collections.Counter()
    incl: collections.Counter = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_LINE.sub(")", f) for f in stack.split(";")]
        own[frames[-1]] += n
        for frame in set(frames):
            incl[frame] += n
    return total, own, incl


def _table(title: str, counts: collections.Counter, total: int, top: int) -> str:
    rows = [f"| {title} | share |", "|---|--:|"]
    rows += [f"| `{name}` | {n / total:.1%} |" for name, n in counts.most_common(top)]
    return "\n".join(rows)


def profile_load(server: Server, close: bool, seconds: float, rate: int, top: int) -> str:
    pid = server.workers()[0].pid
    cmd = wrk_command(f"http://127.0.0.1:{server.port}/", connections=64, duration=seconds + 3,
                      close=close)  # fmt: skip
    with tempfile.NamedTemporaryFile(suffix=".raw") as out:
        wrk = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(1)
        subprocess.run(
            ["py-spy", "record", "-p", str(pid), "-d", str(int(seconds)), "-r", str(rate), "--gil",
             "--nonblocking", "-f", "raw", "-o", out.name],
            capture_output=True, check=True,
        )  # fmt: skip
        wrk_out, _ = wrk.communicate(timeout=seconds + 60)
        total, own, incl = aggregate(Path(out.name).read_text())
    res = parse_wrk(wrk_out)
    kind = "Connection: close" if close else "keep-alive"
    return "\n".join(
        [
            f"#### {kind}, 64 connections ({res.rps:,.0f} req/s while sampled; {total} samples)",
            "",
            f"`{shlex.join(cmd)}`, `py-spy record --gil -r {rate} -d {seconds:g}` on the worker",
            "",
            _table("self time (incl. C calls it made)", own, total, top),
            "",
            _table("inclusive time", incl, total, top),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench.profile", description=__doc__)
    p.add_argument("--procs", type=int, default=1)
    p.add_argument("--threads", type=int, default=32)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args(argv)
    if shutil.which("py-spy") is None:
        print("py-spy is not installed: pip install py-spy", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="webcluster-profile-") as tmp:
        work = Path(tmp)
        make_static_files(work / "static")
        server = Server(
            "webcluster", free_port(), ServerConfig(args.procs, args.threads, work / "static", work)
        )
        try:
            server.wait_ready()
            for close in (False, True):
                print(profile_load(server, close, args.seconds, args.rate, args.top))
                print()
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
