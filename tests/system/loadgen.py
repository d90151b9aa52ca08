"""A small closed-loop HTTP load generator for system tests: client threads that record every request.

Modes per thread: ``"new"`` opens a fresh connection per request (``Connection: close``); ``"keepalive"``
reuses one connection until the server closes it. ``"mixed"`` alternates the two across threads.

Retry rule (what urllib3 and browsers do, RFC 9112 §9.3.1): a request sent on a *reused* keep-alive
connection that fails before any response byte arrives (the server closed the idle connection as the
request was sent) is retried once on a fresh connection and counted in ``retried``. A request on a fresh
connection is never retried: any error there is a failure.
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass

_RETRYABLE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


@dataclass(frozen=True)
class Result:
    started: float  # monotonic time the request (or its connection) started
    ended: float
    fresh: bool  # sent on a new connection
    status: int | None = None
    pid: int | None = None  # the worker that answered (X-Pid header)
    server: str | None = None  # the Server header
    error: str | None = None  # exception class name
    retried: bool = False

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None


class Load:
    """``with Load(port, threads=4, mode="mixed") as load: ...`` then inspect ``load.results``."""

    def __init__(
        self, port: int, *, threads: int = 4, mode: str = "mixed", path: str = "/pid"
    ) -> None:
        self.port = port
        self.path = path
        self._modes = [
            mode if mode != "mixed" else ("keepalive", "new")[i % 2] for i in range(threads)
        ]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._results: list[Result] = []
        self._threads = [
            threading.Thread(target=self._run, args=(m,), daemon=True, name=f"load-{i}")
            for i, m in enumerate(self._modes)
        ]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)

    @property
    def results(self) -> list[Result]:
        with self._lock:
            return list(self._results)

    def ok_count(self, since: float = 0.0) -> int:
        return sum(1 for r in self.results if r.ok and r.started >= since)

    def failures(self) -> list[Result]:
        return [r for r in self.results if not r.ok]

    def _record(self, result: Result) -> None:
        with self._lock:
            self._results.append(result)

    def _run(self, mode: str) -> None:
        conn: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            reused = conn.sock is not None
            started = time.monotonic()
            result = self._once(conn, mode, started, fresh=not reused)
            if result.error in {e.__name__ for e in _RETRYABLE} and reused:
                conn.close()
                result = self._once(conn, mode, started, fresh=True, retried=True)
            self._record(result)
            if mode == "new" or result.error is not None:
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def _once(
        self,
        conn: http.client.HTTPConnection,
        mode: str,
        started: float,
        *,
        fresh: bool,
        retried: bool = False,
    ) -> Result:
        headers = {"Connection": "close"} if mode == "new" else {}
        try:
            conn.request("GET", self.path, headers=headers)
            resp = conn.getresponse()
            resp.read()
        except Exception as exc:  # every failure is data for the test
            conn.close()
            return Result(
                started, time.monotonic(), fresh, error=type(exc).__name__, retried=retried
            )
        pid = resp.getheader("X-Pid")
        return Result(
            started,
            time.monotonic(),
            fresh,
            status=resp.status,
            pid=int(pid) if pid else None,
            server=resp.getheader("Server"),
            retried=retried,
        )
