"""WSGI handler (PEP 3333) over a FakeExchange: environ, start_response rules, errors, close(), sendfile;
plus the proxy-header policy that feeds REMOTE_ADDR and wsgi.url_scheme."""

from __future__ import annotations

import io
import logging
import sys
from wsgiref.validate import validator

import pytest

from tests.fakes import BodyReader, FakeExchange, make_request
from webcluster.worker.handlers.base import ClientDisconnected
from webcluster.worker.handlers.forwarded import ForwardedPolicy, parse_forwarded
from webcluster.worker.handlers.wsgi import FileWrapper, WSGIHandler
from webcluster.worker.http.errors import RemoteProtocolError
from webcluster.worker.http.protocol import H1Connection

pytestmark = [
    pytest.mark.timeout(10),
    # wsgiref.validate reports an unclosed iterable from __del__: make that a failure, not a warning
    pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning"),
]


def run(app, request=None, *, validate=True, handler_kw=None, **exchange_kw) -> FakeExchange:
    exchange = FakeExchange(request, **exchange_kw)
    WSGIHandler(validator(app) if validate else app, **(handler_kw or {}))(exchange)
    return exchange


def capture_environ(request=None, **kw) -> dict:
    seen = {}

    def app(environ, start_response):
        seen.update(environ)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    exchange = run(app, request, **kw)
    assert exchange.status == 200 and exchange.finished
    return seen


# -- environ -------------------------------------------------------------------------------------------


def test_environ_is_complete():
    request = make_request(
        "POST",
        "/caf%C3%A9/x%20y?a=1&b=%20",
        [
            ("host", "example.com:8000"),
            ("content-type", "application/json"),
            ("accept", "text/html"),
            ("accept", "application/json"),
            ("cookie", "a=1"),
            ("cookie", "b=2"),
            ("x-custom", "v"),
        ],
        body=b'{"k": 1}',
    )
    errors = io.StringIO()
    env = capture_environ(
        request,
        body=b'{"k": 1}',
        remote_addr=("10.1.2.3", 40404),
        url_scheme="https",
        handler_kw={"multiprocess": True, "errors_stream": errors},
    )
    assert env["REQUEST_METHOD"] == "POST"
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/caf\u00c3\u00a9/x y"  # UTF-8 bytes decoded as latin-1 (PEP 3333)
    assert env["QUERY_STRING"] == "a=1&b=%20"  # not decoded
    assert env["RAW_URI"] == "/caf%C3%A9/x%20y?a=1&b=%20"
    assert env["CONTENT_TYPE"] == "application/json"
    assert env["CONTENT_LENGTH"] == "8"
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("example.com", "8000")
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("10.1.2.3", "40404")
    assert env["HTTP_HOST"] == "example.com:8000"
    assert env["HTTP_ACCEPT"] == "text/html,application/json"
    assert env["HTTP_COOKIE"] == "a=1; b=2"
    assert env["HTTP_X_CUSTOM"] == "v"
    assert env["wsgi.version"] == (1, 0)
    assert env["wsgi.url_scheme"] == "https"
    assert env["wsgi.input_terminated"] is True
    assert env["wsgi.errors"].errors is errors  # under the validator's ErrorWrapper
    assert env["wsgi.multithread"] is True
    assert env["wsgi.multiprocess"] is True
    assert env["wsgi.run_once"] is False
    assert env["wsgi.file_wrapper"] is FileWrapper


def test_environ_defaults_without_host_or_body():
    request = make_request("GET", "/", headers=[], http_version="1.0")
    env = capture_environ(request, server_addr=("127.0.0.1", 8081))
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("127.0.0.1", "8081")
    assert env["SERVER_PROTOCOL"] == "HTTP/1.0"
    assert "CONTENT_LENGTH" not in env and "CONTENT_TYPE" not in env
    assert env["QUERY_STRING"] == ""
    assert env["wsgi.errors"].errors is sys.stderr
    assert env["wsgi.multiprocess"] is False


