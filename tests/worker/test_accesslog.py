"""worker.accesslog: refused heads summarised for the log, write errors counted, never raised;
worker.logthrottle: one line per interval with a count."""

from __future__ import annotations

import logging
import os

import pytest

from webcluster.worker.accesslog import (
    MAX_LOGGED_REQUEST_LINE,
    AccessLog,
    format_line,
    refused_head,
)
from webcluster.worker.logthrottle import LogThrottle


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            b"POST /up HTTP/1.1\r\nHost: x\r\nUser-Agent: curl/8\r\nContent-Length: 99999999999\r\n\r\n",
            ("POST /up HTTP/1.1", None, "curl/8"),
        ),
        (
            b"GET /a HTTP/1.1\r\nreferer: http://r/\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Length: 3\r\nuser-agent:  x y \r\n\r\nabc",
            ("GET /a HTTP/1.1", "http://r/", "x y"),
        ),
        (b"GET /partial HTTP/1.1\r\nUser-Agent: cut", ("GET /partial HTTP/1.1", None, None)),
        (b"GET /no-crlf-yet HTTP/1.1", ("-", None, None)),
        (b"", ("-", None, None)),
        (b"\r\n\r\n", ("-", None, None)),
    ],
    ids=["413", "te-cl", "timeout-partial", "line-incomplete", "empty", "blank"],
)
def test_refused_head_shows_what_arrived(raw: bytes, expected: tuple) -> None:
    assert refused_head(raw) == expected


def test_refused_head_cuts_a_huge_request_line_and_the_line_is_escaped() -> None:
    line, _, _ = refused_head(b"GET /" + b"a" * 100_000 + b' HTTP/1.1\r\n"\xe9\r\n\r\n')
    assert len(line) == MAX_LOGGED_REQUEST_LINE + 3 and line.endswith("...")
    out = format_line(
        host="h", when=0, request='GET /"\x1b', status=413, size=9, referer=None, user_agent=None
    )
    assert '"GET /\\"\\x1b" 413 9' in out


def test_write_error_is_counted_warned_once_and_close_is_clean(caplog) -> None:
    errors: list[int] = []
    log = AccessLog("/dev/full", on_error=lambda: errors.append(1))
    with caplog.at_level(logging.WARNING, logger="webcluster.error"):
        for _ in range(5):
            log.write("a line")  # never raises: the request must not fail
    assert log.errors == 5 and len(errors) == 5
    warnings = [r for r in caplog.records if "access log /dev/full" in r.getMessage()]
    assert len(warnings) == 1 and "No space left" in warnings[0].getMessage()
    log.reopen()  # USR1: a new chance, and a new warning if it fails again
    with caplog.at_level(logging.WARNING, logger="webcluster.error"):
        log.write("again")
    assert len([r for r in caplog.records if "access log" in r.getMessage()]) == 2
    log.close()  # nothing buffered: closing cannot fail the worker's exit


def test_lines_are_appended_whole(tmp_path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path))
    log.write("one")
    os.rename(path, tmp_path / "rotated.log")
    log.write("two")  # still the old file until reopen, like every logrotate-aware server
    log.reopen()
    log.write("three")
    log.close()
    assert (tmp_path / "rotated.log").read_text() == "one\ntwo\n"
    assert path.read_text() == "three\n"


def test_log_throttle_reports_first_then_one_per_interval_with_the_count() -> None:
    throttle = LogThrottle(10.0)
    assert throttle.hit(100.0) == 1  # the first one at once
    assert [throttle.hit(100.0 + 0.1 * i) for i in range(1, 50)] == [None] * 49
    assert throttle.hit(110.0) == 50  # the 49 quiet ones plus this one
    assert throttle.hit(115.0) is None
    assert throttle.hit(130.0) == 2
