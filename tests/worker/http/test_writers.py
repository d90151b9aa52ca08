"""Response serialization and framing (RFC 9112 §6, §7; RFC 9110 §6.4.1, §8.6, §15)."""

from __future__ import annotations

import pytest

from tests.worker.http.driver import DATE
from webcluster.worker.http.errors import LocalProtocolError, RemoteProtocolError
from webcluster.worker.http.events import PAUSED, EndOfMessage, Request
from webcluster.worker.http.protocol import H1Connection
from webcluster.worker.http.state import DONE, ERROR, IDLE, MUST_CLOSE, SEND_BODY

GET11 = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
GET10 = b"GET / HTTP/1.0\r\n\r\n"
GET10_KA = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
HEAD11 = b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n"
HEAD10 = b"HEAD / HTTP/1.0\r\n\r\n"


def ready(raw: bytes = GET11, server: bytes = b"webcluster") -> H1Connection:
    """A connection whose (bodiless) request has been read completely."""
    conn = H1Connection(server=server)
    conn.receive_data(raw)
    assert isinstance(conn.next_event(), Request)
    assert isinstance(conn.next_event(), EndOfMessage)
    return conn


def fields(head: bytes) -> list[tuple[str, str]]:
    """Header fields of a serialized head, names lower-cased; asserts the head is well-formed."""
    assert head.endswith(b"\r\n\r\n")
    lines = head[:-4].decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 ")
    out = []
    for line in lines[1:]:
        name, _, value = line.partition(": ")
        out.append((name.lower(), value))
    return out


def names(head: bytes) -> list[str]:
    return [name for name, _ in fields(head)]


def test_chunked_when_no_length_on_11() -> None:
    conn = ready()
    head = conn.send_response(200, [("Content-Type", "text/plain")], date=DATE)
    assert ("transfer-encoding", "chunked") in fields(head)
    assert "content-length" not in names(head) and "connection" not in names(head)
    assert conn.send_data(b"hello") == b"5\r\nhello\r\n"
    assert conn.send_data(b"x" * 300) == b"12c\r\n" + b"x" * 300 + b"\r\n"
    assert conn.send_data(b"") == b""  # never a 0-size chunk from send_data
    assert conn.send_end() == b"0\r\n\r\n"
    assert conn.keep_alive and conn.our_state is DONE


def test_close_delimited_on_10() -> None:
    conn = ready(GET10_KA)  # even a keep-alive 1.0 client: no length -> the close ends the body
    head = conn.send_response(200, [], date=DATE)
    assert ("connection", "close") in fields(head)
    assert "transfer-encoding" not in names(head)
    assert conn.send_data(b"raw bytes") == b"raw bytes"
    assert conn.send_end() == b""
    assert not conn.keep_alive and conn.our_state is MUST_CLOSE


def test_keep_alive_10_client_with_length() -> None:
    conn = ready(GET10_KA)
    head = conn.send_response(200, [("Content-Length", "2")], date=DATE)
    assert ("connection", "keep-alive") in fields(head)
    assert conn.send_data(b"ok") == b"ok" and conn.send_end() == b""
    assert conn.keep_alive and conn.our_state is DONE
    conn.start_next_cycle()


def test_plain_10_client_gets_close() -> None:
    conn = ready(GET10)
    head = conn.send_response(200, [("Content-Length", "0")], date=DATE)
    assert ("connection", "close") in fields(head) and not conn.keep_alive


def test_fixed_length() -> None:
    conn = ready()
    head = conn.send_response(200, [("content-length", " 5 ")], date=DATE)
    assert ("content-length", "5") in fields(head)
    assert conn.send_data(b"hel") + conn.send_data(b"lo") == b"hello"
    assert conn.send_end() == b"" and conn.keep_alive


def test_fixed_length_overrun_refused() -> None:
    conn = ready()
    conn.send_response(200, [("Content-Length", "3")], date=DATE)
    with pytest.raises(LocalProtocolError):
        conn.send_data(b"toolong")
    assert not conn.keep_alive  # the body can no longer be completed correctly


def test_fixed_length_short_forces_close() -> None:
    conn = ready()
    conn.send_response(200, [("Content-Length", "10")], date=DATE)
    conn.send_data(b"abc")
    assert conn.send_end() == b""
    assert not conn.keep_alive and conn.our_state is MUST_CLOSE
    with pytest.raises(LocalProtocolError):
        conn.start_next_cycle()


@pytest.mark.parametrize("raw", [HEAD11, HEAD10])
def test_head_has_no_body_but_keeps_length(raw: bytes) -> None:
    conn = ready(raw)
    head = conn.send_response(200, [("Content-Length", "1234")], date=DATE)
    assert ("content-length", "1234") in fields(head)
    assert conn.send_data(b"body is dropped") == b""
    assert conn.send_end() == b""
    assert conn.keep_alive == (raw == HEAD11)


