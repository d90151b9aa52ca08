"""WSGI and static handlers behind the real loop, over real loopback sockets (sendfile included)."""

from __future__ import annotations

import json
import os
import socket
import threading
import wsgiref.validate

import pytest

from tests.conftest import poll
from tests.support import is_closed, read_response, serve
from webcluster.worker.handlers.dispatch import build_handler

pytestmark = pytest.mark.timeout(60)

BIG = os.urandom(1024 * 1024 + 123)


def wsgi_app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/environ":
        keys = [
            "REQUEST_METHOD",
            "SCRIPT_NAME",
            "PATH_INFO",
            "QUERY_STRING",
            "SERVER_PROTOCOL",
            "REMOTE_ADDR",
            "wsgi.url_scheme",
            "HTTP_X_CUSTOM",
            "CONTENT_LENGTH",
        ]
        body = json.dumps(
            {k: environ.get(k) for k in keys} | {"multithread": environ["wsgi.multithread"]}
        ).encode()
        start_response(
            "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        )
        return [body]
    if path == "/echo":
        data = b""
        while block := environ["wsgi.input"].read(8192):  # the validator insists on a size
            data += block
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [data[i : i + 1000] for i in range(0, len(data), 1000)]
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"via write;")
        return [b"via iterable"]
    if path == "/file":
        f = open(environ["test.big"], "rb")  # noqa: SIM115 - closed by the file wrapper
        start_response(
            "200 OK",
            [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(BIG)))],
        )
        return environ["wsgi.file_wrapper"](f)
    if path == "/crlf":
        start_response("200 OK", [("X-Evil", "a\r\nSet-Cookie: pwned=1")])
        return [b"x"]
    if path == "/boom":
        raise RuntimeError("app bug")
    if path == "/late-boom":
        start_response("200 OK", [("Content-Type", "text/plain")])

        def gen():
            yield b"partial"
            raise RuntimeError("late bug")

        return gen()
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "0")])
    return [b""]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("static")
    (root / "index.html").write_bytes(b"<h1>index</h1>")
    (root / "big.bin").write_bytes(BIG)
    (root / "sub").mkdir()
    (root / "sub" / "a.txt").write_bytes(b"0123456789")
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.txt").write_bytes(b"secret")
    os.symlink(outside / "secret.txt", root / "escape.txt")
    return root


@pytest.fixture(scope="module")
def app_server(files):
    def app(environ, start_response):
        environ["test.big"] = str(files / "big.bin")
        return wsgi_app(environ, start_response)

    handler = build_handler(
        app=wsgiref.validate.validator(app),
        root_path="/api",
        static_mounts=(("/assets", str(files)),),
    )
    with serve(handler) as srv:
        yield srv


@pytest.fixture(scope="module")
def static_server(files):
    with serve(build_handler(root=str(files))) as srv:
        yield srv


def request(srv, raw: bytes):
    c = srv.connect()
    c.sendall(raw)
    resp = read_response(c, head=raw.startswith(b"HEAD "))
    return c, resp


def get(srv, target: str, *extra: str, method: str = "GET"):
    head = (
        f"{method} {target} HTTP/1.1\r\nHost: t\r\n" + "".join(h + "\r\n" for h in extra) + "\r\n"
    )
    return request(srv, head.encode())[1]


def test_wsgi_environ_over_a_real_socket(app_server):
    status, _, body = get(app_server, "/api/environ?x=1", "X-Custom: v", "X_Custom: spoof")
    env = json.loads(body)
    assert status == 200
    assert env["SCRIPT_NAME"] == "/api" and env["PATH_INFO"] == "/environ"
    assert env["QUERY_STRING"] == "x=1" and env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["HTTP_X_CUSTOM"] == "v" and env["wsgi.url_scheme"] == "http"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1" and env["multithread"] is True


