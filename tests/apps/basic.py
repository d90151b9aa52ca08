"""A small WSGI app for system tests.

- ``GET /``              -> ``hello``
- ``GET /pid``           -> the worker's pid (which process served the request)
- ``GET /sleep?seconds=S&mark=PATH`` -> sleeps S seconds (max 30), then ``slept``; creates the file PATH
  first (when given) so a test can wait for "the request is in the app" without a fixed sleep
- ``POST /echo``         -> the request body
- ``GET /remote``        -> ``REMOTE_ADDR REMOTE_PORT wsgi.url_scheme`` (who the server thinks the client is)
"""

from __future__ import annotations

import os
import time
from urllib.parse import parse_qs


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if path == "/pid":
        body = str(os.getpid()).encode()
    elif path == "/sleep":
        mark = query.get("mark", [""])[0]
        if mark:
            with open(mark, "w") as f:
                f.write(str(os.getpid()))
        time.sleep(min(float(query.get("seconds", ["1"])[0]), 30.0))
        body = b"slept"
    elif path == "/echo":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length)
    elif path == "/remote":
        body = f"{environ['REMOTE_ADDR']} {environ['REMOTE_PORT']} {environ['wsgi.url_scheme']}".encode()
    elif path == "/":
        body = b"hello"
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "10")])
        return [b"not found\n"]
    headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
    headers.append(("X-Pid", str(os.getpid())))
    start_response("200 OK", headers)
    return [body]
