"""Property-based tests of the sans-IO HTTP/1.x core (hypothesis). Invariants: ``tests/worker/http/driver.py``.

1. Any byte stream, in any split, yields valid events or exactly one RemoteProtocolError with a 4xx/5xx
   status - never another exception - and the core buffers no more than its limits while it waits.
2. The outcome does not depend on how the stream is split (no parser state leaks across reads).
3. Valid requests serialised and pipelined round-trip: method, target, version, headers, body (whole and
   chunked), trailers.
4. Whatever an application passes as status, reason and headers, a response head is either refused with a
   LocalProtocolError or is well-formed: one field per line, nothing the app wrote can split it.

The ``ci`` profile (default) is derandomized and small enough for the whole file to run in a few seconds;
``HYPOTHESIS_PROFILE=deep`` runs many more, random examples.
"""

from __future__ import annotations

import os
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz import strategies as gen
from tests.worker.http.driver import DATE, SMALL_LIMITS, run, split
from webcluster.worker.http.errors import LocalProtocolError
from webcluster.worker.http.events import Request
from webcluster.worker.http.protocol import H1Connection, Limits
from webcluster.worker.http.state import IDLE

settings.register_profile(
    "ci",
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "deep", max_examples=20_000, deadline=None, suppress_health_check=list(HealthCheck)
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)

pytestmark = pytest.mark.timeout(120 if PROFILE == "ci" else 0)

LIMITS = st.sampled_from([SMALL_LIMITS, Limits()])
STREAMS = st.one_of(st.binary(max_size=600), gen.soup, gen.mutated())


@given(data=STREAMS, cuts=gen.cuts, limits=LIMITS)
def test_any_bytes_yield_valid_events_or_one_4xx_5xx(data: bytes, cuts: list[int], limits: Limits):
    outcome = run(split(data, cuts), limits)
    assert outcome.status is None or 400 <= outcome.status <= 599


@given(data=STREAMS, cuts=gen.cuts, limits=LIMITS)
def test_outcome_does_not_depend_on_the_split(data: bytes, cuts: list[int], limits: Limits):
    whole = run([data], limits)
    pieces = run(split(data, cuts), limits)
    one_by_one = run([data[i : i + 1] for i in range(len(data))], limits)
    for other in (pieces, one_by_one):
        assert other.requests == whole.requests
        assert (other.status, other.closed, other.stopped) == (
            whole.status,
            whole.closed,
            whole.stopped,
        )


@given(data=st.binary(min_size=1, max_size=64), repeat=st.integers(1, 4000), limits=LIMITS)
def test_buffering_is_bounded_for_endless_input(data: bytes, repeat: int, limits: Limits):
    # A peer that never ends its head, chunk-size line or trailers: the core must refuse, not hoard.
    # (driver.run asserts the bound every time the core asks for more data.)
    prefixes = [
        b"",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: ",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nT: ",
    ]
    for prefix in prefixes:
        outcome = run([prefix, *([data] * repeat)], limits, eof=False)
        total = len(prefix) + len(data) * repeat
        if total > limits.limit_request_head + limits.max_trailer + limits.max_body + 64:
            assert outcome.status is not None or outcome.requests, "unbounded input accepted"


@given(reqs=st.lists(gen.requests(), min_size=1, max_size=4), cuts=gen.cuts)
def test_valid_requests_round_trip(reqs: list[gen.Generated], cuts: list[int]):
    raw = b"".join(g.raw for g in reqs)
    outcome = run(split(raw, cuts), Limits())
    assert outcome.status is None, f"valid stream refused with {outcome.status}"
    expected = []
    for g in reqs:  # nothing is read after a request that ends the connection (CONNECT)
        expected.append(g.expected)
        if not g.expected.keep_alive:
            break
    assert outcome.requests == expected
    assert (
        outcome.stopped
        if len(expected) < len(reqs) or not expected[-1].keep_alive
        else outcome.closed
    )


_HEAD_LINE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+: [^\r\n]*")
_header_text = st.text(st.characters(max_codepoint=0x10FF), max_size=12)


@given(
    status=st.integers(0, 1000),
    reason=st.one_of(st.just(""), _header_text),
    headers=st.lists(st.tuples(_header_text | gen.tokens, _header_text), max_size=5),
    head_method=st.booleans(),
)
def test_response_head_is_refused_or_well_formed(status, reason, headers, head_method):
    conn = H1Connection()
    method = b"HEAD" if head_method else b"GET"
    conn.receive_data(method + b" / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert type(conn.next_event()) is Request
    try:
        head = conn.send_response(status, headers, reason, date=DATE)
    except LocalProtocolError:
        assert conn.our_state is IDLE  # refused with no trace: a 500 can still be sent
        conn.send_response(500, [("Content-Length", "0")], date=DATE)
        return
    assert head.endswith(b"\r\n\r\n") and head.count(b"\r\n\r\n") == 1
    lines = head[:-4].split(b"\r\n")
    assert re.fullmatch(rb"HTTP/1\.1 [1-9][0-9][0-9] [^\r\n]*", lines[0])
    for line in lines[1:]:
        assert _HEAD_LINE.fullmatch(line), line
        assert b"\n" not in line and b"\r" not in line
    # Every field the application may set as-is appears as exactly one whole line of its own.
    for name, value in headers:
        if name.lower() not in {"content-length", "connection", "transfer-encoding", "keep-alive"}:
            assert f"{name}: {value}".encode("latin-1") in lines
