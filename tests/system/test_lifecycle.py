"""Worker lifecycle on real processes: crash-loop backoff, boot errors and failed
reloads, recycling (max requests, memory), fast stop, pid file and log reopening, other bind modes.

Fake worker targets (tests/apps/fake_workers.py) exercise the arbiter without the HTTP engine.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time

import pytest

from tests.conftest import poll
from tests.system.loadgen import Load
from tests.system.test_supervisor import APP, get, spawned

pytestmark = pytest.mark.timeout(60)


def fake(name: str) -> tuple[str, ...]:
    return ("-m", "tests.apps.fake_workers", name)


def test_crash_loop_backs_off_exponentially(run_supervisor):
    sup = run_supervisor("--procs", "1", "--admin", "off", command=fake("crash"), ready=False)
    sup.wait_for_output(r"listening on")
    seen: list[float] = []

    def five_spawns() -> bool:
        n = spawned(sup)
        while len(seen) < n:
            seen.append(time.monotonic())
        return n >= 5

    poll("five spawns", five_spawns, timeout=10, interval=0.01)
    err = sup.stderr()
    delays = [float(d) for d in re.findall(r"next start in ([\d.]+)s", err)]
    assert delays[:4] == [0.1, 0.2, 0.4, 0.8], err
    assert seen[4] - seen[3] >= 0.6, seen  # the 0.8 s wait really happened
    assert sup.popen.poll() is None  # a crash loop is not a halt
    sup.signal(signal.SIGTERM)
    assert sup.wait(10) == 0


def test_boot_error_message_halts(run_supervisor):
    sup = run_supervisor("--procs", "2", "--admin", "off", command=fake("boot_error"), ready=False)
    assert sup.wait(10) == 3
    err = sup.stderr()
    assert "worker failed to boot, shutting down: ImportError: fake app is broken" in err
    assert spawned(sup) <= 2


def test_uncaught_exception_in_worker_prints_traceback(run_supervisor):
    sup = run_supervisor("--procs", "1", "--admin", "off", command=fake("raises"), ready=False)
    sup.wait_for_output(r"exited: exit code 1")
    assert "RuntimeError: fake worker blew up" in sup.stderr()
    sup.signal(signal.SIGTERM)
    assert sup.wait(10) == 0


def test_max_requests_recycles_one_at_a_time_without_failures(run_supervisor):
    sup = run_supervisor("--procs", "2", "--threads", "4", "--max-requests", "150", *APP)
    with Load(sup.port, threads=4, mode="mixed") as load:
        poll("three recycles", lambda: len(re.findall("recycled", sup.stderr())) >= 3, timeout=30)
    assert load.failures() == [], load.failures()[:10]
    lines = sup.stderr().splitlines()
    for i, line in enumerate(lines):
        m = re.search(r"recycled \(max_requests\), replaced by pid (\d+)", line)
        if m:  # the replacement was ready before the old worker got TERM
            assert any(f"worker {m.group(1)} (slot" in x and "ready" in x for x in lines[:i]), line


def test_memory_limit_recycles(run_supervisor):
    sup = run_supervisor("--procs", "1", "--threads", "2", "--max-worker-memory", "1", *APP)
    first = sup.worker_pids()
    sup.wait_for_output(r"RSS \d+ MiB > 1 MiB: recycling", timeout=15)
    sup.wait_for_output(r"recycled \(max_worker_memory\), replaced by pid \d+", timeout=15)
    assert get(sup.port).status == 200
    assert set(first) != set(sup.worker_pids()) or spawned(sup) >= 2


def test_reload_with_broken_app_keeps_old_workers(run_supervisor, tmp_path):
    config = tmp_path / "webcluster.toml"
    config.write_text('app = "tests.apps.basic:app"\nprocs = 2\n')
    sup = run_supervisor("--config", str(config), procs=2)
    before = sup.wait_workers(2)
    config.write_text('app = "tests.apps.no_such_module:app"\nprocs = 2\n')
    sup.signal(signal.SIGHUP)
    sup.wait_for_output(r"reload failed, keeping generation 1: .*no_such_module")
    assert sup.popen.poll() is None
    assert get(sup.port).status == 200
    assert sup.wait_workers(2) == before
    config.write_text('app = "tests.apps.basic:app"\nprocs = 3\n')  # fixed, and one more worker
    sup.signal(signal.SIGHUP)
    after = sup.wait_workers(3, exclude=before)
    assert {w["generation"] for w in sup.stats()["workers"]} == {3}  # 2 was the failed one
    assert get(sup.port).status == 200 and len(after) == 3


def test_sigint_is_a_fast_stop(run_supervisor, tmp_path):
    sup = run_supervisor("--procs", "1", "--threads", "2", *APP)
    mark = tmp_path / "in-app"
    box: dict = {}

    def slow() -> None:
        try:
            box["status"] = get(sup.port, f"/sleep?seconds=5&mark={mark}").status
        except Exception as exc:
            box["error"] = type(exc).__name__

    client = threading.Thread(target=slow)
    client.start()
    poll("the request to reach the app", mark.exists)
    sent = time.monotonic()
    sup.signal(signal.SIGINT)
    assert sup.wait(10) == 0
    assert time.monotonic() - sent < 4.0  # did not wait for the 5 s request
    client.join(10)
    assert "status" not in box, box


def test_pid_file_and_usr1_reopens_logs(run_supervisor, tmp_path):
    pidfile, logfile = tmp_path / "sup.pid", tmp_path / "error.log"
    sup = run_supervisor("--procs", "1", "--pid", str(pidfile), "--error-log", str(logfile), *APP)
    assert pidfile.read_text().strip() == str(sup.pid)
    poll("spawn logged to the file", lambda: "spawned worker" in logfile.read_text())
    logfile.rename(tmp_path / "error.log.1")  # what logrotate does
    sup.signal(signal.SIGUSR1)
    poll("a new log file", logfile.exists)
    sup.signal(signal.SIGTTIN)
    poll("later lines in the new file", lambda: "received SIGTTIN" in logfile.read_text())
    assert "received SIGTTIN" not in (tmp_path / "error.log.1").read_text()
    sup.signal(signal.SIGTERM)
    assert sup.wait(15) == 0
    assert not pidfile.exists()


def test_no_reuse_port_kill9(run_supervisor):
    """One shared socket: a killed worker's share of new connections goes to the other worker."""
    sup = run_supervisor("--procs", "2", "--threads", "4", "--no-reuse-port", *APP)
    before = sup.wait_workers(2)
    with Load(sup.port, threads=4, mode="new") as load:
        poll("load running", lambda: load.ok_count() >= 30)
        os.kill(before[0], signal.SIGKILL)
        killed = time.monotonic()
        sup.wait_workers(2, exclude=[before[0]])
        poll("load continues", lambda: load.ok_count(since=killed + 0.5) >= 30)
    failures = load.failures()
    assert len(failures) <= 4 and all(r.started <= killed for r in failures), failures
    assert not [r for r in failures if r.error == "ConnectionRefusedError"]


