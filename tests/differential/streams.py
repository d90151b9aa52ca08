"""Generated request streams aimed at framing: every framing header in every combination, pipelining.

``build(rng)`` draws one stream of 1-3 pipelined requests (sometimes followed by a smuggled-looking
request or garbage) from any object with ``random.Random``'s ``choice``, ``randint`` and ``random``:
a seeded ``random.Random`` (the report command), hypothesis' ``st.randoms()`` (the pytest properties)
or ``FuzzChoices`` over an atheris input. The parts are the ones request smuggling is made of:
``Content-Length`` and ``Transfer-Encoding`` variants (duplicates, lists, signs, hex, OWS, case,
whitespace before the colon, obs-fold, vertical tab, unknown codings), bare CR / LF line ends, chunk
sizes (leading zeros, sign, ``0x``, overflow, huge), chunk extensions, trailers, HTTP versions,
CONNECT / ``Upgrade`` and ``Expect``.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

T = TypeVar("T")

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
METHODS = ["GET", "POST", "POST", "PUT", "OPTIONS", "CONNECT", "HEAD", "PURGE", "FOO"]
TARGETS = ["/", "/a?b=c", "*", "http://h/p", "h:443", "/a#f", "/%2e%2e/x", "/a|b", "/{x}"]
VERSIONS = ["HTTP/1.1"] * 6 + ["HTTP/1.0", "HTTP/1.2", "HTTP/2.0", "http/1.1", "HTTP/1.1 "]
EOLS = [b"\r\n"] * 12 + [b"\n", b"\r", b"\r\r\n", b"\n\r"]
CL_FORMS = [
    "Content-Length: {n}", "Content-Length: {n}", "content-length:{n}", "Content-Length: 0{n}",
    "Content-Length: {n}, {n}", "Content-Length: {n},{m}", "Content-Length: +{n}",
    "Content-Length: -{n}", "Content-Length: 0x{x}", "Content-Length:  {n}  ",
    "Content-Length:\t{n}", "Content-Length : {n}", "Content-Length: {n}.0", "Content-Length: {big}",
    "Content-Length: 1_0", "Content-Length: \x0b{n}", "Content-Length:\r\n {n}",
]  # fmt: skip
TE_FORMS = [
    "Transfer-Encoding: chunked", "Transfer-Encoding: chunked", "Transfer-Encoding: Chunked",
    "TRANSFER-ENCODING: CHUNKED", "Transfer-Encoding: chunked, gzip", "Transfer-Encoding: gzip, chunked",
    "Transfer-Encoding: identity", "Transfer-Encoding: identity, chunked", "Transfer-Encoding: chunked ",
    "Transfer-Encoding:  chunked", "Transfer-Encoding:\tchunked", "Transfer-Encoding: \x0bchunked",
    "Transfer-Encoding: xchunked", "Transfer-Encoding: chunk", "Transfer-Encoding : chunked",
    "Transfer-Encoding: chunked, chunked", "Transfer-Encoding: chunked;q=1", "Transfer-Encoding: ,chunked",
    "Transfer-Encoding:\r\n chunked", "Transfer_Encoding: chunked", "Transfer-Encoding: \"chunked\"",
]  # fmt: skip
OTHER_FORMS = [
    "Connection: close", "Connection: keep-alive", "Connection: Upgrade", "Upgrade: websocket",
    "Expect: 100-continue", "Expect: 100-continue, x", "X-A: b", "X-Fold: a\r\n b", "X-A : b",
    " X-Lead: a", "X-Obs: caf\xe9", "X-Nul: a\x00b", "X-Cr: a\rb", "Host: b", "X-Empty:", ": no-name",
    "X-Long: " + "v" * 200, "Trailer: X-T", "TE: trailers",
]  # fmt: skip
SIZE_FORMS = ["{x}", "{x}", "{X}", "000{x}", "+{x}", "-{x}", "0x{x}", "{x} ", " {x}", "{x}\t",
              "1{x:0>16}", "ffffffffffffffff", "{x};a=b", "{x};a=\"q;\\\"r\"", "{x}; a", "{x};",
              "{x};a=", "{x};" + "e" * 80]  # fmt: skip
LAST_FORMS = ["0", "0", "000", "0;end", "0 ", "00x0", "-0"]
TRAILER_FORMS = ["", "", "X-T: 1\r\n", "X-T: 1\r\nX-U: 2\r\n", "X-T: a\r\n b\r\n",
                 "Content-Length: 9\r\n", "X-T: 1\n", "Transfer-Encoding: chunked\r\n"]  # fmt: skip


class Choices(Protocol):
    def choice(self, seq: list[T]) -> T: ...
    def randint(self, a: int, b: int) -> int: ...
    def random(self) -> float: ...


def _fmt(form: str, n: int) -> str:
    return form.format(n=n, m=n + 1, x=f"{n:x}", X=f"{n:X}", big="9" * 25)


def chunked_body(rng: Choices, payload: bytes) -> bytes:
    """``payload`` as chunks whose size lines, extensions, ends and trailers vary."""
    out, pos = [], 0
    while pos < len(payload):
        size = rng.randint(1, len(payload) - pos)
        line = _fmt(rng.choice(SIZE_FORMS), size) if rng.random() < 0.3 else f"{size:x}"
        eol = rng.choice(EOLS) if rng.random() < 0.2 else b"\r\n"
        end = rng.choice(EOLS) if rng.random() < 0.1 else b"\r\n"
        out.append(line.encode("latin-1") + eol + payload[pos : pos + size] + end)
        pos += size
    last = rng.choice(LAST_FORMS) if rng.random() < 0.3 else "0"
    trailers = rng.choice(TRAILER_FORMS) if rng.random() < 0.3 else ""
    final = rng.choice(EOLS) if rng.random() < 0.15 else b"\r\n"
    return (last + "\r\n" + trailers).encode("latin-1") + final


def request(rng: Choices) -> bytes:
    """One request whose head and body are drawn as the module docstring says."""
    method = rng.choice(METHODS) if rng.random() < 0.5 else "POST"
    target = rng.choice(TARGETS) if rng.random() < 0.3 else "/"
    version = rng.choice(VERSIONS)
    payload = SMUGGLED if rng.random() < 0.3 else b"hello world"[: rng.randint(0, 11)]
    n = len(payload)
    lines = ["Host: a"] if rng.random() < 0.95 else []
    for _ in range(rng.randint(0, 3)):
        pool = rng.choice([CL_FORMS, TE_FORMS, TE_FORMS, OTHER_FORMS])
        lines.insert(rng.randint(0, len(lines)), _fmt(rng.choice(pool), n))
    te = any("chunk" in line.lower() for line in lines)
    body = chunked_body(rng, payload) if te and rng.random() < 0.8 else payload
    head = f"{method} {target} {version}".encode("latin-1")
    out = [head]
    for line in lines:
        out.append(line.encode("latin-1"))
    eols = [rng.choice(EOLS) if rng.random() < 0.1 else b"\r\n" for _ in out]
    last = rng.choice(EOLS) if rng.random() < 0.1 else b"\r\n"
    return b"".join(part + eol for part, eol in zip(out, eols, strict=True)) + last + body


def build(rng: Choices) -> bytes:
    """1-3 pipelined requests, sometimes a smuggled-looking request or garbage after them."""
    stream = b"".join(request(rng) for _ in range(rng.randint(1, 3)))
    tail = rng.random()
    if tail < 0.2:
        stream += SMUGGLED
    elif tail < 0.3:
        stream += rng.choice([b"\r\n", b"0\r\n\r\n", b"X", b"\r\n\r\n" + SMUGGLED])
    return stream


class FuzzChoices:
    """``Choices`` drawn from an atheris ``FuzzedDataProvider`` (the fuzzer steers every choice)."""

    def __init__(self, fdp) -> None:
        self.fdp = fdp

    def choice(self, seq: list[T]) -> T:
        return seq[self.fdp.ConsumeIntInRange(0, len(seq) - 1)]

    def randint(self, a: int, b: int) -> int:
        return self.fdp.ConsumeIntInRange(a, b)

    def random(self) -> float:
        return self.fdp.ConsumeProbability()
