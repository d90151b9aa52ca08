"""Locust users for webcluster: realistic traffic against ``loadtests.demoapp`` and its static assets.

Run through ``python -m loadtests.run`` (which starts the cluster and a distributed Locust), or by hand
against a running server started with
``--app loadtests.demoapp:app --static /static=loadtests/static``::

    python -m locust -f loadtests/locustfile.py -H http://127.0.0.1:8080 --headless -u 50 -r 10 -t 1m

Every request checks its answer - status AND content - inside ``catch_response``: a wrong body counts as
a failure, never a success. Failure messages are stable strings (``status 500 != 200``,
``content: <what>``) or the root exception of a transport error (``ConnectionResetError(104, ...)``), so
Locust groups them into a handful of rows and ``loadtests.run`` can classify them.

One Locust user runs one greenlet and so has at most one request in flight at any moment; the kill test
relies on that to bound the failures a ``kill -9`` may cause.

Every ``wait_time`` is wrapped in ``drain.draining`` so ``--drain-after`` can end a run without cutting
a request off (see ``loadtests/drain.py``, which also adds ``--started-file``).
"""

from __future__ import annotations

import hashlib
import json
import random
import string
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests
from locust import HttpUser, between, task
from urllib3.exceptions import HTTPError as Urllib3Error

try:
    from loadtests import demoapp
    from loadtests.drain import draining
except ImportError:  # `locust -f loadtests/locustfile.py` puts only loadtests/ on sys.path
    import demoapp  # type: ignore[no-redef]
    from drain import draining  # type: ignore[no-redef]

STATIC_DIR = Path(__file__).resolve().parent / "static"
ASSETS = {name: (STATIC_DIR / name).read_bytes() for name in demoapp.ASSETS}
MIB = 1024 * 1024
# Upload bodies are slices of one random pool made once per Locust process (cheap to send, and random
# bytes defeat any accidental compression or caching on the way).
UPLOAD_POOL = random.Random(20240601).randbytes(10 * MIB)
SLOW_READ_CHUNK = 4096  # bytes per iter_content() step of the slow reader
SLOW_READ_PAUSE = 0.002  # seconds between steps: a 4 MiB download takes ~2 s

TIMEOUT = 60.0  # seconds per request: a hung connection fails instead of stalling its user forever

Check = Callable[[Any], "str | None"]  # response -> problem description, or None when it is right
TRANSPORT_ERRORS = (requests.RequestException, OSError, Urllib3Error)


def root_cause(exc: BaseException) -> BaseException:
    """The innermost cause of a wrapped transport error (``ConnectionError(ProtocolError(...
    ConnectionResetError))`` -> ``ConnectionResetError``), as Locust itself reports it."""
    seen = 0
    while seen < 10:
        inner = exc.__cause__ or exc.__context__
        if inner is None and exc.args and isinstance(exc.args[-1], BaseException):
            inner = exc.args[-1]
        if inner is None:
            return exc
        exc, seen = inner, seen + 1
    return exc


def verify(response: Any, status: int, check: Check | None = None) -> bool:
    """Mark ``response`` (a Locust ``catch_response`` context) success or failure; True on success."""
    if getattr(response, "error", None) is not None:
        response.failure(root_cause(response.error))
        return False
    if response.status_code != status:
        response.failure(f"status {response.status_code} != {status}")
        return False
    try:
        problem = check(response) if check else None
    except ValueError as exc:  # JSON that does not parse
        problem = f"unparsable body ({type(exc).__name__})"
    except TRANSPORT_ERRORS as exc:  # the body broke off while being read
        response.failure(root_cause(exc))
        return False
    if problem:
        response.failure(f"content: {problem}")
        return False
    response.success()
    return True


def check_sha_header(response: Any) -> str | None:
    """A demo page must match the digest the app put in ``X-Content-Sha256``."""
    if hashlib.sha256(response.content).hexdigest() != response.headers.get("X-Content-Sha256"):
        return "page body does not match X-Content-Sha256"
    return None


def check_json(expected: dict[str, Any]) -> Check:
    """The body is JSON equal to ``expected``."""
    return lambda r: None if r.json() == expected else "JSON differs from the expected document"


