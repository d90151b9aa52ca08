"""Static file handler over a FakeExchange: path safety, index/redirects, MIME, validators, ranges.

Every test runs twice: with files opened per request, and with small files kept in memory
(``SmallFiles``, ``SETTLED`` at 0 so the fixture's fresh files may be kept, each request made twice on one
handler and the second one checked): the two ways of answering must not differ."""

from __future__ import annotations

import os
from email.utils import formatdate

import pytest

from tests.fakes import FakeExchange, make_request
from webcluster.worker.handlers import static
from webcluster.worker.handlers.dispatch import default_root
from webcluster.worker.handlers.static import StaticHandler

pytestmark = pytest.mark.timeout(10)

DATA = bytes(range(256)) * 4  # 1000+ bytes with distinct positions
SECRET = b"top secret outside the root"


@pytest.fixture
def site(tmp_path):
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    for directory in (
        root / "sub",
        root / "emptydir",
        root / ".well-known",
        root / ".git",
        outside,
    ):
        directory.mkdir(parents=True)
    (root / "index.html").write_text("<h1>home</h1>")
    (root / "a.txt").write_text("hello world\n")
    (root / "data.bin").write_bytes(DATA)
    (root / "big.bin").write_bytes(os.urandom(200_000))
    (root / "style.css").write_text("body{}")
    (root / "app.js").write_text("1")
    (root / "image.png").write_bytes(b"\x89PNG")
    (root / "archive.tar.gz").write_bytes(b"\x1f\x8b")
    (root / "unknown.xyzzy").write_bytes(b"?")
    (root / "empty.txt").write_bytes(b"")
    (root / "sub" / "index.html").write_text("<h1>sub</h1>")
    (root / "sub" / "page.txt").write_text("sub page")
    (root / ".env").write_text("PASSWORD=x")
    (root / ".git" / "config").write_text("[core]")
    (root / ".well-known" / "security.txt").write_text("Contact: me")
    (outside / "secret.txt").write_bytes(SECRET)
    os.symlink(outside / "secret.txt", root / "link-out")
    os.symlink(outside, root / "link-outdir")
    os.symlink(root / "a.txt", root / "link-in")
    os.mkfifo(root / "fifo")
    return root


_KEPT = {"on": False}  # set per test by the file_source fixture


@pytest.fixture(autouse=True, params=["opened", "kept"])
def file_source(request, monkeypatch):
    """Run each test with files opened per request, and again with small files kept in memory."""
    if request.param == "kept":
        monkeypatch.setattr(static, "SETTLED", 0.0)
    monkeypatch.setitem(_KEPT, "on", request.param == "kept")
    return request.param


def get(root, target, headers=None, *, method="GET", prefix="", **kw) -> FakeExchange:
    headers = [("host", "localhost"), *(headers or [])]
    handler = StaticHandler(str(root), prefix=prefix)
    for _ in range(2 if _KEPT["on"] else 1):  # the first request keeps the file, the second uses it
        exchange = FakeExchange(make_request(method, target, headers), **kw)
        handler(exchange)
    assert exchange.finished or exchange.aborted
    return exchange


def test_a_response_made_whole_in_memory_may_be_held(site, file_source):
    """``finish(hold=True)`` (the loop may send it with the others of its pass) for what goes out in
    one send from memory: a kept small file, a 304. A file sent with sendfile goes out at once."""
    exchange = get(site, "/a.txt")
    assert exchange.status == 200 and exchange.held is (file_source == "kept")
    etag = exchange.header("etag")
    assert get(site, "/a.txt", [("if-none-match", etag)]).held


