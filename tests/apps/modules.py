"""A WSGI app that answers which of the supervisor-only modules its worker process has loaded (JSON list):
a worker is a fork of the supervisor, so anything the supervisor imported before forking is there."""

from __future__ import annotations

import json
import sys

SUPERVISOR_ONLY = (
    "ssl",
    "_ssl",
    "psutil",
    "importlib.metadata",
    "tomllib",
    "difflib",
    "email.message",
)


def app(environ, start_response):
    body = json.dumps(sorted(m for m in SUPERVISOR_ONLY if m in sys.modules)).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]