def test_unix_socket_bind(run_supervisor, tmp_path):
    path = tmp_path / "web.sock"
    sup = run_supervisor("--procs", "2", "--bind", f"unix:{path}", *APP)
    for _ in range(4):
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(path))
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"hello"), data
    sup.signal(signal.SIGTERM)
    assert sup.wait(15) == 0
    assert not path.exists()


def test_workers_exit_when_the_supervisor_dies(run_supervisor):
    """PR_SET_PDEATHSIG: orphans get TERM, so they neither serve forever nor hold the port."""
    import psutil

    sup = run_supervisor("--procs", "2", "--threads", "2", *APP)
    workers = [psutil.Process(pid) for pid in sup.wait_workers(2)]
    sup.popen.kill()
    sup.wait(10)

    def gone(p: psutil.Process) -> bool:
        try:
            return p.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    poll("orphaned workers to exit", lambda: all(gone(p) for p in workers), timeout=10)


def test_systemd_socket_activation(run_supervisor):
    """LISTEN_FDS: the passed socket replaces --bind and is shared by every worker."""
    sup = run_supervisor("--procs", "2", *APP, command=("tests/apps/systemd_launcher.py",))
    assert re.search(r"listening on http://127\.0\.0\.1:\d+ \(fd://3\)", sup.stdout())
    pids = {int(get(sup.port).body) for _ in range(20)}
    assert pids <= set(sup.worker_pids()) and pids


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_user_drops_privileges_after_bind(run_supervisor):
    import pwd

    import psutil

    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody'")
    sup = run_supervisor("--procs", "2", "--user", "nobody", *APP)
    procs = [psutil.Process(sup.pid)] + [psutil.Process(p) for p in sup.wait_workers(2)]
    assert {p.uids().real for p in procs} == {nobody.pw_uid}
    assert {p.gids().real for p in procs} == {nobody.pw_gid}
    assert get(sup.port).status == 200
