"""``python -m loadtests.bench``: webcluster vs gunicorn (gthread), waitress, granian (WSGI) and uWSGI, with
nginx as the ceiling for static files and TLS.

Examples::

    python -m loadtests.bench                                   # issue 5: procs 2, every scenario + idle
    python -m loadtests.bench --procs 1 --scenarios ka64,close64 --servers webcluster,gunicorn,waitress \\
        --name issue2                                           # issue 2: one worker, 32 threads
    python -m loadtests.bench --scenarios idle --idle-connections 10000 --idle-hold 30

Writes the ``bench:NAME`` section of BENCHMARKS.md (``--write``), docs/bench-NAME.png (``--plot``) and the
raw runs as JSON (``--json``); ``--from-json`` re-renders a saved run without measuring.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from loadtests.bench import suites
from loadtests.bench.idle import IdleResult
from loadtests.bench.report import (
    SCENARIOS,
    console_table,
    from_json,
    plot,
    results_table,
    summarize,
    to_json,
    write_section,
)
from loadtests.bench.servers import SERVERS, TLS_SERVERS, ServerConfig
from loadtests.bench.wrk import have_wrk

REPO = Path(__file__).resolve().parents[2]


def _list(choices: tuple[str, ...]):
    def parse(text: str) -> list[str]:
        items = [x.strip() for x in text.split(",") if x.strip()]
        bad = [x for x in items if x not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)} (got {text!r})")
        return items

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.bench",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--procs", type=int, default=2, help="worker processes for every server")
    p.add_argument("--threads", type=int, default=32, help="threads per worker for every server")
    p.add_argument("--servers", type=_list(SERVERS), default=list(SERVERS), help="comma list")
    p.add_argument(
        "--scenarios",
        type=_list((*SCENARIOS, "idle")),
        default=[*SCENARIOS, "idle"],
        help="comma list: "
        + ", ".join(f"{k} ({v.title})" for k, v in SCENARIOS.items())
        + ", idle",
    )
    p.add_argument(
        "--granian-threads",
        type=int,
        default=0,
        help="granian --blocking-threads per worker; 0 leaves granian's default (backpressure / 2)",
    )
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    p.add_argument(
        "--warmup", type=float, default=2.0, help="seconds of wrk per server before round 1"
    )
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk -t")
    p.add_argument("--idle-connections", type=int, default=10000)
    p.add_argument(
        "--idle-hold", type=float, default=30.0, help="seconds the idle connections are held"
    )
    p.add_argument(
        "--idle-keepalive",
        type=float,
        default=75.0,
        help="webcluster --keepalive for the held run (nginx's default); a second run uses the default 5 s",
    )
    p.add_argument("--name", help="section name in BENCHMARKS.md (default: procsN)")
    p.add_argument(
        "--write", type=Path, default=REPO / "BENCHMARKS.md", help="markdown file to update"
    )
    p.add_argument("--plot", type=Path, help="PNG/SVG plot (default: docs/bench-NAME.png)")
    p.add_argument("--json", type=Path, help="raw results (default: docs/bench-NAME.json)")
    p.add_argument("--no-write", action="store_true", help="print only; write no file")
    p.add_argument("--from-json", type=Path, help="re-render a saved --json file; measure nothing")
    args = p.parse_args(argv)
    args.name = args.name or f"procs{args.procs}"
    args.plot = args.plot or REPO / "docs" / f"bench-{args.name}.png"
    args.json = args.json or REPO / "docs" / f"bench-{args.name}.json"
    return args


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        data = json.loads(args.from_json.read_text())
        runs, meta = from_json(data)
        _render(args, runs, meta, data.get("idle", []))
        return 0
    if not have_wrk():
        say("wrk is not installed (apt-get install wrk)")
        return 2
    # SIGTERM (kill, a CI timeout) unwinds like Ctrl-C, so the servers started below are stopped by
    # their finally blocks instead of outliving the run on their ports.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    meta: dict[str, Any] = {
        "argv": shlex.join(
            ["python", "-m", "loadtests.bench", *(sys.argv[1:] if argv is None else argv)]
        ),
        "procs": args.procs,
        "threads": args.threads,
        "rounds": args.rounds,
        "duration": args.duration,
        "machine": suites.machine_facts(),
    }
    wrk_scenarios = [s for s in args.scenarios if s != "idle"]
    runs: list = []
    idle: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="webcluster-bench-") as tmp:
        work = Path(tmp)
        suites.make_static_files(work / "static")
        tls = any(SCENARIOS[s].tls for s in wrk_scenarios)
        cfg = ServerConfig(args.procs, args.threads, work / "static", work,
                           granian_threads=args.granian_threads,
                           cert=suites.make_certificate(work) if tls else None)  # fmt: skip
        servers = list(args.servers)
        if tls:  # the same servers again with TLS, for the TLS scenarios
            servers += [f"{s}-tls" for s in args.servers if s in TLS_SERVERS]
        if wrk_scenarios:
            plan = suites.WrkPlan(servers, wrk_scenarios, args.rounds, args.duration,
                                  args.warmup, args.wrk_threads)  # fmt: skip
            runs, facts = suites.run_wrk_suite(plan, cfg, say)
            meta.update(facts)
        if "idle" in args.scenarios:
            cases = suites.idle_cases(args.servers, args.idle_keepalive)
            done = suites.run_idle_suite(cases, cfg, args.idle_connections, args.idle_hold, say)
            idle = [_idle_json(d) for d in done]
    meta["loadavg_end"] = suites.machine_facts()["loadavg"]
    _render(args, runs, meta, idle)
    if not args.no_write:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**to_json(runs, meta), "idle": idle}, indent=1) + "\n")
    return 0


def _idle_json(done: dict[str, Any]) -> dict[str, Any]:
    case, r = done["case"], done["result"]
    return {
        "server": case.server,
        "label": case.label,
        "command": done["command"],
        "result": r.__dict__,
    }


def _render(args: argparse.Namespace, runs: list, meta: dict[str, Any], idle: list) -> None:
    summaries = summarize(runs)
    if summaries:
        print(console_table(summaries))
    for item in idle:
        print(
            suites.idle_line(
                suites.IdleCase(item["server"], item["label"]), IdleResult(**item["result"])
            )
        )
    if args.no_write:
        return
    parts = []
    if summaries:
        title = f"procs {meta['procs']}, threads {meta['threads']}"
        try:
            plot(
                summaries,
                args.plot,
                f"webcluster vs peers, {title} (medians of {meta['rounds']} rounds)",
            )
        except ImportError:
            say("matplotlib is not installed (pip install matplotlib, or the bench extra): no plot")
        parts.append(_wrk_markdown(args, summaries, meta))
    if idle:
        parts.append(_idle_markdown(idle, meta, with_header=not summaries))
    write_section(args.write, args.name, "\n\n".join(parts))
    say(f"wrote the bench:{args.name} section of {args.write}")


def _header(meta: dict[str, Any]) -> str:
    m = meta["machine"]
    return (
        f"Measured {m['date']} at commit `{m['commit']}` on {m['cpus']} CPUs ({m['cpu_model']}); 1-minute "
        f"load average {m['loadavg']:.1f} at start, {meta.get('loadavg_end', float('nan')):.1f} at end "
        f"(the servers under test and wrk count in it, and the machine may be shared). Python {m['python']} "
        f"({m.get('python_build', '?')}), {m['wrk']}, "
        f"gunicorn {m['gunicorn'].split()[-1]}, waitress {m['waitress']}, granian {m.get('granian', '?')}, "
        f"uWSGI {m.get('uwsgi', '?')}, {m['nginx']}.\n\n"
        f"Command: `{meta['argv']}`"
    )


def _wrk_markdown(args: argparse.Namespace, summaries: list, meta: dict[str, Any]) -> str:
    rel = args.plot.relative_to(REPO) if args.plot.is_relative_to(REPO) else args.plot
    idle_mem = meta.get("idle_memory", {})
    final_mem = meta.get("final_memory", {})
    final_lines = [
        f"- {name}: tree PSS {v['tree']['pss'] / 2**20:.1f} MiB; per worker RSS "
        + ", ".join(f"{w['rss'] / 2**20:.1f}" for w in v["workers"])
        + " MiB"
        for name, v in final_mem.items()
    ]
    mem_lines = [
        f"- {name}: tree PSS {v['tree']['pss'] / 2**20:.1f} MiB; per worker RSS "
        + ", ".join(f"{w['rss'] / 2**20:.1f}" for w in v["workers"])
        + " MiB, PSS "
        + ", ".join(f"{w['pss'] / 2**20:.1f}" for w in v["workers"])
        + " MiB"
        for name, v in idle_mem.items()
    ]
    cmds = [f"- {name}: `{cmd}`" for name, cmd in meta.get("commands", {}).items()]
    wrks = [f"- {s}: `{cmd}`" for s, cmd in meta.get("wrk_commands", {}).items()]
    return "\n".join(
        [
            f"### procs {meta['procs']}, threads {meta['threads']}: {meta['rounds']} interleaved rounds of "
            f"{meta['duration']:g} s per scenario and server",
            "",
            _header(meta),
            "",
            "Every row is the median of the rounds (min–max of requests/s beside it); errors are summed over"
            " the rounds (non-2xx + socket errors); CPU is what the server's whole process tree used during"
            " one run (psutil, user + system of every process; in cores = CPU s / run length), and CPU µs/req"
            " is that divided by the requests wrk counted, with its system (kernel) part in parentheses; the"
            " machine's idle share is the part of all CPUs' time nothing ran during the run (/proc/stat), and"
            " wrk µs/req is wrk's own CPU a request: what the cores did that the server did not; PSS is summed"
            " over the tree right after the run.",
            "",
            results_table(summaries, meta["duration"]),
            "",
            f"![requests/s and p99 per scenario]({rel})",
            "",
            "Memory of each server after start, before any request:",
            "",
            *mem_lines,
            "",
            *(
                ["Memory of each server after the whole matrix:", "", *final_lines, ""]
                if final_lines
                else []
            ),
            "Servers (PORT: a free port picked per run; WORKDIR: the run's temporary directory, whose `static/` holds `13b.txt`, `4k.bin` and `1m.bin`: 13 bytes, 4 KiB and 1 MiB):",
            "",
            *cmds,
            "",
            "wrk:",
            "",
            *wrks,
            *(
                ["", "nginx.conf:", "", "```nginx", meta["nginx_conf"].rstrip(), "```"]
                if "nginx_conf" in meta
                else []
            ),
        ]
    )


def _idle_markdown(idle: list, meta: dict[str, Any], with_header: bool) -> str:
    rows = [
        "| server | settings | opened / wanted | not opened | closed by the server during the hold (age) "
        "| open at end | answered again | fresh requests: n, p50 / p99 / max ms, failed "
        "| worker PSS before → after opening (per conn) | worker threads before → after |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for item in idle:
        r = IdleResult(**item["result"])
        ages = r.closed_ages
        closed = f"{len(ages)}" + (f" ({min(ages):.2f}–{max(ages):.2f} s)" if ages else "")
        failed = ", ".join(f"{k}: {v}" for k, v in sorted(r.failed.items())) or "0"
        probe = (
            f"{len(r.probe_ms)}, {r.probe_percentile(50):.1f} / {r.probe_percentile(99):.1f} / "
            f"{max(r.probe_ms):.1f}, {r.probe_failures}"
            if r.probe_ms
            else f"0, —, {r.probe_failures}"
        )
        s = r.samples
        g = suites.growth_per_conn(r)
        mem = (
            f"{s['before']['pss'] / 2**20:.1f} → {s['opened']['pss'] / 2**20:.1f} MiB "
            f"({'—' if g is None else f'{g:,.0f} B'})"
        )
        threads = f"{s['before']['threads']} → {s['held']['threads']}"
        rows.append(
            f"| {item['server']} | {item['label']} | {r.opened:,} / {r.wanted:,} | {failed} | {closed} | "
            f"{r.open_at_end:,} | {r.reused_ok:,} | {probe} | {mem} | {threads} |"
        )
    cmds = [f"- {item['server']} ({item['label']}): `{item['command']}`" for item in idle]
    hold = max((IdleResult(**i["result"]).hold_s for i in idle), default=0)
    return "\n".join(
        [
            f"### {idle[0]['result']['wanted']:,} idle keep-alive connections, held {hold:.0f} s, "
            f"procs {meta['procs']}, threads {meta['threads']}",
            "",
            *([] if not with_header else [_header(meta), ""]),
            "Each connection sends one `GET /` and reads the answer, then stays idle. Ages are measured from "
            "the moment its request was sent. A probe thread opens a fresh connection for one request 50 "
            "times a second during the hold. After the hold every connection still open sends one more "
            "request. Memory is PSS summed over the worker processes.",
            "",
            *rows,
            "",
            *cmds,
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
