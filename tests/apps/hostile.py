"""A WSGI app for the hostile-client and reverse-proxy tests (tests/system/test_slowhttp.py, test_proxy.py).

- ``GET /``            -> ``hello``
- ``GET /big?size=N``  -> N bytes (default 1 MiB; at most 64 MiB), for slow readers
- ``POST /echo``       -> reads the whole body, answers its length
- any other path       -> a JSON record of the request, also appended as one line to the file named by
                          the environment variable ``HOSTILE_LOG`` (when set): what the application saw,
                          so a test can count requests after a proxy and check who each answer belongs to.

Record fields: ``method``, ``path``, ``query``, ``id`` (the ``X-Req-Id`` header), ``body_len`` (the whole
body is read), ``body`` (its first 64 bytes, latin-1), ``remote_addr``, ``scheme``, ``xff`` (the
X-Forwarded-For header as received), ``pid``.
"""

from __future__ import annotations

import json
import os
from urllib.parse import parse_qs

MAX_BIG = 64 << 20


def _record(environ) -> dict:
    body = environ["wsgi.input"].read()
    return {
        "method": environ["REQUEST_METHOD"],
        "path": environ.get("PATH_INFO", ""),
        "query": environ.get("QUERY_STRING", ""),
        "id": environ.get("HTTP_X_REQ_ID", ""),
        "body_len": len(body),
        "body": body[:64].decode("latin-1"),
        "remote_addr": environ.get("REMOTE_ADDR", ""),
        "scheme": environ["wsgi.url_scheme"],
        "xff": environ.get("HTTP_X_FORWARDED_FOR", ""),
        "pid": os.getpid(),
    }


def _log(line: bytes) -> None:
    path = os.environ.get("HOSTILE_LOG")
    if not path:
        return
    # One write() of one line on an O_APPEND file: lines from several workers never interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/":
        body = b"hello"
    elif path == "/big":
        query = parse_qs(environ.get("QUERY_STRING", ""))
        size = min(int(query.get("size", [str(1 << 20)])[0]), MAX_BIG)
        start_response(
            "200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))]
        )
        block = b"x" * 65536
        return (block[: min(65536, size - i)] for i in range(0, size, 65536))
    elif path == "/echo":
        body = str(len(environ["wsgi.input"].read())).encode()
    else:
        body = json.dumps(_record(environ), sort_keys=True).encode() + b"\n"
        _log(body)
        start_response(
            "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        )
        return [body]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
