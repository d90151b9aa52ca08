"""The two experiments: wrk scenarios (servers side by side, rounds interleaved) and many idle connections.

``run_wrk_suite`` starts every server once, each on its own port, and keeps them all up; then, round by
round and scenario by scenario, it runs wrk against each server in turn (the order rotates every round), so
noise from the shared machine lands on every server alike. ``run_idle_suite`` starts one fresh server per
setting and runs ``idle.hold_idle`` against it.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests.bench.idle import IdleResult, hold_idle
from loadtests.bench.report import MIB, SCENARIOS, Run
from loadtests.bench.servers import Server, ServerConfig, command, python_build, uwsgi_binary
from loadtests.bench.wrk import run_wrk, wrk_command

Say = Callable[[str], None]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_static_files(root: Path) -> None:
    """The static fixtures: 4 KiB and 1 MiB of deterministic bytes (made at run time, not committed)."""
    root.mkdir(parents=True, exist_ok=True)
    block = bytes(range(256)) * 16  # 4 KiB
    (root / "4k.bin").write_bytes(block)
    (root / "1m.bin").write_bytes(block * 256)
    (root / "13b.txt").write_bytes(b"Hello, World!")


def make_certificate(workdir: Path) -> tuple[Path, Path]:
    """A self-signed P-256 certificate for 127.0.0.1/localhost (PKCS#8 key, which granian needs)."""
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def display(argv: list[str], workdir: Path | None = None) -> str:
    """A command line as a reader would type it: ``python`` for the interpreter's full path, ``WORKDIR``
    for the run's temporary directory (static files in WORKDIR/static, nginx config and logs)."""
    text = shlex.join(["python" if a == sys.executable else a for a in argv])
    return text.replace(str(workdir), "WORKDIR") if workdir is not None else text


def shown_command(name: str, cfg: ServerConfig) -> str:
    """The command as BENCHMARKS.md shows it: PORT for the port, WORKDIR for the temporary directory;
    webcluster's admin listener takes any free port (``:0``)."""
    return display(command(name, 54321, cfg), cfg.workdir).replace("54321", "PORT")


@contextlib.contextmanager
def started(names: list[str], cfg: ServerConfig, say: Say) -> Iterator[dict[str, Server]]:
    """Start the servers (each on a fresh port), wait until each answers, stop them all on exit."""
    servers: dict[str, Server] = {}
    try:
        for name in names:
            servers[name] = Server(name, free_port(), cfg)
        for name, server in servers.items():
            server.wait_ready()
            say(f"{name} ready on port {server.port} (pid {server.pid})")
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def participants(scenario: str, servers: list[str]) -> list[str]:
    """Who runs a scenario: nginx only the static files and TLS (it serves no WSGI app; its "/" answers
    the same 13 bytes itself), uWSGI --http-socket only Connection: close (it closes every connection),
    the NAME-tls servers only the TLS scenarios and the others only the plain ones."""
    sc = SCENARIOS[scenario]
    out = []
    for name in servers:
        tls = name.endswith("-tls")
        base = name.removesuffix("-tls")
        if tls != sc.tls:
            continue
        if base == "nginx" and not (sc.static or sc.tls):
            continue
        if base == "uwsgi" and not sc.close:
            continue
        out.append(name)
    return out


def memory_of(server: Server, procs: list | None = None) -> dict[str, int]:
    pss, rss = server.memory(procs)
    return {"pss": pss, "rss": rss}


@dataclass(frozen=True)
class WrkPlan:
    servers: list[str]
    scenarios: list[str]
    rounds: int
    duration: float
    warmup: float
    wrk_threads: int


def run_wrk_suite(plan: WrkPlan, cfg: ServerConfig, say: Say) -> tuple[list[Run], dict[str, Any]]:
    """Run every (round, scenario, server); return the runs and facts for the report."""
    runs: list[Run] = []
    facts: dict[str, Any] = {"idle_memory": {}, "commands": {}, "wrk_commands": {}}
    with started(plan.servers, cfg, say) as servers:
        if "nginx" in servers:
            conf = (cfg.workdir / f"nginx-{servers['nginx'].port}.conf").read_text()
            facts["nginx_conf"] = conf.replace(str(cfg.workdir), "WORKDIR")
        for name, server in servers.items():
            facts["commands"][name] = shown_command(name, cfg)
            workers = server.workers()
            facts["idle_memory"][name] = {
                "tree": memory_of(server),
                "workers": [memory_of(server, [w]) for w in workers],
            }
        _warm_up(plan, servers, say)
        for rnd in range(plan.rounds):
            for scenario in plan.scenarios:
                names = participants(scenario, plan.servers)
                shift = rnd % len(names)
                for name in names[shift:] + names[:shift]:
                    run = _one_run(plan, servers[name], scenario, rnd)
                    runs.append(run)
                    say(_progress(run, plan))
        for scenario in plan.scenarios:
            sc = SCENARIOS[scenario]
            cmd = wrk_command(f"{_scheme(sc)}://127.0.0.1:PORT" + sc.path, connections=sc.connections,
                              duration=plan.duration, threads=plan.wrk_threads, close=sc.close)  # fmt: skip
            facts["wrk_commands"][scenario] = shlex.join(cmd)
        for name, server in servers.items():  # after the whole matrix, as issue 9 measures it
            facts.setdefault("final_memory", {})[name] = {
                "tree": memory_of(server),
                "workers": [memory_of(server, [w]) for w in server.workers()],
            }
    return runs, facts


def _scheme(sc) -> str:
    return "https" if sc.tls else "http"


def _warm_up(plan: WrkPlan, servers: dict[str, Server], say: Say) -> None:
    if plan.warmup <= 0:
        return
    for name, server in servers.items():
        urls = {f"{_scheme(SCENARIOS[s])}://127.0.0.1:{server.port}{SCENARIOS[s].path}"
                for s in participants_of(name, plan.scenarios)}  # fmt: skip
        for url in sorted(urls):
            cmd = wrk_command(url, connections=16,
                              duration=plan.warmup, threads=1)  # fmt: skip
            subprocess.run(cmd, capture_output=True, timeout=plan.warmup + 30)
        say(f"warmed up {name}")


def participants_of(server: str, scenarios: list[str]) -> list[str]:
    return [s for s in scenarios if server in participants(s, [server])]


def _one_run(plan: WrkPlan, server: Server, scenario: str, rnd: int) -> Run:
    sc = SCENARIOS[scenario]
    cmd = wrk_command(f"{_scheme(sc)}://127.0.0.1:{server.port}{sc.path}", connections=sc.connections,
                      duration=plan.duration, threads=plan.wrk_threads, close=sc.close)  # fmt: skip
    user0, sys0 = server.cpu_split()
    idle0, wrk0 = machine_idle(), children_cpu()
    res = run_wrk(cmd, timeout=plan.duration + 60)
    idle1, wrk1 = machine_idle(), children_cpu()
    user1, sys1 = server.cpu_split()
    pss, rss = server.memory()
    if server.popen.poll() is not None:
        raise RuntimeError(f"{server.name} died during {scenario}: {server.log_tail()}")
    time.sleep(0.5)  # let the server close wrk's connections before the next run starts
    return Run(scenario, server.name, rnd, res.rps, res.p50_ms, res.p99_ms, res.requests,
               res.non_2xx, res.socket_errors, res.error_detail, user1 - user0 + sys1 - sys0, pss, rss,
               sys1 - sys0, idle_percent(idle0, idle1), wrk1 - wrk0)  # fmt: skip


def machine_idle() -> tuple[int, int]:
    """(idle, total) CPU time of the whole machine so far, in clock ticks (/proc/stat's "cpu" line;
    idle counts iowait too: nothing ran then either; the total leaves out guest time, which the
    user and nice times already hold)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return ticks[3] + ticks[4], sum(ticks[:8])


def idle_percent(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The share of the machine's CPU time left idle between two ``machine_idle`` readings, percent."""
    total = after[1] - before[1]
    return 100.0 * (after[0] - before[0]) / total if total > 0 else float("nan")


def children_cpu() -> float:
    """CPU seconds of this process's finished children: across ``run_wrk``, wrk's own."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _progress(run: Run, plan: WrkPlan) -> str:
    errors = run.non_2xx + run.socket_errors
    return (
        f"[round {run.round + 1}/{plan.rounds}] {run.scenario:9} {run.server:10} "
        f"{run.rps:10,.0f} req/s  p50 {run.p50_ms:7.2f} ms  p99 {run.p99_ms:7.2f} ms  "
        f"errors {errors:5}  cpu {run.cpu_s:5.1f} s  pss {run.pss / MIB:5.0f} MiB"
    )


@dataclass(frozen=True)
class IdleCase:
    """One idle-connections run: which server, with which extra webcluster flags (documented)."""

    server: str
    label: str
    extra: tuple[str, ...] = ()


def idle_cases(servers: list[str], keepalive: float) -> list[IdleCase]:
    cases = []
    if "webcluster" in servers:
        cases.append(
            IdleCase("webcluster", f"--keepalive {keepalive:g}", ("--keepalive", f"{keepalive:g}"))
        )
        cases.append(IdleCase("webcluster", "defaults (--keepalive 5)"))
    cases += [IdleCase(s, "defaults") for s in servers if s in ("gunicorn", "waitress")]
    return cases


def run_idle_suite(
    cases: list[IdleCase], cfg: ServerConfig, n: int, hold: float, say: Say
) -> list[dict[str, Any]]:
    """One fresh server per case; ``hold_idle`` against it; the sampled figures come from its workers."""
    out = []
    for case in cases:
        case_cfg = ServerConfig(cfg.procs, cfg.threads, cfg.static_root, cfg.workdir, case.extra)
        with started([case.server], case_cfg, say) as servers:
            server = servers[case.server]
            _warm_idle(server.port)

            def sample(server: Server = server) -> dict[str, int]:
                workers = server.workers()
                figures = memory_of(server, workers)
                figures["threads"] = sum(_threads(w) for w in workers)
                return figures

            say(f"idle: {case.server} ({case.label}): opening {n} connections, holding {hold:g}s")
            result = hold_idle(server.port, n, hold, sample=sample, progress=say)
            out.append({"case": case, "result": result,
                        "command": shown_command(case.server, case_cfg)})  # fmt: skip
            say(idle_line(case, result))
    return out


def _threads(proc) -> int:
    try:
        return proc.num_threads()
    except Exception:
        return 0


def _warm_idle(port: int) -> None:
    """A few hundred requests first, so the 'before' memory sample is not a cold start."""
    wrk = wrk_command(f"http://127.0.0.1:{port}/", connections=8, duration=1, threads=1)
    subprocess.run(wrk, capture_output=True, timeout=30)


def growth_per_conn(result: IdleResult, phase: str = "opened") -> float | None:
    """Bytes of worker PSS per idle connection between 'before' and ``phase``."""
    before, after = result.samples.get("before"), result.samples.get(phase)
    if not before or not after or not result.opened:
        return None
    return (after["pss"] - before["pss"]) / result.opened


def idle_line(case: IdleCase, r: IdleResult) -> str:
    ages = r.closed_ages
    age = f" (age {min(ages):.2f}-{max(ages):.2f}s)" if ages else ""
    g = growth_per_conn(r)
    return (
        f"idle {case.server} [{case.label}]: opened {r.opened}/{r.wanted}, failed {sum(r.failed.values())}, "
        f"closed during hold {len(ages)}{age}, open at end {r.open_at_end}, reused {r.reused_ok}, "
        f"probe p99 {r.probe_percentile(99) or float('nan'):.1f} ms ({len(r.probe_ms)} ok, "
        f"{r.probe_failures} failed), growth {'-' if g is None else f'{g:.0f} B'}/conn"
    )


def machine_facts() -> dict[str, Any]:
    """Versions and machine, for the report header."""

    def out(cmd: list[str]) -> str:
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        except OSError:
            return "?"
        return (
            (p.stdout + p.stderr).strip().splitlines()[0] if (p.stdout + p.stderr).strip() else "?"
        )

    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": sys.version.split()[0],
        "python_build": python_build(),
        "wrk": out(["wrk", "-v"]).split(" [")[0].replace("debian/", ""),
        "gunicorn": out([sys.executable, "-m", "gunicorn", "--version"]).rstrip(")"),
        "waitress": out([sys.executable, "-c", "import importlib.metadata as m; print(m.version('waitress'))"]),
        "nginx": out(["nginx", "-v"]),
        "granian": out([sys.executable, "-c", "import importlib.metadata as m; print(m.version('granian'))"]),
        "uwsgi": out([uwsgi_binary(), "--version"]),
        "commit": out(["git", "-C", str(Path(__file__).resolve().parents[2]), "rev-parse", "--short", "HEAD"]),
        "loadavg": os.getloadavg()[0],
    }  # fmt: skip
