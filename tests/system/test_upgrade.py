"""Binary upgrade on USR2 over real processes: under load with zero failed requests and the pid file
rewritten; a new supervisor that cannot boot leaves the old one serving; sd_notify messages on a test
NOTIFY_SOCKET follow the handover (READY, RELOADING, MAINPID + READY, STOPPING)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import time
from collections.abc import Iterator

import psutil
import pytest

from tests.conftest import poll
from tests.system.loadgen import Load
from tests.system.test_supervisor import APP, get

pytestmark = pytest.mark.timeout(120)


class Notifications:
    """A NOTIFY_SOCKET for the supervisor: the datagrams it sent, in order."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.1)
        self.messages: list[str] = []

    def wait_for(self, pattern: str, timeout: float = 30.0) -> str:
        def seen() -> str | None:
            with contextlib.suppress(TimeoutError):
                self.messages.append(self.sock.recv(4096).decode())
            return next((m for m in self.messages if re.search(pattern, m)), None)

        return poll(f"notification {pattern!r}", seen, timeout, 0.0)


@pytest.fixture
def notifications(tmp_path) -> Iterator[Notifications]:
    n = Notifications(str(tmp_path / "notify"))
    yield n
    n.sock.close()


@pytest.fixture
def successors() -> Iterator[list[int]]:
    """Pids of new supervisors (children of the old one, orphaned when it exits): killed with their
    workers at teardown."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc = psutil.Process(pid)
            for child in proc.children(recursive=True):
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.kill()
            proc.kill()


def new_supervisor(sup, pidfile, successors) -> int:
    def rewritten() -> int | None:
        text = pidfile.read_text().strip() if pidfile.exists() else ""
        return int(text) if text and int(text) != sup.pid else None

    pid = poll("the pid file to name the new supervisor", rewritten, timeout=30)
    successors.append(pid)
    return pid


def test_usr2_under_load_zero_failures(run_supervisor, tmp_path, notifications, successors):
    pidfile = tmp_path / "sup.pid"
    sup = run_supervisor(
        "--procs", "2", "--threads", "4", "--pid", str(pidfile), *APP,
        env={"NOTIFY_SOCKET": notifications.path},
    )  # fmt: skip
    old_workers = sup.wait_workers(2)
    assert notifications.wait_for("^READY=1") == f"READY=1\nMAINPID={sup.pid}"
    with Load(sup.port, threads=4, mode="mixed") as load:
        poll("load running", lambda: load.ok_count() >= 50)
        sup.signal(signal.SIGUSR2)
        new = new_supervisor(sup, pidfile, successors)
        assert sup.wait(30) == 0, sup.output()  # the old one drained and left on its own
        exited = time.monotonic()
        poll("load continues after the handover", lambda: load.ok_count(since=exited) >= 50)
    failures = load.failures()
    assert failures == [], failures[:10]
    new_workers = {c.pid for c in psutil.Process(new).children()}
    served_after = {r.pid for r in load.results if r.started > exited}
    assert served_after and served_after <= new_workers, (served_after, new_workers)
    assert not set(old_workers) & new_workers
    assert pidfile.read_text().strip() == str(new)
    assert get(sup.port, "/").body == b"hello"
    status, _ = sup.get_admin("/healthz")  # the admin socket was handed over too
    assert status == 200
    notifications.wait_for("^RELOADING=1\nMONOTONIC_USEC=\\d+$")
    assert notifications.wait_for("^MAINPID=") == f"MAINPID={new}\nREADY=1"
    assert not any("STOPPING" in m for m in notifications.messages)  # the old one left quietly
    os.kill(new, signal.SIGTERM)
    notifications.wait_for("^STOPPING=1$")
    poll("the new supervisor to exit", lambda: not psutil.pid_exists(new), timeout=30)
    assert not pidfile.exists()
    err = sup.stderr()
    assert f"upgrade: the new supervisor (pid {new}) serves; this one drains and exits" in err
    print(f"{len(load.results)} requests, 0 failed, {sum(r.retried for r in load.results)} retried")


def test_failed_upgrade_keeps_the_old_supervisor(run_supervisor, tmp_path, notifications):
    (tmp_path / "upg_app.py").write_text(_APP)
    pidfile = tmp_path / "sup.pid"
    sup = run_supervisor(
        "--procs", "2", "--threads", "2", "--pid", str(pidfile), "--chdir", str(tmp_path),
        "upg_app:app", env={"NOTIFY_SOCKET": notifications.path},
    )  # fmt: skip
    workers = sup.wait_workers(2)
    notifications.wait_for("^READY=1")
    (tmp_path / "upg_app.py").write_text("def app(:\n")  # the deploy broke the app
    sup.signal(signal.SIGUSR2)
    line = sup.wait_for_output(
        r"upgrade failed: the new supervisor \(pid (\d+)\): it exited before its workers were "
        r"ready \(exit code 3\); still serving",
        timeout=30,
    )
    assert "SyntaxError" in sup.stderr()  # the new one said why
    assert (
        not psutil.pid_exists(int(line.group(1)))
        or psutil.Process(int(line.group(1))).status() == psutil.STATUS_ZOMBIE
    )
    assert sup.popen.poll() is None and pidfile.read_text().strip() == str(sup.pid)
    assert get(sup.port, "/").body == b"ok" and sup.wait_workers(2) == workers
    notifications.wait_for("^RELOADING=1")
    notifications.wait_for("^READY=1$")  # RELOADING undone, no MAINPID: the old pid stays
    assert not any(m.startswith("MAINPID=") for m in notifications.messages)
    sup.signal(signal.SIGTERM)
    assert sup.wait(20) == 0


_APP = """\
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]
"""
