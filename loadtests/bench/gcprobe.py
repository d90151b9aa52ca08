"""Run webcluster with each worker's garbage collector watched (``python -m loadtests.bench.gcprobe``).

Bench tooling only: it wraps ``worker.loop.Loop.run`` in this process before the supervisor forks, so every
worker records each collection's duration (``gc.callbacks``) and, when it stops (SIGTERM/SIGINT to the
supervisor), logs one line: collections, generation-2 count, longest pause, total GC time, and the most
common types among the GC-tracked objects still alive. With ``BENCH_NOGC=1`` the worker runs with
``gc.disable()`` instead (to measure what the pauses cost). Arguments are the supervisor's::

    python -m loadtests.bench.gcprobe --procs 1 --app hello:app --chdir loadtests --bind 127.0.0.1:8000 \\
        --admin off
    wrk -t1 -c64 -d8s -H "Connection: close" http://127.0.0.1:8000/ ; kill -TERM <supervisor pid>
"""

from __future__ import annotations

import collections
import gc
import logging
import os
import sys
import time
from pathlib import Path

log = logging.getLogger("webcluster.error")


def _watch(run):
    def watched_run(loop) -> None:
        pauses: list[tuple[int, float]] = []
        started = [0.0]

        def callback(phase: str, info: dict) -> None:
            if phase == "start":
                started[0] = time.perf_counter()
            else:
                pauses.append((info["generation"], time.perf_counter() - started[0]))

        if os.environ.get("BENCH_NOGC"):
            gc.disable()
        gc.callbacks.append(callback)
        try:
            run(loop)
        finally:
            gc.callbacks.remove(callback)
            gen2 = [p for g, p in pauses if g == 2]
            counts = collections.Counter(type(o).__name__ for o in gc.get_objects())
            log.warning(
                "gcprobe pid %d: %d collections, %d of generation 2, longest %.1f ms, total %.2f s; "
                "%d tracked objects, most common %s",
                os.getpid(), len(pauses), len(gen2), max((p for _, p in pauses), default=0) * 1000,
                sum(p for _, p in pauses), sum(counts.values()), counts.most_common(8),
            )  # fmt: skip

    return watched_run


def main(argv: list[str] | None = None) -> int:
    repo = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(repo))
    import supervisor
    from webcluster.worker.loop import Loop

    Loop.run = _watch(Loop.run)  # type: ignore[method-assign]
    return supervisor.main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
