"""The request/response cycle: states, keep-alive transitions, 100-continue, EOF, pipelining."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.worker.http.driver import DATE
from webcluster.worker.http.errors import LocalProtocolError, RemoteProtocolError
from webcluster.worker.http.events import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Request,
)
from webcluster.worker.http.protocol import CONTINUE, H1Connection, Limits
from webcluster.worker.http.state import (
    CLOSED,
    DONE,
    ERROR,
    IDLE,
    MUST_CLOSE,
    SEND_BODY,
    CycleState,
    ResponseHead,
    State,
)

GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
POST_EXPECT = b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"


def respond(conn: H1Connection, body: bytes = b"") -> bytes:
    head = conn.send_response(200, [("Content-Length", str(len(body)))], date=DATE)
    return head + conn.send_data(body) + conn.send_end()


def test_cycle_state_table() -> None:
    state = CycleState()
    state.their(Request)
    state.ours(ResponseHead)
    assert (state.their_state, state.our_state) == (SEND_BODY, SEND_BODY)
    with pytest.raises(LocalProtocolError):
        state.next_cycle()
    with pytest.raises(LocalProtocolError):
        state.ours(ResponseHead)
    state.their(EndOfMessage)
    state.ours(EndOfMessage)
    state.next_cycle()
    assert (state.their_state, state.our_state, state.keep_alive) == (IDLE, IDLE, True)
    state.their(Request)
    state.their(EndOfMessage)
    state.disable_keep_alive()
    assert state.their_state is MUST_CLOSE
    state.ours(ResponseHead)
    state.ours(EndOfMessage)
    assert state.our_state is MUST_CLOSE
    with pytest.raises(LocalProtocolError):
        state.next_cycle()


def test_states_through_a_cycle() -> None:
    conn = H1Connection()
    assert (conn.their_state, conn.our_state, conn.request) == (IDLE, IDLE, None)
    assert conn.next_event() is NEED_DATA
    conn.receive_data(GET)
    request = conn.next_event()
    assert isinstance(request, Request) and conn.request is request
    assert conn.their_state is SEND_BODY
    assert conn.next_event() == EndOfMessage()  # no body: EndOfMessage right away
    assert conn.their_state is DONE and conn.next_event() is PAUSED
    conn.send_response(200, [], date=DATE)
    assert conn.our_state is SEND_BODY
    conn.send_end()
    assert conn.our_state is DONE and conn.keep_alive
    conn.start_next_cycle()
    assert (conn.their_state, conn.our_state, conn.request) == (IDLE, IDLE, None)


@pytest.mark.parametrize(
    "raw",
    [GET, b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"],
    ids=["none", "length-0"],
)
def test_end_empty_body_is_the_end_of_message_next_event_gives(raw: bytes) -> None:
    """The runner's shortcut for a request without a body: the same state as reading its EndOfMessage,
    pipelined bytes kept; and nothing once it was read, for a body, or after an error."""
    conn = H1Connection()
    conn.receive_data(raw + GET)
    conn.next_event()
    conn.end_empty_body()
    assert conn.their_state is DONE and conn.next_event() is PAUSED
    conn.end_empty_body()  # read already: nothing changes
    assert conn.their_state is DONE
    respond(conn)
    conn.start_next_cycle()
    assert conn.next_event().target == "/"

    post = H1Connection()
    post.receive_data(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
    post.next_event()
    post.end_empty_body()  # a body is no empty body
    assert post.their_state is SEND_BODY and post.next_event() == Data(b"abc")

    bad = H1Connection()
    bad.receive_data(GET)
    bad.next_event()
    bad.error_response(RemoteProtocolError("x"), date=DATE)
    bad.end_empty_body()
    assert bad.their_state is ERROR


def test_paused_until_next_cycle_and_pipelined_bytes_kept() -> None:
    conn = H1Connection()
    second = b"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
    conn.receive_data(GET + second)
    assert conn.next_event().target == "/"
    assert isinstance(conn.next_event(), EndOfMessage)
    for _ in range(3):
        assert conn.next_event() is PAUSED
    assert conn.trailing_data == (second, False)
    respond(conn)
    conn.start_next_cycle()
    assert conn.next_event().target == "/2"
    assert conn.next_event() == Data(b"abc")
    assert isinstance(conn.next_event(), EndOfMessage)


def test_start_next_cycle_refused_before_done() -> None:
    conn = H1Connection()
    with pytest.raises(LocalProtocolError):
        conn.start_next_cycle()
    conn.receive_data(GET)
    conn.next_event()
    conn.next_event()
    with pytest.raises(LocalProtocolError):
        conn.start_next_cycle()  # response not sent
    conn.send_response(200, [], date=DATE)
    with pytest.raises(LocalProtocolError):
        conn.start_next_cycle()  # response not finished


def test_early_response_then_drain_body() -> None:
    """The app answered without reading the body: the I/O layer drains it, then the cycle goes on."""
    conn = H1Connection()
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nab")
    conn.next_event()
    respond(conn, b"no")
    assert conn.our_state is DONE and conn.their_state is SEND_BODY
    assert conn.next_event() == Data(b"ab")
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"cd" + GET)
    assert conn.next_event() == Data(b"cd")
    assert isinstance(conn.next_event(), EndOfMessage)
    conn.start_next_cycle()
    assert isinstance(conn.next_event(), Request)


def test_eof_between_requests() -> None:
    conn = H1Connection()
    conn.receive_data(b"")
    assert isinstance(conn.next_event(), ConnectionClosed)
    assert isinstance(conn.next_event(), ConnectionClosed)
    assert conn.their_state is CLOSED and not conn.keep_alive
    conn.receive_data(GET)  # after EOF: ignored
    assert conn.trailing_data == (b"", True)


def test_half_close_after_request() -> None:
    """Request, then the client shuts down its sending side: we still answer, then see the close."""
    conn = H1Connection()
    conn.receive_data(GET)
    conn.receive_data(b"")
    assert isinstance(conn.next_event(), Request)
    assert isinstance(conn.next_event(), EndOfMessage)
    assert conn.next_event() is PAUSED
    respond(conn)
    conn.start_next_cycle()
    assert isinstance(conn.next_event(), ConnectionClosed)


def test_eof_with_only_empty_lines_is_a_clean_close() -> None:
    conn = H1Connection()
    conn.receive_data(b"\r\n\r\n")
    conn.receive_data(b"")
    assert isinstance(conn.next_event(), ConnectionClosed)


def test_continue_sent_once() -> None:
    conn = H1Connection()
    conn.receive_data(POST_EXPECT)
    request = conn.next_event()
    assert request.expect_continue
    assert conn.next_event() is NEED_DATA
    assert conn.send_continue() == CONTINUE == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert conn.send_continue() == b""
    conn.receive_data(b"hello")
    assert conn.next_event() == Data(b"hello")
    assert isinstance(conn.next_event(), EndOfMessage)
    respond(conn)
    assert conn.keep_alive


@pytest.mark.parametrize(
    "raw",
    [
        GET,  # no expectation
        b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",  # 1.0: ignored
    ],
)
def test_no_continue_without_a_11_expectation(raw: bytes) -> None:
    conn = H1Connection()
    conn.receive_data(raw)
    conn.next_event()
    assert conn.send_continue() == b""


def test_no_continue_after_response_head_and_close() -> None:
    """A final answer without 100 Continue leaves the client's next bytes ambiguous: close."""
    conn = H1Connection()
    conn.receive_data(POST_EXPECT)
    conn.next_event()
    head = conn.send_response(417, [("Content-Length", "0")], date=DATE)
    assert b"\r\nConnection: close\r\n" in head and not conn.keep_alive
    assert conn.send_continue() == b""