@pytest.mark.parametrize(
    ("host", "scheme", "expected"),
    [
        ("[::1]:9000", "http", ("::1", "9000")),
        ("[::1]", "http", ("::1", "80")),
        ("example.com", "https", ("example.com", "443")),
        ("example.com", "http", ("example.com", "80")),
    ],
)
def test_server_name_and_port_from_host(host, scheme, expected):
    env = capture_environ(make_request(headers=[("host", host)]), url_scheme=scheme)
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == expected


def test_absolute_form_target_uses_its_path_and_authority():
    request = make_request("GET", "http://proxy.example:81/p/q?x=1", [("host", "ignored.example")])
    env = capture_environ(request)
    assert env["PATH_INFO"] == "/p/q"
    assert env["QUERY_STRING"] == "x=1"
    assert env["HTTP_HOST"] == "proxy.example:81"  # RFC 9112 §3.2.2
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("proxy.example", "81")


@pytest.mark.parametrize(
    ("path", "script_name", "path_info"),
    [
        ("/app/x", "/app", "/x"),
        ("/app", "/app", ""),
        ("/app/", "/app", "/"),
        ("/application", "/app", "/application"),  # not a segment boundary: not stripped
        ("/other", "/app", "/other"),  # a proxy that already stripped the prefix
    ],
)
def test_script_name_from_root_path(path, script_name, path_info):
    env = capture_environ(make_request("GET", path), handler_kw={"root_path": "/app/"})
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == (script_name, path_info)


def test_header_names_with_underscores_are_dropped():
    request = make_request(
        headers=[("host", "h"), ("x_forwarded_for", "6.6.6.6"), ("x-real-ip", "1.1.1.1")]
    )
    env = capture_environ(request)
    assert "HTTP_X_FORWARDED_FOR" not in env
    assert env["HTTP_X_REAL_IP"] == "1.1.1.1"
    request = make_request(
        headers=[("host", "h"), ("x-auth-user", "alice"), ("x_auth_user", "admin")]
    )
    assert capture_environ(request)["HTTP_X_AUTH_USER"] == "alice"


# -- apps under wsgiref.validate ------------------------------------------------------------------------


def hello_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def write_app(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"via ")
    write(b"write, ")
    return [b"then iterable"]


def generator_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"one "
    yield b""
    yield b"two"


def file_wrapper_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return environ["wsgi.file_wrapper"](io.BytesIO(b"x" * 150_000), 65536)


def exc_info_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    try:
        raise KeyError("missing")
    except KeyError:
        start_response("503 Service Unavailable", [("Content-Type", "text/plain")], sys.exc_info())
    return [b"sorry"]


@pytest.mark.parametrize(
    ("app", "status", "body"),
    [
        (hello_app, 200, b"hello"),
        (write_app, 200, b"via write, then iterable"),
        (generator_app, 200, b"one two"),
        (file_wrapper_app, 200, b"x" * 150_000),
        (exc_info_app, 503, b"sorry"),
    ],
)
def test_validated_apps(app, status, body):
    exchange = run(app)
    assert (exchange.status, exchange.data) == (status, body)
    assert exchange.finished and not exchange.aborted


def echo_app(mode):
    def app(environ, start_response):
        stream = environ["wsgi.input"]
        if mode == "read":
            data = stream.read(int(environ.get("CONTENT_LENGTH") or 0))
        elif mode == "chunks":
            data = b"".join(iter(lambda: stream.read(3), b""))
        elif mode == "readline":
            data = b"".join(iter(stream.readline, b""))
        elif mode == "readlines":
            data = b"".join(stream.readlines())
        else:
            data = b"".join(stream)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [data]

    return app


@pytest.mark.parametrize("mode", ["read", "chunks", "readline", "readlines", "iterate"])
def test_reading_the_body(mode):
    body = b"line one\nline two\nlast"
    exchange = run(echo_app(mode), make_request("POST", "/", body=body), body=body)
    assert exchange.data == body


# -- head timing, lengths, framing ---------------------------------------------------------------------


