"""Micro benchmark of the sans-IO core (not a test): ``python -m tests.worker.http.bench_parse``.

Prints microseconds per operation for a typical keep-alive GET (3 header fields): parse only, a full
cycle (parse + serialize a small response + start_next_cycle), a pipelined burst, and a chunked POST.
"""

from __future__ import annotations

import sys
import time

from webcluster.worker.http.events import NEED_DATA, PAUSED
from webcluster.worker.http.protocol import H1Connection

DATE = b"Sun, 06 Nov 1994 08:49:37 GMT"
GET = (
    b"GET /index.html?q=1 HTTP/1.1\r\nHost: localhost:8080\r\n"
    b"User-Agent: bench/1.0\r\nAccept: */*\r\n\r\n"
)
BROWSER_GET = (
    b"GET /static/app.js HTTP/1.1\r\nHost: www.example.com\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0\r\n"
    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    b"Accept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\n"
    b"Connection: keep-alive\r\nCookie: session=0123456789abcdef; theme=dark\r\n"
    b'Upgrade-Insecure-Requests: 1\r\nSec-Fetch-Dest: document\r\nIf-None-Match: "abc"\r\n\r\n'
)
POST = (
    b"POST /api HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Type: application/json\r\n\r\n"
    b'e\r\n{"hello": "wor\r\n4\r\nld"}\r\n0\r\n\r\n'
)
RESPONSE_HEADERS = [("Content-Type", "text/plain"), ("Content-Length", "13")]


def parse_only(raw: bytes) -> None:
    conn = H1Connection()
    conn.receive_data(raw)
    conn.next_event()
    conn.next_event()


def full_cycle(conn: H1Connection, raw: bytes) -> None:
    conn.receive_data(raw)
    while True:
        event = conn.next_event()
        if event is PAUSED or event is NEED_DATA:
            break
    conn.send_response(200, RESPONSE_HEADERS, date=DATE)
    conn.send_data(b"Hello, world!")
    conn.send_end()
    conn.start_next_cycle()


def bench(name: str, fn, n: int) -> float:
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, time.perf_counter() - t0)
    us = best / n * 1e6
    print(f"{name:<48} {us:7.2f} µs")
    return us


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    bench("parse GET (3 fields), new connection", lambda: parse_only(GET), n)
    conn = H1Connection()
    bench("GET cycle: parse + serialize + next cycle", lambda: full_cycle(conn, GET), n)
    bench("browser GET (10 fields) cycle", lambda: full_cycle(conn, BROWSER_GET), n)
    bench("chunked POST (2 chunks) cycle", lambda: full_cycle(conn, POST), n)
    burst = GET * 10

    def pipelined() -> None:
        c = H1Connection()
        c.receive_data(burst)
        for _ in range(10):
            c.next_event()
            c.next_event()
            c.send_response(200, RESPONSE_HEADERS, date=DATE)
            c.send_data(b"Hello, world!")
            c.send_end()
            c.start_next_cycle()

    per10 = bench("10 pipelined GETs in one buffer (per burst)", pipelined, n // 10)
    print(f"{'  -> per request':<48} {per10 / 10:7.2f} µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