# -- path safety ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "/../outside/secret.txt",
        "/sub/../../outside/secret.txt",
        "/%2e%2e/outside/secret.txt",
        "/%2E%2E/outside/secret.txt",
        "/.%2e/outside/secret.txt",
        "/sub/..%2f..%2foutside%2fsecret.txt",
        "/..%2foutside/secret.txt",
        "/%2fetc/passwd",
        "/sub%2fpage.txt",  # an encoded slash inside a segment is not a separator
        "/a.txt%00",
        "/a.txt%00.png",
        "/sub\\..\\a.txt",
        "/sub%5c..%5ca.txt",
        "/link-out",
        "/link-outdir/secret.txt",
        "//etc/passwd",  # "absolute" path: still looked up under the root
        "/etc/passwd",
        "/sub/../a.txt",  # ".." is refused even when it would stay inside
        "/.env",
        "/.git/config",
        "/%2eenv",
        "/fifo",  # not a regular file (and must not block)
        "/nope.txt",
        "/a.txt/",  # a file used as a directory
        "*",
    ],
)
def test_unsafe_or_missing_paths_are_404(site, target):
    exchange = get(site, target)
    assert exchange.status == 404
    assert SECRET not in exchange.data and exchange.sendfile_calls == []


@pytest.mark.parametrize(
    ("target", "body"),
    [
        ("/a.txt", b"hello world\n"),
        ("/%61.txt", b"hello world\n"),
        ("/./a.txt", b"hello world\n"),
        ("//a.txt", b"hello world\n"),
        ("/link-in", b"hello world\n"),  # a symlink that stays inside the root
        ("/.well-known/security.txt", b"Contact: me"),
        ("/a.txt?x=../../etc/passwd", b"hello world\n"),
        ("http://localhost/a.txt", b"hello world\n"),
    ],
)
def test_safe_paths_are_served(site, target, body):
    exchange = get(site, target)
    assert (exchange.status, exchange.data) == (200, body)


def test_unreadable_file_is_403(site, monkeypatch):
    real_open = os.open

    def deny(path, flags, *args):
        if str(path).endswith("a.txt"):
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", deny)
    assert get(site, "/a.txt").status == 403
    assert get(site, "/style.css").status == 200


def test_a_remembered_file_is_still_opened_and_checked_each_time(site):
    handler = StaticHandler(str(site))

    def fetch(target):
        exchange = FakeExchange(make_request("GET", target, [("host", "localhost")]))
        handler(exchange)
        return exchange

    assert fetch("/sub/page.txt").data == b"sub page"
    (site / "sub" / "page.txt").write_text("changed")
    assert fetch("/sub/page.txt").data == b"changed"  # the path is remembered, the file is not
    (site / "sub" / "page.txt").unlink()
    assert fetch("/sub/page.txt").status == 404
    os.symlink(site.parent / "outside" / "secret.txt", site / "sub" / "page.txt")
    assert fetch("/sub/page.txt").status == 404  # O_NOFOLLOW: never a way out of the root


# -- small files kept in memory -----------------------------------------------------------------------


def _opens(monkeypatch) -> list[str]:
    """The paths the handler opens from now on."""
    opened: list[str] = []
    real_open = static._open_regular

    def counting(path):
        opened.append(path)
        return real_open(path)

    monkeypatch.setattr(static, "_open_regular", counting)
    return opened


def _fetch(handler, target, headers=()):
    exchange = FakeExchange(make_request("GET", target, [("host", "localhost"), *headers]))
    handler(exchange)
    return exchange


def test_a_small_settled_file_is_kept_and_checked_by_lstat_on_every_request(site, monkeypatch):
    monkeypatch.setattr(static, "SETTLED", 0.0)
    handler = StaticHandler(str(site))
    opened = _opens(monkeypatch)
    first, second = _fetch(handler, "/sub/page.txt"), _fetch(handler, "/sub/page.txt")
    assert first.data == second.data == b"sub page" and first.headers == second.headers
    assert len(opened) == 1 and first.sendfile_calls == second.sendfile_calls == []
    page = site / "sub" / "page.txt"
    page.write_text("new page")  # same size; a distinct mtime (same-tick writes: see the next test)
    os.utime(page, ns=(1_000_000_000, 1_000_000_000))
    assert _fetch(handler, "/sub/page.txt").data == b"new page" and len(opened) == 2
    page.unlink()
    assert _fetch(handler, "/sub/page.txt").status == 404
    os.symlink(site.parent / "outside" / "secret.txt", page)
    assert _fetch(handler, "/sub/page.txt").status == 404  # lstat sees a symlink: O_NOFOLLOW again


