"""Behind a reverse proxy: request smuggling through a real nginx, and whose proxy headers are believed.

nginx (Debian package) runs as a subprocess with its own prefix, config and temp paths in a temp dir, in
front of webcluster (``run_supervisor``, two workers, the recording app ``tests/apps/hostile.py``). It uses
the setup where desync attacks bite: HTTP/1.1 to the upstream with pooled keep-alive connections, under
``/b/`` with request buffering (nginx de-chunks bodies) and under ``/s/`` without (bodies are streamed
upstream as they come, chunked stays chunked).

For every smuggling payload the client sends one request with a second one hidden in it (its "smuggled"
id), then a sentinel request with ``Connection: close`` on the same connection, then two follow-up
requests on fresh connections (which may reuse the poisoned upstream connection). The app logs every
request it runs. Each case must show: the hidden request never ran, the outer request ran at most once
(exactly once for the valid controls), and every response carries the id of the request it answers.
The same payloads are also sent straight to webcluster.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import free_port, poll

NGINX = shutil.which("nginx", path=os.environ.get("PATH", "") + ":/usr/sbin:/usr/local/sbin")
pytestmark = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (Debian package; .ci/run installs it)"
)

# proxy_set_header is inherited only by a level that sets none itself: every location repeats them.
COMMON = (
    'proxy_pass http://webcluster; proxy_set_header Connection ""; proxy_set_header Host $host; '
    "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;"
)
NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
events {{ worker_connections 256; }}
http {{
    # One line per request nginx parsed: which request it was, and whether it went upstream.
    log_format ids '$http_x_req_id $status "$upstream_addr"';
    access_log {tmp}/access.log ids;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream webcluster {{
        server 127.0.0.1:{upstream};
        keepalive 4;
    }}
    server {{
        listen 127.0.0.1:{port};
        proxy_http_version 1.1;
        location /b/ {{ {common} }}
        location /s/ {{ {common} proxy_request_buffering off; }}
        location /tls/ {{
            {common}
            proxy_set_header X-Forwarded-Proto https;  # as if nginx terminated TLS
        }}
        location /std/ {{
            proxy_pass http://webcluster;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header Forwarded "for=$remote_addr;proto=https";
        }}
    }}
}}
"""


class Nginx:
    """nginx in the foreground, one process, everything under ``tmp``; killed by pid at teardown."""

    def __init__(self, tmp: Path, upstream: int) -> None:
        self.tmp = tmp
        self.port = free_port()
        conf = tmp / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(tmp=tmp, upstream=upstream, port=self.port, common=COMMON)
        )
        self.proc = subprocess.Popen(
            [NGINX, "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "error.log")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"nginx exited: {(tmp / 'error.log').read_text()}")
            socket.create_connection(("127.0.0.1", self.port), 1).close()
            return True

        poll("nginx to accept", up, 10)

    def forwarded(self) -> list[str]:
        """Request ids nginx parsed and passed upstream, from its access log."""
        lines = (self.tmp / "access.log").read_text().splitlines()
        return [line.split()[0] for line in lines if not line.endswith('"-"')]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


@pytest.fixture
def backend(run_supervisor, tmp_path):
    """webcluster with the recording app; ``.log`` is the file it appends one JSON line per request to."""
    log = tmp_path / "requests.jsonl"
    sup = run_supervisor(
        "--app", "tests.apps.hostile:app", "-w", "2", "-t", "4", env={"HOSTILE_LOG": str(log)}
    )
    sup.log = log
    return sup


@pytest.fixture
def nginx(backend, tmp_path):
    tmp = tmp_path / "nginx"
    tmp.mkdir()
    proxy = Nginx(tmp, backend.port)
    yield proxy
    proxy.stop()


# ---- a tiny client ---------------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def record(self) -> dict:
        return json.loads(self.body) if self.status == 200 else {}


def parse_responses(data: bytes) -> list[Response]:
    """Consecutive HTTP/1.1 responses in ``data`` (Content-Length, chunked, or until the end)."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            size = int(headers["content-length"])
            body, data = rest[:size], rest[size:]
        elif headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    _, _, rest = rest.partition(b"\r\n")
                    break
                body, rest = body + rest[:size], rest[size + 2 :]
            data = rest
        else:
            body, data = rest, b""
        out.append(Response(status, headers, body))
    return out


def exchange(port: int, payload: bytes, source: str = "127.0.0.1") -> list[Response]:
    """Send ``payload`` on a new connection and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0)) as s:
        s.sendall(payload)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return parse_responses(b"".join(chunks))


