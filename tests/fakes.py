"""Test doubles for the handler seam (``worker.handlers.base``): a recording ``FakeExchange`` and a
``BodyReader`` over given bytes. No sockets, no threads; reusable by any handler test."""

from __future__ import annotations

import io
import os
import re
from typing import BinaryIO

from webcluster.worker.handlers.base import ClientDisconnected
from webcluster.worker.http.errors import LocalProtocolError, RemoteProtocolError
from webcluster.worker.http.events import Request

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 §5.6.2
_BAD_VALUE = re.compile(r"[\r\n\0]")


class BodyReader:
    """The request body as the real reader presents it: read/readline/readlines/iteration over ``data``.

    ``error``: raised once ``data`` is exhausted and more is asked for (a body that breaks mid-way, e.g.
    ``RemoteProtocolError("too large", 413)``). ``reads`` counts read calls (to check laziness).
    """

    def __init__(self, data: bytes = b"", error: Exception | None = None) -> None:
        self._buf = io.BytesIO(data)
        self._size = len(data)
        self._error = error
        self.reads = 0

    def _check(self, want: int) -> None:
        self.reads += 1
        left = self._size - self._buf.tell()
        if self._error is not None and (want < 0 or want > left):
            raise self._error

    def read(self, size: int = -1, /) -> bytes:
        self._check(size if size is not None else -1)
        return self._buf.read(size)

    def readline(self, size: int = -1, /) -> bytes:
        self._check(-1 if size is None else size)
        return self._buf.readline(size)

    def readlines(self, hint: int = -1, /) -> list[bytes]:
        self._check(-1)
        return self._buf.readlines(hint)

    def __iter__(self):
        while line := self.readline():
            yield line


def make_request(
    method: str = "GET",
    target: str = "/",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    http_version: str = "1.1",
) -> Request:
    """A ``Request`` as the core would produce it (Host added unless given; Content-Length from body)."""
    headers = list(headers if headers is not None else [("host", "localhost:8080")])
    length = None
    if body or any(name == "content-length" for name, _ in headers):
        length = len(body)
        if not any(name == "content-length" for name, _ in headers):
            headers.append(("content-length", str(length)))
    return Request(method, target, http_version, headers, content_length=length)


class FakeExchange:
    """An ``Exchange`` that records what a handler sends.

    Mirrors the core's contract: ``start_response`` refuses CR/LF/NUL and bad names with
    ``LocalProtocolError`` and may be called again until the head is sent; the head is "sent" by the first
    write/sendfile/finish; writing past a declared Content-Length is a ``LocalProtocolError``.
    ``fail_after``: raise ``ClientDisconnected`` once that many body bytes were written (client went away).
    Recorded: ``status``, ``reason``, ``headers``, ``body`` (every byte written, even for HEAD),
    ``sendfile_calls`` ((offset, count) pairs), ``finished``, ``aborted``.
    """

    def __init__(
        self,
        request: Request | None = None,
        *,
        body: bytes | BodyReader = b"",
        remote_addr: tuple[str, int] = ("127.0.0.1", 50000),
        server_addr: tuple[str, int] = ("127.0.0.1", 8080),
        url_scheme: str = "http",
        can_sendfile: bool = True,
        fail_after: int | None = None,
    ) -> None:
        self.request = request or make_request(body=body if isinstance(body, bytes) else b"")
        self.body = body if isinstance(body, BodyReader) else BodyReader(body)
        self.remote_addr = remote_addr
        self.server_addr = server_addr
        self.url_scheme = url_scheme
        self.can_sendfile = can_sendfile
        self.headers_sent = False
        self.fail_after = fail_after
        self.status: int | None = None
        self.reason: str | None = None
        self.headers: list[tuple[str, str]] = []
        self.body_out = bytearray()
        self.sendfile_calls: list[tuple[int, int]] = []
        self.finished = False
        self.held = False  # what finish() was told: nothing runs after it (Exchange.finish)
        self.aborted = False

    # -- the Exchange protocol -------------------------------------------------------------------------
    def start_response(self, status: int, reason: str, headers: list[tuple[str, str]]) -> None:
        if self.headers_sent:
            raise LocalProtocolError("the head was already sent")
        if not 100 <= status <= 999 or _BAD_VALUE.search(reason):
            raise LocalProtocolError(f"invalid status {status} {reason!r}")
        for name, value in headers:
            if not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
                raise LocalProtocolError(f"invalid header {name!r}: {value!r}")
        self.status, self.reason, self.headers = status, reason, list(headers)

    def write(self, data: bytes) -> None:
        self._commit()
        limit = self.header("content-length")
        if limit is not None and len(self.body_out) + len(data) > int(limit):
            raise LocalProtocolError("more body than Content-Length")
        if self.fail_after is not None and len(self.body_out) + len(data) > self.fail_after:
            raise ClientDisconnected("client went away")
        self.body_out += data

    def sendfile(self, file: BinaryIO, offset: int, count: int) -> None:
        self._commit()
        self.sendfile_calls.append((offset, count))
        self.body_out += os.pread(file.fileno(), count, offset)

    def finish(self, data: bytes = b"", hold: bool = False) -> None:
        self.held = hold
        if data:
            self.write(data)
        self._commit()
        self.finished = True

    def abort(self) -> None:
        self.aborted = True

    # -- helpers for assertions ------------------------------------------------------------------------
    def _commit(self) -> None:
        if self.finished or self.aborted:
            raise LocalProtocolError("response already ended")
        if self.status is None:
            raise LocalProtocolError("body before start_response")
        self.headers_sent = True

    def header(self, name: str) -> str | None:
        """First response header ``name`` (case-insensitive), or None."""
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    @property
    def data(self) -> bytes:
        return bytes(self.body_out)


__all__ = ["BodyReader", "FakeExchange", "RemoteProtocolError", "make_request"]