def test_empty_chunks_do_not_send_the_head():
    observed = []

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b""
        observed.append(exchange.headers_sent)
        try:
            raise ValueError("late")
        except ValueError:  # still allowed to change the status: nothing was sent
            start_response("500 Oops", [("Content-Type", "text/plain")], sys.exc_info())
        yield b"changed"

    exchange = FakeExchange()
    WSGIHandler(validator(app))(exchange)
    assert observed == [False]
    assert (exchange.status, exchange.reason, exchange.data) == (500, "Oops", b"changed")


def test_empty_body_sends_head_at_finish():
    def app(environ, start_response):
        start_response("204 No Content", [])
        return []

    exchange = run(app)
    assert exchange.status == 204 and exchange.finished and exchange.data == b""
    assert exchange.header("content-length") is None


def test_app_content_length_passes_through():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return iter([b"he", b"llo"])

    exchange = run(app, validate=False)
    assert exchange.header("Content-Length") == "5" and exchange.data == b"hello"


def test_body_longer_than_app_content_length_aborts():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
        return iter([b"abc", b"def"])

    exchange = run(app, validate=False)
    assert exchange.aborted and exchange.data == b"abc"


def test_single_item_list_gets_a_content_length():
    exchange = run(hello_app, validate=False)
    assert exchange.header("content-length") == "5"


def test_single_item_list_after_write_follows_what_was_written():
    # write() sent the head: the one-item list is body after it, not a whole response (finish_whole)
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"he")
        return [b"llo"]

    exchange = run(app, validate=False)  # the validator would wrap the list in an iterator
    assert exchange.data == b"hello" and exchange.finished
    assert (
        exchange.header("content-length") is None
    )  # the head went out before the length was known


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified"])
def test_single_item_list_of_a_bodiless_status_gets_no_content_length(status):
    def app(environ, start_response):
        start_response(status, [])
        return [b""]

    exchange = run(app, validate=False)
    assert exchange.finished and exchange.data == b""
    assert exchange.header("content-length") is None  # RFC 9110 §8.6


def test_app_transfer_encoding_is_dropped():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Transfer-Encoding", "chunked")])
        return iter([b"x"])

    exchange = run(app, validate=False)
    assert exchange.data == b"x"
    # framing is the core's (RFC 9112 §6.1): it drops the app's field and frames the body itself once
    core = H1Connection()
    core.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    core.next_event()
    head = core.send_response(exchange.status, exchange.headers, date=b"x")
    assert head.lower().count(b"transfer-encoding") == 1


# -- errors ---------------------------------------------------------------------------------------------


class Tracked:
    """An app iterable that records close() and can fail at a given item."""

    def __init__(self, items, fail_at=None):
        self.items, self.fail_at, self.closed = items, fail_at, False

    def __iter__(self):
        for index, item in enumerate(self.items):
            if index == self.fail_at:
                raise RuntimeError("secret detail")
            yield item

    def close(self):
        self.closed = True


def tracked_app(result, status="200 OK"):
    def app(environ, start_response):
        start_response(status, [("Content-Type", "text/plain")])
        return result

    return app


def test_exception_in_app_call_is_a_bare_500(caplog):
    def app(environ, start_response):
        raise RuntimeError("secret detail")

    with caplog.at_level(logging.ERROR, logger="webcluster.error"):
        exchange = run(app)
    assert exchange.status == 500 and exchange.finished
    assert exchange.data == b"Internal Server Error\n"
    assert exchange.header("connection") == "close"
    records = [r for r in caplog.records if r.name == "webcluster.error"]
    assert records and records[0].exc_info is not None
    assert "secret detail" in caplog.text


def test_exception_before_first_chunk_is_500_and_closes():
    result = Tracked([b"a"], fail_at=0)
    exchange = run(tracked_app(result))
    assert exchange.status == 500 and b"secret" not in exchange.data
    assert result.closed


def test_exception_after_head_aborts_and_closes():
    result = Tracked([b"a", b"b"], fail_at=1)
    exchange = run(tracked_app(result))
    assert exchange.status == 200 and exchange.data == b"a"
    assert exchange.aborted and not exchange.finished
    assert result.closed


