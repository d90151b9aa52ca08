"""Static files under a root directory (``--root``, ``--static /prefix=DIR``), a ``Handler``.

Runs on pool threads; a ``StaticHandler`` holds only immutable configuration. Choices (README "Static files"):

- Path safety: the path is percent-decoded once, segment by segment. A segment that decodes to ``..``, or
  contains ``/`` (from ``%2f``), ``\\`` or NUL, or starts with ``.`` (dotfiles such as ``.git``/``.env``;
  ``.well-known`` is allowed) is refused with **404**. The joined path is resolved with ``realpath`` and must
  stay under ``realpath(root)``: a symlink leading out of the root is a **404**, like a missing file, so the
  answer never tells what exists outside. A file we may not read is a **403**.
- Directories: ``index.html`` only, never a listing (404 without one); a directory named without a trailing
  slash gets a **301** to the slash form (so relative links in the page resolve).
- Validators: a *strong* ETag ``"<mtime_ns hex>-<size hex>"`` (nginx's choice: cheap, and usable for
  ``If-Range`` and ``If-Match``) and ``Last-Modified``. Preconditions in RFC 9110 §13.2.2 order: If-Match,
  If-Unmodified-Since (412), If-None-Match (weak comparison, takes precedence), If-Modified-Since (304).
- Ranges (RFC 9110 §14): one ``bytes=a-b`` / ``a-`` / ``-n`` range -> 206; unsatisfiable -> 416 with
  ``Content-Range: bytes */size``; several ranges, another unit, or a malformed header are ignored and the
  whole file is sent with 200 (no multipart: bounded work per request). ``If-Range`` is honoured. Only GET.
- MIME types come from Python's built-in table (not ``/etc/mime.types``, so every machine answers alike) plus
  a few modern types; ``text/*`` gets ``charset=utf-8``; compressed files are served as such, never with a
  ``Content-Encoding``. Unknown types are ``application/octet-stream``.
- The body goes out with ``exchange.sendfile`` when the transport can, else in 64 KiB reads.
"""

from __future__ import annotations

import functools
import logging
import mimetypes
import os
import re
import stat
import time
from typing import BinaryIO, NamedTuple
from urllib.parse import unquote_to_bytes

from webcluster.worker.handlers.base import Exchange, copy_file
from webcluster.worker.handlers.target import split_target
from webcluster.worker.http.errors import LocalProtocolError
from webcluster.worker.http.events import Request
from webcluster.worker.http.memo import remember
from webcluster.worker.http.writers import REASONS
from webcluster.worker.httpdate import format_http_date, parse_http_date

log = logging.getLogger("webcluster.error")

_ALLOWED_METHODS = "GET, HEAD"
_EXTRA_TYPES = {
    ".js": "text/javascript",  # RFC 9239
    ".mjs": "text/javascript",
    ".webp": "image/webp",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".webmanifest": "application/manifest+json",
    ".md": "text/markdown",
    ".gz": "application/gzip",
    ".tgz": "application/gzip",
    ".bz2": "application/x-bzip2",
    ".xz": "application/x-xz",
    ".zst": "application/zstd",
    ".br": "application/octet-stream",
}
# RFC 9110 §8.8.3: entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE
_ETAG = re.compile(r'\s*(W/)?"([^"]*)"\s*(?:,|$)')
# RFC 9110 §14.1.2, one range only; 19 digits bound int() work and still cover any real file size
_RANGE = re.compile(r"\s*[bB][yY][tT][eE][sS]\s*=\s*([0-9]{0,19})\s*-\s*([0-9]{0,19})\s*")
UNSATISFIABLE = "unsatisfiable"
REAL_PATH_TTL = 1.0
_CACHE_MAX = 1024  # entries in each of the caches above and below; emptied when full
# Small files are kept in memory (``SmallFiles``): at most this size each, this many bytes in all.
SMALL_FILE = 16 * 1024
SMALL_FILES_BYTES = 4 * 1024 * 1024
# A file whose status changed less than this long ago is not kept: see ``SmallFiles``.
SETTLED = 2.0


