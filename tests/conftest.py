"""Shared fixtures. Stable API (other tests depend on it):

``free_port() -> int``
    A currently free TCP port on 127.0.0.1 (bind to 0, read, close). Prefer binding to port 0 yourself
    where you can: another process may take the port before you use it.

``http_get(port, path, timeout=10) -> (status, body)``
    One ``GET`` to 127.0.0.1:``port`` on a fresh connection.

``run_supervisor`` (fixture) -> ``start(*args, env=None, ready=True, procs=None, timeout=30,
command=("supervisor.py",)) -> SupervisorProc``
    Launches ``sys.executable *command *args`` in a subprocess (cwd = repo root, its own session,
    stdout/stderr to files); ``command=("-m", "tests.apps.fake_workers", "crash")`` runs the arbiter
    with a fake worker target instead. Unless ``args`` has ``--bind``/``-b`` it adds ``--bind 127.0.0.1:0`` (the
    real port is read from the start banner); unless it has ``--admin`` it adds ``--admin 127.0.0.1:<free>``.
    ``env`` is added to a copy of ``os.environ`` from which every ``WEBCLUSTER_*`` variable was removed.
    With ``ready=True`` it waits (deadline ``timeout``) until the banner is printed, the port accepts a
    connection, the admin ``/healthz`` answers 200 (when the admin is on) and ``/stats`` lists ``procs``
    running workers (``procs`` defaults to the ``--procs``/``-w`` argument, else the CPU count; the check
    is skipped with ``--admin off`` or when a ``--config`` file may set procs and ``procs`` is not given).
    With ``ready=False`` it returns at once (for supervisors expected to fail; ``.port`` may then be None).
    At teardown the supervisor and every worker it ever had (psutil children, collected by pid) are
    SIGKILLed and reaped.

``SupervisorProc``
    ``.pid``, ``.port`` (first bind), ``.admin_port``, ``.url`` (``http://127.0.0.1:PORT``),
    ``.worker_pids()`` (live, non-zombie psutil children, sorted), ``.stats()`` (``GET /stats`` JSON),
    ``.wait_workers(n, exclude=(), timeout=20)`` (poll /stats until ``n`` running workers none of whose
    pids is in ``exclude``; returns their pids), ``.signal(sig)``, ``.wait(timeout) -> returncode``
    (raises ``subprocess.TimeoutExpired``), ``.output()`` / ``.stdout()`` / ``.stderr()`` (text so far),
    ``.wait_for_output(regex, timeout=10) -> re.Match``.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
BANNER = re.compile(r"listening on (\S+?)(?:,| \().*admin (\S+?)\)")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port: int, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    """One ``GET path`` to 127.0.0.1:``port`` on a fresh connection: (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def poll(what: str, probe: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Call ``probe`` until it returns something truthy (OSError counts as not yet); fail at ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = probe()
        except OSError as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def _option(args: tuple[str, ...], *names: str) -> str | None:
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                return args[i + 1]
            if name.startswith("--") and arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


class SupervisorProc:
    """A supervisor subprocess started by the ``run_supervisor`` fixture."""

    def __init__(
        self, popen: subprocess.Popen, out: Path, err: Path, admin_port: int | None
    ) -> None:
        self.popen = popen
        self.pid = popen.pid
        self._out, self._err = out, err
        self.admin_port = admin_port
        self.port: int | None = None
        self.url: str | None = None
        self.seen: dict[int, float] = {}  # every worker pid observed -> create_time, for teardown

    # -- output --
    def stdout(self) -> str:
        return self._out.read_text(errors="replace")

    def stderr(self) -> str:
        return self._err.read_text(errors="replace")

    def output(self) -> str:
        return self.stdout() + self.stderr()

    def wait_for_output(self, pattern: str, timeout: float = 10.0) -> re.Match:
        return poll(
            f"output matching {pattern!r}", lambda: re.search(pattern, self.output()), timeout
        )

    # -- process --
    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout)

    def _children(self, recursive: bool = False) -> list[psutil.Process]:
        try:
            children = psutil.Process(self.pid).children(recursive=recursive)
        except psutil.NoSuchProcess:
            return []
        live = []
        for child in children:
            try:
                self.seen.setdefault(child.pid, child.create_time())
                if child.status() != psutil.STATUS_ZOMBIE:
                    live.append(child)
            except psutil.NoSuchProcess:
                pass
        return live

    def worker_pids(self) -> list[int]:
        return sorted(c.pid for c in self._children())

    # -- admin --
    def get_admin(self, path: str) -> tuple[int, bytes]:
        return http_get(self.admin_port, path)

    def stats(self) -> dict[str, Any]:
        status, body = self.get_admin("/stats")
        assert status == 200, status
        return json.loads(body)

    def wait_workers(self, n: int, exclude=(), timeout: float = 20.0) -> list[int]:
        """Wait until /stats shows exactly ``n`` running workers, none of them in ``exclude``."""
        excluded = set(exclude)

        def check() -> list[int] | None:
            workers = self.stats()["workers"]
            pids = sorted(w["pid"] for w in workers if w["state"] == "running")
            ok = len(workers) == len(pids) == n and not excluded & set(pids)
            return pids if ok else None

        pids = poll(f"{n} running workers (excluding {sorted(excluded)})", check, timeout, 0.1)
        self._children()  # remember them for teardown
        return pids

    def _wait_started(self, procs: int | None, timeout: float) -> None:
        def banner() -> re.Match | None:
            if self.popen.poll() is not None:
                raise AssertionError(f"supervisor exited {self.popen.returncode}:\n{self.output()}")
            return BANNER.search(self.stdout())

        match = poll("the start banner", banner, timeout)
        url = match.group(1)
        if url.startswith(("http://", "https://")):
            self.url = url
            self.port = int(url.rsplit(":", 1)[1])
            poll(
                "the port to accept", lambda: socket.create_connection(("127.0.0.1", self.port), 2)
            )
        if self.admin_port is None:
            return
        poll("/healthz 200", lambda: self.get_admin("/healthz")[0] == 200, timeout)
        if procs is not None:
            self.wait_workers(procs, timeout=timeout)

    def kill_all(self) -> None:
        """SIGKILL the supervisor and every worker it had, by pid, and reap the supervisor.

        A worker pid seen earlier is killed only if it still names the same process (same create
        time), never a stranger that reused the pid."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGSTOP)  # frozen: it cannot fork a worker we would miss
        self._children(recursive=True)
        if self.popen.poll() is None:
            self.popen.kill()
        for pid, created in self.seen.items():
            try:
                proc = psutil.Process(pid)
                if proc.create_time() == created:
                    proc.send_signal(signal.SIGKILL)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            pass


def _expected_procs(args: tuple[str, ...], procs: int | None) -> int | None:
    if procs is not None or _option(args, "--config") is not None:
        return procs
    given = _option(args, "--procs", "-w")
    return int(given) if given else os.cpu_count() or 1


def _launch(
    args: tuple[str, ...], env: dict[str, str] | None, command: tuple[str, ...], logs: Path
) -> SupervisorProc:
    extra: list[str] = []
    if _option(args, "--bind", "-b") is None:
        extra += ["--bind", "127.0.0.1:0"]
    admin = _option(args, "--admin")
    if admin is None:
        admin = f"127.0.0.1:{free_port()}"
        extra += ["--admin", admin]
    admin_port = None if admin == "off" else int(admin.rsplit(":", 1)[1])
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("WEBCLUSTER_")}
    full_env.update(env or {})
    full_env["PYTHONUNBUFFERED"] = "1"
    out, err = logs / "stdout.txt", logs / "stderr.txt"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        popen = subprocess.Popen(
            [sys.executable, *command, *args, *extra],
            cwd=ROOT,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=fo,
            stderr=fe,
            start_new_session=True,
        )
    return SupervisorProc(popen, out, err, admin_port)


@pytest.fixture
def run_supervisor(tmp_path_factory) -> Iterator[Callable[..., SupervisorProc]]:
    """Factory fixture: see the module docstring."""
    started: list[SupervisorProc] = []

    def start(
        *args: str,
        env: dict[str, str] | None = None,
        ready: bool = True,
        procs: int | None = None,
        timeout: float = 30.0,
        command: tuple[str, ...] = ("supervisor.py",),
    ) -> SupervisorProc:
        args = tuple(args)
        for attempt in range(3):
            sup = _launch(args, env, command, tmp_path_factory.mktemp("supervisor"))
            started.append(sup)
            if not ready:
                return sup
            try:
                sup._wait_started(_expected_procs(args, procs), timeout)
                return sup
            except AssertionError:
                # an auto-chosen admin port was taken meanwhile (free_port's race): try another
                if "--admin" in args or "admin address" not in sup.stderr() or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    yield start
    for sup in started:
        sup.kill_all()


# --- the fast tier starts no process -----------------------------------------------------------------
# A test that starts a process or an external tool belongs to the ``system`` tier (tests/system/, or
# @pytest.mark.system): here any such start from a test without the marker fails it, so
# ``-m "not system"`` stays fast and free of outside tools.

_running: list[pytest.Item] = []
_execute_child = subprocess.Popen._execute_child  # type: ignore[attr-defined]
_fork = os.fork


def _check_tier(what: str) -> None:
    if _running and _running[-1].get_closest_marker("system") is None:
        raise AssertionError(
            f"{_running[-1].nodeid} {what}: move it under tests/system/ or mark it @pytest.mark.system"
        )


def _guarded_execute_child(self, args, *rest, **kw):  # type: ignore[no-untyped-def]
    _check_tier(f"starts a process ({args if isinstance(args, str) else args[0]})")
    return _execute_child(self, args, *rest, **kw)


def _guarded_fork() -> int:
    _check_tier("forks")
    return _fork()


subprocess.Popen._execute_child = _guarded_execute_child  # type: ignore[attr-defined]
os.fork = _guarded_fork


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    _running.append(item)
    try:
        yield
    finally:
        _running.pop()