def test_a_file_changed_lately_is_not_kept(site, monkeypatch):
    # The racily-clean rule: two writes in one clock tick can leave the same ctime and mtime, so a file
    # changed less than SETTLED seconds ago is read from disk every time.
    monkeypatch.setattr(static, "SETTLED", 3600.0)
    handler = StaticHandler(str(site))
    opened = _opens(monkeypatch)
    page = site / "sub" / "page.txt"
    assert _fetch(handler, "/sub/page.txt").data == b"sub page"
    page.write_text("SUB PAGE")
    assert _fetch(handler, "/sub/page.txt").data == b"SUB PAGE" and len(opened) == 2


def test_large_files_are_sent_from_the_file(site, monkeypatch):
    monkeypatch.setattr(static, "SETTLED", 0.0)
    handler = StaticHandler(str(site))
    _fetch(handler, "/big.bin")
    assert _fetch(handler, "/big.bin").sendfile_calls == [(0, 200_000)]


def test_kept_files_are_bounded_in_total(tmp_path, monkeypatch):
    monkeypatch.setattr(static, "SETTLED", 0.0)
    small = static.SmallFiles(max_file=100, max_bytes=250)
    for name in "abcd":
        (tmp_path / name).write_bytes(name.encode() * 100)
    for name in "abcd":
        path = str(tmp_path / name)
        with open(path, "rb") as f:
            assert small.read(path, f, os.fstat(f.fileno()), None) == name.encode() * 100
        assert small._bytes <= 250 and small.get(path) is not None
    assert small.get(str(tmp_path / "a")) is None  # emptied when the next one did not fit
    (tmp_path / "e").write_bytes(b"e" * 101)
    with open(tmp_path / "e", "rb") as f:
        assert small.read(str(tmp_path / "e"), f, os.fstat(f.fileno()), None) is None  # too big


def test_a_file_that_changes_while_read_is_not_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(static, "SETTLED", 0.0)
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10)
    small = static.SmallFiles()
    with open(path, "rb") as f:
        info = os.fstat(f.fileno())
        path.write_bytes(b"y" * 11)  # grew between the fstat and the read
        assert small.read(str(path), f, info, None) is None
    assert small.get(str(path)) is None


# -- directories ----------------------------------------------------------------------------------------


def test_directory_index(site):
    exchange = get(site, "/")
    assert exchange.status == 200 and exchange.data == b"<h1>home</h1>"
    assert exchange.header("content-type") == "text/html; charset=utf-8"
    assert get(site, "/sub/").data == b"<h1>sub</h1>"


@pytest.mark.parametrize(
    ("target", "location"),
    [("/sub", "/sub/"), ("/sub?x=1", "/sub/?x=1"), ("//sub", "/sub/"), ("/emptydir", "/emptydir/")],
)
def test_directory_without_slash_redirects(site, target, location):
    exchange = get(site, target)
    assert exchange.status == 301 and exchange.header("location") == location


def test_no_directory_listing(site):
    assert get(site, "/emptydir/").status == 404


# -- MIME types -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "mime"),
    [
        ("a.txt", "text/plain; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("app.js", "text/javascript; charset=utf-8"),
        ("index.html", "text/html; charset=utf-8"),
        ("image.png", "image/png"),
        ("archive.tar.gz", "application/gzip"),
        ("unknown.xyzzy", "application/octet-stream"),
    ],
)
def test_mime_types(site, name, mime):
    exchange = get(site, f"/{name}")
    assert exchange.header("content-type") == mime
    assert exchange.header("content-encoding") is None


