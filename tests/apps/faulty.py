"""A WSGI app with routes that break the worker process, for the resilience system tests.

- ``GET /``                 -> ``hello`` (with ``X-Pid``)
- ``GET /pid``              -> the worker's pid
- ``GET /crash``            -> ``os._exit(1)``: the whole worker dies mid-request (a segfaulting C
                               extension, an OOM kill, an app calling exit)
- ``GET /exit?code=N``      -> ``os._exit(N)``, e.g. 3 (the boot-error code) from a ready worker
- ``GET /sleep?seconds=S``  -> sleeps S seconds (at most 30), then ``slept``
- ``GET /hold-gil?mark=P``  -> creates the file P, then runs a regular expression with catastrophic
                               backtracking: C code that holds the GIL for minutes, so the worker's loop
                               thread (and its heartbeat) stops while the process looks alive
"""

from __future__ import annotations

import os
import re
import time
from urllib.parse import parse_qs

_BACKTRACK = re.compile(r"(a+)+$")


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if path == "/crash":
        os._exit(1)
    elif path == "/exit":
        os._exit(int(query.get("code", ["3"])[0]))
    elif path == "/hold-gil":
        mark = query.get("mark", [""])[0]
        if mark:
            with open(mark, "w") as f:
                f.write(str(os.getpid()))
        _BACKTRACK.match("a" * 64 + "b")  # 2**64 steps, never returns: the worker must be killed
        body = b"unreachable"
    elif path == "/sleep":
        time.sleep(min(float(query.get("seconds", ["1"])[0]), 30.0))
        body = b"slept"
    elif path in ("/", "/pid"):
        body = b"hello" if path == "/" else str(os.getpid()).encode()
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "10")])
        return [b"not found\n"]
    headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
    start_response("200 OK", headers + [("X-Pid", str(os.getpid()))])
    return [body]
