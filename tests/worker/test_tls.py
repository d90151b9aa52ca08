"""TLS in-process: the worker's loop + pool over loopback with a certificate generated at test time.

Checks what a TLS client sees (keep-alive, pipelining, bodies, large static files without sendfile, client
certificates, close_notify, curl and ``openssl s_client``) and what the handshake costs the worker: a
stalled handshake holds no thread and is closed by the header timeout; plaintext HTTP or garbage on the TLS
port is answered 400 / closed without disturbing other clients.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from tests.conftest import poll
from tests.support import is_closed, read_response
from webcluster.worker import tls as tls_module
from webcluster.worker.handlers.base import Exchange
from webcluster.worker.handlers.dispatch import build_handler
from webcluster.worker.loop import Loop, LoopSettings
from webcluster.worker.runner import Runner
from webcluster.worker.threadpool import ThreadPool
from webcluster.worker.tls import (
    DEFAULT_CIPHERS,
    TLSAcceptor,
    TLSConfigError,
    TLSStream,
    WantWrite,
    server_context,
)

# system: the throwaway PKI is made by the openssl command-line tool (and two tests run curl and
# openssl s_client).
pytestmark = [pytest.mark.timeout(60), pytest.mark.system]


# ---- a throwaway PKI (openssl CLI) ------------------------------------------------------------------


@dataclass(frozen=True)
class PKI:
    """A CA, a server certificate for localhost/127.0.0.1/::1, a client certificate signed by the CA and
    a self-signed ("rogue") client certificate the CA does not vouch for. All paths are PEM files."""

    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    rogue_cert: str
    rogue_key: str


_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _openssl(cwd: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def make_leaf(cwd: Path, name: str, cn: str, ext: str) -> None:
    """``name``.pem / ``name``.key in ``cwd``, signed by the CA there, with extensions ``ext``."""
    (cwd / f"{name}.ext").write_text(
        ext + "\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    )
    _openssl(cwd, "req", "-new", *_EC, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", cn)
    _openssl(
        cwd, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext",
    )  # fmt: skip


def make_pki(directory: Path) -> PKI:
    """Generate the PKI in ``directory`` (EC P-256 keys: a few hundred ms in all)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command-line tool is needed to make test certificates")
    d = directory
    _openssl(
        d, "req", "-x509", *_EC, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=webcluster test CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    make_leaf(d, "server", "/CN=localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n"
          "extendedKeyUsage=serverAuth")  # fmt: skip
    make_leaf(d, "client", "/CN=client", "extendedKeyUsage=clientAuth")
    _openssl(
        d, "req", "-x509", *_EC, "-keyout", "rogue.key", "-out", "rogue.pem", "-days", "2",
        "-subj", "/CN=rogue", "-addext", "extendedKeyUsage=clientAuth",
    )  # fmt: skip
    return PKI(
        *(str(d / n) for n in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")),
        str(d / "rogue.pem"),
        str(d / "rogue.key"),
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


def client_context(pki: PKI, cert: str | None = None, key: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=pki.ca)
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


def client_hello() -> bytes:
    """The bytes of a real ClientHello (from a memory-BIO client), to send whole or in part."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    tls = ctx.wrap_bio(ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(), server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


# ---- the server under test -------------------------------------------------------------------------


class TLSServer:
    def __init__(self, loop: Loop, sock: socket.socket, pool: ThreadPool, pki: PKI) -> None:
        self.loop = loop
        self.pool = pool
        self.pki = pki
        self.port = sock.getsockname()[1]

    def raw(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def connect(self, ctx: ssl.SSLContext | None = None, **kw) -> ssl.SSLSocket:
        ctx = ctx or client_context(self.pki)
        return ctx.wrap_socket(self.raw(), server_hostname="localhost", **kw)

    def get(self, target: str = "/", ctx: ssl.SSLContext | None = None) -> tuple[int, bytes]:
        with self.connect(ctx) as c:
            c.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % target.encode())
            status, _, body = read_response(c)
            return status, body


@contextmanager
def serve_tls(
    handler: Callable[[Exchange], None],
    pki: PKI,
    *,
    threads: int = 4,
    ca: bool = False,
    cert_reqs: str = "none",
    context: ssl.SSLContext | None = None,
    **settings,
) -> Iterator[TLSServer]:
    ctx = context or server_context(
        pki.server_cert, pki.server_key, ca_certs=pki.ca if ca else None, cert_reqs=cert_reqs
    )
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1024)
    pool = ThreadPool(threads)
    loop = Loop(
        [lsock],
        Runner(handler, None, None),
        pool,
        replace(LoopSettings(), **settings),
        url_scheme="https",
        tls=TLSAcceptor(ctx),
    )
    t = threading.Thread(target=loop.run, daemon=True)
    t.start()
    try:
        yield TLSServer(loop, lsock, pool, pki)
    finally:
        loop.stop(graceful=False)
        t.join(5)
        lsock.close()


def hello(ex: Exchange) -> None:
    body = b"hello " + ex.request.target.encode()
    ex.start_response(200, "OK", [("Content-Length", str(len(body)))])
    ex.write(body)


def echo(ex: Exchange) -> None:
    data = ex.body.read()
    ex.start_response(200, "OK", [("Content-Length", str(len(data)))])
    ex.write(data)


def scheme_app(environ, start_response):
    body = environ["wsgi.url_scheme"].encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


# ---- the context -----------------------------------------------------------------------------------


def test_server_context_defaults(pki):
    ctx = server_context(pki.server_cert, pki.server_key)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode == ssl.CERT_NONE
    assert ctx.options & ssl.OP_NO_COMPRESSION and ctx.options & ssl.OP_NO_RENEGOTIATION
    assert not ctx.get_ca_certs()  # client certificates are never checked against the system store
    ctx = server_context(pki.server_cert, pki.server_key, ca_certs=pki.ca, cert_reqs="optional")
    assert ctx.verify_mode == ssl.CERT_OPTIONAL and len(ctx.get_ca_certs()) == 1


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"certfile": "/nonexistent.pem"},
            "setting certfile/keyfile: cannot load /nonexistent.pem",
        ),
        ({"keyfile": "client.key"}, "setting certfile/keyfile: .*key values mismatch"),
        ({"ca_certs": "server.key"}, "setting ca_certs: cannot load"),  # a key, not a certificate
        ({"cert_reqs": "required"}, "setting cert_reqs: .*needs --ca-certs"),
        ({"cert_reqs": "sometimes"}, "setting cert_reqs: 'sometimes'"),
        ({"ciphers": "NO-SUCH-CIPHER"}, "setting ciphers: OpenSSL selects no cipher"),
        ({"min_version": "1.1"}, "setting tls_min_version: '1.1'"),
    ],
)
def test_unusable_files_are_a_config_error_naming_the_setting(pki, change, message):
    d = Path(pki.ca).parent
    args = {"certfile": pki.server_cert, "keyfile": pki.server_key, "ca_certs": None}
    for key, value in change.items():
        args[key] = str(d / value) if key in ("keyfile", "ca_certs") else value
    certfile, keyfile = args.pop("certfile"), args.pop("keyfile")
    with pytest.raises(TLSConfigError, match=message):
        server_context(certfile, keyfile, **args)


class FakeSSLSocket:
    """Stands in for ``ssl.SSLSocket``: each call takes the next scripted result (raised if an exception).

    With ``buffered``, the bytes still scripted count as decrypted and held by OpenSSL (``pending()``)."""

    def __init__(self, script: list, buffered: bool = False) -> None:
        self.script = script
        self.buffered = buffered

    def _next(self, *args):
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        return step

    recv = send = do_handshake = _next

    def pending(self) -> int:
        return sum(len(s) for s in self.script if type(s) is bytes) if self.buffered else 0


def test_tls_stream_keeps_the_plain_socket_contract():
    want_read = ssl.SSLWantReadError(2, "want read")
    want_write = ssl.SSLWantWriteError(3, "want write")
    with pytest.raises(BlockingIOError) as caught:
        TLSStream(FakeSSLSocket([want_read])).recv(10)
    assert type(caught.value) is BlockingIOError  # wait for readable
    with pytest.raises(WantWrite):
        TLSStream(FakeSSLSocket([want_write])).recv(10)  # wait for writable
    with pytest.raises(BlockingIOError) as caught:
        TLSStream(FakeSSLSocket([want_write])).send(b"x")
    assert type(caught.value) is BlockingIOError
    with pytest.raises(ssl.SSLError):  # a write needing a read (renegotiation): the caller closes
        TLSStream(FakeSSLSocket([want_read])).send(b"x")
    stream = TLSStream(FakeSSLSocket([want_write, None]))
    with pytest.raises(WantWrite):
        stream.do_handshake()
    assert not stream.established
    stream.do_handshake()
    assert stream.established


def test_tls_stream_drains_bytes_openssl_already_decrypted():
    """Decrypted bytes in OpenSSL's buffer are invisible to epoll: recv() must take them too."""
    sock = FakeSSLSocket([b"GET / HT", b"TP/1.1\r\n", b"\r\n"], buffered=True)
    assert TLSStream(sock).recv(8) == b"GET / HTTP/1.1\r\n\r\n"
    assert sock.script == []


# ---- what clients see ------------------------------------------------------------------------------


def test_keep_alive_and_url_scheme_over_tls(pki):
    with serve_tls(build_handler(app=scheme_app), pki) as srv:
        with srv.connect() as c:
            assert c.version() in ("TLSv1.2", "TLSv1.3")
            assert c.selected_alpn_protocol() in (None, "http/1.1")
            for _ in range(5):
                c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                status, headers, body = read_response(c)
                assert (status, body) == (200, b"https") and "connection" not in headers
        assert srv.loop.can_sendfile is False


def test_a_closing_response_served_on_the_loop_over_tls(pki):
    """The loop sends a closing response's last bytes with MSG_MORE, to go out with the FIN
    (``OutputQueue.send``); a TLS stream ignores the flag, as SSLSocket refuses flags."""

    def whole(ex: Exchange) -> None:
        ex.start_response(200, "OK", [("Content-Length", "2")])
        ex.finish(b"ok", True)  # nothing runs after it: sent with MSG_MORE when the response closes

    with serve_tls(whole, pki) as srv:
        for _ in range(3):
            assert srv.get() == (200, b"ok")


def test_pipelined_requests_over_tls(pki):
    with serve_tls(hello, pki) as srv, srv.connect() as c:
        c.sendall(b"".join(b"GET /p%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(20)))
        assert [read_response(c)[2] for _ in range(20)] == [b"hello /p%d" % i for i in range(20)]


def test_post_bodies_over_tls(pki):
    payload = os.urandom(1_500_000)  # many TLS records, more than the 256 KiB output watermark
    with serve_tls(echo, pki) as srv, srv.connect() as c:
        c.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(payload))
        c.sendall(payload)
        assert read_response(c)[2] == payload
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (b"x" * 70000, b"y" * 5, b"z"))
        c.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks)
        c.sendall(b"0\r\n\r\n")
        assert read_response(c)[2] == b"x" * 70000 + b"y" * 5 + b"z"


def test_large_static_file_without_sendfile(pki, tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 17)
    (tmp_path / "big.bin").write_bytes(data)
    with serve_tls(build_handler(root=str(tmp_path)), pki) as srv, srv.connect() as c:
        c.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = read_response(c)
        assert status == 200 and int(headers["content-length"]) == len(data)
        assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
        c.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=1000-1999999\r\n\r\n")
        status, _, body = read_response(c)
        assert status == 206 and body == data[1000:2000000]
        c.sendall(b"HEAD /big.bin HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = read_response(c, head=True)
        assert status == 200 and int(headers["content-length"]) == len(data) and body == b""
        assert read_response(c)[0] == 404  # HEAD sent no body: the framing held


def test_many_small_writes_with_ssl_write_retries(pki, monkeypatch):
    """SSL_write retried with the same (growing, moving) buffer while the kernel buffers are full."""
    blocked = []
    plain_send = TLSStream.send

    def counting_send(self, data):
        try:
            return plain_send(self, data)
        except BlockingIOError:
            blocked.append(len(data))
            raise

    monkeypatch.setattr(TLSStream, "send", counting_send)
    piece = bytes(range(256)) * 12
    count = 3000  # 9 MiB: more than the kernel buffers, so writes keep hitting SSL_ERROR_WANT_WRITE

    def stream(ex: Exchange) -> None:
        ex.start_response(200, "OK", [("Content-Length", str(len(piece) * count))])
        for _ in range(count):
            ex.write(piece)

    with serve_tls(stream, pki, keepalive=30) as srv:
        raw = srv.raw()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # no autotuning: buffers fill
        with client_context(pki).wrap_socket(raw, server_hostname="localhost") as c:
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            poll("len(blocked) > 0", lambda: len(blocked) > 0, 10)  # full before we read a byte
            status, headers, body = read_response(c)
            assert status == 200 and body == piece * count
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # and the connection is in step
            assert read_response(c)[2] == piece * count
    assert len(blocked) > 10  # the retry path really ran


def test_closes_send_close_notify(pki):
    """A close-delimited body (HTTP/1.0) and an idle timeout end with close_notify, not a bare FIN."""

    def stream(ex: Exchange) -> None:
        ex.start_response(200, "OK", [("Content-Type", "text/plain")])
        for i in range(50):
            ex.write(b"line %d\n" % i)

    with serve_tls(stream, pki, keepalive=0.3) as srv:
        with srv.connect(suppress_ragged_eofs=False) as c:
            c.sendall(b"GET / HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := c.recv(65536):  # SSLEOFError here would mean no close_notify
                data += chunk
            assert data.endswith(b"line 49\n") and b"transfer-encoding" not in data.lower()
        with srv.connect(suppress_ragged_eofs=False) as c:
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            read_response(c)
            c.settimeout(5)
            while c.recv(65536):
                pass


def test_protocol_errors_and_head_timeout_over_tls(pki):
    """The loop's error path (400, 408, then linger) works on the TLS stream and ends with close_notify."""
    with serve_tls(hello, pki, header_timeout=0.5) as srv:
        with srv.connect(suppress_ragged_eofs=False) as c:
            c.sendall(
                b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            status, headers, _ = read_response(c)
            assert status == 400 and headers["connection"] == "close"
        with srv.connect(suppress_ragged_eofs=False) as c:
            c.sendall(b"GET / HTTP/1.1\r\nHost:")
            status, headers, _ = read_response(c)
            assert status == 408 and headers["connection"] == "close"
            c.settimeout(5)
            assert c.recv(100) == b""  # close_notify, not a bare FIN (that would raise SSLEOFError)
        poll(
            "srv.loop.gauges()['active_connections'] == 0",
            lambda: srv.loop.gauges()["active_connections"] == 0,
            10,
        )


# ---- client certificates ---------------------------------------------------------------------------


def test_client_certificate_required(pki):
    with serve_tls(hello, pki, ca=True, cert_reqs="required") as srv:
        assert srv.get("/ok", client_context(pki, pki.client_cert, pki.client_key)) == (
            200,
            b"hello /ok",
        )
        for ctx in (client_context(pki), client_context(pki, pki.rogue_cert, pki.rogue_key)):
            with pytest.raises((ssl.SSLError, ConnectionError)):
                srv.get("/refused", ctx)  # TLS 1.3: refused at the first read, after the handshake
        assert srv.get("/again", client_context(pki, pki.client_cert, pki.client_key))[0] == 200
        poll(
            "srv.loop.gauges()['active_connections'] == 0",
            lambda: srv.loop.gauges()["active_connections"] == 0,
            5.0,
        )


def test_client_certificate_optional(pki):
    with serve_tls(hello, pki, ca=True, cert_reqs="optional") as srv:
        assert srv.get("/anon", client_context(pki))[0] == 200
        assert srv.get("/cert", client_context(pki, pki.client_cert, pki.client_key))[0] == 200
        with pytest.raises((ssl.SSLError, ConnectionError)):  # a certificate given must verify
            srv.get("/rogue", client_context(pki, pki.rogue_cert, pki.rogue_key))


# ---- hostile and confused clients ------------------------------------------------------------------


def test_stalled_handshakes_hold_no_thread_and_are_closed_by_the_header_timeout(pki):
    hello_bytes = client_hello()
    # Accepted at once (--defer-accept 0): with the deferral, the kernel would hold the silent ones first
    with serve_tls(hello, pki, threads=2, header_timeout=0.5, defer_accept=0) as srv:
        t0 = time.monotonic()
        stalled = [srv.raw() for _ in range(15)]  # connect, send nothing
        for _ in range(15):  # half a ClientHello, then silence
            s = srv.raw()
            s.sendall(hello_bytes[: len(hello_bytes) // 2])
            stalled.append(s)
        poll(
            "srv.loop.gauges()['active_connections'] >= 30",
            lambda: srv.loop.gauges()["active_connections"] >= 30,
            5.0,
        )
        # 30 stalled handshakes, 2 threads: a real client is still served at once.
        assert srv.get("/fresh") == (200, b"hello /fresh")
        poll("srv.pool.busy == 0", lambda: srv.pool.busy == 0, 5.0)
        for s in stalled:
            assert is_closed(s, timeout=10)
        elapsed = time.monotonic() - t0
        assert 0.4 <= elapsed < 10
        poll(
            "srv.loop.gauges()['active_connections'] == 0",
            lambda: srv.loop.gauges()["active_connections"] == 0,
            5.0,
        )


def test_client_leaving_mid_handshake_is_cleaned_up(pki):
    hello_bytes = client_hello()
    with serve_tls(hello, pki, header_timeout=30) as srv:
        for n in (0, 1, 10, len(hello_bytes)):
            s = srv.raw()
            s.sendall(hello_bytes[:n])
            s.close()
        poll(
            "srv.loop.gauges()['active_connections'] == 0",
            lambda: srv.loop.gauges()["active_connections"] == 0,
            5.0,
        )
        assert srv.get()[0] == 200


def test_plaintext_http_on_the_tls_port_gets_400_and_others_are_unaffected(pki):
    with serve_tls(hello, pki) as srv:
        tls = srv.connect()
        tls.sendall(b"GET /before HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(tls)[2] == b"hello /before"
        plain = srv.raw()
        plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = read_response(plain)
        assert status == 400 and headers["connection"] == "close"
        assert b"HTTPS" in body
        assert is_closed(plain)
        garbage = srv.raw()
        garbage.sendall(b"\x00\x01\x02\x03 not tls")
        assert is_closed(garbage)
        tls.sendall(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(tls)[2] == b"hello /after"
        tls.close()


def test_tls_1_1_is_refused_and_1_2_accepted(pki):
    def s_client(port: int, version: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", f"-{version}",
             "-cipher", "DEFAULT@SECLEVEL=0", "-CAfile", pki.ca],
            input=b"", capture_output=True, timeout=20,
        )  # fmt: skip

    with serve_tls(hello, pki) as srv:
        old = s_client(srv.port, "tls1_1")
        assert old.returncode != 0 and b"alert protocol version" in old.stderr  # the server's alert
        new = s_client(srv.port, "tls1_2")
        assert new.returncode == 0 and b"Protocol  : TLSv1.2" in new.stdout
        assert b"Verify return code: 0 (ok)" in new.stdout


# ---- curl ------------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_with_cacert(pki, tmp_path):
    (tmp_path / "index.html").write_text("<h1>hi</h1>\n")
    (tmp_path / "big.bin").write_bytes(os.urandom(1_200_000))
    with serve_tls(build_handler(root=str(tmp_path)), pki) as srv:
        base = f"https://localhost:{srv.port}"
        out = subprocess.run(
            ["curl", "-sS", "-v", "--cacert", pki.ca, f"{base}/", "-o", str(tmp_path / "a"),
             f"{base}/big.bin", "-o", str(tmp_path / "b")],
            capture_output=True, timeout=30,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr.decode()
        assert (tmp_path / "a").read_text() == "<h1>hi</h1>\n"
        assert (tmp_path / "b").read_bytes() == (tmp_path / "big.bin").read_bytes()
        assert b"Re-using existing connection" in out.stderr  # keep-alive over TLS
        assert b"SSL certificate verify ok" in out.stderr
        refused = subprocess.run(
            ["curl", "-sS", f"{base}/"], capture_output=True, timeout=30
        )  # no --cacert: the test CA is unknown to curl
        assert refused.returncode == 60


# ---- the cipher profile and versions (Mozilla intermediate: ECDHE + AEAD on TLS 1.2) ----------------


def s_client(port: int, ca: str, *args: str) -> subprocess.CompletedProcess:
    """``openssl s_client`` with ``args``; stdin closed, so it quits after the handshake."""
    return subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", ca, *args],
        input=b"", capture_output=True, timeout=20,
    )  # fmt: skip


def test_default_tls12_suites_are_ecdhe_with_aead_only(pki):
    ctx = server_context(pki.server_cert, pki.server_key)
    tls12 = [c for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert len(tls12) == 6
    for cipher in tls12:
        assert cipher["kea"] == "kx-ecdhe" and cipher["aead"], cipher["name"]
        assert cipher["symmetric"] in ("aes-128-gcm", "aes-256-gcm", "chacha20-poly1305")
    tls13 = [c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.3"]
    assert len(tls13) == 3  # OpenSSL's TLS 1.3 suites, untouched by the cipher string


def test_cbc_suites_are_refused_on_tls12_and_aead_accepted(pki):
    with serve_tls(hello, pki) as srv:
        for cbc in (
            "ECDHE-ECDSA-AES128-SHA256",
            "ECDHE-ECDSA-AES256-SHA384",
            "ECDHE-ECDSA-AES128-SHA",
        ):
            out = s_client(srv.port, pki.ca, "-tls1_2", "-cipher", cbc)
            assert out.returncode != 0 and b"handshake failure" in out.stderr, cbc
        out = s_client(srv.port, pki.ca, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256")
        assert out.returncode == 0 and b"Cipher is ECDHE-ECDSA-AES128-GCM-SHA256" in out.stdout
        out = s_client(srv.port, pki.ca, "-tls1_3")
        assert out.returncode == 0 and b"TLSv1.3" in out.stdout


def test_ciphers_setting_overrides_the_profile(pki):
    ctx = server_context(pki.server_cert, pki.server_key, ciphers="ECDHE-ECDSA-AES256-SHA384")
    with serve_tls(hello, pki, context=ctx) as srv:
        out = s_client(srv.port, pki.ca, "-tls1_2")
        assert out.returncode == 0 and b"Cipher is ECDHE-ECDSA-AES256-SHA384" in out.stdout
    assert DEFAULT_CIPHERS.count(":") == 5


def test_tls_min_version_13_refuses_tls12(pki):
    ctx = server_context(pki.server_cert, pki.server_key, min_version="1.3")
    with serve_tls(hello, pki, context=ctx) as srv:
        old = s_client(srv.port, pki.ca, "-tls1_2")
        assert old.returncode != 0 and b"alert protocol version" in old.stderr
        new = s_client(srv.port, pki.ca, "-tls1_3")
        assert new.returncode == 0 and b"New, TLSv1.3" in new.stdout


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_sessions_resume_with_tickets(pki, version):
    """A client that keeps its session resumes it on a new connection (abbreviated handshake)."""
    ctx = client_context(pki)
    ctx.maximum_version = version
    with serve_tls(hello, pki) as srv:
        with srv.connect(ctx) as c:
            c.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(c)[2] == b"hello /a"  # TLS 1.3 tickets arrive after the handshake
            session = c.session
            assert not c.session_reused and session.has_ticket
        with srv.connect(ctx, session=session) as c:
            c.sendall(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(c)[2] == b"hello /b"
            assert c.session_reused


def test_workers_take_the_shared_context_only_for_the_same_settings_and_files(pki, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    shutil.copy(pki.server_cert, cert)
    shutil.copy(pki.server_key, key)
    settings = {"certfile": str(cert), "keyfile": str(key)}
    tls_module.share_context(**settings)
    shared = tls_module.worker_context(**settings)
    assert tls_module.worker_context(**settings) is shared  # what a forked worker inherits
    assert tls_module.worker_context(**settings, min_version="1.3") is not shared
    os.utime(cert, ns=(0, 0))  # a renewed certificate (new mtime): the worker builds its own
    assert tls_module.worker_context(**settings) is not shared
    tls_module.share_context(**{**settings, "keyfile": pki.client_key})  # the worker will report it
    with pytest.raises(TLSConfigError, match="key values mismatch"):
        tls_module.worker_context(**{**settings, "keyfile": pki.client_key})