def check_echo(raw: bytes, doc: Any, chunked: bool) -> Check:
    """``POST /api/echo`` answered with the digest, length and framing of what was sent."""

    def check(r: Any) -> str | None:
        got = r.json()
        if got.get("sha256") != hashlib.sha256(raw).hexdigest() or got.get("length") != len(raw):
            return "echo digest/length differs from the body sent"
        if got.get("json") != doc:
            return "echoed JSON differs"
        if got.get("chunked") is not chunked:
            return f"server saw chunked={got.get('chunked')}, sent chunked={chunked}"
        return None

    return check


def pieces(data: bytes, size: int) -> Iterator[bytes]:
    """A generator body: requests sends it with ``Transfer-Encoding: chunked`` (RFC 9112 §7.1)."""
    view = memoryview(data)
    for offset in range(0, len(data), size):
        yield bytes(view[offset : offset + size])


def json_document(rng: random.Random) -> dict[str, Any]:
    """A JSON document of roughly 1-8 KiB (an order with line items)."""
    lines = [
        {
            "sku": "".join(rng.choices(string.ascii_uppercase + string.digits, k=10)),
            "qty": rng.randint(1, 9),
            "note": "".join(rng.choices(string.ascii_letters + " ", k=rng.randint(20, 120))),
        }
        for _ in range(rng.randint(8, 60))
    ]
    return {"customer": rng.randint(1, 10**6), "lines": lines, "ts": time.time()}


class BrowsingUser(HttpUser):
    """A visitor on keep-alive: pages, then their assets revalidated with ``If-None-Match`` (304)."""

    weight = 5
    wait_time = draining(between(0.2, 1.5))

    def on_start(self) -> None:
        self.etags: dict[str, str] = {}

    @task(5)
    def page(self) -> None:
        number = random.randint(1, demoapp.PAGES)
        check = self._page_check(f"<h1>Page {number}</h1>")
        with self.client.get(
            f"/page/{number}", name="/page/[n]", catch_response=True, timeout=TIMEOUT
        ) as r:
            loaded = verify(r, 200, check)
        if loaded:
            for name in demoapp.ASSETS:
                self.asset(name)

    @task(2)
    def home(self) -> None:
        with self.client.get("/", catch_response=True, timeout=TIMEOUT) as r:
            verify(r, 200, self._page_check("<title>webcluster demo</title>"))

    @task(1)
    def hero_range(self) -> None:
        """A media player's byte range request (RFC 9110 §14.2): 206 with exactly those bytes."""
        data = ASSETS["hero.png"]
        start = random.randrange(len(data) - 1)
        end = random.randrange(start, len(data))
        headers = {"Range": f"bytes={start}-{end}"}
        name = "/static/hero.png [range]"
        with self.client.get(
            "/static/hero.png", headers=headers, name=name, catch_response=True, timeout=TIMEOUT
        ) as r:
            verify(r, 206, lambda r: None if r.content == data[start : end + 1] else "wrong range")

    def asset(self, name: str) -> None:
        """Fetch a static asset; revalidate it once cached, as a browser does (RFC 9110 §13.1.2)."""
        etag = self.etags.get(name)
        headers = {"If-None-Match": etag} if etag else {}
        path = f"/static/{name}"
        with self.client.get(path, headers=headers, catch_response=True, timeout=TIMEOUT) as r:
            if etag:
                verify(r, 304, lambda r: None if not r.content else "304 with a body")
            elif verify(r, 200, lambda r: None if r.content == ASSETS[name] else "asset differs"):
                self.etags[name] = r.headers.get("ETag", "")

    @staticmethod
    def _page_check(marker: str) -> Check:
        return lambda r: check_sha_header(r) or (None if marker in r.text else f"no {marker!r}")