def test_wsgi_chunked_upload_is_decoded_and_response_streams_chunked(app_server):
    payload = os.urandom(50_000)
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(payload[i : i + 7000]), payload[i : i + 7000])
        for i in range(0, len(payload), 7000)
    )
    raw = (
        b"POST /api/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunks
        + b"0\r\n\r\n"
    )
    _, (status, headers, body) = request(app_server, raw)
    assert status == 200 and body == payload
    assert headers["transfer-encoding"] == "chunked"


def test_wsgi_write_callable_and_file_wrapper_sendfile(app_server):
    assert get(app_server, "/api/write")[2] == b"via write;via iterable"
    status, headers, body = get(app_server, "/api/file")
    assert status == 200 and body == BIG


def test_wsgi_errors_500_before_headers_close_after_and_no_response_splitting(app_server):
    c, (status, _, _) = request(app_server, b"GET /api/boom HTTP/1.1\r\nHost: t\r\n\r\n")
    assert status == 500
    c, (status, headers, _) = request(app_server, b"GET /api/crlf HTTP/1.1\r\nHost: t\r\n\r\n")
    assert status == 500 and "set-cookie" not in headers and "x-evil" not in headers
    c = app_server.connect()
    c.sendall(b"GET /api/late-boom HTTP/1.1\r\nHost: t\r\n\r\n")
    data = b""
    c.settimeout(5)
    while True:  # the head and "partial" arrive, then the connection is closed without a last chunk
        chunk = c.recv(65536)
        if not chunk:
            break
        data += chunk
    assert (
        data.startswith(b"HTTP/1.1 200") and b"partial" in data and not data.endswith(b"0\r\n\r\n")
    )
    assert get(app_server, "/api/environ")[0] == 200  # and the worker keeps serving


def test_static_mount_beside_an_app(app_server):
    status, _, body = get(app_server, "/assets/sub/a.txt")
    assert (status, body) == (200, b"0123456789")


def test_static_index_mime_etag_304_and_head(static_server):
    status, headers, body = get(static_server, "/")
    assert (
        status == 200
        and body == b"<h1>index</h1>"
        and headers["content-type"].startswith("text/html")
    )
    etag = headers["etag"]
    assert get(static_server, "/", f"If-None-Match: {etag}")[0] == 304
    assert get(static_server, "/", f"If-Modified-Since: {headers['last-modified']}")[0] == 304
    status, headers, body = get(static_server, "/big.bin", method="HEAD")
    assert status == 200 and int(headers["content-length"]) == len(BIG) and body == b""


def test_static_sendfile_and_ranges(static_server):
    assert get(static_server, "/big.bin")[2] == BIG
    status, headers, body = get(static_server, "/big.bin", "Range: bytes=100-199")
    assert status == 206 and body == BIG[100:200]
    assert headers["content-range"] == f"bytes 100-199/{len(BIG)}"
    assert get(static_server, "/big.bin", "Range: bytes=-10")[2] == BIG[-10:]
    status, headers, _ = get(static_server, "/big.bin", f"Range: bytes={len(BIG) + 5}-")
    assert status == 416 and headers["content-range"] == f"bytes */{len(BIG)}"
    assert get(static_server, "/big.bin", "Range: bytes=0-1,5-6")[0] == 200