@functools.lru_cache(maxsize=_CACHE_MAX)
def _last_modified(mtime: int) -> str:
    """IMF-fixdate of a file's mtime (RFC 9110 §8.8.2); files of a site share a few mtimes."""
    return format_http_date(mtime)


class _Meta(NamedTuple):
    """What a response says about a file, computed once per file version: its validators, and the fields
    of a 200 (``whole``, with its Content-Length) or a 206 (``fields``, to which the range is added).
    A kept file's lists are shared by all its responses: nothing mutates a response's header list once
    it is given to ``start_response`` (hooks see it as a read-only ``Sequence``)."""

    etag: str
    mtime: int
    size: int
    validators: list[tuple[str, str]]
    fields: list[tuple[str, str]]
    whole: list[tuple[str, str]]


# Request fields that make a response conditional or partial (RFC 9110 §13.1, §14.2)
_CONDITIONAL = frozenset(
    ("if-match", "if-none-match", "if-modified-since", "if-unmodified-since", "range")
)


def _identity(info: os.stat_result) -> tuple[int, ...]:
    """What changes whenever a file's content may have: any write, truncate, chmod or rename in its
    place changes the inode, the size or the status-change time (``ctime``, which no one can set)."""
    return (
        info.st_ino,
        info.st_dev,
        info.st_size,
        info.st_mtime_ns,
        info.st_ctime_ns,
        info.st_mode,
    )


class SmallFiles:
    """The content of small regular files, revalidated on every use by one ``lstat``.

    A 13-byte icon otherwise costs an open, two fstats, a sendfile and a close per request, and the head
    goes out in its own send; from here it costs an lstat and one send of head + body. Freshness is that
    of the ``lstat``: an entry is used only while the file's identity (inode, device, size, mtime, ctime,
    mode) is what it was when the content was read, and ``follow_symlinks=False`` keeps the O_NOFOLLOW
    rule (a symlink now in the file's place has another identity).

    Timestamps are coarse (the kernel stamps them from a clock that moves once per tick), so a file
    written twice within one tick keeps one ctime; content read between the two writes would then look
    current. As in git's "racily clean" rule, a file is kept only once its ctime and mtime are SETTLED
    seconds old: any later change stamps a later ctime. Bounded: files up to SMALL_FILE bytes,
    SMALL_FILES_BYTES in all, emptied when full."""

    def __init__(self, max_file: int = SMALL_FILE, max_bytes: int = SMALL_FILES_BYTES) -> None:
        self.max_file = max_file
        self.max_bytes = max_bytes
        self._entries: dict[str, tuple[tuple[int, ...], bytes, _Meta]] = {}
        self._bytes = 0

    def get(self, real: str) -> tuple[bytes, _Meta] | None:
        """The content of ``real`` and what its response says about it, if it is kept and unchanged;
        else None."""
        entry = self._entries.get(real)
        if entry is None:
            return None
        try:
            info = os.stat(real, follow_symlinks=False)
        except OSError:
            info = None
        if info is None or _identity(info) != entry[0]:
            # Changed or gone: the caller opens it as usual. pop, not del: without sendfile (TLS) pool
            # threads serve files, and two may find the same stale entry.
            if self._entries.pop(real, None) is entry:
                self._bytes -= len(entry[1])
            return None
        return entry[1], entry[2]

    def read(self, real: str, file: BinaryIO, info: os.stat_result, meta: _Meta) -> bytes | None:
        """The content of an open regular file, kept for later if it is small and settled; None when it
        is not to be kept (the caller sends it from the file)."""
        size = info.st_size
        if size > self.max_file or time.time() - max(info.st_ctime, info.st_mtime) < SETTLED:
            return None
        fd = file.fileno()
        body = os.pread(fd, size + 1, 0)
        identity = _identity(info)
        if len(body) != size or _identity(os.fstat(fd)) != identity:
            return None  # changed while read
        if self._bytes + size > self.max_bytes:
            self._entries.clear()
            self._bytes = 0
        self._entries[real] = (identity, body, meta)
        self._bytes += size
        return body


