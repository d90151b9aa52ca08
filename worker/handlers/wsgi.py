"""WSGI (PEP 3333) on top of an ``Exchange``: environ, ``start_response``, ``write()``, iteration, ``close()``.

Everything here runs on the pool thread that owns the exchange; a ``WSGIHandler`` holds only immutable
configuration and is shared by all threads.

Error policy (docs/ARCHITECTURE.md, Errors):
- app exception (or invalid status/headers, or CR/LF refused by the core) before the head is sent: log with
  traceback to ``webcluster.error`` and answer a bare 500; after: ``exchange.abort()`` (close, no finish).
- the client went away (``ClientDisconnected`` from the exchange or from ``wsgi.input``; EPIPE, ECONNRESET,
  send timeout): abort quietly, no traceback.
- ``RemoteProtocolError`` from ``wsgi.input`` (broken/oversized/slow body) that the app did not handle: if
  nothing was sent it is re-raised so the connection turns it into the 400/413/408 in its one error path;
  otherwise abort.
- the app iterable's ``close()`` is called in every case, after the response is finished.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, BinaryIO, TextIO
from urllib.parse import unquote_to_bytes

from webcluster.worker.handlers.base import ClientDisconnected, Exchange, send_internal_error
from webcluster.worker.handlers.forwarded import ForwardedPolicy
from webcluster.worker.handlers.target import split_target
from webcluster.worker.http.errors import RemoteProtocolError
from webcluster.worker.http.memo import remember
from webcluster.worker.http.writers import parse_content_length

log = logging.getLogger("webcluster.error")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

# PEP 3333: status is "NNN reason". CR/LF in the reason is left to the core, which refuses it with
# LocalProtocolError (one place decides what may go on the wire); we answer 500 either way.
_STATUS = re.compile(r"([1-9][0-9][0-9]) (.*)", re.DOTALL)
_STATUSES: dict[str, tuple[int, str]] = {}  # status strings seen before, parsed
_BLOCK_SIZE = 65536


class FileWrapper:
    """``wsgi.file_wrapper``: lets the server ``sendfile()`` a real file (PEP 3333, "Optional
    Platform-Specific File Handling"); otherwise it iterates ``blksize`` blocks."""

    def __init__(self, filelike: BinaryIO, blksize: int = _BLOCK_SIZE) -> None:
        self.filelike = filelike
        self.blksize = blksize

    def __iter__(self):
        while block := self.filelike.read(self.blksize):
            yield block

    def close(self) -> None:
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()


class _Response:
    """``start_response``/``write`` state of one request; the head reaches the exchange lazily."""

    __slots__ = ("exchange", "status", "headers", "content_length", "length_hint", "head_sent")

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange
        self.status: tuple[int, str] | None = None
        self.headers: Sequence[tuple[str, str]] = ()
        self.content_length: int | None = None  # as given by the app
        self.length_hint: int | None = None  # body size we know ourselves (one-item list, sendfile)
        self.head_sent = False  # exchange.start_response() accepted our head

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        """PEP 3333 ``start_response``; returns the ``write()`` callable."""
        if exc_info is not None:
            try:
                if self.head_sent or self.exchange.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # break the frame <-> traceback cycle (PEP 3333)
        elif self.status is not None:
            raise AssertionError("start_response() called twice without exc_info")
        # A status string and a header list seen before are known valid: the caches are read here,
        # and only what they miss is checked by a call (one per request is about 0.5 % of hello-world)
        self.status = _STATUSES.get(status) if type(status) is str else None
        if self.status is None:
            self.status = _check_status(status)
        known = _UNSEEN
        if type(headers) is list or type(headers) is tuple:
            checked = tuple(headers)
            try:
                known = _CHECKED.get(checked, _UNSEEN)
            except TypeError:  # an unhashable item: _check_headers says which
                pass
        if known is _UNSEEN:
            checked, known = _check_headers(headers)
        self.headers, self.content_length = checked, known
        return self.write

    def write(self, data: bytes) -> None:
        """The ``write()`` callable, also used for each chunk of the app iterable. Empty chunks are skipped
        so they do not commit the head (PEP 3333: a server must not send headers before a non-empty chunk)."""
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"WSGI body chunks must be bytes, not {type(data).__name__}")
        if self.status is None:
            raise AssertionError("write() or body returned before start_response()")
        if data:
            self.send_head()
            _send(self.exchange.write, data)

    def send_head(self) -> None:
        """Hand the head to the exchange (it reaches the wire with the next write/sendfile/finish)."""
        if self.head_sent:
            return
        if self.status is None:
            raise AssertionError("the application returned without calling start_response()")
        code, reason = self.status
        headers = self.headers
        if self.content_length is None and self.length_hint is not None and _may_have_length(code):
            headers = [*headers, ("Content-Length", str(self.length_hint))]
        self.exchange.start_response(code, reason, headers)  # LocalProtocolError on CR/LF
        self.head_sent = True

    def sendfile(self, file: BinaryIO, offset: int, count: int) -> None:
        self.send_head()
        _send(self.exchange.sendfile, file, offset, count)

    def finish(self, data: bytes = b"", hold: bool = False) -> None:
        """End the response; ``data``, the app's last chunk, goes out with the head and the end.
        ``hold``: as ``Exchange.finish``'s (the app has no more code to run)."""
        if data and self.status is None:
            raise AssertionError("write() or body returned before start_response()")
        self.send_head()
        _send(self.exchange.finish, data, hold)

    def finish_whole(self, body: bytes) -> None:
        """The whole response when the app returned a list of one ``bytes``: what ``_send_result``,
        ``finish``, ``send_head`` and ``_send`` do for it, in one call (most apps answer this way;
        each Python call saved is about 0.5 % of a hello-world request). ``body`` goes out with its head
        and a Content-Length, in one send."""
        status = self.status
        if status is None or self.head_sent:  # no start_response, or write() was used: the long way
            self.finish(body)
            return
        code, reason = status
        headers = self.headers
        if self.content_length is None and _may_have_length(code):
            headers = [*headers, ("Content-Length", str(len(body)))]
        exchange = self.exchange
        try:
            exchange.start_response(code, reason, headers)  # LocalProtocolError on CR/LF
            self.head_sent = True
            exchange.finish(body, True)  # a list has no close(): nothing of the app runs after it
        except ClientDisconnected:
            raise
        except OSError as exc:  # as in _send
            raise ClientDisconnected(str(exc)) from exc