def test_continue_not_needed_once_body_is_read() -> None:
    conn = H1Connection()
    conn.receive_data(POST_EXPECT + b"hello")  # the client did not wait
    conn.next_event()
    conn.next_event()
    conn.next_event()
    assert conn.send_continue() == b""
    head = conn.send_response(200, [("Content-Length", "0")], date=DATE)
    assert b"Connection: close" not in head and conn.keep_alive


def test_keep_alive_follows_request() -> None:
    conn = H1Connection()
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert conn.next_event().keep_alive is False
    assert not conn.keep_alive
    conn.next_event()
    assert conn.their_state is MUST_CLOSE
    assert b"Connection: close" in respond(conn)


def test_keep_alive_survives_many_cycles() -> None:
    conn = H1Connection()
    conn.receive_data(GET * 50)
    for _ in range(50):
        assert isinstance(conn.next_event(), Request)
        assert isinstance(conn.next_event(), EndOfMessage)
        respond(conn)
        conn.start_next_cycle()
    assert conn.next_event() is NEED_DATA and conn.trailing_data == (b"", False)


def test_error_is_sticky_and_ignores_new_data() -> None:
    conn = H1Connection()
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" + GET)
    with pytest.raises(RemoteProtocolError):
        conn.next_event()
    before = conn.trailing_data
    conn.receive_data(GET)
    assert conn.trailing_data == before
    for _ in range(3):
        with pytest.raises(RemoteProtocolError):
            conn.next_event()


