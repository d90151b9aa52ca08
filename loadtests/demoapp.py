"""The demo WSGI application the load tests run against (``--app loadtests.demoapp:app``).

A small site with the shapes of traffic a real one has, each answer verifiable by the client:

- ``GET /`` and ``GET /page/<n>``: HTML pages that link the assets under ``/static/`` (served by the
  static handler: ``--static /static=loadtests/static``). Every page carries ``X-Content-Sha256``, the
  SHA-256 of its body, and names its own number, so a truncated or cross-wired answer is detectable.
- ``GET /api/items/<id>``: a JSON record of a few KiB, derived only from ``id``.
- ``GET /api/search?q=..&delay_ms=..``: a JSON result after a short sleep (a database round trip).
- ``POST /api/echo``: JSON in, JSON out: the parsed document back plus ``sha256``/``length`` of the raw
  body and whether it arrived chunked (Content-Length or ``Transfer-Encoding: chunked``, RFC 9112 §6).
- ``POST /upload`` (or PUT): reads the body in pieces, answers ``{"length", "sha256"}``.
- ``GET /download?size=N&seed=S``: ``N`` bytes of deterministic content (``download_bytes``), streamed in
  64 KiB pieces, for slow readers; the client recomputes the digest with ``download_sha256``.

Pure stdlib, no module-level mutable state: the app is called from many pool threads at once.
"""

from __future__ import annotations

import hashlib
import html
import json
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs

StartResponse = Callable[..., Any]

PIECE = 64 * 1024  # read and write granularity for uploads and downloads
MAX_DOWNLOAD = 64 * 1024 * 1024
MAX_DELAY_MS = 2000
PAGES = 50
ITEM_PAYLOAD = 3000  # bytes of filler text in an item: "a few KiB" of JSON

ASSETS = ("style.css", "app.js", "logo.svg", "hero.png")


def download_block(seed: int) -> bytes:
    """The 64 KiB block a download of ``seed`` repeats: SHA-256 in counter mode, cheap and deterministic."""
    out = bytearray()
    counter = 0
    while len(out) < PIECE:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:PIECE])


def download_bytes(size: int, seed: int) -> Iterator[bytes]:
    """The body of ``GET /download?size=size&seed=seed``, in pieces of at most ``PIECE`` bytes."""
    block = download_block(seed)
    remaining = size
    while remaining > 0:
        piece = block[: min(PIECE, remaining)]
        remaining -= len(piece)
        yield piece


def download_sha256(size: int, seed: int) -> str:
    """What a client should compute over a download of ``size`` bytes with ``seed``."""
    digest = hashlib.sha256()
    for piece in download_bytes(size, seed):
        digest.update(piece)
    return digest.hexdigest()


