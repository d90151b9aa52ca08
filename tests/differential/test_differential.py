"""Differential framing: webcluster against llhttp (httptools) and h11 (``tests/differential``).

Fast tier: the HTTP test cases and a bounded number of generated streams; no stream that webcluster
accepts may be framed differently by another parser unless ``compare.EXCEPTIONS`` explains it. Each
exception is pinned by an example showing webcluster's behaviour, and the comparison itself is checked
on hand-made disagreements. ``python -m tests.differential`` is the long run with the report.
"""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.differential.__main__ import case_streams
from tests.differential.compare import EXCEPTIONS, UNSAFE, Disagreement, classify, compare
from tests.differential.parsers import PARSERS, Message, Outcome, frame
from tests.differential.streams import build

pytestmark = pytest.mark.timeout(120)
EXAMPLES = int(os.environ.get("DIFFERENTIAL_EXAMPLES", "300"))


def unresolved(stream: bytes) -> list[Disagreement]:
    return [d for d, how in classify(stream)[1] if d.kind in UNSAFE and how == "unresolved"]


def test_http_cases_have_no_unresolved_disagreement():
    bad = {s: unresolved(s) for s in case_streams()}
    assert not {s: d for s, d in bad.items() if d}


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(seed=st.integers(0, 2**64 - 1))
def test_generated_streams_have_no_unresolved_disagreement(seed):
    stream = build(random.Random(seed))  # a seed, not st.randoms(): a draw per choice is 30x slower
    assert not unresolved(stream), stream


# One stream per exception: webcluster accepts it (and frames it as the comment says), and the
# classification names that exception. If webcluster's behaviour changes, the pin breaks.
PINS = {
    "extension method": b"FOO / HTTP/1.1\r\nHost: a\r\n\r\n",
    "request-target characters": b"GET /{x} HTTP/1.1\r\nHost: a\r\n\r\n",
    "empty lines before a request-line": b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
    "HTTP/1.0 keep-alive": b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "HTTP/1.x minor version above 1": b"GET / HTTP/1.2\r\nHost: a\r\n\r\n",
    "tab after chunked": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\t\r\n\r\n1\r\nx\r\n0\r\n\r\n",
}  # fmt: skip


@pytest.mark.parametrize("name", [e.name for e in EXCEPTIONS])
def test_each_exception_is_pinned_by_an_example(name):
    outs, found = classify(PINS[name])
    assert outs["webcluster"].end in ("closed", "stopped") and outs["webcluster"].messages
    assert name in {how for _, how in found}, found


def test_what_webcluster_refuses_after_the_fixes():
    """Found by this harness and fixed: framing fields in trailers; HTTP read after CONNECT/Upgrade;
    a CONNECT with content."""
    trailer = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nContent-Length: 9\r\n\r\n"
    assert frame("webcluster", trailer).end == "rejected"
    assert frame("llhttp", trailer).end == "rejected"
    for first in (b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
                  b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"):  # fmt: skip
        out = frame("webcluster", first + b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n")
        assert (out.end, len(out.messages)) == ("stopped", 1)
        assert frame("llhttp", first + b"GET / HTTP/1.1\r\n\r\n").end == "upgrade"
    # A CONNECT with content: llhttp reads the bytes after the head as the tunnel, not a body.
    connect = b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
    assert frame("webcluster", connect).end == "rejected"
    assert frame("llhttp", connect).messages[0].body == b""


def test_the_comparison_sees_each_kind_of_disagreement():
    one = Message("GET", "/", "1.1", (("host", "a"),), b"")
    other = Message("GET", "/", "1.1", (("host", "a"),), b"x")
    ours = Outcome("webcluster", [one])
    assert compare(ours, Outcome("h11", [other]))[0].fields == ("body",)
    assert compare(ours, Outcome("h11", [], "rejected", "bad"))[0].kind == "accepted_rejected"
    assert compare(Outcome("webcluster", [], "rejected"), Outcome("h11", [one]))[0].kind == (
        "rejected_accepted"
    )
    assert compare(ours, Outcome("llhttp", [one])) == []


def test_all_three_parsers_agree_on_a_plain_pipeline():
    stream = (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
              b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
              b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"5;e=1\r\nhello\r\n0\r\nT: 1\r\n\r\n")  # fmt: skip
    outs = [frame(p, stream) for p in PARSERS]
    assert all(o.end == "closed" and len(o.messages) == 3 for o in outs), outs
    assert outs[0].messages == outs[1].messages == outs[2].messages
