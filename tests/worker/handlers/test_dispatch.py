"""App loading (``--app`` specs and their error messages) and request routing (mounts, app, root)."""

from __future__ import annotations

import os
import sys
import textwrap
import uuid

import pytest

from tests.fakes import FakeExchange, make_request
from webcluster.worker.handlers.dispatch import (
    AppImportError,
    build_handler,
    default_root,
    load_app,
)

pytestmark = pytest.mark.timeout(10)

APP_MODULE = """
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"from application"]

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"from app"]

class Holder:
    class inner:
        wsgi = staticmethod(app)

calls = []

def create_app(name="default", *, debug=False):
    calls.append((name, debug))
    return app

def bad_factory():
    raise RuntimeError("factory exploded")

value = 42
"""


@pytest.fixture
def modules(tmp_path, monkeypatch):
    """Write uniquely named modules into a sys.path entry; returns name -> module name."""
    suffix = uuid.uuid4().hex[:8]
    sources = {
        "good": APP_MODULE,
        "noapp": "def helper():\n    pass\napp = helper\n",
        "broken": "x = 1\nraise RuntimeError('boom at import')\n",
        "syntax": "def f(:\n",
        "needsdep": f"import missing_dependency_{suffix}\n",
    }
    names = {}
    for key, source in sources.items():
        name = f"wc_{key}_{suffix}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        names[key] = name
    monkeypatch.syspath_prepend(str(tmp_path))
    yield names
    for name in names.values():
        sys.modules.pop(name, None)


def call(handler, target="/", method="GET", **kw) -> FakeExchange:
    exchange = FakeExchange(make_request(method, target), **kw)
    handler(exchange)
    return exchange


# -- load_app -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attr", "body"),
    [
        (":app", b"from app"),
        ("", b"from application"),  # bare module: "application"
        (":application", b"from application"),
        (":Holder.inner.wsgi", b"from app"),  # dotted attribute
        (":create_app()", b"from app"),  # factory
        (":create_app('prod', debug=True)", b"from app"),  # factory with literal arguments
    ],
)
def test_load_app(modules, attr, body):
    application = load_app(modules["good"] + attr)
    exchange = call(build_handler(app=application))
    assert exchange.data == body


def test_factory_is_called_with_its_arguments(modules):
    load_app(modules["good"] + ":create_app('prod', debug=True)")
    assert sys.modules[modules["good"]].calls == [("prod", True)]


@pytest.mark.parametrize(
    ("spec", "fragments"),
    [
        ("{nomodule}:app", ["no module named", "--chdir", "PYTHONPATH"]),
        ("{good}:missing", ["has no attribute 'missing'", "try --app {good}:application"]),
        ("{good}:Holder.nope", ["has no attribute 'Holder.nope'"]),
        ("{noapp}", ["has no attribute 'application'", "try --app {noapp}:app"]),
        ("{good}:value", ["is a int, not a WSGI callable"]),
        ("{good}:bad_factory()", ["factory raised RuntimeError: factory exploded", ".py:"]),
        ("{good}:create_app(open('x'))", ["literals"]),
        ("{good}:value()", ["not callable"]),
        ("{good}:1 +", ["neither an attribute name nor a factory call"]),
        ("{broken}:app", ["RuntimeError: boom at import", "{broken}.py:2", "fix the module"]),
        ("{syntax}:app", ["SyntaxError", "{syntax}.py:1"]),
        ("{needsdep}:app", ["missing_dependency_", "install the missing dependency"]),
        (":app", ["missing module name"]),
    ],
)
def test_load_app_errors_name_the_fix(modules, spec, fragments):
    names = {**modules, "nomodule": "wc_no_such_module_" + uuid.uuid4().hex[:8]}
    with pytest.raises(AppImportError) as info:
        load_app(spec.format(**names))
    message = str(info.value)
    assert "\n" not in message  # one line for the supervisor's exit reason
    for fragment in fragments:
        assert fragment.format(**names) in message


# -- build_handler / routing ----------------------------------------------------------------------------


def tagged_app(tag):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{tag} {environ['SCRIPT_NAME']}|{environ['PATH_INFO']}".encode()]

    return app


@pytest.fixture
def dirs(tmp_path):
    made = {}
    for name in ("assets", "deep", "root"):
        path = tmp_path / name
        path.mkdir()
        (path / "which.txt").write_text(name)
        made[name] = str(path)
    return made