def test_head_without_length_is_framed_like_get_but_bodiless() -> None:
    conn = ready(HEAD11)
    head = conn.send_response(200, [], date=DATE)
    assert ("transfer-encoding", "chunked") in fields(head)  # what the GET would have said
    assert conn.send_data(b"dropped") == b"" and conn.send_end() == b""
    assert conn.keep_alive  # nothing was left unframed


def test_head_10_without_length_stays_open() -> None:
    conn = ready(b"HEAD / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    head = conn.send_response(200, [], date=DATE)
    assert "transfer-encoding" not in names(head) and conn.keep_alive


def test_204_drops_length_and_body() -> None:
    conn = ready()
    head = conn.send_response(204, [("Content-Length", "5")], date=DATE)
    assert head.startswith(b"HTTP/1.1 204 No Content\r\n")
    assert "content-length" not in names(head) and "transfer-encoding" not in names(head)
    assert conn.send_data(b"hello") == b"" and conn.send_end() == b""
    assert conn.keep_alive


def test_304_keeps_length_no_body() -> None:
    conn = ready()
    head = conn.send_response(304, [("Content-Length", "5"), ("ETag", '"x"')], date=DATE)
    assert ("content-length", "5") in fields(head) and ("etag", '"x"') in fields(head)
    assert conn.send_data(b"hello") == b"" and conn.send_end() == b""


def test_304_without_length_not_chunked() -> None:
    head = ready().send_response(304, [], date=DATE)
    assert "transfer-encoding" not in names(head)


def test_informational_then_final() -> None:
    conn = ready()
    early = conn.send_response(103, [("Link", "</a.css>; rel=preload")], date=DATE)
    assert early == b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
    assert conn.our_state is IDLE
    head = conn.send_response(200, [("Content-Length", "0")], date=DATE)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and conn.our_state is SEND_BODY


def test_101_switching_protocols() -> None:
    conn = ready(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n")
    head = conn.send_response(101, [("Connection", "Upgrade"), ("Upgrade", "x")], date=DATE)
    assert ("connection", "upgrade") in fields(head) and ("upgrade", "x") in fields(head)
    assert "transfer-encoding" not in names(head)
    assert conn.send_data(b"\x00raw") == b"\x00raw"
    assert not conn.keep_alive


def test_app_connection_close() -> None:
    conn = ready()
    head = conn.send_response(200, [("Connection", "Close"), ("Content-Length", "0")], date=DATE)
    assert fields(head).count(("connection", "close")) == 1
    assert ("connection", "Close") not in fields(head)
    conn.send_end()
    assert not conn.keep_alive and conn.our_state is MUST_CLOSE


def test_hop_by_hop_from_app_dropped() -> None:
    conn = ready()
    app = [("Transfer-Encoding", "gzip"), ("Keep-Alive", "timeout=5"), ("Connection", "x-foo")]
    head = conn.send_response(200, [*app, ("Content-Length", "0")], date=DATE)
    assert names(head).count("transfer-encoding") == 0
    assert "keep-alive" not in names(head) and "connection" not in names(head)
    assert conn.keep_alive


def test_date_and_server_added() -> None:
    head = ready().send_response(200, [("Content-Length", "0")], date=DATE)
    assert ("date", DATE.decode()) in fields(head) and ("server", "webcluster") in fields(head)


def test_date_and_server_from_app_kept_once() -> None:
    app = [("Date", "Mon, 01 Jan 2024 00:00:00 GMT"), ("server", "app/1"), ("Content-Length", "0")]
    head = ready().send_response(200, app, date=DATE)
    assert names(head).count("date") == 1 and names(head).count("server") == 1
    assert ("server", "app/1") in fields(head)


def test_no_server_header_when_disabled() -> None:
    head = ready(server=b"").send_response(200, [("Content-Length", "0")], date=DATE)
    assert "server" not in names(head)


def test_status_line() -> None:
    assert ready(GET10).send_response(404, [], date=DATE).startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert ready().send_response(200, [], "Fine", date=DATE).startswith(b"HTTP/1.1 200 Fine\r\n")
    assert ready().send_response(599, [], date=DATE).startswith(b"HTTP/1.1 599 \r\n")


def test_duplicate_content_length_from_app() -> None:
    head = ready().send_response(200, [("Content-Length", "3"), ("content-length", "3")], date=DATE)
    assert names(head).count("content-length") == 1
    with pytest.raises(LocalProtocolError):
        ready().send_response(200, [("Content-Length", "3"), ("Content-Length", "4")], date=DATE)


BAD_HEADERS = [
    ("X", "a\r\nSet-Cookie: evil=1"),
    ("X", "a\nb"),
    ("X", "a\rb"),
    ("X", "a\x00b"),
    ("X", "a\x7f"),
    ("X", "\x01"),
    ("X", "caf\u20ac"),  # not latin-1
    ("X", 5),
    ("Bad Name", "v"),
    ("Bad:Name", "v"),
    ("", "v"),
    ("X\r\nY", "v"),
    ("Na\u00efve", "v"),
    (b"X", "v"),
    ("Content-Length", "5x"),
    ("Content-Length", "-1"),
]


@pytest.mark.parametrize("header", BAD_HEADERS, ids=repr)
def test_bad_app_header_refused_without_state_change(header: tuple) -> None:
    conn = ready()
    with pytest.raises(LocalProtocolError) as info:
        conn.send_response(200, [("Content-Type", "text/plain"), header], date=DATE)
    assert info.value.status == 500
    assert conn.our_state is IDLE and conn.keep_alive
    head = conn.send_response(500, [("Content-Length", "0")], date=DATE)  # the caller's fallback
    assert head.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")


@pytest.mark.parametrize(
    "status, reason",
    [(99, ""), (1000, ""), ("200", ""), (200.0, ""), (200, "OK\r\nX: y"), (200, "\x00")],
)
def test_bad_status_or_reason_refused(status: object, reason: str) -> None:
    conn = ready()
    with pytest.raises(LocalProtocolError):
        conn.send_response(status, [], reason, date=DATE)  # type: ignore[arg-type]
    assert conn.our_state is IDLE


def test_sending_out_of_order() -> None:
    conn = H1Connection()
    with pytest.raises(LocalProtocolError):
        conn.send_response(200, [], date=DATE)  # no request yet
    conn = ready()
    with pytest.raises(LocalProtocolError):
        conn.send_data(b"x")  # before the head
    with pytest.raises(LocalProtocolError):
        conn.send_end()
    conn.send_response(200, [], date=DATE)
    with pytest.raises(LocalProtocolError):
        conn.send_response(200, [], date=DATE)  # twice
    conn.send_end()
    with pytest.raises(LocalProtocolError):
        conn.send_data(b"x")  # after the end


def test_request_close() -> None:
    conn = ready()
    conn.request_close()
    head = conn.send_response(200, [("Content-Length", "0")], date=DATE)
    assert ("connection", "close") in fields(head)
    conn.send_end()
    assert conn.our_state is MUST_CLOSE and conn.their_state is MUST_CLOSE


def test_error_response_shape() -> None:
    conn = H1Connection()
    conn.receive_data(b"GET / HTTP/1.1\r\n\r\n")
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_event()
    out = conn.error_response(info.value, date=DATE)
    head, _, body = out.partition(b"\r\n\r\n")
    got = fields(head + b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert ("connection", "close") in got and ("date", DATE.decode()) in got
    assert ("content-type", "text/plain; charset=utf-8") in got
    assert ("content-length", str(len(body))) in got and body.startswith(b"400 Bad Request")
    assert conn.their_state is ERROR and conn.our_state is MUST_CLOSE and not conn.keep_alive


def test_error_response_for_head_has_no_body() -> None:
    conn = ready(HEAD11)
    out = conn.error_response(LocalProtocolError("app broke"), date=DATE)
    assert out.startswith(b"HTTP/1.1 500 Internal Server Error\r\n") and out.endswith(b"\r\n\r\n")
    assert b"app broke" not in out  # local details stay local


def test_error_response_after_head_sent_is_empty() -> None:
    conn = ready()
    conn.send_response(200, [], date=DATE)
    assert conn.error_response(RemoteProtocolError("late", 408), date=DATE) == b""
    assert not conn.keep_alive and conn.our_state is MUST_CLOSE


def test_error_response_for_timeout_stops_parsing() -> None:
    """The I/O layer's own errors (408 head timeout) also end parsing for good."""
    conn = H1Connection()
    conn.receive_data(b"GET / HT")
    out = conn.error_response(RemoteProtocolError("head timeout", 408), date=DATE)
    assert out.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    conn.receive_data(b"TP/1.1\r\nHost: a\r\n\r\n")
    with pytest.raises(RemoteProtocolError):
        conn.next_event()


def test_frame_data_for_out_of_band_bodies() -> None:
    """frame_data(): the framing around bytes the I/O layer sends itself (sendfile)."""
    conn = ready()
    with pytest.raises(LocalProtocolError):
        conn.frame_data(5)  # before the head
    conn.send_response(200, [], date=DATE)
    assert conn.frame_data(5) == (b"5\r\n", b"\r\n")
    assert conn.frame_data(0) == (b"", b"")
    assert conn.send_end() == b"0\r\n\r\n"

    conn = ready()
    conn.send_response(200, [("Content-Length", "8")], date=DATE)
    assert conn.frame_data(5) == (b"", b"") and conn.send_data(b"abc") == b"abc"
    with pytest.raises(LocalProtocolError):
        conn.frame_data(1)  # the Content-Length is used up
    assert not conn.keep_alive

    conn = ready(HEAD11)
    conn.send_response(200, [("Content-Length", "8")], date=DATE)
    assert conn.frame_data(8) is None  # nothing may go on the wire

    conn = ready(GET10)
    conn.send_response(200, [], date=DATE)
    assert conn.frame_data(4) == (b"", b"")


def test_error_response_for_local_error_ends_reading() -> None:
    conn = H1Connection()
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n\r\nabc")
    conn.next_event()
    out = conn.error_response(LocalProtocolError("bad header from app"), date=DATE)
    assert out.startswith(b"HTTP/1.1 500 ") and b"\r\nConnection: close\r\n" in out
    assert (conn.their_state, conn.our_state, conn.keep_alive) == (ERROR, MUST_CLOSE, False)
    assert conn.next_event() is PAUSED  # no Data, no new request: the connection is closing


# -- the head cache: a head seen before is the same bytes, but for its Date ------------------------------

_CASES = [
    (GET11, 200, [("Content-Length", "5")], b"hello"),
    (GET11, 200, [("Content-Type", "text/plain")], b"hello"),  # chunked
    (GET10, 200, [], b"hello"),  # close-delimited
    (GET10_KA, 200, [("Content-Length", "5")], b"hello"),
    (HEAD11, 200, [("Content-Length", "5")], b""),
    (HEAD10, 200, [], b""),
    (GET11, 204, [("Content-Length", "0")], b""),
    (GET11, 304, [("ETag", '"x"')], b""),
    (GET11, 200, [("Date", "Sun, 06 Nov 1994 08:49:37 GMT"), ("Content-Length", "2")], b"ok"),
    (GET11, 200, [("Server", "app"), ("Connection", "close"), ("Content-Length", "2")], b"ok"),
]


def _respond(
    raw: bytes, status: int, headers: list, body: bytes, date: bytes
) -> tuple[bytes, bool]:
    conn = ready(raw)
    out = conn.send_response(status, list(headers), date=date)
    out += conn.send_data(body) + conn.send_end()
    return out, conn.keep_alive


@pytest.mark.parametrize("case", _CASES)
def test_a_remembered_head_is_the_head_built_afresh(case, monkeypatch) -> None:
    from webcluster.worker.http import writers

    later = b"Mon, 07 Nov 1994 08:49:37 GMT"
    monkeypatch.setattr(writers, "_HEADS", {})
    _respond(*case, date=DATE)  # remembered
    assert writers._HEADS
    remembered = _respond(*case, date=later)
    monkeypatch.setattr(writers, "_HEADS", {})
    assert remembered == _respond(*case, date=later)  # bytes, framing and keep-alive alike


@pytest.mark.parametrize("status", [200.0])
def test_a_status_equal_to_a_remembered_one_is_still_checked(status) -> None:
    ready().send_response(200, [("Content-Length", "0")], date=DATE)
    conn = ready()
    with pytest.raises(LocalProtocolError):
        conn.send_response(status, [("Content-Length", "0")], date=DATE)
    assert conn.our_state is IDLE


# -- send_complete: the whole response in one call, as send_response + send_data + send_end -------------


@pytest.mark.parametrize("case", _CASES)
def test_send_complete_is_the_three_calls(case) -> None:
    raw, status, headers, body = case
    conn = ready(raw)
    out = conn.send_complete(status, list(headers), "", body, date=DATE)
    assert (out, conn.keep_alive) == _respond(raw, status, headers, body, date=DATE)
    assert conn.our_state is (DONE if conn.keep_alive else MUST_CLOSE)


def test_send_complete_short_body_forces_close() -> None:
    conn = ready()
    out = conn.send_complete(200, [("Content-Length", "5")], "", b"abc", date=DATE)
    assert out.endswith(b"\r\n\r\nabc")
    assert (conn.our_state, conn.keep_alive) == (MUST_CLOSE, False)


def test_send_complete_overrun_commits_the_head_and_closes() -> None:
    # as send_response + send_data: the head is serialised, the body refused, the connection must close
    conn = ready()
    with pytest.raises(LocalProtocolError):
        conn.send_complete(200, [("Content-Length", "2")], "", b"abc", date=DATE)
    assert (conn.our_state, conn.keep_alive) == (SEND_BODY, False)


def test_send_complete_refuses_informational_without_state_change() -> None:
    conn = ready()
    with pytest.raises(LocalProtocolError):
        conn.send_complete(103, [("Link", "</a>")], "", b"", date=DATE)
    assert conn.our_state is IDLE
    assert conn.send_complete(200, [("Content-Length", "0")], "", b"", date=DATE)
