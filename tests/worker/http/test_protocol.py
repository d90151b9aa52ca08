"""Replay every fixture of cases.py whole, byte by byte and in seeded random splits (h11/gunicorn style)."""

from __future__ import annotations

import pytest

from tests.worker.http.cases import INVALID, VALID, Invalid, Valid
from tests.worker.http.driver import DATE, MODES, Driver, same_request, splits
from webcluster.worker.http.errors import RemoteProtocolError
from webcluster.worker.http.state import CLOSED, ERROR, IDLE, MUST_CLOSE

pytestmark = pytest.mark.timeout(60)

INCOMPLETE_NEXT = b"GET /next HTTP/1.1\r\nHost: x\r\n"  # a pipelined head still arriving
GARBAGE = b"\x00GARBAGE\r\n\r\n"


def run_valid(case: Valid, mode: str, trailing: bytes = b"", eof: bool = True) -> Driver:
    driver = Driver(case.limits)
    for piece in splits(case.raw + trailing, mode):
        driver.feed(piece)
    if eof:
        driver.feed(b"")
    return driver


def check_requests(driver: Driver, case: Valid) -> None:
    assert len(driver.requests) == len(case.requests), driver.requests
    for got, want in zip(driver.requests, case.requests, strict=True):
        assert same_request(got, want), f"\n got: {got}\nwant: {want}"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", VALID, ids=lambda c: c.name)
def test_valid(case: Valid, mode: str) -> None:
    driver = run_valid(case, mode)
    assert driver.error is None, driver.error
    check_requests(driver, case)
    if case.requests[-1].keep_alive:
        assert driver.closed and driver.conn.their_state is CLOSED
    else:  # the first non-persistent request ends the connection; later bytes are never parsed
        assert driver.stopped and not driver.conn.keep_alive
        assert driver.conn.their_state is MUST_CLOSE and driver.conn.our_state is MUST_CLOSE


@pytest.mark.parametrize("mode", ["whole", "random:1"])
@pytest.mark.parametrize("case", VALID, ids=lambda c: c.name)
def test_valid_with_trailing_data(case: Valid, mode: str) -> None:
    """A pipelined head still arriving stays buffered, untouched, for the next cycle."""
    driver = run_valid(case, mode, trailing=INCOMPLETE_NEXT, eof=False)
    assert driver.error is None, driver.error
    check_requests(driver, case)
    data, eof = driver.conn.trailing_data
    assert not eof
    if case.requests[-1].keep_alive:
        assert data == INCOMPLETE_NEXT and driver.conn.their_state is IDLE
    else:
        assert data.endswith(INCOMPLETE_NEXT) and driver.stopped


@pytest.mark.parametrize("case", VALID, ids=lambda c: c.name)
def test_valid_then_garbage(case: Valid) -> None:
    """Garbage after valid requests is an error for the next request, never part of the previous one."""
    driver = run_valid(case, "whole", trailing=GARBAGE, eof=False)
    check_requests(driver, case)
    if case.requests[-1].keep_alive:
        assert driver.error is not None and driver.error.status == 400
    else:
        assert driver.error is None and driver.stopped


def run_invalid(case: Invalid, mode: str) -> Driver:
    driver = Driver(case.limits)
    for piece in splits(case.raw, mode):
        driver.feed(piece)
        if driver.error is not None:
            break
    if case.at_eof:
        assert driver.error is None, f"error before EOF: {driver.error!r}"
        driver.feed(b"")
    else:  # the bytes alone prove the error: it must not wait for EOF (bounded memory, no stall)
        assert driver.error is not None, "no error before EOF"
    return driver


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.name)
def test_invalid(case: Invalid, mode: str) -> None:
    driver = run_invalid(case, mode)
    conn, exc = driver.conn, driver.error
    assert isinstance(exc, RemoteProtocolError), "no error"
    assert exc.status == case.status, f"{exc!r} ({exc.status})"
    assert len(driver.requests) == case.parsed
    assert not conn.keep_alive and conn.their_state is ERROR
    # never a second request after an error: every later call raises again, even with new bytes
    for extra in (b"", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"):
        conn.receive_data(extra)
        with pytest.raises(RemoteProtocolError) as again:
            conn.next_event()
        assert again.value.status == case.status
    out = conn.error_response(exc, date=DATE)
    assert out.startswith(b"HTTP/1.1 %d " % case.status)
    assert b"\r\nConnection: close\r\n" in out
    assert conn.our_state is MUST_CLOSE and not conn.keep_alive


def test_case_counts() -> None:
    """The invalid table covers at least 100 cases, including every rejection status."""
    assert len(INVALID) >= 100
    assert {c.status for c in INVALID} >= {400, 413, 414, 417, 431, 501, 505}
    assert any(len(c.requests) > 1 for c in VALID)