# -- validators and conditional requests ----------------------------------------------------------------


def validators(site):
    exchange = get(site, "/a.txt")
    return exchange.header("etag"), exchange.header("last-modified")


def test_validators_are_sent(site):
    info = os.stat(site / "a.txt")
    exchange = get(site, "/a.txt")
    assert exchange.header("etag") == f'"{info.st_mtime_ns:x}-{info.st_size:x}"'
    assert exchange.header("last-modified") == formatdate(info.st_mtime, usegmt=True)
    assert exchange.header("accept-ranges") == "bytes"
    assert exchange.header("content-length") == "12"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        (lambda etag, lm: [("if-none-match", etag)], 304),
        (lambda etag, lm: [("if-none-match", "W/" + etag)], 304),  # weak comparison
        (lambda etag, lm: [("if-none-match", f'"other", {etag}')], 304),
        (lambda etag, lm: [("if-none-match", "*")], 304),
        (lambda etag, lm: [("if-none-match", '"other"')], 200),
        (lambda etag, lm: [("if-modified-since", lm)], 304),
        (lambda etag, lm: [("if-modified-since", "Sat, 01 Jan 2000 00:00:00 GMT")], 200),
        (lambda etag, lm: [("if-modified-since", "not a date")], 200),
        # If-None-Match takes precedence over If-Modified-Since (RFC 9110 §13.2.2)
        (lambda etag, lm: [("if-none-match", '"other"'), ("if-modified-since", lm)], 200),
        (
            lambda etag, lm: [
                ("if-none-match", etag),
                ("if-modified-since", "Sat, 01 Jan 2000 00:00:00 GMT"),
            ],
            304,
        ),
        (lambda etag, lm: [("if-match", etag)], 200),
        (lambda etag, lm: [("if-match", '"other"')], 412),
        (lambda etag, lm: [("if-match", "W/" + etag)], 412),  # strong comparison
        (lambda etag, lm: [("if-unmodified-since", "Sat, 01 Jan 2000 00:00:00 GMT")], 412),
        (lambda etag, lm: [("if-unmodified-since", lm)], 200),
    ],
)
def test_conditional_requests(site, headers, status):
    etag, last_modified = validators(site)
    exchange = get(site, "/a.txt", headers(etag, last_modified))
    assert exchange.status == status
    if status == 304:
        assert exchange.data == b"" and exchange.sendfile_calls == []
        assert exchange.header("etag") == etag
        assert exchange.header("content-length") is None


def test_head_if_none_match_is_304(site):
    etag, _ = validators(site)
    assert get(site, "/a.txt", [("if-none-match", etag)], method="HEAD").status == 304


# -- ranges ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "first", "last"),
    [
        ("bytes=0-9", 0, 9),
        ("bytes=1000-", 1000, 1023),
        ("bytes=-5", 1019, 1023),
        ("bytes=1020-5000", 1020, 1023),
        ("bytes=-5000", 0, 1023),
        ("Bytes = 3 - 3", 3, 3),
    ],
)
def test_single_range_is_206(site, spec, first, last):
    exchange = get(site, "/data.bin", [("range", spec)])
    assert exchange.status == 206
    assert exchange.header("content-range") == f"bytes {first}-{last}/{len(DATA)}"
    assert exchange.header("content-length") == str(last - first + 1)
    assert exchange.data == DATA[first : last + 1]


@pytest.mark.parametrize("spec", ["bytes=1024-", "bytes=5000-6000", "bytes=-0"])
def test_unsatisfiable_range_is_416(site, spec):
    exchange = get(site, "/data.bin", [("range", spec)])
    assert exchange.status == 416
    assert exchange.header("content-range") == f"bytes */{len(DATA)}"


def test_any_range_of_an_empty_file_is_416(site):
    assert get(site, "/empty.txt", [("range", "bytes=-5")]).status == 416


