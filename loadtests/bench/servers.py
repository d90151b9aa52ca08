"""The servers under test: command lines, start/stop as subprocesses, CPU and memory of each process tree.

Every server runs the same ``loadtests/hello.py`` app (nginx, which runs no Python, only serves the static
files, as the machine's ceiling) with the same number of processes and threads. Each is started in its own
session with its output in a log file, and stopped by SIGKILL sent to every pid of its tree.
"""

from __future__ import annotations

import http.client
import os
import signal
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent.parent
LOADTESTS = REPO / "loadtests"
SERVERS = ("webcluster", "gunicorn", "waitress", "granian", "uwsgi", "nginx")
PYTHON_SERVERS = SERVERS[:5]
# Servers that also run the TLS scenario, each as a second instance "NAME-tls" with the bench certificate.
TLS_SERVERS = ("webcluster", "gunicorn", "granian", "nginx")


@dataclass(frozen=True)
class ServerConfig:
    """What every server of one benchmark run shares."""

    procs: int
    threads: int
    static_root: Path  # files served under /static/
    workdir: Path  # logs, nginx config
    webcluster_extra: tuple[str, ...] = ()  # e.g. ("--keepalive", "75") for the idle test
    granian_threads: int = (
        1  # granian --blocking-threads (its fastest WSGI setting here: see BENCHMARKS.md)
    )
    cert: tuple[Path, Path] | None = None  # (certificate, key) for the NAME-tls servers


def uwsgi_binary() -> str:
    """The ``uwsgi`` of the interpreter running the bench (pyuwsgi installs it beside ``python``, and it
    embeds that interpreter), else the first on PATH: every server then runs the same Python."""
    beside = Path(sys.executable).with_name("uwsgi")
    return str(beside) if beside.exists() else "uwsgi"