def test_limits_proved_without_waiting_for_crlf() -> None:
    """Slowloris-style heads are refused as soon as they exceed a limit: memory stays bounded."""
    conn = H1Connection(Limits(limit_request_head=1024))
    conn.receive_data(b"GET / HTTP/1.1\r\n")
    sent = 0
    with pytest.raises(RemoteProtocolError) as info:
        while sent < 10_000:
            conn.receive_data(b"X-Slow: 1\r\n")
            sent += 11
            assert conn.next_event() is NEED_DATA
    assert info.value.status == 431 and sent <= 1024


def test_chunked_body_streams_in_pieces() -> None:
    conn = H1Connection()
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\na\r\n01234")
    assert conn.next_event().chunked
    assert conn.next_event() == Data(b"01234")
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"56789\r\n0\r\n\r\n")
    assert conn.next_event() == Data(b"56789")
    assert conn.next_event() == EndOfMessage()


def test_expect_without_body_does_not_force_close() -> None:
    """Expect: 100-continue on a bodiless request: nothing is pending, keep-alive stays."""
    conn = H1Connection()
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n")
    assert conn.next_event().expect_continue
    head = conn.send_response(200, [("Content-Length", "0")], date=DATE)  # EndOfMessage unread
    assert b"Connection: close" not in head and conn.keep_alive


def test_errors_go_through_the_table() -> None:
    state = CycleState()
    state.their(Request)
    state.remote_error()
    assert (state.their_state, state.our_state, state.keep_alive) == (ERROR, IDLE, False)
    state.error_sent()
    assert (state.their_state, state.our_state) == (ERROR, MUST_CLOSE)
    closed = CycleState()
    closed.their(ConnectionClosed)
    closed.error_sent()  # a clean EOF stays a clean EOF
    assert (closed.their_state, closed.our_state, closed.keep_alive) == (CLOSED, MUST_CLOSE, False)
    with pytest.raises(LocalProtocolError):
        closed.their(Request)


STATE_NAMES = {state.name for state in State}
SOURCES = sorted(
    path
    for folder in ("worker", "tests/worker", "tests/fuzz")
    for path in (Path(__file__).resolve().parents[3] / folder).rglob("*.py")
)


def test_no_state_is_spelt_as_a_string() -> None:
    """States are compared as ``State`` members: a string like "DONE" would never equal one."""
    bad = []
    for path in SOURCES:
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
        }
        bad += [
            f"{path.name}:{node.lineno}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant)
            and node.value in STATE_NAMES
            and id(node) not in docstrings
        ]
    assert len(SOURCES) > 40
    assert not bad, f"state names as strings: {bad}"
