"""TLS through the real supervisor and forked workers (``--certfile/--keyfile``, client certificates).

What the in-process tests (tests/worker/test_tls.py) cannot show: the context is built in each worker from the
settings, a bad key stops the server at boot with a one-line reason, a HUP reload serves a renewed
certificate, and a crowd of stalled handshakes does not slow real clients of a real worker.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from tests.support import is_closed, read_response
from tests.worker.test_tls import PKI, client_context, client_hello, make_leaf, make_pki

pytestmark = pytest.mark.timeout(120)

CURL = shutil.which("curl")


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_args(pki: PKI, *extra: str) -> tuple[str, ...]:
    return ("--certfile", pki.server_cert, "--keyfile", pki.server_key, *extra)


def https_port(sup) -> int:
    """The TLS port from the start banner (``http://`` or ``https://``)."""
    if sup.port:
        return sup.port
    return int(re.search(r"listening on https?://[^ ,]+:(\d+)", sup.stdout()).group(1))


def connect(port: int, ctx: ssl.SSLContext) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname="localhost")


def test_https_app_and_static_files_through_the_supervisor(run_supervisor, pki, tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    big = os.urandom(1_500_000)
    (files / "big.bin").write_bytes(big)
    sup = run_supervisor(
        *tls_args(pki),
        *("--procs", "2", "--threads", "4", "--app", "tests.apps.basic:app"),
        *("--static", f"/files={files}"),
    )
    port = https_port(sup)
    with connect(port, client_context(pki)) as c:  # keep-alive: app, upload, static file
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(c)[2] == b"hello"
        payload = os.urandom(300_000)
        c.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(payload))
        c.sendall(payload)
        assert read_response(c)[2] == payload
        c.sendall(b"GET /files/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body = read_response(c)
        assert status == 200 and body == big
    plain = socket.create_connection(("127.0.0.1", port), timeout=10)
    plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_response(plain)[0] == 400
    if CURL:
        out = tmp_path / "curl.bin"
        got = subprocess.run(
            [CURL, "-sS", "--cacert", pki.ca, "-o", str(out),
             f"https://localhost:{port}/files/big.bin"],
            capture_output=True, timeout=30,
        )  # fmt: skip
        assert got.returncode == 0, got.stderr.decode()
        assert out.read_bytes() == big


def test_client_certificates_through_the_supervisor(run_supervisor, pki, tmp_path):
    sup = run_supervisor(
        *tls_args(pki, "--ca-certs", pki.ca, "--cert-reqs", "required", "--procs", "1"),
        "--app", "tests.apps.basic:app",
    )  # fmt: skip
    port = https_port(sup)
    with connect(port, client_context(pki, pki.client_cert, pki.client_key)) as c:
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(c)[2] == b"hello"
    with pytest.raises((ssl.SSLError, ConnectionError)):
        with connect(port, client_context(pki)) as c:
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            read_response(c)
    if CURL:
        url = f"https://localhost:{port}/"
        ok = subprocess.run(
            [CURL, "-sS", "--cacert", pki.ca, "--cert", pki.client_cert, "--key", pki.client_key,
             url], capture_output=True, timeout=30,
        )  # fmt: skip
        assert ok.returncode == 0 and ok.stdout == b"hello", ok.stderr.decode()
        refused = subprocess.run([CURL, "-sS", "--cacert", pki.ca, url], capture_output=True)
        assert refused.returncode != 0


def test_unusable_key_stops_the_server_at_boot_with_a_reason(run_supervisor, pki):
    sup = run_supervisor(
        "--certfile", pki.server_cert, "--keyfile", pki.client_key, "--procs", "1", ready=False
    )
    assert sup.wait(30) != 0
    assert re.search(r"certfile/keyfile: cannot load .*key values mismatch", sup.output())


def test_hup_reload_serves_a_renewed_certificate(run_supervisor, pki, tmp_path):
    live = tmp_path / "live"
    live.mkdir()
    shutil.copy(pki.server_cert, live / "cert.pem")
    shutil.copy(pki.server_key, live / "key.pem")
    sup = run_supervisor(
        "--certfile", str(live / "cert.pem"), "--keyfile", str(live / "key.pem"), "--procs", "1"
    )
    port = https_port(sup)

    def serial() -> str:
        with connect(port, client_context(pki)) as c:
            return c.getpeercert()["serialNumber"]

    before = serial()
    old = sup.worker_pids()
    make_leaf(Path(pki.ca).parent, "renewed", "/CN=localhost", "subjectAltName=DNS:localhost")
    shutil.copy(Path(pki.ca).parent / "renewed.pem", live / "cert.pem")
    shutil.copy(Path(pki.ca).parent / "renewed.key", live / "key.pem")
    sup.signal(signal.SIGHUP)
    sup.wait_workers(1, exclude=old, timeout=30)
    assert serial() != before


@pytest.mark.timeout(90)
def test_stalled_handshakes_do_not_slow_real_clients(run_supervisor, pki):
    """200 connections that never finish a handshake, 2 threads: real clients still get quick answers,
    and the stalled ones are closed by --header-timeout."""
    sup = run_supervisor(
        *tls_args(pki, "--procs", "1", "--threads", "2", "--header-timeout", "2"),
        "--app", "tests.apps.basic:app",
    )  # fmt: skip
    port = https_port(sup)
    half = client_hello()[:60]
    stalled = []
    for i in range(200):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        if i % 2:
            s.sendall(half)
        stalled.append(s)
    t0 = time.monotonic()
    ctx = client_context(pki)
    latencies = []
    for _ in range(20):
        start = time.monotonic()
        with connect(port, ctx) as c:
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert read_response(c)[2] == b"hello"
        latencies.append(time.monotonic() - start)
    # Generous bound for a loaded 2-core CI box; a thread held per stalled handshake would mean the
    # requests wait the whole 2 s header timeout (or fail).
    assert max(latencies) < 1.5, latencies
    assert all(is_closed(s, timeout=15) for s in stalled)
    assert time.monotonic() - t0 < 20
    for s in stalled:
        s.close()


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_sessions_resume_on_every_worker(run_supervisor, pki, version):
    """Workers forked from the supervisor's context share its session-ticket key: a session made on
    one worker resumes on the other (SO_REUSEPORT spreads the connections over both)."""
    sup = run_supervisor(*tls_args(pki, "--procs", "2"), "--app", "tests.apps.basic:app")
    port = https_port(sup)
    ctx = client_context(pki)
    ctx.maximum_version = version

    def get_pid(session=None) -> tuple[str, bool, ssl.SSLSession]:
        with connect_session(port, ctx, session) as c:
            c.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            body = read_response(c)[2].decode()
            return body, c.session_reused, c.session

    first, _, session = get_pid()
    pids, reused = set(), 0
    for _ in range(40):
        pid, was_reused, _ = get_pid(session)
        pids.add(pid)
        reused += was_reused
    assert reused == 40, f"{reused}/40 resumed; pids {pids | {first}}"
    assert len(pids | {first}) == 2  # both workers took connections (1 in 2^39 chance otherwise)


def connect_session(port: int, ctx: ssl.SSLContext, session) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle wait on the resumed path
    return ctx.wrap_socket(raw, server_hostname="localhost", session=session)