def test_close_called_on_success_and_on_client_disconnect(caplog):
    result = Tracked([b"abc", b"def"])
    assert run(tracked_app(result)).finished and result.closed
    result = Tracked([b"abc", b"def"])
    with caplog.at_level(logging.ERROR, logger="webcluster.error"):
        exchange = run(tracked_app(result), fail_after=4)
    assert exchange.aborted and result.closed
    assert not [
        r for r in caplog.records if r.levelno >= logging.ERROR
    ]  # a gone client is not an error


def test_only_a_response_with_no_close_to_run_may_be_held():
    """``Exchange.finish(hold=True)`` promises that nothing of the app runs after it: a list or a
    tuple, which has no close(); never an iterable whose close() still runs."""

    def app_of(result):
        def app(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return result

        return app

    def held(result) -> bool:  # (wsgiref's validator would wrap the result in an iterator)
        exchange = run(app_of(result), validate=False)
        assert exchange.status == 200 and exchange.finished
        return exchange.held

    assert held([b"one"])  # the one-chunk fast path
    assert held([b"a", b"b"]) and held((b"a", b"b"))
    assert not held(Tracked([b"abc"])) and not held(iter([b"abc"]))


def test_generator_close_runs_its_finally_on_error():
    cleaned = []

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            yield b"first"
            raise RuntimeError("boom")
        finally:
            cleaned.append(True)

    exchange = run(app)
    assert exchange.aborted and cleaned == [True]


def test_close_errors_are_logged_not_sent(caplog):
    class Bad(Tracked):
        def close(self):
            raise RuntimeError("close failed")

    exchange = run(tracked_app(Bad([b"ok"])), validate=False)
    assert exchange.finished and exchange.data == b"ok"
    assert "close failed" in caplog.text


@pytest.mark.parametrize(
    ("status", "headers"),
    [
        ("200 OK", [("X-Bad", "a\r\nSet-Cookie: stolen=1")]),
        ("200 OK", [("X-Bad\r\nSet-Cookie", "x")]),
        ("200 OK\r\nSet-Cookie: stolen=1", []),
        ("200 OK", [("X-Nul", "a\0b")]),
    ],
)
def test_crlf_in_status_or_headers_is_a_500_never_split(status, headers):
    result = Tracked([b"body"])
    exchange = run(_raw_app(status, headers, result), validate=False)
    assert exchange.status == 500
    assert all("stolen" not in name + value for name, value in exchange.headers)
    assert result.closed


def _raw_app(status, headers, result):
    def app(environ, start_response):
        start_response(status, headers)
        return result

    return app


@pytest.mark.parametrize(
    ("status", "headers"),
    [
        ("OK", []),
        ("2000 OK", []),
        (b"200 OK", []),
        ("200 OK", [("X-Bytes", b"v")]),
        ("200 OK", [("X-Triple", "v", "w")]),
        ("200 OK", "X-Not-A-List: v"),
        ("200 OK", [("Content-Length", "ten")]),
    ],
)
def test_invalid_status_or_headers_are_a_500(status, headers):
    exchange = run(_raw_app(status, headers, [b"x"]), validate=False)
    assert exchange.status == 500


def test_body_before_start_response_is_a_500():
    exchange = run(lambda environ, start_response: [b"x"], validate=False)
    assert exchange.status == 500


def test_start_response_twice_without_exc_info_is_a_500():
    def app(environ, start_response):
        start_response("200 OK", [])
        start_response("201 Created", [])
        return []

    assert run(app, validate=False).status == 500


def test_exc_info_after_head_sent_reraises_and_aborts():
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"partial")
        try:
            raise ValueError("late failure")
        except ValueError:
            start_response("500 Error", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"never"]

    exchange = run(app)
    assert exchange.status == 200 and exchange.data == b"partial" and exchange.aborted


