"""The deployment files in docs/deploy/ work as written: each test runs the file itself.

- ``nginx-upstream.conf``: a real nginx with that file included balances over two webcluster hosts, the
  hosts believe its X-Forwarded-For, and a host that stops (with ``--drain-delay``) loses no request.
- ``webcluster.socket`` / ``webcluster.service``: ``systemd-analyze verify`` accepts them, and the
  service's command line and environment, started the way systemd starts it (the socket at fd 3,
  LISTEN_PID/LISTEN_FDS), serve on the activated socket and drain on SIGTERM.
(``haproxy.cfg`` is run by ``tests/system/test_fleet.py`` through ``python -m loadtests.fleet``.)
"""

from __future__ import annotations

import configparser
import http.client
import os
import shlex
import shutil
import signal
import socket
import string
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port, poll

pytestmark = pytest.mark.timeout(120)

DEPLOY = ROOT / "docs" / "deploy"
NGINX = shutil.which("nginx", path=os.environ.get("PATH", "") + ":/usr/sbin:/usr/local/sbin")
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
APP = "tests.apps.basic:app"


class _At(string.Template):
    delimiter = "@"  # nginx's own variables use $


NGINX_MAIN = """
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {tmp}/upstream.conf;
}}
"""


def _get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"X-Forwarded-For": "203.0.113.50"})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (.ci/run installs it)")
def test_nginx_upstream_file_balances_and_survives_a_draining_host(run_supervisor, tmp_path):
    hosts = [run_supervisor("--app", APP, "--procs", "1", "--threads", "4", "--drain-delay", "2")
             for _ in range(2)]  # fmt: skip
    port = free_port()
    servers = "\n".join(
        f"    server 127.0.0.1:{h.port} max_fails=1 fail_timeout=5s;" for h in hosts
    )
    conf = _At((DEPLOY / "nginx-upstream.conf").read_text()).substitute(
        servers=servers, listen=f"127.0.0.1:{port}"
    )
    (tmp_path / "upstream.conf").write_text(conf)
    (tmp_path / "nginx.conf").write_text(NGINX_MAIN.format(tmp=tmp_path))
    proc = subprocess.Popen(
        [NGINX, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-e",
         str(tmp_path / "error.log")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        poll("nginx", lambda: socket.create_connection(("127.0.0.1", port), 1).close() or True)
        pids = set()
        for _ in range(6):
            status, headers, body = _get(port, "/remote")
            assert status == 200
            # the client's X-Forwarded-For plus nginx's own hop: the rightmost untrusted is the client
            assert body.startswith(b"203.0.113.50 "), body
            pids.add(headers["x-pid"])
        assert len(pids) == 2, "nginx did not balance over both hosts"
        hosts[0].signal(signal.SIGTERM)
        # during and after the drain every request is answered (by the other host once it is gone)
        for _ in range(40):
            assert _get(port, "/")[0] == 200
        assert hosts[0].wait(30) == 0
        for _ in range(5):
            assert _get(port, "/")[0] == 200
    finally:
        proc.kill()
        proc.wait()


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((DEPLOY / name).read_text())
    return parser


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
def test_systemd_units_verify(tmp_path):
    binary = shutil.which("webcluster")
    if binary is None:
        pytest.skip("the webcluster console script is not installed (pip install -e .)")
    for name in ("webcluster.socket", "webcluster.service"):
        text = (DEPLOY / name).read_text().replace("/usr/local/bin/webcluster", binary)
        (tmp_path / name).write_text(text)
    done = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(tmp_path / "webcluster.socket"),
         str(tmp_path / "webcluster.service")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    problems = [line for line in done.stderr.splitlines() if "webcluster" in line]
    assert done.returncode == 0 and not problems, done.stderr


def test_service_command_line_runs_socket_activated(run_supervisor):
    """What systemd would run: ExecStart's arguments and the Environment= lines, with the listening
    socket at fd 3 (tests/apps/systemd_launcher.py binds it and execs the supervisor)."""
    service = _unit("webcluster.service")["Service"]
    socket_unit = _unit("webcluster.socket")["Socket"]
    assert socket_unit["ListenStream"].endswith(":8080")
    argv = shlex.split(service["ExecStart"])[1:]
    assert argv[:2] == ["--bind", "fd://3"]
    env = _environment(DEPLOY / "webcluster.service")
    env["WEBCLUSTER_APP"] = APP  # the unit names an example project; the test serves its own app
    env["WEBCLUSTER_ADMIN"] = f"127.0.0.1:{free_port()}"
    sup = run_supervisor(
        *argv, "--procs", "1", env=env, command=("tests/apps/systemd_launcher.py",)
    )
    assert _get(sup.port, "/")[0] == 200
    sup.signal(signal.SIGTERM)  # the unit's KillSignal: drain, then the graceful stop
    poll("/healthz 503", lambda: sup.get_admin("/healthz")[0] == 503, timeout=5)
    assert sup.wait(int(service["TimeoutStopSec"])) == 0


def _environment(unit: Path) -> dict[str, str]:
    """The Environment= assignments of a unit (configparser keeps only the last of repeated keys)."""
    env = {}
    for line in unit.read_text().splitlines():
        if line.startswith("Environment="):
            key, _, value = line.removeprefix("Environment=").partition("=")
            env[key] = value
    return env