def item(item_id: int) -> dict[str, Any]:
    """The JSON record ``GET /api/items/<item_id>`` returns (a pure function of the id)."""
    words = hashlib.sha256(str(item_id).encode()).hexdigest()
    filler = (words * (ITEM_PAYLOAD // len(words) + 1))[:ITEM_PAYLOAD]
    return {
        "id": item_id,
        "name": f"item-{item_id}",
        "price_cents": (item_id * 7919) % 100_000,
        "tags": [words[i : i + 6] for i in range(0, 30, 6)],
        "description": filler,
    }


def page_html(number: int) -> bytes:
    """The HTML of page ``number`` (0 is the home page)."""
    title = "webcluster demo" if number == 0 else f"Page {number}"
    links = "".join(f'<li><a href="/page/{n}">Page {n}</a></li>' for n in range(1, PAGES + 1))
    paragraph = html.escape(hashlib.sha256(title.encode()).hexdigest()) * 20
    body = (
        "<!doctype html>\n<html><head><meta charset=utf-8>"
        f"<title>{title}</title>"
        '<link rel=stylesheet href="/static/style.css"><script src="/static/app.js" defer></script>'
        "</head><body>"
        f'<img src="/static/logo.svg" alt=logo><h1>{title}</h1>'
        f'<img src="/static/hero.png" alt=hero><p>{paragraph}</p><ul>{links}</ul>'
        "</body></html>\n"
    )
    return body.encode()


class DemoApp:
    """The WSGI callable: routes on method and path; every answer has a Content-Length or is a stream."""

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        path = environ.get("PATH_INFO", "") or "/"
        try:
            return self._route(method, path, environ, start_response)
        except _HTTPError as exc:
            return _reply(start_response, exc.status, {"error": exc.message})

    def _route(
        self, method: str, path: str, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        parts = [p for p in path.split("/") if p]
        if not parts or (parts[0] == "page" and len(parts) == 2):
            _allow(method, "GET", "HEAD")
            return _page(parts, start_response)
        if parts[:2] == ["api", "items"] and len(parts) == 3:
            _allow(method, "GET", "HEAD")
            return _reply(start_response, "200 OK", item(_int(parts[2], 0, 10**9)))
        if parts == ["api", "search"]:
            _allow(method, "GET")
            return _search(environ, start_response)
        if parts == ["api", "echo"]:
            _allow(method, "POST")
            return _echo(environ, start_response)
        if parts == ["upload"]:
            _allow(method, "POST", "PUT")
            return _upload(environ, start_response)
        if parts == ["download"]:
            _allow(method, "GET")
            return _download(environ, start_response)
        raise _HTTPError("404 Not Found", f"no route for {path}")


app = DemoApp()
application = app


class _HTTPError(Exception):
    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _allow(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise _HTTPError(
            "405 Method Not Allowed", f"{method} not allowed; use {', '.join(allowed)}"
        )


def _int(text: str, low: int, high: int) -> int:
    if not text.isdigit() or not low <= int(text) <= high:
        raise _HTTPError("400 Bad Request", f"{text!r} is not an integer in [{low}, {high}]")
    return int(text)


def _query(environ: dict[str, Any]) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _reply(start_response: StartResponse, status: str, doc: Any) -> list[bytes]:
    body = json.dumps(doc, separators=(",", ":")).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


def _page(parts: list[str], start_response: StartResponse) -> list[bytes]:
    number = _int(parts[1], 1, PAGES) if len(parts) == 2 else 0
    body = page_html(number)
    start_response(
        "200 OK",
        [
            ("Content-Type", "text/html; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("X-Content-Sha256", hashlib.sha256(body).hexdigest()),
            ("Cache-Control", "no-cache"),
        ],
    )
    return [body]


def _search(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
    query = _query(environ)
    delay_ms = _int(query.get("delay_ms", "0"), 0, MAX_DELAY_MS)
    time.sleep(delay_ms / 1000)  # a database round trip: holds a pool thread, as a real one would
    q = query.get("q", "")
    hits = [item(int(hashlib.sha256(f"{q}:{i}".encode()).hexdigest()[:6], 16)) for i in range(3)]
    return _reply(start_response, "200 OK", {"q": q, "delay_ms": delay_ms, "hits": hits})


def _read_body(environ: dict[str, Any]) -> Iterator[bytes]:
    """Yield the request body in pieces. ``wsgi.input`` ends at the end of the message (the server sets
    ``wsgi.input_terminated``), so a chunked body with no Content-Length is read to EOF."""
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH", "")
    remaining = int(length) if length.isdigit() else None
    while remaining is None or remaining > 0:
        piece = stream.read(PIECE if remaining is None else min(PIECE, remaining))
        if not piece:
            break
        if remaining is not None:
            remaining -= len(piece)
        yield piece


def _echo(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
    raw = b"".join(_read_body(environ))
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise _HTTPError("400 Bad Request", f"body is not JSON: {exc}") from exc
    return _reply(
        start_response,
        "200 OK",
        {
            "json": doc,
            "length": len(raw),
            "sha256": hashlib.sha256(raw).hexdigest(),
            "chunked": "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower(),
        },
    )


def _upload(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
    digest = hashlib.sha256()
    length = 0
    for piece in _read_body(environ):
        digest.update(piece)
        length += len(piece)
    doc = {"length": length, "sha256": digest.hexdigest()}
    return _reply(start_response, "201 Created", doc)


def _download(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    query = _query(environ)
    size = _int(query.get("size", str(4 * 1024 * 1024)), 0, MAX_DOWNLOAD)
    seed = _int(query.get("seed", "0"), 0, 2**31)
    start_response(
        "200 OK",
        [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))],
    )
    return download_bytes(size, seed)