def test_a_kept_small_file_is_served_fresh_after_it_changes(tmp_path, monkeypatch):
    from webcluster.worker.handlers import static

    monkeypatch.setattr(static, "SETTLED", 0.0)
    (tmp_path / "v.txt").write_bytes(b"version 1")
    with serve(build_handler(root=str(tmp_path))) as srv:
        c = srv.connect()
        for _ in range(3):  # one connection: the first read keeps it, the next two come from memory
            c.sendall(b"GET /v.txt HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_response(c)[::2] == (200, b"version 1")
        (tmp_path / "v.txt").write_bytes(b"version 2")
        os.utime(tmp_path / "v.txt", ns=(1_000_000_000, 1_000_000_000))
        c.sendall(b"GET /v.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=8-\r\n\r\n")
        assert read_response(c)[::2] == (206, b"2")
        c.sendall(b"GET /v.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(c)[::2] == (200, b"version 2")
        c.close()


@pytest.mark.parametrize(
    "target",
    [
        "/../outside/secret.txt",
        "/sub/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/sub/%2E%2E/%2e%2e/x",
        "/sub%2f..%2f..%2fsecret.txt",
        "/sub/a.txt%00.html",
        "/sub\\a.txt",
        "/escape.txt",
    ],
)
def test_static_traversal_attempts_are_refused(static_server, target):
    c = static_server.connect()
    c.sendall(f"GET {target} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    status, _, body = read_response(c)
    assert status in (400, 404) and b"secret" not in body


def test_http10_client_gets_close_delimited_stream_and_close(app_server):
    c = app_server.connect()
    c.sendall(b"GET /api/write HTTP/1.0\r\n\r\n")
    status, headers, body = read_response(c)
    assert body == b"via write;via iterable" and is_closed(c)


def test_ipv6_loopback_if_available(files):
    """Over [::1] the static files are served and the app sees the IPv6 peer in REMOTE_ADDR."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        s = socket.socket(socket.AF_INET6)
        s.bind(("::1", 0))
        s.close()
    except OSError:
        pytest.skip("::1 not configured")

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["REMOTE_ADDR"].encode()]

    handler = build_handler(app=app, static_mounts=(("/files", str(files)),))
    with serve(handler, host="::1") as srv, srv.connect() as c:
        assert c.family == socket.AF_INET6
        c.sendall(b"GET /files/sub/a.txt HTTP/1.1\r\nHost: [::1]\r\n\r\n")
        assert read_response(c)[::2] == (200, b"0123456789")
        c.sendall(b"GET /addr HTTP/1.1\r\nHost: [::1]\r\n\r\n")
        assert read_response(c)[::2] == (200, b"::1")


def test_static_files_are_served_by_the_loop_while_every_thread_is_busy(files):
    """Static responses never wait for a pool thread: with the only thread stuck in the app, files
    (a small one, a 1 MiB one, a 304, a 404, a pipelined pair) are still answered, and an app request
    pipelined behind a static one still goes to the pool, in order."""
    release = threading.Event()

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/block":
            release.wait(20)
        start_response("200 OK", [("Content-Length", "3")])
        return [b"app"]

    def status_body(response):
        return response[0], response[2]

    small = b"GET /assets/sub/a.txt HTTP/1.1\r\nHost: t\r\n\r\n"
    handler = build_handler(app=app, static_mounts=(("/assets", str(files)),))
    with serve(handler, threads=1, inline_budget=0) as srv:  # the app on a pool thread
        blocked = srv.connect()
        blocked.sendall(b"GET /block HTTP/1.1\r\nHost: t\r\n\r\n")
        poll("the only thread to be busy", lambda: srv.pool.busy == 1)
        assert status_body(get(srv, "/assets/sub/a.txt")) == (200, b"0123456789")
        assert status_body(get(srv, "/assets/big.bin")) == (200, BIG)
        etag = get(srv, "/assets/sub/a.txt")[1]["etag"]
        assert get(srv, "/assets/sub/a.txt", f"If-None-Match: {etag}")[0] == 304
        assert get(srv, "/assets/missing.txt")[0] == 404
        c, first = request(srv, small * 2)
        assert status_body(first) == (200, b"0123456789")
        assert status_body(read_response(c)) == (200, b"0123456789")
        c.sendall(small + b"GET /app HTTP/1.1\r\nHost: t\r\n\r\n")
        assert status_body(read_response(c)) == (200, b"0123456789")
        assert srv.pool.busy == 1 and srv.pool.started == 1  # nothing else took a thread
        release.set()
        assert status_body(read_response(c)) == (200, b"app")
        assert status_body(read_response(blocked)) == (200, b"app")
