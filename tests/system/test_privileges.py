"""Least privilege: ``--user/--group`` drop after bind, ``--umask`` (real supervisor, real processes).

The ``--user`` tests need root (the supervisor must start privileged to have something to drop); they
create a throwaway system user ``wctest<random>`` and remove it at teardown. A file under ``--root`` that
the user may not read is answered **403** (the static handler maps PermissionError to 403; a missing file
is 404).
"""

from __future__ import annotations

import grp
import os
import pwd
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import poll
from tests.support import read_response
from tests.worker.test_tls import client_context, make_pki

pytestmark = pytest.mark.timeout(120)

needs_root = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="--user/--group need a supervisor started as root (run the tests as root)",
)


@pytest.fixture
def system_user() -> Iterator[pwd.struct_passwd]:
    """A fresh system user (and its group), deleted at teardown.

    Request it before ``run_supervisor``: fixtures are torn down in reverse order, so the processes
    running as the user are killed before ``userdel`` (which refuses a user that still has processes).
    """
    useradd, userdel = shutil.which("useradd"), shutil.which("userdel")
    if not useradd or not userdel:
        pytest.skip("useradd/userdel are not installed")
    name = f"wctest{secrets.token_hex(4)}"
    subprocess.run(
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    try:
        yield pwd.getpwnam(name)
    finally:
        poll(
            f"userdel {name}",
            lambda: (
                subprocess.run([userdel, name], capture_output=True, timeout=30).returncode
                in (0, 6)
            ),  # 6: no such user (already gone)
            timeout=15,
        )


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory other users can traverse (pytest's own tmp dirs are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="wcpriv-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def credentials(pid: int) -> tuple[tuple[int, ...], tuple[int, ...], list[int]]:
    """(real/effective/saved uids, the same gids, supplementary groups) of a process."""
    proc = psutil.Process(pid)
    with open(f"/proc/{pid}/status") as f:
        groups = next(line for line in f if line.startswith("Groups:")).split()[1:]
    return tuple(proc.uids()), tuple(proc.gids()), sorted(int(g) for g in groups)


def get(port: int, path: str) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode())
        return read_response(c)[0]


def make_site(base: Path, owner: pwd.struct_passwd) -> tuple[Path, Path]:
    www = base / "www"
    www.mkdir(mode=0o755)
    (www / "public.txt").write_text("for everyone\n")
    (www / "public.txt").chmod(0o644)
    (www / "secret.txt").write_text("root only\n")
    (www / "secret.txt").chmod(0o600)  # owned by root
    logs = base / "logs"
    logs.mkdir(mode=0o755)
    os.chown(logs, owner.pw_uid, owner.pw_gid)
    return www, logs


@needs_root
@pytest.mark.parametrize("group", [None, "nogroup"])
def test_user_and_group_are_dropped_after_bind(system_user, shared_dir, run_supervisor, group):
    if group is not None:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            pytest.skip(f"no group {group!r} on this system")
    else:
        gid = system_user.pw_gid  # --user alone: the user's primary group
    uid = system_user.pw_uid
    www, logs = make_site(shared_dir, system_user)
    access_log = logs / "access.log"
    sup = run_supervisor(
        "--user", system_user.pw_name, *(("--group", group) if group else ()),
        "--root", str(www), "--umask", "027", "--access-log", str(access_log), "--procs", "1",
    )  # fmt: skip
    (worker,) = sup.worker_pids()
    for pid in (sup.pid, worker):  # the supervisor too: it parses admin HTTP requests
        assert credentials(pid) == ((uid,) * 3, (gid,) * 3, [gid])

    assert get(sup.port, "/public.txt") == 200
    assert get(sup.port, "/secret.txt") == 403  # exists, but the worker may not read it
    assert get(sup.port, "/missing.txt") == 404

    # The access log is created by the worker: owned by the user, mode 0666 & ~027.
    poll("3 access log lines", lambda: access_log.read_text().count("\n") == 3)
    st = access_log.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (uid, 0o640)

    # TTIN after the drop: the new slot's socket joins the SO_REUSEPORT group (same socket owner).
    sup.signal(signal.SIGTTIN)
    for pid in sup.wait_workers(2, timeout=30):
        assert credentials(pid)[0] == (uid,) * 3
    assert "cannot add slot" not in sup.output()
    assert all(get(sup.port, "/public.txt") == 200 for _ in range(10))


@needs_root
def test_tls_key_must_be_readable_by_the_user(system_user, shared_dir, run_supervisor):
    """Workers load the key after the drop: a root-only key stops the server at boot with a reason;
    a key readable by the user's group (root:group 0640, the usual setup) works."""
    pki = make_pki(shared_dir)
    os.chmod(pki.server_cert, 0o644)
    os.chmod(pki.server_key, 0o600)
    args = ("--certfile", pki.server_cert, "--keyfile", pki.server_key, "--procs", "1")
    args += ("--user", system_user.pw_name, "--app", "tests.apps.basic:app")
    sup = run_supervisor(*args, ready=False)
    assert sup.wait(30) != 0
    assert "cannot load" in sup.output() and "Permission denied" in sup.output()

    os.chown(pki.server_key, 0, system_user.pw_gid)
    os.chmod(pki.server_key, 0o640)
    sup = run_supervisor(*args)
    raw = socket.create_connection(("127.0.0.1", sup.port), timeout=10)
    with client_context(pki).wrap_socket(raw, server_hostname="localhost") as c:
        assert isinstance(c, ssl.SSLSocket)
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(c)[2] == b"hello"


def test_umask_applies_to_files_the_server_creates(run_supervisor, tmp_path):
    """Needs no root: --umask 077 makes the access log 0600 whoever runs the server."""
    access_log = tmp_path / "access.log"
    sup = run_supervisor("--umask", "077", "--access-log", str(access_log), "--procs", "1")
    assert get(sup.port, "/") == 200
    poll("the access log line", lambda: access_log.read_text().count("\n") == 1)
    assert access_log.stat().st_mode & 0o777 == 0o600
