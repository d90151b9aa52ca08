"""The framework examples in docs/examples/ under a REAL supervisor: Django (admin login with CSRF, a
multipart upload, StreamingHttpResponse, static files from collectstatic served by ``--static``, also
under ``--root-path``) and Flask (JSON, upload, streaming, a session cookie and a redirect).

Each Django test gets the project's database and collected static files in a temporary directory,
built with the project's own management commands (migrate, collectstatic, createsuperuser).
"""

from __future__ import annotations

import hashlib
import http.cookiejar
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT
from webcluster.worker.version import version

pytest.importorskip("django")
pytest.importorskip("flask")
pytestmark = pytest.mark.timeout(120)

DJANGO_DIR = ROOT / "docs" / "examples" / "django_project"
FLASK_DIR = ROOT / "docs" / "examples" / "flask_app"
ADMIN_USER, ADMIN_PASSWORD = "admin", "s3cret-for-the-test"


@pytest.fixture(scope="module")
def django_site(tmp_path_factory) -> dict[str, str]:
    """Environment of a migrated Django project with a superuser and collected static files."""
    data = tmp_path_factory.mktemp("django")
    env = {
        "EXAMPLE_DB": str(data / "db.sqlite3"),
        "EXAMPLE_STATIC_ROOT": str(data / "static"),
        "DJANGO_SECRET_KEY": "test-" + os.urandom(16).hex(),
    }
    full = {**os.environ, **env, "DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD}
    for command in (
        ["migrate", "--noinput"],
        ["collectstatic", "--noinput"],
        ["createsuperuser", "--noinput", "--username", ADMIN_USER, "--email", "admin@example.com"],
    ):
        subprocess.run(
            [sys.executable, "manage.py", *command, "-v", "0"],
            cwd=DJANGO_DIR,
            env=full,
            check=True,
            timeout=60,
        )
    return env


def _start_django(run_supervisor, site: dict[str, str], *extra: str):
    static = site["EXAMPLE_STATIC_ROOT"]
    app = "mysite.wsgi:application"
    args = ["--chdir", str(DJANGO_DIR), "--app", app, "--procs", "1", "--threads", "4"]
    if "--static" not in extra:
        args += ["--static", f"/static={static}"]
    return run_supervisor(*args, *extra, env=site)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # the test looks at the 302 itself
        return None


class Browser:
    """urllib with a cookie jar, no automatic redirects, and errors returned rather than raised."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect
        )

    def cookie(self, name: str) -> str | None:
        return next((c.value for c in self.jar if c.name == name), None)

    def request(
        self, path: str, data: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(self.base + path, data=data, headers=headers or {})
        try:
            with self.opener.open(req, timeout=15) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as err:
            with err:
                return err.code, dict(err.headers), err.read()


def _csrf_field(html: bytes) -> str:
    match = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert match, "no CSRF token in the form"
    return match.group(1).decode()


def _multipart(fields: dict[str, str], name: str, filename: str, content: bytes):
    boundary = "----webcluster" + os.urandom(8).hex()
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
        for key, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
        + content
        + b"\r\n"
    )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def _timed_lines(port: int, path: str) -> tuple[bytes, list[float], bytes]:
    """GET ``path`` on a raw socket; the head, the arrival time of each body read, and the body."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
        )
        data, arrivals = b"", []
        while chunk := sock.recv(65536):
            data += chunk
            arrivals.append(time.monotonic())
    head, _, body = data.partition(b"\r\n\r\n")
    return head, arrivals, body


def _dechunk(body: bytes) -> bytes:
    out = b""
    while True:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if not size:
            return out
        out, body = out + body[:size], body[size + 2 :]


# --- Django -------------------------------------------------------------------------------------


def test_django_admin_login_with_csrf(run_supervisor, django_site) -> None:
    sup = _start_django(run_supervisor, django_site)
    browser = Browser(sup.url)
    status, _, page = browser.request("/admin/login/?next=/admin/")
    assert status == 200 and browser.cookie("csrftoken")
    token = _csrf_field(page)
    credentials = {"username": ADMIN_USER, "password": ADMIN_PASSWORD, "next": "/admin/"}

    # Without the token Django refuses the POST: the CSRF check sees what the server passed on.
    status, _, _ = browser.request("/admin/login/", urllib.parse.urlencode(credentials).encode())
    assert status == 403

    form = urllib.parse.urlencode({**credentials, "csrfmiddlewaretoken": token}).encode()
    status, headers, _ = browser.request("/admin/login/?next=/admin/", form)
    assert status == 302, "login refused"
    assert headers["Location"] == "/admin/" and browser.cookie("sessionid")
    status, _, page = browser.request("/admin/")
    assert status == 200 and b"Site administration" in page
    assert b"/static/admin/css/base.css" in page


