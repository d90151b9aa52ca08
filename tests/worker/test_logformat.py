"""--access-log-format: gunicorn's atoms compiled once, escaped, and the combined format reproduced."""

from __future__ import annotations

import base64
import os
import time

import pytest

from webcluster.worker.accesslog import format_line
from webcluster.worker.logformat import Entry, compile_format

GUNICORN_DEFAULT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'
WHEN = 1_700_000_000.25


def entry(**kw) -> Entry:
    base = {
        "remote": "192.0.2.7",
        "when": WHEN,
        "request_line": "GET /a/b?x=1&y=2 HTTP/1.1",
        "method": "GET",
        "target": "/a/b?x=1&y=2",
        "version": "1.1",
        "status": 200,
        "size": 1234,
        "duration": 1.0234567,
        "request_headers": [("user-agent", "curl/8"), ("referer", "http://r/"), ("x-req", "42")],
        "response_headers": [("Content-Type", "text/plain"), ("X-Pid", "99")],
    }
    return Entry(**{**base, **kw})


def render(fmt: str, **kw) -> str:
    return compile_format(fmt)(entry(**kw))


def test_gunicorn_default_format_is_the_combined_line_byte_for_byte() -> None:
    e = entry()
    assert compile_format(GUNICORN_DEFAULT)(e) == format_line(
        host=e.remote, when=WHEN, request=e.request_line, status=200, size=1234,
        referer="http://r/", user_agent="curl/8",
    )  # fmt: skip
    bare = entry(request_headers=[], size=0)
    assert compile_format(GUNICORN_DEFAULT)(bare) == format_line(
        host=e.remote, when=WHEN, request=e.request_line, status=200, size=0,
        referer=None, user_agent=None,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("atom", "expected"),
    [
        ("h", "192.0.2.7"),
        ("l", "-"),
        ("u", "-"),
        ("r", "GET /a/b?x=1&y=2 HTTP/1.1"),
        ("m", "GET"),
        ("U", "/a/b"),
        ("q", "x=1&y=2"),
        ("H", "HTTP/1.1"),
        ("s", "200"),
        ("B", "1234"),
        ("b", "1234"),
        ("f", "http://r/"),
        ("a", "curl/8"),
        ("T", "1"),
        ("M", "1023"),
        ("D", "1023456"),
        ("L", "1.023456"),
        ("p", f"<{os.getpid()}>"),
        ("{X-Req}i", "42"),
        ("{x-pid}o", "99"),
        ("{missing}i", "-"),
        ("{missing}o", "-"),
    ],
)
def test_atoms(atom: str, expected: str) -> None:
    assert render(f"%({atom})s") == expected


def test_time_atom_has_brackets_like_gunicorn() -> None:
    assert render("%(t)s") == time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(WHEN))


def test_environment_atom(monkeypatch) -> None:
    monkeypatch.setenv("DEPLOY_COLOR", "blue")
    assert render("%({DEPLOY_COLOR}e)s %({NOT_SET_HERE}e)s") == "blue -"


def test_basic_auth_user() -> None:
    token = base64.b64encode(b"ada:secret").decode()
    assert render("%(u)s", request_headers=[("authorization", f"Basic {token}")]) == "ada"
    assert render("%(u)s", request_headers=[("authorization", "Bearer xyz")]) == "-"
    assert render("%(u)s", request_headers=[("authorization", "Basic !!!")]) == "-"


def test_refused_head_has_dashes() -> None:
    line = render(
        "%(m)s %(U)s %(q)s %(H)s %(b)s %(a)s",
        request_line="-", method=None, target=None, version=None, size=0, request_headers=(),
    )  # fmt: skip
    assert line == "- - - - - -"


def test_no_query_is_a_dash() -> None:
    assert render("%(q)s", target="/plain") == "-"


def test_client_text_is_escaped_in_every_atom() -> None:
    evil = 'x"\n\\\xe9'
    fields = [("user-agent", evil), ("x-a", evil)]
    out = render("%(a)s|%({x-a}i)s|%(U)s", request_headers=fields, target='/p"q')
    assert out == 'x\\"\\x0a\\\\\\xe9|x\\"\\x0a\\\\\\xe9|/p\\"q'
    assert "\n" not in out


def test_literal_percent_and_text() -> None:
    assert render("100%% %(s)s done") == "100% 200 done"


@pytest.mark.parametrize(
    ("fmt", "message"),
    [
        ("%(nope)s", "unknown atom %(nope)s"),
        ("%(h)d", "lone %"),
        ("50% %(h)s", "lone %"),
        ("%(h)s\n", "line break"),
        ("%({x}z)s", "unknown atom"),
    ],
)
def test_bad_formats_are_refused_at_compile_time(fmt: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        compile_format(fmt)
