"""``--proxy-protocol`` through real supervisors: raw v1/v2 headers, and a real HAProxy's ``send-proxy`` /
``send-proxy-v2`` in front.

Proves: the header's client address and port become ``REMOTE_ADDR``/``REMOTE_PORT`` (the app
``tests/apps/basic.py`` echoes them at ``/remote``) and appear in the access log; a header split at every
byte still works; ``LOCAL`` keeps the peer address; a missing or malformed header, or a valid one from a
peer outside ``--forwarded-allow-ips``, closes the connection and is counted (``proxy_rejected`` in /stats,
``webcluster_proxy_rejected_total`` in /metrics); with TLS the header comes before the handshake, even when
header and ClientHello arrive in one segment.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import free_port, poll
from tests.support import is_closed, read_response
from tests.worker.test_tls import PKI, client_context, make_pki
from webcluster.worker.proxyproto import v1_header, v2_header

pytestmark = pytest.mark.timeout(120)

HAPROXY = shutil.which("haproxy", path=os.environ.get("PATH", "") + ":/usr/sbin:/usr/local/sbin")
APP = ("--app", "tests.apps.basic:app", "--procs", "1", "--threads", "4")
GET_REMOTE = b"GET /remote HTTP/1.1\r\nHost: x\r\n\r\n"
CLIENT = ("203.0.113.9", 41234)


def _start(run_supervisor, tmp_path: Path, *extra: str):
    log = tmp_path / "access.log"
    return run_supervisor(*APP, "--proxy-protocol", "--access-log", str(log), *extra), log


def _rejected(sup) -> int:
    return sup.stats()["totals"]["proxy_rejected"]


def _baseline(sup) -> int:
    """The count once the fixture's readiness probe (a connect without a header, closed at once) is
    in it: that probe is itself a rejected connection."""
    _wait_rejected(sup, 1)
    return _rejected(sup)


def _wait_rejected(sup, n: int) -> None:
    """Counters reach /stats with the worker's next one-second report."""
    poll(f"proxy_rejected >= {n}", lambda: _rejected(sup) >= n, timeout=10)


def _ask(port: int, payload: bytes, *, byte_by_byte: bool = False) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if byte_by_byte:
            for i in range(len(payload)):
                sock.sendall(payload[i : i + 1])
                time.sleep(0.002)  # separate segments, so the server sees each byte on its own
        else:
            sock.sendall(payload)
        status, _, body = read_response(sock)
        return status, body


def test_v1_and_v2_client_address_becomes_remote_addr_and_is_logged(run_supervisor, tmp_path):
    sup, log = _start(run_supervisor, tmp_path)
    v1 = v1_header(CLIENT, ("127.0.0.1", sup.port))
    assert _ask(sup.port, v1 + GET_REMOTE) == (200, b"203.0.113.9 41234 http")
    v2 = v2_header(("2001:db8::5", 1717), ("::1", sup.port))
    assert _ask(sup.port, v2 + GET_REMOTE) == (200, b"2001:db8::5 1717 http")
    # LOCAL (a balancer's health check) keeps the real peer
    status, body = _ask(sup.port, v2_header(None) + GET_REMOTE)
    assert status == 200 and body.startswith(b"127.0.0.1 ")
    lines = poll("3 access log lines", lambda: log.read_text().count("/remote") >= 3 and log)
    text = lines.read_text()
    assert "203.0.113.9 - - [" in text and "2001:db8::5 - - [" in text


def test_header_split_at_every_byte(run_supervisor, tmp_path):
    sup, _ = _start(run_supervisor, tmp_path)
    for header in (v1_header(CLIENT, ("127.0.0.1", 80)), v2_header(CLIENT, ("127.0.0.1", 80))):
        payload = header + GET_REMOTE
        assert _ask(sup.port, payload, byte_by_byte=True) == (200, b"203.0.113.9 41234 http")
        for cut in range(1, len(header) + 1):
            with socket.create_connection(("127.0.0.1", sup.port), timeout=10) as sock:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.sendall(payload[:cut])
                time.sleep(0.002)
                sock.sendall(payload[cut:])
                assert read_response(sock)[2] == b"203.0.113.9 41234 http", cut


@pytest.mark.parametrize(
    "payload",
    [
        GET_REMOTE,  # no header: a client posing as the balancer gets nothing
        b"PROXY TCP4 203.0.113.9 127.0.0.1 99999 80\r\n" + GET_REMOTE,
        b"PROXY TCP4 203.0.113.9\r\n" + GET_REMOTE,
        v2_header(CLIENT)[:12] + b"\x31" + v2_header(CLIENT)[13:] + GET_REMOTE,  # version 3
        b"PROXY " + b"9" * 200,  # never ends
    ],
    ids=["missing", "bad-port", "short", "v2-version", "too-long"],
)
def test_missing_or_malformed_header_closes_and_counts(run_supervisor, tmp_path, payload):
    sup, _ = _start(run_supervisor, tmp_path)
    before = _baseline(sup)
    with socket.create_connection(("127.0.0.1", sup.port), timeout=10) as sock:
        sock.sendall(payload)
        assert is_closed(sock), "a bad PROXY header must close the connection"
    _wait_rejected(sup, before + 1)
    metrics = sup.get_admin("/metrics")[1].decode()
    assert f"webcluster_proxy_rejected_total {_rejected(sup)}" in metrics
    # the worker keeps serving
    assert _ask(sup.port, v1_header(CLIENT, ("127.0.0.1", 80)) + GET_REMOTE)[0] == 200