def python_build() -> str:
    """Which interpreter the servers run, and whether libpython is a shared library (position-independent
    code and calls through the PLT: slower than a static build), from this process's own mappings."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return sys.executable
    return f"{sys.executable}, libpython {'shared' if 'libpython' in maps else 'static'}"


def base_name(name: str) -> str:
    """``webcluster-tls`` -> ``webcluster``."""
    return name.removesuffix("-tls")


def command(name: str, port: int, cfg: ServerConfig) -> list[str]:
    """The command line that starts ``name`` on 127.0.0.1:``port`` (cwd: the repository root).

    Every server runs as a user would start it: its defaults, plus processes, threads, bind and the app.
    ``NAME-tls`` is the same server with the bench certificate."""
    bind = f"127.0.0.1:{port}"
    tls = name.endswith("-tls")
    cert, key = (str(p) for p in cfg.cert) if tls and cfg.cert else ("", "")
    name = base_name(name)
    if name == "webcluster":
        return [
            sys.executable, "supervisor.py", "--procs", str(cfg.procs), "--threads", str(cfg.threads),
            "--app", "hello:app", "--chdir", "loadtests", "--static", f"/static={cfg.static_root}",
            "--bind", bind, "--admin", "127.0.0.1:0", *cfg.webcluster_extra,
            *(["--certfile", cert, "--keyfile", key] if tls else []),
        ]  # fmt: skip
    if name == "gunicorn":
        return [
            sys.executable, "-m", "gunicorn", "-w", str(cfg.procs), "-k", "gthread",
            "--threads", str(cfg.threads), "--chdir", "loadtests", "-b", bind, "hello:app",
            *(["--certfile", cert, "--keyfile", key] if tls else []),
        ]  # fmt: skip
    if name == "granian":
        return [
            sys.executable, "-m", "granian", "--interface", "wsgi", "--workers", str(cfg.procs),
            *(["--blocking-threads", str(cfg.granian_threads)] if cfg.granian_threads else []),
            "--host", "127.0.0.1", "--port", str(port),
            "--no-access-log", *(["--ssl-certificate", cert, "--ssl-keyfile", key] if tls else []),
            "hello:app",
        ]  # fmt: skip
    if name == "uwsgi":
        # --http-socket: uWSGI's own HTTP parser in each worker, no router process; it closes every
        # connection after its response, so it takes part in the Connection: close scenarios only.
        return [
            uwsgi_binary(), "--http-socket", bind, "--master", "--processes", str(cfg.procs),
            "--threads", str(cfg.threads), "--pythonpath", "loadtests", "--module", "hello:app",
            "--disable-logging", "--die-on-term", "--need-app",
        ]  # fmt: skip
    if name == "waitress":
        # waitress is one process by design: it gets --threads, and no --procs equivalent exists
        return [
            sys.executable, "-m", "waitress", "--threads", str(cfg.threads), "--listen", bind,
            "hello:app",
        ]  # fmt: skip
    if name == "nginx":
        conf = _nginx_conf(port, cfg, tls)
        return ["nginx", "-p", str(cfg.workdir), "-e", str(cfg.workdir / "nginx-error.log"),
                "-c", str(conf)]  # fmt: skip
    raise ValueError(f"unknown server {name!r}")


def _nginx_conf(port: int, cfg: ServerConfig, tls: bool = False) -> Path:
    """nginx with the machine's best static settings: sendfile, no access log, worker_processes=procs."""
    work = cfg.workdir
    user = (
        "user root;\n" if os.geteuid() == 0 else ""
    )  # workers must read files in a private tmp dir
    temps = "".join(
        f"    {kind}_temp_path {work}/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = work / f"nginx-{port}.conf"
    tls_conf = (f"\n        ssl_certificate {cfg.cert[0]};\n        ssl_certificate_key {cfg.cert[1]};"
                if tls and cfg.cert else "")  # fmt: skip
    conf.write_text(
        f"""daemon off;
master_process on;
{user}worker_processes {cfg.procs};
pid {work}/nginx-{port}.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000;
    default_type application/octet-stream;
{temps}    server {{
        listen 127.0.0.1:{port}{" ssl" if tls else ""} backlog=2048;{tls_conf}
        location /static/ {{ alias {cfg.static_root}/; }}
        location / {{ return 200 "Hello, World!"; }}
    }}
}}
"""
    )
    return conf


def cpu_split(procs: list[psutil.Process]) -> tuple[float, float]:
    """(user, system) CPU seconds used so far by ``procs`` (those gone since count nothing)."""
    user = system = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            user += t.user
            system += t.system
        except psutil.NoSuchProcess:
            pass
    return user, system


def cpu_seconds(procs: list[psutil.Process]) -> float:
    """User + system CPU seconds used so far by ``procs`` (those gone since count nothing)."""
    return sum(cpu_split(procs))


class Server:
    """One running server (a process tree). Call ``stop()`` when done (also on errors)."""

    def __init__(self, name: str, port: int, cfg: ServerConfig) -> None:
        self.name = name
        self.port = port
        self.argv = command(name, port, cfg)
        env = {k: v for k, v in os.environ.items() if not k.startswith("WEBCLUSTER_")}
        env["HELLO_STATIC_ROOT"] = str(cfg.static_root)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(LOADTESTS), env.get("PYTHONPATH")]))
        self.log_path = cfg.workdir / f"{name}-{port}.log"
        with open(self.log_path, "wb") as log:
            self.popen = subprocess.Popen(
                self.argv,
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid = self.popen.pid
        self._seen: dict[int, float] = {}  # pid -> create_time, so stop() never kills a stranger

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Poll until ``GET /`` answers 200 (and every worker answers: a few requests in a row)."""
        deadline = time.monotonic() + timeout
        ok = 0
        while ok < 5:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.popen.returncode}: {self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready after {timeout}s: {self.log_tail()}")
            ok = ok + 1 if self._probe() else 0
            if ok == 0:
                time.sleep(0.1)
        self.processes()  # remember the tree for stop()

    def _probe(self) -> bool:
        if self.name.endswith("-tls"):
            ctx = ssl._create_unverified_context()  # the bench's self-signed certificate
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=2, context=ctx)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            conn.request("GET", "/", headers={"Connection": "close"})
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def processes(self) -> list[psutil.Process]:
        """The live process tree (root first)."""
        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        live = []
        for p in procs:
            try:
                self._seen.setdefault(p.pid, p.create_time())
                if p.status() != psutil.STATUS_ZOMBIE:
                    live.append(p)
            except psutil.NoSuchProcess:
                pass
        return live

    def workers(self) -> list[psutil.Process]:
        """The processes that serve requests (the children, or the root for single-process servers)."""
        procs = self.processes()
        return procs[1:] or procs[:1]

    def cpu_split(self) -> tuple[float, float]:
        """(user, system) CPU seconds used so far by the live tree."""
        return cpu_split(self.processes())

    def memory(self, procs: list[psutil.Process] | None = None) -> tuple[int, int]:
        """(PSS, RSS) in bytes summed over ``procs`` (default: the whole tree)."""
        pss = rss = 0
        for p in self.processes() if procs is None else procs:
            try:
                info = p.memory_full_info()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            pss += getattr(info, "pss", info.rss)
            rss += info.rss
        return pss, rss

    def stop(self) -> None:
        """SIGKILL every process of the tree, by pid (checked against its create time), and reap."""
        self.processes()
        for pid, created in self._seen.items():
            try:
                p = psutil.Process(pid)
                if p.create_time() == created:
                    p.send_signal(signal.SIGKILL)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            pass
