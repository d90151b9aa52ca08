"""The hello-world WSGI application every server runs in the benchmarks (``hello:app``).

The same function is loaded by webcluster (``--app hello:app --chdir loadtests``), gunicorn and waitress, so
the hello-world scenarios compare servers, not applications: a fixed 13-byte body with a Content-Length.

For the static-file scenarios, servers without a file handler of their own (gunicorn, waitress) serve
``/static/<name>`` through this app with ``wsgi.file_wrapper`` (gunicorn sends it with ``sendfile``;
waitress reads it in blocks). The directory is ``$HELLO_STATIC_ROOT``; only plain file names directly in it
are served. webcluster serves the same directory with its own static handler (``--static /static=DIR``) and
nginx with ``alias``.

``/flask/json`` is a small Flask application (imported on first use, so the other scenarios do not carry
Flask): a JSON document of about 1.5 KiB, as a typical API endpoint returns.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

BODY = b"Hello, World!"
_HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]
_NOT_FOUND = b"not found\n"
_STATIC_PREFIX = "/static/"
_FLASK_PREFIX = "/flask/"
_flask_app: Any = None


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """``GET /`` (any path): ``Hello, World!``; ``/static/NAME``: a file of ``$HELLO_STATIC_ROOT``."""
    path = environ.get("PATH_INFO", "/")
    if path.startswith(_STATIC_PREFIX):
        return _static(environ, start_response, path[len(_STATIC_PREFIX) :])
    if path.startswith(_FLASK_PREFIX):
        return (_flask_app or _make_flask_app())(environ, start_response)
    start_response("200 OK", list(_HEADERS))
    return [BODY]


def _static(
    environ: dict[str, Any], start_response: Callable[..., Any], name: str
) -> Iterable[bytes]:
    root = os.environ.get("HELLO_STATIC_ROOT")
    if not root or not name or "/" in name or name.startswith("."):
        start_response("404 Not Found", [("Content-Length", str(len(_NOT_FOUND)))])
        return [_NOT_FOUND]
    try:
        f = open(os.path.join(root, name), "rb")  # noqa: SIM115 - closed by the file wrapper
    except OSError:
        start_response("404 Not Found", [("Content-Length", str(len(_NOT_FOUND)))])
        return [_NOT_FOUND]
    size = os.fstat(f.fileno()).st_size
    start_response(
        "200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))]
    )
    wrapper = environ.get("wsgi.file_wrapper")
    if wrapper is not None:
        return wrapper(f, 65536)
    return _blocks(f)


def _blocks(f: Any) -> Iterable[bytes]:
    with f:
        while block := f.read(65536):
            yield block


def _make_flask_app() -> Any:
    global _flask_app
    from flask import Flask, jsonify

    flask_app = Flask("hello")
    items = [
        {"id": i, "name": f"item number {i}", "price": round(9.99 + i * 1.25, 2), "in_stock": i % 3 != 0,
         "tags": ["alpha", "beta"] if i % 2 else ["gamma"]}
        for i in range(18)
    ]  # fmt: skip

    @flask_app.get("/flask/json")
    def json_items() -> Any:
        return jsonify(items=items, count=len(items), page=1)

    _flask_app = flask_app
    return flask_app
