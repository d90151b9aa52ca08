"""Run every atheris target for a given time and report what each did.

    python -m tests.fuzz --seconds 3600                  # all targets at once, one hour, niced
    python -m tests.fuzz --seconds 60 --targets h1,config

Each target runs as its own ``nice -n 19`` libFuzzer process (so benchmarks elsewhere suffer less) for
the whole time, keeping its corpus and any crash under ``--out`` (default ``tests/fuzz/runs/``,
git-ignored); an existing corpus is reused, so runs add up. At the end it prints one Markdown row per
target: inputs run, inputs per second, coverage (libFuzzer's ``cov`` edges and ``ft`` features of the
instrumented modules), corpus size, and crashes. A crash file replays with ``python <target> <file>``;
turn it into a regression case (``tests/worker/http/cases.py``, ``tests/cluster/test_config.py``).

Targets: ``h1`` (the sans-IO HTTP/1.x core, split invariance), ``differential`` (the core against
llhttp and h11, ``tests/differential``), ``config`` (settings parsers, TOML, command line,
environment) and ``proxy`` (the PROXY protocol v1/v2 parser, ``worker/proxyproto.py``; reported as
"not available" on a tree without that module).
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TARGETS = {
    "h1": HERE / "fuzz_h1.py",
    "differential": ROOT / "tests" / "differential" / "fuzz_differential.py",
    "config": HERE / "fuzz_config.py",
    "proxy": HERE / "fuzz_proxy.py",
}
_STATUS = re.compile(r"#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)")
_STAT = re.compile(r"stat::(\w+):\s+(\d+)")


@dataclass
class Result:
    target: str
    note: str = ""
    runs: int = 0
    per_second: int = 0
    cov: int = 0
    ft: int = 0
    corpus: int = 0
    crashes: tuple[str, ...] = ()

    def row(self) -> str:
        if self.note:
            return f"| {self.target} | {self.note} | | | | | |"
        crashes = ", ".join(self.crashes) or "none"
        return (
            f"| {self.target} | {self.runs:,} | {self.per_second:,} | {self.cov:,} | {self.ft:,} "
            f"| {self.corpus:,} | {crashes} |"
        )


def available(name: str) -> str:
    """Empty when target ``name`` can run here, else why not."""
    if not TARGETS[name].exists():
        return f"not available ({TARGETS[name].relative_to(ROOT)} missing)"
    if name == "proxy" and importlib.util.find_spec("webcluster.worker.proxyproto") is None:
        return "not available (worker/proxyproto.py is not on this tree)"
    return ""


def start(name: str, seconds: int, out: Path) -> subprocess.Popen:
    """The niced libFuzzer process of one target; its log goes to ``out/<name>.log``."""
    corpus = out / name / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    log = (out / f"{name}.log").open("w")
    args = [
        "nice", "-n", "19", sys.executable, str(TARGETS[name]),
        f"-max_total_time={seconds}", "-print_final_stats=1", "-timeout=30", "-rss_limit_mb=4096",
        f"-artifact_prefix={out / name}/", str(corpus),
    ]  # fmt: skip
    return subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def result(name: str, out: Path) -> Result:
    """Parse a finished target's log: the last status line and the final stats."""
    text = (out / f"{name}.log").read_text(errors="replace")
    res = Result(name)
    status = _STATUS.findall(text)
    if status:
        runs, cov, ft, corp = status[-1]
        res.runs, res.cov, res.ft, res.corpus = int(runs), int(cov), int(ft), int(corp)
    stats = dict(_STAT.findall(text))
    res.runs = int(stats.get("number_of_executed_units", res.runs))
    res.per_second = int(stats.get("average_exec_per_sec", 0))
    res.crashes = tuple(
        sorted(p.name for p in (out / name).glob("*") if p.name.startswith(("crash-", "oom-")))
    )
    if not res.crashes and "Uncaught Python exception" in text:
        # atheris does not always get to write the artifact: the traceback in the log is the find
        res.crashes = (f"uncaught exception, traceback in {name}.log",)
    if not stats and not res.crashes:
        res.note = "failed to run: see " + str(out / f"{name}.log")
    return res


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fuzz", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seconds", type=int, default=60, help="how long each target runs")
    parser.add_argument(
        "--targets", default=",".join(TARGETS), help="comma list of " + ", ".join(TARGETS)
    )
    parser.add_argument("--out", type=Path, default=HERE / "runs", help="corpora, logs and crashes")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.targets.split(",") if n.strip()]
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; choose from {', '.join(TARGETS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    results = {n: Result(n, note) for n in names if (note := available(n))}
    began = time.monotonic()
    procs = {n: start(n, args.seconds, args.out) for n in names if n not in results}
    for name, proc in procs.items():
        proc.wait()
        results[name] = result(name, args.out)
    minutes = (time.monotonic() - began) / 60
    print(f"{len(procs)} target(s), {minutes:.1f} min each, in parallel, nice 19\n")
    print("| target | inputs | inputs/s | cov | ft | corpus | crashes |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        print(results[name].row())
    return 1 if any(r.crashes for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