def test_django_file_upload(run_supervisor, django_site) -> None:
    sup = _start_django(run_supervisor, django_site)
    browser = Browser(sup.url)
    status, _, page = browser.request("/upload/")
    assert status == 200
    content = os.urandom(3 * 1024 * 1024 + 17)  # above FILE_UPLOAD_MAX_MEMORY_SIZE: a temp file
    body, headers = _multipart(
        {"csrfmiddlewaretoken": _csrf_field(page), "note": "caf\u00e9"}, "file", "blob.bin", content
    )
    status, _, answer = browser.request("/upload/", body, headers)
    assert status == 200, answer[:500]
    assert json.loads(answer) == {
        "name": "blob.bin",
        "size": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
        "note": "caf\u00e9",
    }


def test_django_streaming_response_is_sent_as_produced(run_supervisor, django_site) -> None:
    sup = _start_django(run_supervisor, django_site)
    head, arrivals, body = _timed_lines(sup.port, "/stream/?n=3&delay=0.6")
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower()
    lines = _dechunk(body).decode().splitlines()
    assert [line.split(" at ")[0] for line in lines] == ["line 0", "line 1", "line 2"]
    # The generator sleeps 0.6 s between lines: a server that buffered the whole response would
    # deliver everything in one burst at the end.
    assert arrivals[-1] - arrivals[0] >= 0.6, arrivals


def test_django_static_files_from_collectstatic(run_supervisor, django_site) -> None:
    sup = _start_django(run_supervisor, django_site)
    css = Path(django_site["EXAMPLE_STATIC_ROOT"], "admin", "css", "base.css").read_bytes()
    status, headers, body = Browser(sup.url).request("/static/admin/css/base.css")
    # DEBUG is off, so Django would answer 404: these bytes come from webcluster's static handler.
    assert status == 200 and body == css
    assert headers["Content-Type"] == "text/css; charset=utf-8" and headers["ETag"]


def test_django_under_root_path_with_static_under_it(run_supervisor, django_site) -> None:
    static = django_site["EXAMPLE_STATIC_ROOT"]
    sup = _start_django(
        run_supervisor, django_site, "--root-path", "/app", "--static", f"/app/static={static}"
    )
    browser = Browser(sup.url)
    status, _, page = browser.request("/app/")
    assert status == 200 and b'href="/app/static/admin/css/base.css"' in page
    status, _, body = browser.request("/app/static/admin/css/base.css")
    assert status == 200 and body == Path(static, "admin", "css", "base.css").read_bytes()
    status, headers, _ = browser.request("/app/admin/")
    assert status == 302 and headers["Location"].startswith("/app/admin/login/")


# --- Flask --------------------------------------------------------------------------------------


def test_flask_app(run_supervisor) -> None:
    """Flask under --root-path /flask, with no static mount: served, told, and versioned."""
    sup = run_supervisor(
        "--chdir", str(FLASK_DIR), "--app", "app:app", "--procs", "1", "--threads", "4",
        "--root-path", "/flask",
    )  # fmt: skip
    assert "listening on" in sup.stdout() and "(1 worker x 4 threads," in sup.stdout()
    sup.wait_for_output(r"\[INFO\] --root-path /flask: .*--static /flask/static=DIR")
    browser = Browser(sup.url)
    status, headers, answer = browser.request("/flask/")
    assert (status, answer) == (200, b"webcluster + Flask\n")
    software = f"webcluster/{version()}"
    assert headers["Server"] == software

    status, _, answer = browser.request(
        "/flask/echo", json.dumps({"a": [1, 2]}).encode(), {"Content-Type": "application/json"}
    )
    assert status == 200
    assert json.loads(answer) == {
        "body": {"a": [1, 2]},
        "script_root": "/flask",
        "server_software": software,
    }

    content = os.urandom(2 * 1024 * 1024)
    body, headers = _multipart({}, "file", "f.bin", content)
    status, _, answer = browser.request("/flask/upload", body, headers)
    assert status == 200
    assert json.loads(answer) == {
        "name": "f.bin",
        "size": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
    }

    head, arrivals, raw = _timed_lines(sup.port, "/flask/stream?n=3&delay=0.6")
    assert b"transfer-encoding: chunked" in head.lower()
    assert _dechunk(raw) == b"line 0 of /stream\nline 1 of /stream\nline 2 of /stream\n"
    assert arrivals[-1] - arrivals[0] >= 0.6, arrivals

    status, headers, _ = browser.request("/flask/login", b"user=ada", {})
    assert status == 302 and headers["Location"] == "/flask/whoami"
    assert json.loads(browser.request("/flask/whoami")[2]) == {"user": "ada"}
    status, _, answer = browser.request("/flask/nope")
    assert status == 404 and b"Not Found" in answer