def _send(method: Callable[..., None], *args: Any) -> None:
    """Call an exchange output method; any transport failure surfaces as ``ClientDisconnected`` (the real
    exchange already raises it; a bare ``OSError`` from another transport means the same)."""
    try:
        method(*args)
    except ClientDisconnected:
        raise
    except OSError as exc:
        raise ClientDisconnected(str(exc)) from exc


def _may_have_length(code: int) -> bool:
    # RFC 9110 §8.6: no Content-Length in 1xx or 204; a 304's would describe the selected representation
    return code >= 200 and code not in (204, 304)


def _check_status(status: str) -> tuple[int, str]:
    """Parse and remember a status string ``_STATUSES`` does not hold (``start_response`` looks first)."""
    if type(status) is not str:
        raise TypeError(f"status must be str, not {type(status).__name__}")
    match = _STATUS.fullmatch(status)
    if match is None:
        raise ValueError(f"status must look like '200 OK', got {status!r}")
    parsed = int(match.group(1)), match.group(2)
    if len(_STATUSES) < 256:  # apps use a handful of status strings; a few odd ones are not kept
        _STATUSES[status] = parsed
    return parsed


def _check_headers(
    headers: list[tuple[str, str]],
) -> tuple[tuple[tuple[str, str], ...], int | None]:
    """Validate the app's headers (PEP 3333: a list of (str, str)) when ``_CHECKED`` does not hold them
    (``start_response`` looks first); returns them, as a tuple the app can no longer change, and the
    Content-Length."""
    if not isinstance(headers, (list, tuple)):
        raise TypeError(f"response headers must be a list, not {type(headers).__name__}")
    checked = tuple(headers)
    length = None
    size = 0
    for item in headers:
        if type(item) is not tuple or len(item) != 2:
            raise TypeError(f"each response header must be a (name, value) tuple, got {item!r}")
        name, value = item
        if type(name) is not str or type(value) is not str:
            raise TypeError(f"response header names and values must be str, got {item!r}")
        if len(name) == 14 and name.lower() == "content-length":
            length = parse_content_length(value)
        size += len(name) + len(value)
    if size <= 2048:  # 256 lists of at most 2 KiB, whatever an application echoes into them
        remember(_CHECKED, checked, length, 256)
    return checked, length


# Header lists that passed _check_headers, with their Content-Length: an application sends the same few
# lists over and over. Only tuples of str get in, so an equal list is one that would pass the checks.
_CHECKED: dict[tuple, int | None] = {}
_UNSEEN = object()


def _split_host(host: str) -> tuple[str, str]:
    """``"[::1]:80"`` -> ``("::1", "80")``; ``"example.com"`` -> ``("example.com", "")``."""
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        return name, rest[1:] if rest.startswith(":") else ""
    name, _, port = host.partition(":")
    return name, port