def _mime_table() -> mimetypes.MimeTypes:
    table = (
        mimetypes.MimeTypes()
    )  # built-in defaults only (the instance does not read system files)
    table.encodings_map = {}  # "a.tar.gz" is a gzip file to us, not a tar with Content-Encoding
    table.suffix_map = {}
    for ext, mime in _EXTRA_TYPES.items():
        table.add_type(mime, ext)
    return table


def safe_segments(path: str) -> list[str] | None:
    """The decoded segments of an (encoded) URL path, or None if the path must not be served."""
    segments = []
    for raw in path.split("/"):
        segment = os.fsdecode(
            unquote_to_bytes(raw)
        )  # decode once: "%252e" stays "%2e", a plain name
        if segment in ("", "."):
            continue
        if segment == ".." or any(char in segment for char in "/\\\0"):
            return None
        if segment.startswith(".") and segment != ".well-known":
            return None
        segments.append(segment)
    return segments


class StaticHandler:
    """Serve files under ``root`` for request paths under ``prefix`` (``""`` = the whole URL space)."""

    # The loop thread may run it (``Runner.on_loop``): it answers from the file system and page cache
    # (like nginx without aio), sends the body with sendfile, and leaves what the socket does not take
    # to the loop, so it never waits for the client.
    runs_on_loop = True

    def __init__(self, root: str, *, prefix: str = "") -> None:
        self.root = os.path.realpath(root)
        self.prefix = prefix.rstrip("/")
        self.types = _mime_table()
        # realpath() costs an lstat per path component. A path found inside the root is remembered for
        # REAL_PATH_TTL seconds (nginx's open_file_cache_valid plays the same role): a symlink changed
        # meanwhile is seen that much later. Only paths inside the root are kept, so a cached answer can
        # never lead outside; the file is still opened and checked (O_NOFOLLOW, regular) every time.
        self._real: dict[str, tuple[float, str]] = {}
        # URL path -> real path of a regular file found for it, for the same REAL_PATH_TTL: the next
        # request for it costs no path checks and no stat (the open and fstat still check the file).
        self._files: dict[str, tuple[float, str]] = {}
        self._mime: dict[str, str] = {}  # Content-Type by file extension
        self.small = SmallFiles()

    def __call__(self, exchange: Exchange) -> None:
        try:
            self._respond(exchange)
        except OSError as exc:  # the client went away (EPIPE, ECONNRESET, send timeout)
            log.debug("static response to %s aborted: %r", exchange.request.target, exc)
            exchange.abort()

    def _respond(self, exchange: Exchange) -> None:
        request = exchange.request
        if request.method not in ("GET", "HEAD"):
            _reply(exchange, 405, [("Allow", _ALLOWED_METHODS)])
            return
        path, query, _ = split_target(request.target)
        found = self.locate(path)
        if found == 301:
            location = self._slash_location(path) + (f"?{query}" if query else "")
            _reply(exchange, 301, [("Location", location)])
        elif isinstance(found, int):
            _reply(exchange, found)
        else:
            self._serve(exchange, found)

    def locate(self, path: str) -> str | int:
        """Real path of the file for URL ``path`` (percent-encoded), or a status: 404, 403 or 301."""
        now = time.monotonic()
        known = self._files.get(path)
        if known is not None and known[0] > now:
            return known[1]
        if not path.startswith("/") or (
            path != self.prefix and not path.startswith(self.prefix + "/")
        ):
            return 404
        rest = path[len(self.prefix) :]
        segments = safe_segments(rest)
        if segments is None:
            return 404
        candidate = self._inside(os.path.join(self.root, *segments))
        if candidate is None:
            return 404
        try:
            is_dir = stat.S_ISDIR(os.stat(candidate).st_mode)
        except PermissionError:
            return 403
        except OSError:  # missing, a file used as a directory, name too long, symlink loop
            return 404
        if not is_dir:
            if rest.endswith("/"):  # "file.txt/" names no directory
                return 404
            remember(self._files, path, (now + REAL_PATH_TTL, candidate), _CACHE_MAX)
            return candidate
        if not rest.endswith("/"):
            return 301
        index = self._inside(os.path.join(candidate, "index.html"))
        return index if index is not None else 404

    def _inside(self, path: str) -> str | None:
        """``realpath(path)`` if it lies under the root (symlinks resolved), else None."""
        now = time.monotonic()
        cached = self._real.get(path)
        if cached is not None and cached[0] > now:
            return cached[1]
        real = os.path.realpath(path)
        if real == self.root or real.startswith(self.root.rstrip(os.sep) + os.sep):
            remember(self._real, path, (now + REAL_PATH_TTL, real), _CACHE_MAX)
            return real
        return None

    def _slash_location(self, path: str) -> str:
        # Rebuilt from the non-empty segments: "//evil.example" must not become a scheme-relative URL.
        return "/" + "".join(segment + "/" for segment in path.split("/") if segment)

    def _serve(self, exchange: Exchange, real: str) -> None:
        kept = self.small.get(real)
        if kept is not None:
            self._send(exchange, *kept)
            return
        try:
            file, info = _open_regular(real)
        except PermissionError:
            _reply(exchange, 403)
            return
        except OSError:
            _reply(exchange, 404)
            return
        with file:
            meta = self._meta(real, info)
            body = self.small.read(real, file, info, meta)
            self._send(exchange, file if body is None else body, meta)

    def _meta(self, real: str, info: os.stat_result) -> _Meta:
        size = info.st_size
        mtime = int(info.st_mtime)
        etag = f'"{info.st_mtime_ns:x}-{size:x}"'
        validators = [("ETag", etag), ("Last-Modified", _last_modified(mtime))]
        fields = [
            ("Content-Type", self.content_type(real)),
            *validators,
            ("Accept-Ranges", "bytes"),
        ]
        return _Meta(
            etag, mtime, size, validators, fields, [*fields, ("Content-Length", str(size))]
        )

    def _send(self, exchange: Exchange, body: BinaryIO | bytes, meta: _Meta) -> None:
        """Answer 304/412/416/206/200 for a regular file, open or in memory (``SmallFiles``)."""
        request = exchange.request
        wanted = None
        for name, _ in request.headers:
            if name in _CONDITIONAL:  # the usual request has none: no need to evaluate any
                precondition = check_preconditions(request, meta.etag, meta.mtime)
                if precondition == 304:
                    exchange.start_response(304, "Not Modified", meta.validators)
                    exchange.finish(b"", True)
                    return
                if precondition == 412:
                    _reply(exchange, 412)
                    return
                wanted = select_range(request, meta.etag, meta.mtime, meta.size)
                break
        size = meta.size
        if wanted is None:
            offset, count = 0, size
            exchange.start_response(200, "OK", meta.whole)
        elif wanted == UNSATISFIABLE:
            _reply(exchange, 416, [("Content-Range", f"bytes */{size}")])
            return
        else:
            start, end = wanted
            offset, count = start, end - start + 1
            headers = [*meta.fields, ("Content-Range", f"bytes {start}-{end}/{size}"),
                       ("Content-Length", str(count))]  # fmt: skip
            exchange.start_response(206, "Partial Content", headers)
        # hold (Exchange.finish): no more code of ours needs the response out first
        if request.method != "GET" or not count:
            exchange.finish(b"", True)
        elif type(body) is bytes:  # head and body in one send
            exchange.finish(body if count == size else body[offset : offset + count], True)
        elif _send_body(exchange, body, offset, count):
            exchange.finish()

    def content_type(self, path: str) -> str:
        """MIME type for ``path``; text types are declared UTF-8."""
        ext = os.path.splitext(path)[1]
        found = self._mime.get(ext)
        if found is not None:
            return found
        mime = self.types.guess_type(path, strict=False)[0] or "application/octet-stream"
        found = f"{mime}; charset=utf-8" if mime.startswith("text/") else mime
        if len(self._mime) < _CACHE_MAX:
            self._mime[ext] = found
        return found