def test_body_error_is_reraised_for_the_connection_when_nothing_was_sent():
    result = Tracked([b"x"])

    def app(environ, start_response):
        environ["wsgi.input"].read(100)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return result

    too_large = RemoteProtocolError("body too large", 413)
    exchange = FakeExchange(make_request("POST", body=b"abc"), body=BodyReader(b"abc", too_large))
    with pytest.raises(RemoteProtocolError) as info:
        WSGIHandler(app)(exchange)
    assert info.value.status == 413 and exchange.status is None


def test_client_gone_while_reading_the_body_is_not_an_app_error(caplog):
    result = Tracked([b"x"])

    def app(environ, start_response):
        environ["wsgi.input"].read(100)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return result

    reader = BodyReader(b"abc", ClientDisconnected("reset while reading"))
    exchange = FakeExchange(make_request("POST", body=b"abc"), body=reader)
    with caplog.at_level(logging.DEBUG, logger="webcluster.error"):
        WSGIHandler(app)(exchange)
    assert exchange.aborted and exchange.status is None
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_body_error_after_head_aborts():
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"streaming")
        write(environ["wsgi.input"].read(100))
        return []

    broken = RemoteProtocolError("bad chunk")
    exchange = FakeExchange(make_request("POST", body=b"abc"), body=BodyReader(b"abc", broken))
    WSGIHandler(app)(exchange)
    assert exchange.aborted and exchange.data == b"streaming"


# -- wsgi.file_wrapper ----------------------------------------------------------------------------------


def file_app(path, *, offset=0, length=None):
    def app(environ, start_response):
        handle = open(path, "rb")  # closed through FileWrapper.close()
        handle.seek(offset)
        headers = [("Content-Type", "application/octet-stream")]
        if length is not None:
            headers.append(("Content-Length", str(length)))
        start_response("200 OK", headers)
        app.handle = handle
        return environ["wsgi.file_wrapper"](handle)

    return app


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(range(256)) * 400)
    return path


def test_file_wrapper_uses_sendfile_from_the_current_position(data_file):
    app = file_app(data_file, offset=3)
    exchange = run(app, validate=False)
    size = data_file.stat().st_size
    assert exchange.sendfile_calls == [(3, size - 3)]
    assert exchange.data == data_file.read_bytes()[3:]
    assert exchange.header("content-length") == str(size - 3)
    assert app.handle.closed and exchange.finished


def test_file_wrapper_sendfile_honours_content_length(data_file):
    exchange = run(file_app(data_file, offset=10, length=4), validate=False)
    assert exchange.sendfile_calls == [(10, 4)]
    assert exchange.data == data_file.read_bytes()[10:14]


def test_file_wrapper_without_sendfile_iterates(data_file):
    app = file_app(data_file)
    exchange = run(app, validate=False, can_sendfile=False)
    assert exchange.sendfile_calls == [] and exchange.data == data_file.read_bytes()
    assert app.handle.closed


def test_file_wrapper_head_sends_no_body(data_file):
    exchange = run(file_app(data_file), make_request("HEAD"), validate=False)
    assert exchange.sendfile_calls == [] and exchange.data == b""
    assert exchange.header("content-length") == str(data_file.stat().st_size)


def test_file_wrapper_sendfile_client_gone_closes_the_file(data_file):
    class Failing(FakeExchange):
        def sendfile(self, file, offset, count):
            self._commit()
            raise ConnectionResetError("reset")

    app = file_app(data_file)
    exchange = Failing()
    WSGIHandler(app)(exchange)
    assert exchange.aborted and app.handle.closed


# -- proxy headers --------------------------------------------------------------------------------------


def resolve(allow, peer, headers, scheme="http"):
    return ForwardedPolicy(allow).resolve(peer, headers, scheme)


