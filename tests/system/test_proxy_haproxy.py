"""Behind HAProxy: the nginx smuggling battery (tests/system/test_proxy.py) through a real HAProxy.

HAProxy (Debian package, ``mode http``) runs in the foreground with its config and log in a temp dir, in
front of webcluster (two workers, the recording app). Keep-alive to the backend with ``http-reuse
always``, so one server connection carries requests of different clients: the setup where a desync would
hand one client's smuggled request, or its answer, to another. Under ``/b/`` HAProxy buffers the whole
body before connecting (``option http-buffer-request``), under ``/s/`` it streams it.

HAProxy logs one line per request it parsed: the request id and the server it went to (``<NOSRV>`` when
HAProxy answered itself). The guarantees are the nginx ones: no request HAProxy did not forward reaches
the app, the valid controls run exactly once, and every response on the client's connection carries the
id of its own request. ``option forwardfor`` adds ``X-Forwarded-For``, believed only from a peer in
``--forwarded-allow-ips``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import free_port, poll
from tests.system.test_proxy import CASES, attack, backend, get  # noqa: F401 (backend: a fixture)

HAPROXY = shutil.which("haproxy", path=os.environ.get("PATH", "") + ":/usr/sbin:/usr/local/sbin")
pytestmark = pytest.mark.skipif(
    HAPROXY is None, reason="haproxy is not installed (Debian package; .ci/run installs it)"
)

HAPROXY_CONF = """
global
    log stdout format raw local0
    maxconn 512
defaults
    mode http
    log global
    option http-keep-alive
    option forwardfor
    http-reuse always
    timeout connect 5s
    timeout client 10s
    timeout server 10s
    timeout http-request 10s
frontend fe
    bind 127.0.0.1:{port}
    http-request capture req.hdr(X-Req-Id) len 120
    http-request set-header X-Forwarded-Proto https if {{ path_beg /tls/ }}
    log-format "%[capture.req.hdr(0)] %ST %s"
    use_backend buffered if {{ path_beg /b/ }}
    default_backend streamed
backend buffered
    option http-buffer-request
    server wc 127.0.0.1:{upstream}
backend streamed
    server wc 127.0.0.1:{upstream}
"""


class HAProxy:
    """haproxy -db (foreground), config and log under ``tmp``; killed by pid at teardown."""

    def __init__(self, tmp: Path, upstream: int) -> None:
        self.tmp = tmp
        self.port = free_port()
        conf = tmp / "haproxy.cfg"
        conf.write_text(HAPROXY_CONF.format(port=self.port, upstream=upstream))
        check = subprocess.run([HAPROXY, "-c", "-f", str(conf)], capture_output=True, timeout=30)
        assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
        self.log = (tmp / "haproxy.log").open("wb")
        self.proc = subprocess.Popen(
            [HAPROXY, "-db", "-f", str(conf)],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"haproxy exited: {(tmp / 'haproxy.log').read_text()}")
            socket.create_connection(("127.0.0.1", self.port), 1).close()
            return True

        poll("haproxy to accept", up, 10)

    def forwarded(self) -> list[str]:
        """Request ids HAProxy parsed and sent to the server, from its log."""
        lines = (self.tmp / "haproxy.log").read_text(errors="replace").splitlines()
        out = []
        for line in lines:
            parts = line.split()
            if len(parts) == 3 and parts[1].isdigit() and parts[2] != "<NOSRV>":
                out.append(parts[0])
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.log.close()


@pytest.fixture
def haproxy(backend, tmp_path):  # noqa: F811 (the imported fixture)
    tmp = tmp_path / "haproxy"
    tmp.mkdir()
    proxy = HAProxy(tmp, backend.port)
    yield proxy
    proxy.stop()


@pytest.mark.timeout(180)
def test_smuggling_payloads_through_haproxy(haproxy, backend):  # noqa: F811
    table = []
    for prefix in ("/b/", "/s/"):
        for case in CASES:
            verdict = attack(haproxy.port, backend.log, case, prefix, haproxy)
            table.append(f"{prefix}{case.name}: {verdict.statuses} ran={verdict.outer_runs}")
    print("\n".join(table))
    # HAProxy really sat in front: it logged every follow-up request as sent to the server.
    assert sum(rid.endswith("/follow0") for rid in haproxy.forwarded()) == 2 * len(CASES)


@pytest.mark.timeout(60)
def test_x_forwarded_for_from_haproxy_on_loopback_is_believed(haproxy, backend):  # noqa: F811
    # The client is 127.0.0.2; HAProxy (127.0.0.1, in the default --forwarded-allow-ips) says so.
    rec = get(haproxy.port, "/tls/who", "xff", source="127.0.0.2").record
    assert (rec["remote_addr"], rec["scheme"], rec["xff"]) == ("127.0.0.2", "https", "127.0.0.2")
    # A client's own X-Forwarded-For stays a hop to the left of HAProxy's (HAProxy adds a second
    # field line; WSGI joins them with a comma): not believed.
    rec = get(haproxy.port, "/who", "spoof", "X-Forwarded-For: 6.6.6.6", source="127.0.0.2").record
    assert rec["xff"].replace(" ", "") == "6.6.6.6,127.0.0.2" and rec["remote_addr"] == "127.0.0.2"


@pytest.mark.timeout(60)
def test_x_forwarded_for_from_an_untrusted_haproxy_is_ignored(run_supervisor, tmp_path):
    sup = run_supervisor(
        "--app", "tests.apps.hostile:app", "-w", "1", "--forwarded-allow-ips", "10.9.9.9"
    )
    tmp = tmp_path / "haproxy"
    tmp.mkdir()
    proxy = HAProxy(tmp, sup.port)
    try:
        rec = get(proxy.port, "/tls/who", "via-haproxy", source="127.0.0.2").record
        assert rec["xff"] == "127.0.0.2"  # HAProxy did send it ...
        assert (rec["remote_addr"], rec["scheme"]) == ("127.0.0.1", "http")  # ... but not believed
    finally:
        proxy.stop()