def _header_environ(environ: dict[str, Any], headers: list[tuple[str, str]]) -> None:
    """Add the ``HTTP_*`` keys (plus ``CONTENT_TYPE``) of the request headers to ``environ``.

    A name containing ``_`` is dropped: ``X_Forwarded_For`` and ``X-Forwarded-For`` would both become
    ``HTTP_X_FORWARDED_FOR``, letting a client spoof what a proxy set (nginx ``underscores_in_headers off``,
    gunicorn ``header_map=drop``). Repeated fields are joined with ``","`` (RFC 9110 §5.3), except Cookie,
    joined with ``"; "`` as RFC 6265 §5.4 serializes it.
    """
    keys = _ENV_KEYS
    content_type = False
    for name, value in headers:
        key = keys.get(name)
        if key is None:
            key = _env_key(name)
        if not key:
            continue
        if key == "CONTENT_TYPE":
            if not content_type:  # the first one counts
                content_type = True
                environ[key] = value
        elif key in environ:
            environ[key] += ("; " if key == "HTTP_COOKIE" else ",") + value
        else:
            environ[key] = value


# (SERVER_NAME, SERVER_PORT) by (Host, URL scheme): clients name the same host on every request.
_SERVERS: dict[tuple[str, str], tuple[str, str]] = {}

# Environ key by (lower-case) field name; "" for names that never reach the environ. Bounded like the
# core's field-line cache: clients send the same few names.
_ENV_KEYS: dict[str, str] = {}


def _env_key(name: str) -> str:
    if "_" in name or name == "content-length":  # CONTENT_LENGTH comes from the core's framing
        key = ""
    elif name == "content-type":
        key = "CONTENT_TYPE"
    else:
        key = "HTTP_" + name.upper().replace("-", "_")
    if len(name) <= 64:
        remember(_ENV_KEYS, name, key, 1024)
    return key