@pytest.mark.parametrize(
    ("allow", "peer", "headers", "expected"),
    [
        # untrusted peer: every proxy header is ignored
        (("127.0.0.1",), "203.0.113.9", [("x-forwarded-for", "1.2.3.4")], ("203.0.113.9", "http")),
        (
            ("127.0.0.1",),
            "203.0.113.9",
            [("forwarded", "for=1.2.3.4;proto=https"), ("x-forwarded-proto", "https")],
            ("203.0.113.9", "http"),
        ),
        # trusted peer
        (("127.0.0.1",), "127.0.0.1", [("x-forwarded-for", "1.2.3.4")], ("1.2.3.4", "http")),
        (
            ("127.0.0.1",),
            "127.0.0.1",
            [("x-forwarded-for", "1.2.3.4"), ("x-forwarded-proto", "https")],
            ("1.2.3.4", "https"),
        ),
        # rightmost untrusted hop: the spoofed leftmost value is not believed
        (
            ("127.0.0.1", "10.0.0.0/8"),
            "127.0.0.1",
            [("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.1.1.1")],
            ("198.51.100.7", "http"),
        ),
        (
            ("127.0.0.1", "10.0.0.0/8"),
            "10.2.3.4",
            [("x-forwarded-for", "10.0.0.5"), ("x-forwarded-for", "10.0.0.6")],
            ("10.0.0.5", "http"),
        ),
        (("*",), "203.0.113.9", [("x-forwarded-for", "1.2.3.4, 5.6.7.8")], ("1.2.3.4", "http")),
        # RFC 7239
        (
            ("::1",),
            "::1",
            [("forwarded", 'for="[2001:db8::1]:4711";proto=https, for=192.0.2.60')],
            ("192.0.2.60", "http"),
        ),
        (
            ("::1", "192.0.2.0/24"),
            "::1",
            [("forwarded", 'for="[2001:db8::1]:4711";proto=https, for=192.0.2.60;proto=http')],
            ("2001:db8::1", "https"),
        ),
        (("127.0.0.1",), "127.0.0.1", [("forwarded", "proto=https")], ("127.0.0.1", "https")),
        (("127.0.0.1",), "127.0.0.1", [("forwarded", "for=unknown")], ("127.0.0.1", "http")),
        (("127.0.0.1",), "127.0.0.1", [("forwarded", "for=_hidden")], ("127.0.0.1", "http")),
        # Forwarded wins over X-Forwarded-For
        (
            ("127.0.0.1",),
            "127.0.0.1",
            [("x-forwarded-for", "1.1.1.1"), ("forwarded", "for=2.2.2.2")],
            ("2.2.2.2", "http"),
        ),
        # bogus scheme ignored; v4-mapped peer; unix-socket peer is trusted
        (("127.0.0.1",), "127.0.0.1", [("x-forwarded-proto", "gopher")], ("127.0.0.1", "http")),
        (("127.0.0.1",), "::ffff:127.0.0.1", [("x-forwarded-for", "1.2.3.4")], ("1.2.3.4", "http")),
        (("127.0.0.1",), "", [("x-forwarded-proto", "https")], ("", "https")),
    ],
)
def test_forwarded_policy(allow, peer, headers, expected):
    assert resolve(allow, peer, headers) == expected


def test_forwarded_policy_rejects_bad_entries():
    with pytest.raises(ValueError, match="not-an-ip"):
        ForwardedPolicy(("127.0.0.1", "not-an-ip"))


def test_parse_forwarded_quoted_values():
    assert parse_forwarded('for="[::1]:80";by=x;proto="https", for=1.2.3.4') == [
        {"for": "[::1]:80", "by": "x", "proto": "https"},
        {"for": "1.2.3.4"},
    ]


def test_wsgi_environ_uses_the_forwarded_policy():
    headers = [("host", "h"), ("x-forwarded-for", "198.51.100.1"), ("x-forwarded-proto", "https")]
    policy = ForwardedPolicy(("127.0.0.1",))
    env = capture_environ(make_request(headers=headers), handler_kw={"forwarded": policy})
    assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"], env["SERVER_PORT"]) == (
        "198.51.100.1",
        "https",
        "443",
    )
    env = capture_environ(
        make_request(headers=headers),
        remote_addr=("203.0.113.5", 1234),
        handler_kw={"forwarded": policy},
    )
    assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"]) == ("203.0.113.5", "http")