def test_mounts_then_app(dirs):
    handler = build_handler(
        app=tagged_app("app"),
        static_mounts=(("/s", dirs["assets"]), ("/s/deep/", dirs["deep"])),
    )
    assert call(handler, "/s/which.txt").data == b"assets"
    assert call(handler, "/s/deep/which.txt").data == b"deep"  # longest prefix first
    assert call(handler, "/s/deeper/which.txt").status == 404  # segment match: still /s
    assert call(handler, "/s").header("location") == "/s/"
    assert call(handler, "/sx/which.txt").data == b"app |/sx/which.txt"
    assert call(handler, "/").data == b"app |/"
    assert call(handler, "/s?x=1").header("location") == "/s/?x=1"
    assert call(handler, "http://h/s/which.txt").data == b"assets"  # absolute-form: its path counts
    assert call(handler, "http://h/other").data == b"app |/other"
    assert handler.route("/s/which.txt") is not handler.route(
        "/sx"
    )  # the fast path for app requests


def test_routes_are_remembered_as_they_were_found_and_bounded(dirs):
    from webcluster.worker.handlers import dispatch

    handler = build_handler(app=tagged_app("app"), static_mounts=(("/s", dirs["assets"]),))
    targets = ["/s/which.txt", "/s", "/sx", "/", "/s?x=1", "http://h/s/a", "/s/" + "a" * 300]
    first = [handler.route(t) for t in targets]
    assert [handler.route(t) for t in targets] == first  # remembered: the same answers
    assert first == [handler._find(t) for t in targets]  # and those of a fresh look
    assert "/s/" + "a" * 300 not in handler._routes  # long targets are not kept
    for i in range(dispatch._ROUTES_MAX + 10):
        handler.route(f"/s/{i}")
    assert len(handler._routes) <= dispatch._ROUTES_MAX


def test_root_path_and_flags_reach_the_app(dirs):
    seen = {}

    def app(environ, start_response):
        seen.update(environ)
        start_response("200 OK", [])
        return []

    handler = build_handler(
        app=app, root_path="/mount", multiprocess=True, forwarded_allow_ips=("*",)
    )
    exchange = FakeExchange(
        make_request("GET", "/mount/x", [("host", "h"), ("x-forwarded-for", "198.51.100.9")]),
        remote_addr=("203.0.113.1", 5555),
    )
    handler(exchange)
    assert (seen["SCRIPT_NAME"], seen["PATH_INFO"]) == ("/mount", "/x")
    assert seen["wsgi.multiprocess"] is True
    assert seen["REMOTE_ADDR"] == "198.51.100.9"


def test_default_forwarded_policy_trusts_loopback_only():
    seen = {}

    def app(environ, start_response):
        seen["addr"] = environ["REMOTE_ADDR"]
        start_response("200 OK", [])
        return []

    handler = build_handler(app=app)
    headers = [("host", "h"), ("x-forwarded-for", "198.51.100.9")]
    handler(FakeExchange(make_request("GET", "/", headers), remote_addr=("203.0.113.1", 1)))
    assert seen["addr"] == "203.0.113.1"
    handler(FakeExchange(make_request("GET", "/", headers), remote_addr=("127.0.0.1", 1)))
    assert seen["addr"] == "198.51.100.9"


def test_app_spec_string_is_loaded(modules):
    assert call(build_handler(app=modules["good"] + ":app")).data == b"from app"
    with pytest.raises(AppImportError):
        build_handler(app=modules["good"] + ":missing")


def test_static_root_without_app(dirs):
    handler = build_handler(root=dirs["root"], static_mounts=(("/assets", dirs["assets"]),))
    assert call(handler, "/which.txt").data == b"root"
    assert call(handler, "/assets/which.txt").data == b"assets"


def test_welcome_page_without_app_or_root():
    exchange = call(build_handler())
    assert exchange.status == 200 and b"webcluster is running" in exchange.data
    assert os.path.isfile(os.path.join(default_root(), "index.html"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"root": "/nonexistent/webcluster-root"}, "--root"),
        ({"static_mounts": (("/a", "/nonexistent/webcluster-dir"),)}, "--static"),
        ({"static_mounts": (("a", "."),)}, "must start with '/'"),
        ({"static_mounts": (("/a", "."), ("/a/", "."))}, "mounted twice"),
        ({"app": lambda e, s: [], "forwarded_allow_ips": ("bogus",)}, "--forwarded-allow-ips"),
    ],
)
def test_bad_settings_fail_at_build(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_handler(**kwargs)
