"""Hypothesis strategies: valid HTTP/1.x requests (with their expected parse), HTTP-flavoured byte soup.

``requests()`` draws a ``Generated``: the wire bytes of one valid request, serialised with the variations the
grammar allows (header-name case, OWS around values, leading empty lines, chunk-size case and leading zeros,
chunk extensions, trailers), and the ``Req`` summary the core must produce for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

from tests.worker.http.cases import Req

TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
VCHARS = "".join(chr(c) for c in range(0x21, 0x7F))
# RFC 9110 §5.5 field-vchar = VCHAR / obs-text; SP and HTAB only inside a value.
VALUE_EDGE = VCHARS + "".join(chr(c) for c in range(0x80, 0x100))
VALUE_INNER = VALUE_EDGE + " \t"
# Headers whose value changes framing or persistence: set only deliberately, never at random.
SPECIAL = {
    *("host", "content-length", "transfer-encoding", "connection", "expect", "te", "trailer"),
    "upgrade",
}
OWS = st.sampled_from(["", " ", "\t", "  ", " \t "])

tokens = st.text(alphabet=TCHARS, min_size=1, max_size=12)
field_names = tokens.filter(lambda name: name.lower() not in SPECIAL)


@st.composite
def field_values(draw) -> str:
    """A field value as the core reports it: no leading/trailing whitespace."""
    if not draw(st.integers(0, 5)):
        return ""
    inner = draw(st.text(alphabet=VALUE_INNER, max_size=30))
    edge = st.text(alphabet=VALUE_EDGE, min_size=1, max_size=1)
    if not inner:
        return draw(edge)
    return draw(edge) + inner + draw(edge)


@st.composite
def field_lines(draw, fields: list[tuple[str, str]]) -> bytes:
    """Serialise (name, value) pairs with random OWS around each value."""
    out = []
    for name, value in fields:
        line = f"{name}:{draw(OWS)}{value}{draw(OWS) if value else ''}\r\n"
        out.append(line.encode("latin-1"))
    return b"".join(out)


@st.composite
def targets(draw, method: str) -> str:
    if method == "CONNECT":
        return f"{draw(st.sampled_from(['example.com', '127.0.0.1', '[::1]']))}:{draw(st.integers(1, 65535))}"
    if method == "OPTIONS" and draw(st.booleans()):
        return "*"
    path = "/" + draw(st.text(alphabet=VCHARS, max_size=40))
    if draw(st.integers(0, 4)) == 0:
        return draw(st.sampled_from(["http", "https", "HTTP"])) + "://example.com" + path
    return path


@dataclass(frozen=True)
class Generated:
    raw: bytes
    expected: Req


@st.composite
def chunked_body(draw, body: bytes) -> bytes:
    """``body`` as chunks of random sizes, hex in random case, leading zeros, extensions."""
    out = []
    pos = 0
    while pos < len(body):
        size = draw(st.integers(1, len(body) - pos))
        digits = f"{size:x}"
        if draw(st.booleans()):
            digits = digits.upper()
        digits = "0" * draw(st.integers(0, 16 - len(digits))) + digits
        ext = draw(st.sampled_from(["", ";a", ";name=value", ';q="quoted \\" string"', ";a=1;b"]))
        out.append(f"{digits}{ext}\r\n".encode() + body[pos : pos + size] + b"\r\n")
        pos += size
    last = draw(st.sampled_from(["0", "000", "0;end"]))
    out.append(f"{last}\r\n".encode())
    return b"".join(out)


@st.composite
def requests(draw, *, http10: bool = True) -> Generated:
    """One valid request and what the core must report for it."""
    method = draw(
        st.sampled_from(["GET", "POST", "PUT", "HEAD", "OPTIONS", "CONNECT", "DELETE"]) | tokens
    )
    target = draw(targets(method))
    version = "1.0" if http10 and draw(st.integers(0, 4)) == 0 else "1.1"
    fields: list[tuple[str, str]] = []
    if version == "1.1" or draw(st.booleans()):
        fields.append((draw(st.sampled_from(["Host", "host", "HOST"])), "example.com:8080"))
    fields += draw(st.lists(st.tuples(field_names, field_values()), max_size=6))
    body = (
        b"" if method == "CONNECT" else draw(st.binary(max_size=300))
    )  # no content (RFC 9110 §9.3.6)
    chunked = version == "1.1" and method != "CONNECT" and draw(st.booleans())
    trailers: list[tuple[str, str]] = []
    if chunked:
        fields.append(
            ("Transfer-Encoding", draw(st.sampled_from(["chunked", "Chunked", "CHUNKED"])))
        )
        trailers = draw(st.lists(st.tuples(field_names, field_values()), max_size=3))
        payload = draw(chunked_body(body)) + draw(field_lines(trailers)) + b"\r\n"
    else:
        if body or draw(st.booleans()):
            fields.append(("Content-Length", str(len(body))))
        payload = body
    if version == "1.0":
        fields.append(("Connection", "keep-alive"))  # so that pipelined requests after it are read
    leading = b"\r\n" * draw(st.integers(0, 2))
    request_line = f"{method} {target} HTTP/{version}\r\n".encode("latin-1")
    raw = leading + request_line + draw(field_lines(fields)) + b"\r\n" + payload
    expected = Req(
        method=method,
        target=target,
        version=version,
        headers=tuple((name.lower(), value) for name, value in fields),
        body=body,
        trailers=tuple((name.lower(), value) for name, value in trailers),
        chunked=chunked,
        keep_alive=method != "CONNECT",  # CONNECT ends the connection (worker/http/headers.py)
    )
    return Generated(raw, expected)


# Pieces of HTTP syntax, valid and hostile, so that random streams reach deep into the parser.
FRAGMENTS = [
    *(b"GET", b"POST", b"HEAD", b"OPTIONS", b"CONNECT", b"G\x00T", b" ", b"  ", b"\t"),
    *(b"/", b"*", b"/a?b=c", b"http://h/p", b"h:80", b"/\x7f", b"/\xff"),
    *(b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.9", b"http/1.1", b"HTTP/1.1 "),
    *(b"\r\n", b"\r\n\r\n", b"\n", b"\r", b":", b": ", b" :", b",", b";", b"=", b'"', b"\\"),
    *(
        b"Host",
        b"Host: a",
        b"Host: a\r\n",
        b"Content-Length",
        b"Content-Length: ",
        b"Transfer-Encoding",
    ),
    *(
        b"Transfer-Encoding: chunked\r\n",
        b"chunked",
        b"identity",
        b"gzip",
        b"xchunked",
        b"chunked, ",
    ),
    *(b"Connection: ", b"close", b"keep-alive", b"Expect: ", b"100-continue", b"Upgrade"),
    *(
        b"0",
        b"1",
        b"5",
        b"a",
        b"F",
        b"10",
        b"ffffffffffffffffff",
        b"+",
        b"-",
        b"0x",
        b"1_0",
        b"\xb2",
    ),
    *(b"x", b"hello", b"\x00", b"\x7f", b"\xff", b"\x0b", b"\x0c"),
]

soup = st.lists(
    st.one_of(st.sampled_from(FRAGMENTS), st.binary(min_size=1, max_size=6)), max_size=80
).map(b"".join)


@st.composite
def mutated(draw) -> bytes:
    """A few valid requests back to back, then a handful of byte-level edits."""
    raw = bytearray(b"".join(g.raw for g in draw(st.lists(requests(), min_size=1, max_size=3))))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(raw)))
        op = draw(st.sampled_from(["insert", "delete", "replace", "duplicate"]))
        piece = draw(st.sampled_from(FRAGMENTS) | st.binary(min_size=1, max_size=3))
        if op == "insert":
            raw[pos:pos] = piece
        elif op == "delete":
            del raw[pos : pos + draw(st.integers(1, 8))]
        elif op == "replace":
            raw[pos : pos + len(piece)] = piece
        else:
            raw[pos:pos] = raw[pos : pos + draw(st.integers(1, 40))]
    return bytes(raw)


cuts = st.lists(st.integers(0, 1 << 16), max_size=16)
