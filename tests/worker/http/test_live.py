"""The invalid-input table of the HTTP core replayed over real loopback sockets.

Each case goes through the worker's real loop, pool and runner: the client must get the exact status with
``Connection: close``, the socket must then be closed, and the same server must keep answering others.
"""

from __future__ import annotations

import socket

import pytest

from tests.support import is_closed, read_response, serve
from tests.worker.http.cases import INVALID, Invalid
from webcluster.worker.handlers.base import Exchange
from webcluster.worker.http.protocol import Limits

pytestmark = pytest.mark.timeout(60)

# The live server runs with default limits; cases built for smaller limits stay in the byte harness.
LIVE = [c for c in INVALID if c.limits == Limits()]


def echo(ex: Exchange) -> None:
    data = ex.body.read()
    ex.start_response(200, "OK", [("Content-Length", str(len(data)))])
    ex.write(data)


@pytest.fixture(scope="module")
def server():
    with serve(echo, threads=4, header_timeout=5, body_timeout=5) as srv:
        yield srv


def test_enough_cases_run_live():
    assert len(LIVE) >= 80


@pytest.mark.parametrize("case", LIVE, ids=[c.name for c in LIVE])
def test_invalid_request_gets_exact_status_and_closed_connection(server, case: Invalid):
    c = server.connect()
    try:
        try:
            c.sendall(case.raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before a long payload is fully sent
        if case.at_eof:
            c.shutdown(socket.SHUT_WR)
        for _ in range(case.parsed):
            assert read_response(c)[0] == 200
        status, headers, _ = read_response(c)
        assert status == case.status
        assert headers.get("connection") == "close"
        assert is_closed(c)
    finally:
        c.close()
    ok = server.connect()
    ok.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_response(ok)[0] == 200
    ok.close()