def _open_regular(path: str) -> tuple[BinaryIO, os.stat_result]:
    """Open a regular file for reading; the file and its fstat. O_NONBLOCK so a FIFO planted in the
    root cannot hang the thread; O_NOFOLLOW so the last component cannot be swapped for a symlink after
    ``realpath``. Unbuffered: the body goes out with sendfile, or in blocks of our own size."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise IsADirectoryError(path)  # directories, devices, FIFOs, sockets: 404
        return os.fdopen(fd, "rb", buffering=0), info
    except BaseException:
        os.close(fd)
        raise


def _send_body(exchange: Exchange, file: BinaryIO, offset: int, count: int) -> bool:
    """Send ``count`` bytes from ``offset``; False (connection aborted) if the client or the file failed."""
    try:
        if exchange.can_sendfile:
            exchange.sendfile(file, offset, count)
        else:
            copy_file(file, offset, count, exchange.write)
    except LocalProtocolError:  # the file shrank under us: the promised length cannot be kept
        log.warning("file %s shrank while being sent", getattr(file, "name", "?"))
        exchange.abort()
        return False
    except OSError as exc:  # client went away (EPIPE, ECONNRESET, send timeout) or a read error
        log.debug("static response aborted: %r", exc)
        exchange.abort()
        return False
    return True


def _reply(exchange: Exchange, status: int, headers: list[tuple[str, str]] | None = None) -> None:
    """A short plain-text response for errors and redirects."""
    reason = REASONS[status]
    body = f"{status} {reason}\n".encode()
    exchange.start_response(
        status,
        reason,
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            *(headers or []),
        ],
    )
    if exchange.request.method != "HEAD":
        exchange.write(body)
    exchange.finish()


def _etag_matches(header: str, etag: str, *, weak: bool) -> bool:
    """Does the If-Match/If-None-Match list ``header`` match our (strong) ``etag``? (RFC 9110 §8.8.3.2)"""
    if header.strip() == "*":
        return True
    for match in _ETAG.finditer(header):
        is_weak, opaque = match.group(1), f'"{match.group(2)}"'
        if opaque == etag and (weak or not is_weak):
            return True
    return False


def _http_date(value: str | None) -> int | None:
    """Seconds since the epoch for an HTTP-date, or None when absent or invalid (then ignored)."""
    return None if value is None else parse_http_date(value)


def check_preconditions(request: Request, etag: str, mtime: int) -> int | None:
    """RFC 9110 §13.2.2 evaluation order: None to proceed, 412, or 304 (GET/HEAD)."""
    if_match = request.get("if-match")
    if if_match is not None:
        if not _etag_matches(if_match, etag, weak=False):  # §13.1.1: strong comparison
            return 412
    else:
        since = _http_date(request.get("if-unmodified-since"))
        if since is not None and mtime > since:
            return 412
    if_none_match = request.get("if-none-match")
    if if_none_match is not None:  # §13.1.2: weak comparison; when present, IMS is ignored
        return 304 if _etag_matches(if_none_match, etag, weak=True) else None
    since = _http_date(request.get("if-modified-since"))
    if since is not None and mtime <= since:
        return 304
    return None


def select_range(
    request: Request, etag: str, mtime: int, size: int
) -> tuple[int, int] | str | None:
    """The single byte range to send as (first, last), ``UNSATISFIABLE``, or None for the whole file."""
    value = request.get("range")
    if value is None or request.method != "GET":  # §14.2: range handling is defined for GET only
        return None
    if_range = request.get("if-range")
    if if_range is not None and not _if_range_holds(if_range, etag, mtime):
        return None
    match = _RANGE.fullmatch(value)
    if match is None:  # other unit, several ranges, or malformed: ignore (§14.2 allows it)
        return None
    first, last = match.groups()
    if not first:
        if not last:
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            return UNSATISFIABLE  # §14.1.3: a zero-length suffix or an empty representation
        return max(size - suffix, 0), size - 1
    start = int(first)
    if last and int(last) < start:
        return None  # invalid range-spec: the header is ignored (§14.1.1)
    if start >= size:
        return UNSATISFIABLE
    end = min(int(last), size - 1) if last else size - 1
    return start, end


def _if_range_holds(value: str, etag: str, mtime: int) -> bool:
    """§13.1.5: an entity-tag must match strongly; a date must equal Last-Modified exactly."""
    value = value.strip()
    if value.startswith(('"', "W/")):
        return value == etag
    return _http_date(value) == mtime