def test_silent_connection_times_out_and_counts(run_supervisor, tmp_path):
    sup, _ = _start(run_supervisor, tmp_path, "--header-timeout", "1")
    before = _baseline(sup)
    with socket.create_connection(("127.0.0.1", sup.port), timeout=10) as sock:
        sock.sendall(b"PROXY TCP4 ")
        assert is_closed(sock, timeout=8)
    _wait_rejected(sup, before + 1)


def test_header_from_an_untrusted_peer_is_refused(run_supervisor, tmp_path):
    sup, _ = _start(run_supervisor, tmp_path, "--forwarded-allow-ips", "10.0.0.0/8")
    before = _baseline(sup)
    with socket.create_connection(("127.0.0.1", sup.port), timeout=10) as sock:
        sock.sendall(v1_header(CLIENT, ("127.0.0.1", 80)) + GET_REMOTE)
        assert is_closed(sock)
    _wait_rejected(sup, before + 1)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _client_hello(ctx: ssl.SSLContext) -> tuple[ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO, bytes]:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return tls, incoming, outgoing, outgoing.read()


@pytest.mark.parametrize("version", [1, 2])
def test_header_then_tls_in_one_segment(run_supervisor, tmp_path, pki, version):
    """Header and ClientHello in the same write: the server must not read past the header."""
    sup, _ = _start(run_supervisor, tmp_path, "--certfile", pki.server_cert, "--keyfile",
                    pki.server_key)  # fmt: skip
    header = v1_header(CLIENT, ("127.0.0.1", 443)) if version == 1 else v2_header(CLIENT)
    tls, incoming, outgoing, hello = _client_hello(client_context(pki))
    with socket.create_connection(("127.0.0.1", sup.port), timeout=10) as sock:
        sock.sendall(header + hello)
        while True:  # finish the handshake over the memory BIOs
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())
                data = sock.recv(65536)
                assert data, "closed during the handshake"
                incoming.write(data)
        tls.write(GET_REMOTE)
        sock.sendall(outgoing.read())
        response = b""
        while b"https" not in response:
            data = sock.recv(65536)
            assert data
            incoming.write(data)
            try:
                response += tls.read(65536)
            except ssl.SSLWantReadError:
                pass
    assert response.endswith(b"203.0.113.9 41234 https")


# --- through a real HAProxy ---------------------------------------------------------------------

HAPROXY_CFG = """
global
    maxconn 100
defaults
    mode {mode}
    timeout connect 5s
    timeout client 10s
    timeout server 10s
listen front
    bind 127.0.0.1:{front}
    server s1 127.0.0.1:{back} {send}
"""


@pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed (.ci/run installs it)")
@pytest.mark.parametrize("send", ["send-proxy", "send-proxy-v2"])
@pytest.mark.parametrize("mode", ["tcp", "http"])
def test_haproxy_send_proxy_gives_the_client_address_and_port(run_supervisor, tmp_path, send, mode):
    sup, log = _start(run_supervisor, tmp_path)
    front = free_port()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(HAPROXY_CFG.format(mode=mode, front=front, back=sup.port, send=send))
    proc = subprocess.Popen([HAPROXY, "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        sock = poll("haproxy", lambda: socket.create_connection(("127.0.0.1", front), timeout=10))
        with sock:
            sock.sendall(GET_REMOTE)
            status, _, body = read_response(sock)
            client_port = sock.getsockname()[1]
        # the port HAProxy saw us connect from: only the PROXY header can have told the server
        assert (status, body) == (200, f"127.0.0.1 {client_port} http".encode())
        assert _baseline(sup) == 1  # the fixture's readiness probe only
    finally:
        proc.kill()
        proc.wait()


def test_admin_allow_ips_403_but_healthz_for_anyone(run_supervisor):
    sup = run_supervisor(*APP, "--admin-allow-ips", "10.0.0.0/8", ready=False)
    poll("/healthz 200", lambda: sup.get_admin("/healthz")[0] == 200, timeout=30)
    for path in ("/stats", "/metrics", "/"):
        assert sup.get_admin(path)[0] == 403, path
    assert sup.get_admin("/healthz")[0] == 200
    allowed = run_supervisor(*APP, "--admin-allow-ips", "127.0.0.0/8")
    assert json.loads(allowed.get_admin("/stats")[1])["totals"]["requests"] >= 0