class WSGIHandler:
    """Run a WSGI application for each exchange (a ``Handler``).

    ``root_path`` is the mount point (``SCRIPT_NAME``, ``--root-path``); ``server_name`` is the
    ``SERVER_NAME`` used when a request has no Host; ``errors_stream`` is ``wsgi.errors`` (default: the
    current ``sys.stderr``); ``forwarded`` decides whether proxy headers set ``REMOTE_ADDR`` and the scheme;
    ``server_software`` is ``SERVER_SOFTWARE`` (``webcluster/<version>`` in a worker).
    """

    runs_on_loop = False  # an application may wait for anything (Runner.on_loop)

    def __init__(
        self,
        app: WSGIApp,
        *,
        root_path: str = "",
        multiprocess: bool = False,
        server_name: str | None = None,
        errors_stream: TextIO | None = None,
        forwarded: ForwardedPolicy | None = None,
        server_software: str = "webcluster",
    ) -> None:
        self.app = app
        self.server_software = server_software
        self.root_path = root_path.rstrip("/")
        self.multiprocess = multiprocess
        self.server_name = server_name
        self.errors_stream = errors_stream
        self.forwarded = forwarded
        self._template: dict[str, Any] = {
            "SCRIPT_NAME": self.root_path,
            "SERVER_SOFTWARE": server_software,
            "wsgi.version": (1, 0),
            "wsgi.input_terminated": True,  # the body reader stops at the end of the message
            "wsgi.errors": errors_stream,
            "wsgi.multithread": True,
            "wsgi.multiprocess": multiprocess,
            "wsgi.run_once": False,
            "wsgi.file_wrapper": FileWrapper,
        }

    def __call__(self, exchange: Exchange) -> None:
        response = _Response(exchange)
        result: Iterable[bytes] | None = None
        try:
            result = self.app(self.environ(exchange), response.start_response)
            if type(result) is list and len(result) == 1 and type(result[0]) is bytes:
                response.finish_whole(result[0])  # the usual response, in the fewest calls
            else:  # held (Exchange.finish) only when no close() follows: lists and tuples have none
                response.finish(self._send_result(response, result),
                                type(result) is list or type(result) is tuple)  # fmt: skip
        except ClientDisconnected as exc:  # while sending, or while the app read wsgi.input
            log.debug("client went away during %s: %s", exchange.request.target, exc)
            exchange.abort()
        except RemoteProtocolError:
            if exchange.headers_sent:
                exchange.abort()
            else:
                raise  # the connection answers 400/413/408 and closes
        except Exception:
            log.exception(
                "Error handling request %s %s", exchange.request.method, exchange.request.target
            )
            send_internal_error(exchange)
        finally:
            if result is not None and type(result) not in (list, tuple):  # neither has close()
                _close(result, exchange)

    def environ(self, exchange: Exchange) -> dict[str, Any]:
        """The PEP 3333 environ for this exchange."""
        request = exchange.request
        target = request.target
        if target[0] == "/" and "?" not in target:  # split_target's usual case, without the call
            path, query, authority = target, "", None
        else:
            path, query, authority = split_target(target)
        peer_host, peer_port = exchange.remote_addr
        remote, scheme = peer_host, exchange.url_scheme
        environ: dict[str, Any] = self._template.copy()  # the keys no request changes
        _header_environ(environ, request.headers)
        # Without any proxy header the policy's answer is (peer, scheme) whoever the peer is: skip it,
        # it would parse the peer address on every request, a large share of the hot path (BENCHMARKS.md).
        # A header ForwardedPolicy.resolve reads (as environ keys: names with "_" never reach either).
        # Three lookups, inline: frozenset.isdisjoint(environ) would hash every key of the environ.
        if self.forwarded is not None and (
            "HTTP_FORWARDED" in environ
            or "HTTP_X_FORWARDED_FOR" in environ
            or "HTTP_X_FORWARDED_PROTO" in environ
        ):
            remote, scheme = self.forwarded.resolve(peer_host, request.headers, scheme)
        if authority is not None:  # RFC 9112 §3.2.2: absolute-form authority replaces Host
            environ["HTTP_HOST"] = authority
        if "%" in path:
            path = unquote_to_bytes(path).decode("latin-1")
        if self.root_path:
            environ["SCRIPT_NAME"], path = self._split_path(path)
        host = environ.get("HTTP_HOST")
        known = _SERVERS.get((host, scheme)) if host else None  # _server's cache, without the call
        if known is None:
            known = self._server(host, exchange, scheme)
        environ["SERVER_NAME"], environ["SERVER_PORT"] = known
        if request.content_length is not None:
            environ["CONTENT_LENGTH"] = str(request.content_length)
        environ["REQUEST_METHOD"] = request.method
        environ["PATH_INFO"] = path
        environ["QUERY_STRING"] = query
        environ["RAW_URI"] = target
        environ["SERVER_PROTOCOL"] = "HTTP/1.1" if request.http_version == "1.1" else "HTTP/1.0"
        environ["REMOTE_ADDR"] = remote
        environ["REMOTE_PORT"] = str(peer_port)
        environ["wsgi.url_scheme"] = scheme
        environ["wsgi.input"] = exchange.body
        if self.errors_stream is None:
            environ["wsgi.errors"] = sys.stderr  # the current one: a test or a hook may replace it
        return environ

    def _split_path(self, path: str) -> tuple[str, str]:
        """(SCRIPT_NAME, PATH_INFO): strip the root path when the request carries it (a proxy that does
        not strip the prefix); otherwise the path is already relative to the mount point."""
        root = self.root_path
        if root and (path == root or path.startswith(root + "/")):
            return root, path[len(root) :]
        return root, path

    def _server(self, host: str | None, exchange: Exchange, scheme: str) -> tuple[str, str]:
        """(SERVER_NAME, SERVER_PORT) that ``_SERVERS`` does not hold (``environ`` looks first)."""
        default_port = "443" if scheme == "https" else "80"
        if host:
            name, port = _split_host(host)
            known = name, port or default_port
            if len(host) <= 256:  # bounded like the core's caches, whatever clients send
                remember(_SERVERS, (host, scheme), known, 1024)
            return known
        addr_host, addr_port = exchange.server_addr
        name = self.server_name or addr_host or "localhost"
        return name, str(addr_port) if addr_port else default_port

    def _send_result(self, response: _Response, result: Iterable[bytes]) -> bytes:
        """Send the app iterable: ``sendfile`` for a real file in a ``FileWrapper``, else chunk by chunk.
        Returns what is left for ``finish``: the body of a one-chunk response, which then goes out with
        its head in one send (and gets a Content-Length: keep-alive without chunking)."""
        if isinstance(result, FileWrapper) and self._try_sendfile(response, result):
            return b""
        if isinstance(result, (list, tuple)) and len(result) == 1 and not response.head_sent:
            body = result[0]
            if isinstance(body, (bytes, bytearray)):
                response.length_hint = len(body)
                return body
        for chunk in result:
            response.write(chunk)
        return b""

    def _try_sendfile(self, response: _Response, wrapper: FileWrapper) -> bool:
        """Send a regular file with ``exchange.sendfile`` from its current position; False to iterate."""
        if not response.exchange.can_sendfile:
            return False
        try:
            info = os.fstat(wrapper.filelike.fileno())
            offset = wrapper.filelike.tell()
        except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
            return False
        if not stat.S_ISREG(info.st_mode):
            return False
        count = response.content_length
        if count is None:
            count = max(info.st_size - offset, 0)
            response.length_hint = count
        response.send_head()
        if count and response.exchange.request.method != "HEAD":
            response.sendfile(wrapper.filelike, offset, count)
        return True


def _close(result: Iterable[bytes], exchange: Exchange) -> None:
    """PEP 3333: call the iterable's ``close()`` whatever happened; its errors are logged, not sent."""
    close = getattr(result, "close", None)
    if close is None:
        return
    try:
        close()
    except Exception:
        log.exception("Error closing the response of %s", exchange.request.target)
