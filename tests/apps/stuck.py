"""A WSGI app with a hanging route and a slow one, for the stuck-pool and load-shedding tests
(tests/system/test_stuck_pool.py, test_load_shedding.py) and the gunicorn/uWSGI comparison.

- ``GET /``               -> ``hello``
- ``GET /hang?s=S``       -> calls ``wait_for_the_database(S)``, which sleeps S seconds (default 300):
                             the name shows up in the stack the server logs for a stuck request
- ``GET /work?ms=M``      -> sleeps M milliseconds (default 50), then ``done``

Every call of the app appends one line (``<path> <pid>``) to the file named by the environment
variable ``STUCK_APP_LOG`` when it is set, so a test counts what the app really ran.
"""

from __future__ import annotations

import os
import time
from urllib.parse import parse_qs


def wait_for_the_database(seconds: float) -> None:
    time.sleep(seconds)


def _log(path: str) -> None:
    name = os.environ.get("STUCK_APP_LOG")
    if name:
        # One write() of one line on an O_APPEND file: lines from several workers never interleave.
        fd = os.open(name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{path} {os.getpid()}\n".encode())
        finally:
            os.close(fd)


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    query = parse_qs(environ.get("QUERY_STRING", ""))
    _log(path)
    if path == "/hang":
        wait_for_the_database(float(query.get("s", ["300"])[0]))
        body = b"finally"
    elif path == "/work":
        time.sleep(float(query.get("ms", ["50"])[0]) / 1000)
        body = b"done"
    else:
        body = b"hello"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