def get(port: int, path: str, rid: str, *headers: str, source: str = "127.0.0.1") -> Response:
    extra = "".join(f"{h}\r\n" for h in headers)
    req = f"GET {path} HTTP/1.1\r\nHost: t\r\nX-Req-Id: {rid}\r\n{extra}Connection: close\r\n\r\n"
    responses = exchange(port, req.encode(), source)
    assert len(responses) == 1, responses
    return responses[0]


def seen(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


# ---- the payloads ----------------------------------------------------------------------------------


def hidden(case: str, prefix: str) -> bytes:
    """The smuggled request: if it ever runs, the app logs ``<case>/smuggled``."""
    return f"GET {prefix}hidden HTTP/1.1\r\nHost: t\r\nX-Req-Id: {case}/smuggled\r\n\r\n".encode()


def outer(case: str, prefix: str, fields: str, body: bytes, eol: str = "\r\n") -> bytes:
    head = f"POST {prefix}outer HTTP/1.1{eol}Host: t{eol}X-Req-Id: {case}/outer{eol}{fields}{eol}"
    return head.encode("latin-1") + body


@dataclass
class Case:
    name: str
    build: object  # (case id, path prefix) -> bytes
    runs: tuple[int, ...] = (0, 1)  # how many times the outer request may run
    extra: int = 0  # further requests the client really sent in the payload (valid pipelining)


def _cases() -> list[Case]:
    cases: list[Case] = []

    def add(name, build, runs=(0, 1), extra=0):
        cases.append(Case(name, build, runs, extra))

    def te_cl(te_lines: str):
        """TE.CL: a chunked body whose one chunk is the hidden request; CL says the body is 4 bytes."""

        def build(c, p):
            smug = hidden(c, p)
            body = b"%x\r\n" % len(smug) + smug + b"\r\n0\r\n\r\n"
            return outer(c, p, f"Content-Length: 4\r\n{te_lines}", body)

        return build

    def cl_te(te_lines: str):
        """CL.TE: CL covers the hidden request; a TE parser ends the body at the 0-chunk before it."""

        def build(c, p):
            body = b"0\r\n\r\n" + hidden(c, p)
            return outer(c, p, f"Content-Length: {len(body)}\r\n{te_lines}", body)

        return build

    for label, te in [
        ("plain", "Transfer-Encoding: chunked\r\n"),
        ("space_before_colon", "Transfer-Encoding : chunked\r\n"),
        ("trailing_space", "Transfer-Encoding: chunked \r\n"),
        ("xchunked", "Transfer-Encoding: xchunked\r\n"),
        ("chunked_identity", "Transfer-Encoding: chunked, identity\r\n"),
        ("identity_chunked", "Transfer-Encoding: identity, chunked\r\n"),
        ("tab", "Transfer-Encoding:\tchunked\r\n"),
        ("duplicate_te", "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n"),
        ("upper", "TRANSFER-ENCODING: CHUNKED\r\n"),
        ("vertical_tab", "Transfer-Encoding:\x0bchunked\r\n"),
        ("obs_fold", "Transfer-Encoding: identity\r\n chunked\r\n"),
        ("name_fold", "Transfer-Encoding\r\n : chunked\r\n"),
    ]:
        add(f"cl_te_{label}", cl_te(te))
        add(f"te_cl_{label}", te_cl(te))

    def cl_then_hidden(fields: str, claimed: int | None = None):
        def build(c, p):
            smug = hidden(c, p)
            return outer(c, p, fields.format(n=len(smug), claimed=claimed), smug)

        return build

    add("cl_duplicate_0_n", cl_then_hidden("Content-Length: 0\r\nContent-Length: {n}\r\n"))
    add("cl_duplicate_n_0", cl_then_hidden("Content-Length: {n}\r\nContent-Length: 0\r\n"))
    add("cl_list", cl_then_hidden("Content-Length: {n}, 0\r\n"))
    add("cl_plus", cl_then_hidden("Content-Length: +{n}\r\n"))
    add(
        "cl_hex",
        lambda c, p: outer(c, p, f"Content-Length: 0x{len(hidden(c, p)):x}\r\n", hidden(c, p)),
    )
    add("cl_leading_space_value", cl_then_hidden("Content-Length:  0{n}\r\n"))
    add("cl_space_before_colon", cl_then_hidden("Content-Length : {n}\r\n"))
    add("cl_underscore", cl_then_hidden("Content-Length: 1_0\r\n"))
    add("cl_negative", cl_then_hidden("Content-Length: -1\r\n"))

    def chunks(raw: bytes):
        """A chunked body ``raw`` (with ``{smug}`` replaced by the hidden request) and nothing else."""

        def build(c, p):
            body = raw.replace(b"{smug}", hidden(c, p)).replace(b"{n}", b"%x" % len(hidden(c, p)))
            return outer(c, p, "Transfer-Encoding: chunked\r\n", body)

        return build

    add("chunk_0x_prefix", chunks(b"0x5\r\nhello\r\n0\r\n\r\n{smug}"))
    add("chunk_size_overflow", chunks(b"10000000000000005\r\nhello\r\n0\r\n\r\n{smug}"))
    add("chunk_size_negative", chunks(b"-5\r\nhello\r\n0\r\n\r\n{smug}"))
    add("chunk_size_space", chunks(b"5 \r\nhello\r\n0\r\n\r\n{smug}"))
    add("chunk_ext_bare_lf", chunks(b"5;a\nhello\r\n0\r\n\r\n{smug}"))
    add("chunk_ext_smuggle", chunks(b"{n};x\r\n{smug}\r\n0\r\n\r\n"), runs=(1,))
    add("chunk_data_too_long", chunks(b"2\r\nhello\r\n0\r\n\r\n{smug}"))
    add("chunk_bare_lf", chunks(b"5\nhello\n0\n\n{smug}"))
    add("chunk_last_no_crlf", chunks(b"0\r\n{smug}"))
    add(
        "bare_lf_head",
        lambda c, p: outer(c, p, "Content-Length: 0\n", hidden(c, p), eol="\n"),
    )
    add(
        "bare_lf_one_line",
        lambda c, p: outer(c, p, "X: y\nContent-Length: 0\r\n", hidden(c, p)),
    )
    add("bare_cr_line", lambda c, p: outer(c, p, "X: y\rContent-Length: 0\r\n", hidden(c, p)))
    add(
        "obs_fold_cl",
        lambda c, p: outer(c, p, f"X: y\r\n Content-Length: {len(hidden(c, p))}\r\n", hidden(c, p)),
    )
    # Controls: valid requests that must run exactly once (and the valid pipelined one, twice).
    add("valid_cl", lambda c, p: outer(c, p, "Content-Length: 5\r\n", b"hello"), runs=(1,))
    add(
        "valid_chunked",
        chunks(b"5;ext=1\r\nhello\r\n0\r\nTrailer-X: 1\r\n\r\n"),
        runs=(1,),
    )
    add(
        "valid_pipelined",
        lambda c, p: outer(c, p, "Content-Length: 0\r\n", b"") + hidden(c, p),
        runs=(1,),
        extra=1,
    )
    return cases


CASES = _cases()


@dataclass
class Verdict:
    statuses: list[int] = field(default_factory=list)
    outer_runs: int = 0


def attack(port: int, log: Path, case: Case, prefix: str, front: Nginx | None = None) -> Verdict:
    """Send one case (+ the sentinel, + two follow-ups) and check what the app saw and who got what.

    Through nginx, a request counts as sent by the client if nginx parsed it as one (its access log):
    the app must never run a request nginx did not see - that would be a smuggled one."""
    cid = f"{prefix.strip('/')}:{case.name}"
    payload = case.build(cid, prefix)
    sentinel = (
        f"GET {prefix}sentinel HTTP/1.1\r\nHost: t\r\nX-Req-Id: {cid}/sentinel\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    responses = exchange(port, payload + sentinel)
    # Whatever an upstream connection might still hold is flushed out by the next requests on it.
    for i in range(2):
        follow = get(port, f"{prefix}follow", f"{cid}/follow{i}")
        assert follow.status == 200, (case.name, follow)
        assert follow.record["id"] == f"{cid}/follow{i}", (case.name, follow)
    ids = [r["id"] for r in seen(log) if r["id"].startswith(cid + "/")]
    outer_runs = ids.count(f"{cid}/outer")
    assert outer_runs in case.runs, (case.name, ids)
    assert ids.count(f"{cid}/sentinel") <= 1, (case.name, ids)
    if front is None:  # webcluster is the only parser: the hidden request runs only if it was real
        assert ids.count(f"{cid}/smuggled") == case.extra, (case.name, ids)
    else:
        parsed = [rid for rid in front.forwarded() if rid.startswith(cid + "/")]
        for rid in set(ids):
            assert ids.count(rid) <= parsed.count(rid), (case.name, "smuggled", rid, ids, parsed)
        if case.extra:
            assert ids.count(f"{cid}/smuggled") == case.extra, (case.name, ids)
    # Every answer on the client's connection is the one for its own request, in order.
    ran_here = [rid for rid in ids if "/follow" not in rid]
    got = [r.record.get("id") for r in responses if r.status == 200]
    assert got == ran_here, (case.name, got, ran_here)
    # A 5xx other than 501/505 (refused codings, versions) would mean a broken or desynced upstream.
    assert not [r for r in responses if r.status in (500, 502, 503, 504)], (case.name, responses)
    return Verdict([r.status for r in responses], outer_runs)


@pytest.mark.timeout(120)
def test_smuggling_payloads_through_nginx(nginx, backend):
    table = []
    for prefix in ("/b/", "/s/"):
        for case in CASES:
            verdict = attack(nginx.port, backend.log, case, prefix, nginx)
            table.append(f"{prefix}{case.name}: {verdict.statuses} ran={verdict.outer_runs}")
    print("\n".join(table))


@pytest.mark.timeout(60)
def test_smuggling_payloads_straight_to_webcluster(backend):
    for case in CASES:
        attack(backend.port, backend.log, case, "/d/")


# ---- proxy headers ---------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_forwarded_headers_from_nginx_on_loopback_are_believed(nginx, backend):
    # The client is 127.0.0.2; nginx (127.0.0.1, in the default --forwarded-allow-ips) says so.
    rec = get(nginx.port, "/tls/who", "xff", source="127.0.0.2").record
    assert (rec["remote_addr"], rec["scheme"], rec["xff"]) == ("127.0.0.2", "https", "127.0.0.2")
    # A client's own X-Forwarded-For is kept by nginx but only as a hop to the left: not believed.
    rec = get(
        nginx.port, "/tls/who", "spoof", "X-Forwarded-For: 6.6.6.6", source="127.0.0.2"
    ).record
    assert rec["xff"] == "6.6.6.6, 127.0.0.2" and rec["remote_addr"] == "127.0.0.2"
    # RFC 7239 Forwarded works the same way.
    rec = get(nginx.port, "/std/who", "fwd", source="127.0.0.2").record
    assert (rec["remote_addr"], rec["scheme"]) == ("127.0.0.2", "https")


@pytest.mark.timeout(60)
def test_forwarded_headers_from_an_untrusted_peer_are_ignored(run_supervisor, tmp_path):
    sup = run_supervisor(
        "--app", "tests.apps.hostile:app", "-w", "1", "--forwarded-allow-ips", "10.9.9.9"
    )
    spoof = (
        "X-Forwarded-For: 6.6.6.6",
        "X-Forwarded-Proto: https",
        "Forwarded: for=7.7.7.7;proto=https",
    )
    rec = get(sup.port, "/who", "direct", *spoof).record
    assert (rec["remote_addr"], rec["scheme"]) == ("127.0.0.1", "http")
    # The same server behind nginx: nginx is not in the list either, so its headers count for nothing.
    tmp = tmp_path / "nginx"
    tmp.mkdir()
    proxy = Nginx(tmp, sup.port)
    try:
        rec = get(proxy.port, "/tls/who", "via-nginx", source="127.0.0.2").record
        assert (rec["remote_addr"], rec["scheme"]) == ("127.0.0.1", "http")
    finally:
        proxy.stop()


@pytest.mark.timeout(60)
def test_default_trusts_loopback_only(backend):
    # Default --forwarded-allow-ips is 127.0.0.1 and ::1: a peer at 127.0.0.2 is not a trusted proxy.
    rec = get(backend.port, "/who", "lo2", "X-Forwarded-For: 6.6.6.6", source="127.0.0.2").record
    assert rec["remote_addr"] == "127.0.0.2"
    rec = get(backend.port, "/who", "lo1", "X-Forwarded-For: 6.6.6.6").record
    assert rec["remote_addr"] == "6.6.6.6"