class ApiUser(HttpUser):
    """A JSON API client on keep-alive: reads, searches and POSTs of a few KiB, some chunked."""

    weight = 4
    wait_time = draining(between(0.05, 0.5))

    @task(5)
    def get_item(self) -> None:
        item_id = random.randint(1, 100_000)
        with self.client.get(
            f"/api/items/{item_id}", name="/api/items/[id]", catch_response=True, timeout=TIMEOUT
        ) as r:
            verify(r, 200, check_json(demoapp.item(item_id)))

    @task(2)
    def search(self) -> None:
        q = random.choice(["red", "blue", "shoes", "lamp", "desk", "book"])
        delay = random.randint(5, 50)
        url = f"/api/search?q={q}&delay_ms={delay}"
        with self.client.get(url, name="/api/search", catch_response=True, timeout=TIMEOUT) as r:
            verify(r, 200, lambda r: None if r.json().get("q") == q else "wrong query echoed")

    @task(3)
    def post_json(self) -> None:
        self._post(chunked=False)

    @task(2)
    def post_json_chunked(self) -> None:
        self._post(chunked=True)

    def _post(self, chunked: bool) -> None:
        doc = json_document(random.Random())
        raw = json.dumps(doc).encode()
        body: Any = pieces(raw, 1024) if chunked else raw
        name = "/api/echo [chunked]" if chunked else "/api/echo"
        headers = {"Content-Type": "application/json"}
        with self.client.post(
            "/api/echo", data=body, headers=headers, name=name, catch_response=True, timeout=TIMEOUT
        ) as r:
            verify(r, 200, check_echo(raw, doc, chunked))


class UploadUser(HttpUser):
    """Uploads of 1-10 MiB, half with Content-Length and half chunked."""

    weight = 1
    wait_time = draining(between(0.5, 2.0))

    @task
    def upload(self) -> None:
        size = random.randint(1 * MIB, 10 * MIB)
        offset = random.randrange(len(UPLOAD_POOL) - size + 1)
        data = UPLOAD_POOL[offset : offset + size]
        expected = {"length": size, "sha256": hashlib.sha256(data).hexdigest()}
        chunked = random.random() < 0.5
        body: Any = pieces(data, 64 * 1024) if chunked else data
        name = "/upload [chunked]" if chunked else "/upload"
        with self.client.post(
            "/upload", data=body, name=name, catch_response=True, timeout=TIMEOUT
        ) as r:
            verify(r, 201, check_json(expected))


class CloseUser(HttpUser):
    """A client that opens a new connection per request (``Connection: close``, RFC 9112 §9.6)."""

    weight = 2
    wait_time = draining(between(0.1, 1.0))

    @task(2)
    def item(self) -> None:
        item_id = random.randint(1, 100_000)
        expected = check_json(demoapp.item(item_id))
        self._get(f"/api/items/{item_id}", "/api/items/[id] [close]", expected)

    @task(1)
    def asset(self) -> None:
        name = random.choice(demoapp.ASSETS)
        data = ASSETS[name]
        check = lambda r: None if r.content == data else "asset differs"  # noqa: E731
        self._get(f"/static/{name}", "/static/[asset] [close]", check)

    def _get(self, path: str, name: str, check: Check) -> None:
        headers = {"Connection": "close"}
        with self.client.get(
            path, headers=headers, name=name, catch_response=True, timeout=TIMEOUT
        ) as r:
            verify(r, 200, lambda r: check(r) or self._closed(r))

    @staticmethod
    def _closed(response: Any) -> str | None:
        # RFC 9112 §9.6: a server that receives "close" must close after its response, and says so.
        return None if "close" in response.headers.get("Connection", "").lower() else "no close"


class SlowReaderUser(HttpUser):
    """Downloads 1-4 MiB and reads them slowly in small steps: the server must not hold the data in
    memory, time out too early, or lose bytes. Locust times the request to the response head."""

    weight = 1
    wait_time = draining(between(0.5, 2.0))

    @task
    def download(self) -> None:
        size = random.randint(1 * MIB, 4 * MIB)
        seed = random.randint(0, 1000)
        url = f"/download?size={size}&seed={seed}"
        with self.client.get(
            url, name="/download [slow]", stream=True, catch_response=True, timeout=TIMEOUT
        ) as r:
            try:
                verify(r, 200, lambda r: self._read_slowly(r, size, seed))
            finally:
                r.close()

    @staticmethod
    def _read_slowly(response: Any, size: int, seed: int) -> str | None:
        digest = hashlib.sha256()
        received = 0
        for chunk in response.iter_content(chunk_size=SLOW_READ_CHUNK):
            digest.update(chunk)
            received += len(chunk)
            time.sleep(SLOW_READ_PAUSE)  # gevent-patched under Locust: yields to other users
        if received != size:
            return f"download short: {received} of {size} bytes"
        if digest.hexdigest() != demoapp.download_sha256(size, seed):
            return "download bytes differ"
        return None