@pytest.mark.parametrize(
    "spec",
    [
        "bytes=0-1,5-6",  # several ranges: ignored, whole file (no multipart)
        "bytes=9-2",  # invalid range-spec
        "items=0-1",
        "bytes=",
        "bytes=-",
        "bytes=abc",
        "bytes=" + "9" * 5000 + "-",  # no unbounded int() work
    ],
)
def test_ignored_ranges_send_the_whole_file(site, spec):
    exchange = get(site, "/data.bin", [("range", spec)])
    assert exchange.status == 200 and exchange.data == DATA


def test_if_range(site):
    exchange = get(site, "/data.bin")
    etag, last_modified = exchange.header("etag"), exchange.header("last-modified")
    assert get(site, "/data.bin", [("range", "bytes=0-0"), ("if-range", etag)]).status == 206
    assert (
        get(site, "/data.bin", [("range", "bytes=0-0"), ("if-range", last_modified)]).status == 206
    )
    stale = [("range", "bytes=0-0"), ("if-range", '"stale"')]
    assert get(site, "/data.bin", stale).status == 200
    weak = [("range", "bytes=0-0"), ("if-range", "W/" + etag)]
    assert get(site, "/data.bin", weak).status == 200


# -- methods, HEAD, body transport ----------------------------------------------------------------------


def test_head_sends_headers_only(site):
    exchange = get(site, "/data.bin", [("range", "bytes=0-9")], method="HEAD")
    assert exchange.status == 200  # Range is defined for GET only (RFC 9110 §14.2)
    assert exchange.header("content-length") == str(len(DATA))
    assert exchange.data == b"" and exchange.sendfile_calls == []


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"])
def test_other_methods_are_405(site, method):
    exchange = get(site, "/a.txt", method=method)
    assert exchange.status == 405 and exchange.header("allow") == "GET, HEAD"


def test_body_uses_sendfile_when_possible(site):
    exchange = get(site, "/big.bin", [("range", "bytes=10-19")])  # too big to be kept in memory
    assert exchange.sendfile_calls == [(10, 10)]


def test_body_without_sendfile_is_written_in_blocks(site):
    big = (site / "big.bin").read_bytes()
    exchange = get(site, "/big.bin", can_sendfile=False)
    assert exchange.sendfile_calls == [] and exchange.data == big
    exchange = get(site, "/big.bin", [("range", "bytes=70000-")], can_sendfile=False)
    assert exchange.data == big[70000:]


def test_client_gone_aborts(site):
    exchange = get(site, "/big.bin", can_sendfile=False, fail_after=100_000)
    assert exchange.aborted and not exchange.finished


@pytest.mark.parametrize("target", ["/a.txt", "/nope", "/sub"])
def test_client_gone_at_finish_aborts(site, target):
    class GoneAtFinish(FakeExchange):
        def finish(self, data=b"", hold=False):
            raise ConnectionResetError("reset")

    exchange = GoneAtFinish(make_request("GET", target))
    StaticHandler(str(site))(exchange)
    assert exchange.aborted


# -- prefix mounts and the welcome page -----------------------------------------------------------------


def test_prefix(site):
    assert get(site, "/static/a.txt", prefix="/static").data == b"hello world\n"
    assert get(site, "/static/a.txt", prefix="/static/").data == b"hello world\n"
    exchange = get(site, "/static", prefix="/static")
    assert exchange.status == 301 and exchange.header("location") == "/static/"
    assert get(site, "/static/", prefix="/static").data == b"<h1>home</h1>"
    assert get(site, "/a.txt", prefix="/static").status == 404
    assert get(site, "/staticx/a.txt", prefix="/static").status == 404


def test_welcome_page():
    exchange = get(default_root(), "/")
    assert exchange.status == 200 and b"webcluster is running" in exchange.data
    assert get(default_root(), "/style.css").header("content-type") == "text/css; charset=utf-8"
