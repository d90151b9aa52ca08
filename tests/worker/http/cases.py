"""Byte-level fixtures for the HTTP/1.x core: VALID and INVALID tables.

``VALID``: raw bytes -> the requests the server must see (method, target, version, headers, body,
trailers, keep-alive). The raw bytes are followed by EOF; when every request is keep-alive the parser
must then report ConnectionClosed, otherwise it must stop after the first request that ends the
connection (later pipelined bytes are never parsed).

``INVALID``: raw bytes -> the exact status of the error. Unless ``at_eof`` is set, the bytes alone prove
the error (it must be raised before EOF); with ``at_eof`` the error exists only because the peer closed.
Many are request-smuggling payloads (CL.TE, TE.CL, TE obfuscation, chunk-size tricks, bare LF/CR).
Cases are replayed whole, byte by byte and in random splits by ``test_protocol.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from webcluster.worker.http.protocol import Limits


@dataclass(frozen=True)
class Req:
    """The summary of one request as the application would see it."""

    method: str = "GET"
    target: str = "/"
    version: str = "1.1"
    headers: tuple[tuple[str, str], ...] | None = None  # None: not compared
    body: bytes = b""
    trailers: tuple[tuple[str, str], ...] = ()
    keep_alive: bool = True
    chunked: bool = False
    expect_continue: bool = False


@dataclass(frozen=True)
class Valid:
    name: str
    raw: bytes
    requests: tuple[Req, ...]
    limits: Limits = field(default_factory=Limits)


@dataclass(frozen=True)
class Invalid:
    name: str
    raw: bytes
    status: int
    limits: Limits = field(default_factory=Limits)
    at_eof: bool = False  # the error needs the EOF (truncated message)
    parsed: int = 0  # complete requests served before the error (pipelining)


HOST = b"Host: example.com\r\n"
HOSTH = (("host", "example.com"),)
GET = b"GET / HTTP/1.1\r\n" + HOST + b"\r\n"
SMALL = Limits(
    limit_request_line=64,
    limit_request_fields=5,
    limit_request_field_size=64,
    limit_request_head=256,
    max_body=100,
    max_chunk_line=16,
    max_trailer=64,
)


def head(*lines: bytes, request_line: bytes = b"GET / HTTP/1.1", body: bytes = b"") -> bytes:
    """A request with ``lines`` as field lines (CRLF added) and ``body`` after the head."""
    return request_line + b"\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n" + body


def post_te(value: bytes, body: bytes = b"5\r\nhello\r\n0\r\n\r\n") -> bytes:
    return head(
        HOST[:-2], b"Transfer-Encoding: " + value, request_line=b"POST / HTTP/1.1", body=body
    )


def post_cl(*values: bytes, body: bytes = b"hello") -> bytes:
    lines = [b"Content-Length: " + v for v in values]
    return head(HOST[:-2], *lines, request_line=b"POST / HTTP/1.1", body=body)


def chunked(body: bytes) -> bytes:
    return post_te(b"chunked", body)


def padded_head(total: int) -> bytes:
    """A GET whose head (incl. the final CRLF CRLF) is exactly ``total`` bytes."""
    base = head(b"Host: a", b"X: ")
    return head(b"Host: a", b"X: " + b"p" * (total - len(base)))


POSTED = Req("POST", body=b"hello", chunked=True)


def _valid_basic() -> list[Valid]:
    return [
        Valid("get_minimal", GET, (Req(headers=HOSTH),)),
        Valid(
            "get_three_fields",
            head(
                HOST[:-2],
                b"User-Agent: curl/8.5",
                b"Accept: */*",
                request_line=b"GET /a?b=c HTTP/1.1",
            ),
            (
                Req(
                    target="/a?b=c",
                    headers=(*HOSTH, ("user-agent", "curl/8.5"), ("accept", "*/*")),
                ),
            ),
        ),
        Valid("head", head(HOST[:-2], request_line=b"HEAD /x HTTP/1.1"), (Req("HEAD", "/x"),)),
        Valid(
            "options_asterisk",
            head(HOST[:-2], request_line=b"OPTIONS * HTTP/1.1"),
            (Req("OPTIONS", "*"),),
        ),
        Valid(
            "connect_authority",
            head(b"Host: example.com:443", request_line=b"CONNECT example.com:443 HTTP/1.1"),
            (Req("CONNECT", "example.com:443", keep_alive=False),),
        ),
        Valid(  # what follows a CONNECT may be a tunnel for a proxy in front: never read as HTTP
            "connect_then_pipelined_get_unread",
            head(b"Host: example.com:443", request_line=b"CONNECT example.com:443 HTTP/1.1") + GET,
            (Req("CONNECT", "example.com:443", keep_alive=False),),
        ),
        Valid(  # likewise after a request asking for another protocol (we never switch)
            "upgrade_then_pipelined_get_unread",
            head(HOST[:-2], b"Connection: Upgrade", b"Upgrade: websocket") + GET,
            (Req(keep_alive=False),),
        ),
        Valid(
            "absolute_form",
            head(HOST[:-2], request_line=b"GET http://example.com/p?q HTTP/1.1"),
            (Req(target="http://example.com/p?q"),),
        ),
        Valid(
            "absolute_form_https_upper",
            head(HOST[:-2], request_line=b"GET HTTPS://example.com:8443 HTTP/1.1"),
            (Req(target="HTTPS://example.com:8443"),),
        ),
        Valid(
            "custom_methods",
            head(HOST[:-2], request_line=b"M-SEARCH /x HTTP/1.1")
            + head(HOST[:-2], request_line=b"PURGE /y HTTP/1.1"),
            (Req("M-SEARCH", "/x"), Req("PURGE", "/y")),
        ),
        Valid(
            "target_special_chars",
            head(HOST[:-2], request_line=b"GET /a%20b/c;p?x=1&y=[2]#frag HTTP/1.1"),
            (Req(target="/a%20b/c;p?x=1&y=[2]#frag"),),
        ),
        Valid("leading_empty_lines", b"\r\n\r\n" + GET, (Req(headers=HOSTH),)),
        Valid(
            "http10_no_host",
            b"GET / HTTP/1.0\r\n\r\n",
            (Req(version="1.0", headers=(), keep_alive=False),),
        ),
        Valid(
            "http10_keep_alive",
            head(b"Connection: Keep-Alive", request_line=b"GET / HTTP/1.0") + GET,
            (Req(version="1.0"), Req()),
        ),
        Valid(
            "http10_keep_alive_and_close",
            head(b"Connection: keep-alive, close", request_line=b"GET / HTTP/1.0"),
            (Req(version="1.0", keep_alive=False),),
        ),
        Valid("http11_close", head(HOST[:-2], b"Connection: close"), (Req(keep_alive=False),)),
        Valid(
            "http11_close_in_list",
            head(HOST[:-2], b"Connection: Upgrade, CLOSE", b"Upgrade: x"),
            (Req(keep_alive=False),),
        ),
        Valid("http11_connection_other", head(HOST[:-2], b"Connection: keep-alive"), (Req(),)),
        Valid(
            "http12_as_11", head(HOST[:-2], request_line=b"GET / HTTP/1.2"), (Req(version="1.1"),)
        ),
        Valid(
            "http19_as_11", head(HOST[:-2], request_line=b"GET / HTTP/1.9"), (Req(version="1.1"),)
        ),
    ]


def _valid_fields() -> list[Valid]:
    return [
        Valid(
            "field_value_obs_text",
            head(HOST[:-2], b"X-Name: caf\xe9"),
            (Req(headers=(*HOSTH, ("x-name", "caf\xe9"))),),
        ),
        Valid(
            "field_value_internal_ws",
            head(HOST[:-2], b"X-A:  a \t b  \t"),
            (Req(headers=(*HOSTH, ("x-a", "a \t b"))),),
        ),
        Valid(
            "field_empty_value",
            head(HOST[:-2], b"X-Empty:"),
            (Req(headers=(*HOSTH, ("x-empty", ""))),),
        ),
        Valid(
            "field_only_ws_value",
            head(HOST[:-2], b"X-Empty: \t "),
            (Req(headers=(*HOSTH, ("x-empty", ""))),),
        ),
        Valid(
            "field_names_lowercased_dups_kept",
            head(b"HOST: example.com", b"X-Dup: 1", b"x-DUP: 2", b"Accept-Encoding:gzip"),
            (Req(headers=(*HOSTH, ("x-dup", "1"), ("x-dup", "2"), ("accept-encoding", "gzip"))),),
        ),
        Valid(
            "field_name_all_tchars",
            head(HOST[:-2], b"!#$%&'*+-.^_`|~09azAZ: v"),
            (Req(headers=(*HOSTH, ("!#$%&'*+-.^_`|~09azaz", "v"))),),
        ),
        Valid(
            "transfer_underscore_is_just_a_field",
            head(HOST[:-2], b"Transfer_Encoding: chunked"),
            (Req(headers=(*HOSTH, ("transfer_encoding", "chunked"))),),
        ),
        Valid("host_empty", head(b"Host:"), (Req(headers=(("host", ""),)),)),
        Valid(
            "host_ipv6_port", head(b"Host: [::1]:8080"), (Req(headers=(("host", "[::1]:8080"),)),)
        ),
        Valid("host_ipv4_empty_port", head(b"Host: 127.0.0.1:"), (Req(),)),
        Valid(
            "expect_continue",
            head(HOST[:-2], b"Expect: 100-continue"),
            (Req(expect_continue=True),),
        ),
        Valid(
            "expect_continue_case",
            head(HOST[:-2], b"Expect: 100-Continue"),
            (Req(expect_continue=True),),
        ),
        Valid(
            "expect_continue_http10_ignored",
            head(b"Expect: 100-continue", request_line=b"GET / HTTP/1.0"),
            (Req(version="1.0", keep_alive=False),),
        ),
    ]


def _valid_bodies() -> list[Valid]:
    return [
        Valid("post_content_length", post_cl(b"5"), (Req("POST", body=b"hello"),)),
        Valid("post_content_length_zero", post_cl(b"0", body=b"") + GET, (Req("POST"), Req())),
        Valid("post_content_length_leading_zeros", post_cl(b"005"), (Req("POST", body=b"hello"),)),
        Valid(
            "post_content_length_ows",
            head(
                HOST[:-2],
                b"Content-Length: \t 5 \t",
                request_line=b"POST / HTTP/1.1",
                body=b"hello",
            ),
            (Req("POST", body=b"hello"),),
        ),
        Valid(
            "post_http10_content_length",
            head(b"Content-Length: 3", request_line=b"POST / HTTP/1.0", body=b"abc"),
            (Req("POST", version="1.0", body=b"abc", keep_alive=False),),
        ),
        Valid("chunked_simple", chunked(b"5\r\nhello\r\n0\r\n\r\n"), (POSTED,)),
        Valid("chunked_uppercase_coding", post_te(b"Chunked"), (POSTED,)),
        Valid("chunked_tab_ows", post_te(b"\tchunked"), (POSTED,)),
        Valid("chunked_trailing_ows", post_te(b"chunked \t"), (POSTED,)),
        Valid("chunked_empty_body", chunked(b"0\r\n\r\n"), (Req("POST", chunked=True),)),
        Valid(
            "chunked_many_chunks_hex",
            chunked(b"1\r\na\r\nA\r\n0123456789\r\nb\r\nhello world\r\n0\r\n\r\n"),
            (Req("POST", body=b"a0123456789hello world", chunked=True),),
        ),
        Valid("chunked_size_leading_zeros", chunked(b"0005\r\nhello\r\n0000\r\n\r\n"), (POSTED,)),
        Valid(
            "chunked_size_16_digits", chunked(b"0000000000000005\r\nhello\r\n0\r\n\r\n"), (POSTED,)
        ),
        Valid(
            "chunked_extensions",
            chunked(b'5;a=b;flag;q="x; \\"y\\""\r\nhello\r\n0;last\r\n\r\n'),
            (POSTED,),
        ),
        Valid(
            "chunked_trailers",
            chunked(b"5\r\nhello\r\n0\r\nX-Sum: abc\r\nX-Other:\t1 \r\n\r\n"),
            (
                Req(
                    "POST",
                    body=b"hello",
                    chunked=True,
                    trailers=(("x-sum", "abc"), ("x-other", "1")),
                ),
            ),
        ),
        Valid(
            "chunk_containing_crlf_bytes",
            chunked(b"4\r\n\r\n\r\n\r\n0\r\n\r\n"),
            (Req("POST", body=b"\r\n\r\n", chunked=True),),
        ),
    ]


def _valid_pipelines() -> list[Valid]:
    return [
        Valid("pipeline_three_gets", GET * 3, (Req(), Req(), Req())),
        Valid(
            "pipeline_bodies",
            post_cl(b"5") + GET + chunked(b"3\r\nabc\r\n0\r\n\r\n") + post_cl(b"2", body=b"xy"),
            (
                Req("POST", body=b"hello"),
                Req(),
                Req("POST", body=b"abc", chunked=True),
                Req("POST", body=b"xy"),
            ),
        ),
        Valid(
            "pipeline_body_looks_like_request",
            post_cl(b"18", body=b"GET / HTTP/1.1\r\n\r\n") + GET,
            (Req("POST", body=b"GET / HTTP/1.1\r\n\r\n"), Req()),
        ),
        Valid(
            "pipeline_stops_after_close",
            GET + head(HOST[:-2], b"Connection: close") + GET,
            (Req(), Req(keep_alive=False)),
        ),
        Valid(
            "pipeline_stops_after_http10",
            b"GET / HTTP/1.0\r\n\r\n" + GET,
            (Req(version="1.0", keep_alive=False),),
        ),
        Valid(
            "pipeline_empty_lines_between",
            post_cl(b"5") + b"\r\n\r\n" + GET,
            (Req("POST", body=b"hello"), Req()),
        ),
        Valid(
            "pipeline_trailers_then_get",
            chunked(b"1\r\nx\r\n0\r\nT: 1\r\n\r\n") + GET,
            (Req("POST", body=b"x", chunked=True, trailers=(("t", "1"),)), Req()),
        ),
    ]


def _valid_limits() -> list[Valid]:
    line = b"GET /" + b"a" * 50 + b" HTTP/1.1"  # exactly 64
    return [
        Valid(
            "limit_request_line_exact",
            head(b"Host: a", request_line=line),
            (Req(target=line[4:-9].decode()),),
            SMALL,
        ),
        Valid("limit_field_exact", head(b"Host: a", b"X: " + b"v" * 61), (Req(),), SMALL),
        Valid(
            "limit_count_exact",
            head(b"Host: a", b"A: 1", b"B: 2", b"C: 3", b"D: 4"),
            (Req(),),
            SMALL,
        ),
        Valid("limit_head_exact", padded_head(256), (Req(),), Limits(limit_request_head=256)),
        Valid(
            "limit_body_exact",
            post_cl(b"100", body=b"b" * 100),
            (Req("POST", body=b"b" * 100),),
            SMALL,
        ),
        Valid(
            "limit_chunked_total_exact",
            chunked(b"3c\r\n" + b"c" * 60 + b"\r\n28\r\n" + b"d" * 40 + b"\r\n0\r\n\r\n"),
            (Req("POST", body=b"c" * 60 + b"d" * 40, chunked=True),),
            SMALL,
        ),
        Valid(
            "limit_chunk_line_exact",
            chunked(b"5;" + b"a" * 14 + b"\r\nhello\r\n0\r\n\r\n"),
            (POSTED,),
            SMALL,
        ),
        Valid(
            "limit_trailer_exact",
            chunked(b"5\r\nhello\r\n0\r\nX: " + b"t" * 57 + b"\r\n\r\n"),  # 64 bytes
            (Req("POST", body=b"hello", chunked=True, trailers=(("x", "t" * 57),)),),
            SMALL,
        ),
        Valid(
            "limit_unlimited_body", post_cl(b"5"), (Req("POST", body=b"hello"),), Limits(max_body=0)
        ),
    ]


VALID: list[Valid] = (
    _valid_basic() + _valid_fields() + _valid_bodies() + _valid_pipelines() + _valid_limits()
)


def _invalid_framing() -> list[Invalid]:
    """Content-Length / Transfer-Encoding: the classic smuggling vectors."""
    te_cl = head(
        HOST[:-2],
        b"Transfer-Encoding: chunked",
        b"Content-Length: 5",
        request_line=b"POST / HTTP/1.1",
    )
    cl_te = head(
        HOST[:-2],
        b"Content-Length: 5",
        b"Transfer-Encoding: chunked",
        request_line=b"POST / HTTP/1.1",
    )
    return [
        Invalid("cl_te_both", cl_te + b"0\r\n\r\n", 400),
        Invalid("te_cl_both", te_cl + b"0\r\n\r\n", 400),
        Invalid(
            "cl_te_smuggle_get", cl_te + b"0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n", 400
        ),
        Invalid("te_cl_zero", post_te(b"chunked", b"")[:-2] + b"Content-Length: 0\r\n\r\n", 400),
        Invalid(
            "te_space_before_colon",
            head(HOST[:-2], b"Transfer-Encoding : chunked", request_line=b"POST / HTTP/1.1"),
            400,
        ),
        Invalid(
            "te_tab_before_colon",
            head(HOST[:-2], b"Transfer-Encoding\t: chunked", request_line=b"POST / HTTP/1.1"),
            400,
        ),
        Invalid("te_xchunked", post_te(b"xchunked"), 501),
        Invalid("te_chunked_typo", post_te(b"chunk"), 501),
        Invalid("te_chunked_chunked", post_te(b"chunked, chunked"), 400),
        Invalid("te_two_chunked_lines", post_te(b"chunked\r\nTransfer-Encoding: chunked"), 400),
        Invalid("te_gzip_chunked", post_te(b"gzip, chunked"), 501),
        Invalid("te_chunked_gzip", post_te(b"chunked, gzip"), 400),
        Invalid(
            "te_chunked_then_identity_line", post_te(b"chunked\r\nTransfer-Encoding: identity"), 400
        ),
        Invalid("te_identity", post_te(b"identity", b""), 501),
        Invalid("te_identity_chunked", post_te(b"identity, chunked"), 501),
        Invalid("te_gzip_only", post_te(b"gzip", b"hello"), 501),
        Invalid("te_empty", post_te(b""), 400),
        Invalid("te_trailing_comma", post_te(b"chunked,"), 400),
        Invalid("te_leading_comma", post_te(b", chunked"), 400),
        Invalid("te_parameter", post_te(b"chunked;q=1"), 400),
        Invalid("te_quoted", post_te(b'"chunked"'), 400),
        Invalid("te_vertical_tab", post_te(b"chunked\x0b"), 400),
        Invalid("te_form_feed", post_te(b"\x0cchunked"), 400),
        Invalid("te_nul", post_te(b"chunked\x00"), 400),
        Invalid("te_obs_text", post_te(b"chunk\xe9d"), 400),
        Invalid("te_obs_fold", post_te(b"\r\n chunked"), 400),
        Invalid("te_obs_fold_after_value", post_te(b"gzip,\r\n\tchunked"), 400),
        Invalid(
            "te_leading_space_name",
            head(HOST[:-2], b" Transfer-Encoding: chunked", request_line=b"POST / HTTP/1.1"),
            400,
        ),
        Invalid(
            "te_on_http10",
            head(b"Transfer-Encoding: chunked", request_line=b"POST / HTTP/1.0", body=b"0\r\n\r\n"),
            400,
        ),
        Invalid("cl_duplicate_equal", post_cl(b"5", b"5"), 400),
        Invalid("cl_duplicate_differ", post_cl(b"5", b"6"), 400),
        Invalid("cl_list", post_cl(b"5, 5"), 400),
        Invalid("cl_list_no_space", post_cl(b"5,5"), 400),
        Invalid("cl_trailing_comma", post_cl(b"5,"), 400),
        Invalid("cl_plus", post_cl(b"+5"), 400),
        Invalid("cl_minus", post_cl(b"-1"), 400),
        Invalid("cl_hex", post_cl(b"0x5"), 400),
        Invalid("cl_internal_space", post_cl(b"1 1"), 400),
        Invalid("cl_underscore", post_cl(b"1_0"), 400),
        Invalid("cl_float", post_cl(b"5.0"), 400),
        Invalid("cl_empty", post_cl(b""), 400),
        Invalid("cl_superscript_digit", post_cl(b"\xb2"), 400),
        Invalid("cl_vertical_tab", post_cl(b"5\x0b"), 400),
        Invalid(
            "cl_space_before_colon",
            head(HOST[:-2], b"Content-Length : 5", request_line=b"POST / HTTP/1.1", body=b"hello"),
            400,
        ),
        Invalid("cl_above_max_body", post_cl(b"101", body=b"x" * 101), 413, SMALL),
        Invalid("cl_huge", post_cl(b"9" * 30), 413),
        Invalid("cl_huge_unlimited", post_cl(b"9" * 30), 413, Limits(max_body=0)),
        Invalid("cl_body_truncated", post_cl(b"10", body=b"hello"), 400, at_eof=True),
        Invalid("cl_body_missing", post_cl(b"5", body=b""), 400, at_eof=True),
    ]


def _invalid_chunks() -> list[Invalid]:
    return [
        Invalid("chunk_size_plus", chunked(b"+5\r\nhello\r\n0\r\n\r\n"), 400),
        Invalid("chunk_size_minus", chunked(b"-5\r\nhello\r\n0\r\n\r\n"), 400),
        Invalid("chunk_size_0x", chunked(b"0x5\r\nhello\r\n0\r\n\r\n"), 400),
        Invalid("chunk_size_leading_space", chunked(b" 5\r\nhello\r\n0\r\n\r\n"), 400),
        Invalid("chunk_size_trailing_space", chunked(b"5 \r\nhello\r\n0\r\n\r\n"), 400),
        Invalid("chunk_size_trailing_tab", chunked(b"5\t\r\nhello\r\n0\r\n\r\n"), 400),
        Invalid("chunk_size_ws_before_ext", chunked(b"5 ;a=b\r\nhello\r\n0\r\n\r\n"), 400),
        Invalid("chunk_size_non_hex", chunked(b"g\r\nhello\r\n0\r\n\r\n"), 400),
        Invalid("chunk_size_underscore", chunked(b"1_0\r\n" + b"x" * 16 + b"\r\n0\r\n\r\n"), 400),
        Invalid("chunk_size_empty", chunked(b"\r\nhello\r\n0\r\n\r\n"), 400),
        Invalid(
            "chunk_size_overflow_17_digits",
            chunked(b"10000000000000005\r\nhello\r\n0\r\n\r\n"),
            400,
        ),
        Invalid(
            "chunk_size_16_f_above_max_body",
            chunked(b"ffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
            413,
        ),
        Invalid("chunk_ext_empty_name", chunked(b"5;\r\nhello\r\n0\r\n\r\n"), 400),
        Invalid("chunk_ext_unterminated_quote", chunked(b'5;a="b\r\nhello\r\n0\r\n\r\n'), 400),
        Invalid("chunk_ext_ctl", chunked(b"5;a=\x01\r\nhello\r\n0\r\n\r\n"), 400),
        Invalid(
            "chunk_line_too_long",
            chunked(b"5;" + b"a" * 15 + b"\r\nhello\r\n0\r\n\r\n"),
            400,
            SMALL,
        ),
        Invalid("chunk_line_too_long_no_crlf", chunked(b"5;" + b"a" * 40), 400, SMALL),
        Invalid("chunk_data_longer_than_size", chunked(b"5\r\nhelloX\r\n0\r\n\r\n"), 400),
        Invalid("chunk_data_shorter_than_size", chunked(b"6\r\nhello\r\n0\r\n\r\n"), 400),
        Invalid("chunk_data_bare_lf", chunked(b"5\r\nhello\n0\r\n\r\n"), 400),
        Invalid("chunk_data_bare_cr", chunked(b"5\r\nhello\r0\r\n\r\n"), 400),
        Invalid("chunk_size_bare_lf", chunked(b"5\nhello\r\n0\r\n\r\n"), 400),
        Invalid("chunk_size_bare_cr", chunked(b"5\rhello\r\n0\r\n\r\n"), 400),
        Invalid("chunk_last_bare_lf", chunked(b"5\r\nhello\r\n0\n\n"), 400),
        Invalid(
            "chunk_total_above_max_body",
            chunked(b"3d\r\n" + b"c" * 61 + b"\r\n28\r\n" + b"d" * 40 + b"\r\n0\r\n\r\n"),
            413,
            SMALL,
        ),
        Invalid("chunk_eof_in_data", chunked(b"5\r\nhel"), 400, at_eof=True),
        Invalid("chunk_eof_in_size", chunked(b"5"), 400, at_eof=True),
        Invalid("chunk_eof_before_crlf", chunked(b"5\r\nhello"), 400, at_eof=True),
        Invalid("chunk_eof_no_last_chunk", chunked(b"5\r\nhello\r\n"), 400, at_eof=True),
        Invalid("chunk_eof_after_last_chunk", chunked(b"5\r\nhello\r\n0\r\n"), 400, at_eof=True),
        Invalid("chunk_eof_in_trailers", chunked(b"0\r\nX: y\r\n"), 400, at_eof=True),
        Invalid("trailer_bare_lf", chunked(b"0\r\nX: y\n\r\n"), 400),
        Invalid("trailer_bare_lf_end", chunked(b"0\r\nX: y\r\n\n"), 400),
        Invalid("trailer_obs_fold", chunked(b"0\r\nX: y\r\n z\r\n\r\n"), 400),
        Invalid("trailer_space_in_name", chunked(b"0\r\nX Y: z\r\n\r\n"), 400),
        Invalid("trailer_nul", chunked(b"0\r\nX: \x00\r\n\r\n"), 400),
        # RFC 9110 §6.5.1; llhttp refuses these too (found by tests/differential).
        Invalid("trailer_content_length", chunked(b"0\r\nContent-Length: 9\r\n\r\n"), 400),
        Invalid(
            "trailer_transfer_encoding", chunked(b"0\r\nTransfer-Encoding: chunked\r\n\r\n"), 400
        ),
        Invalid("trailer_host", chunked(b"0\r\nX: 1\r\nhost: b\r\n\r\n"), 400),
        Invalid("trailer_too_large", chunked(b"0\r\nX: " + b"t" * 58 + b"\r\n\r\n"), 431, SMALL),
        Invalid(
            "trailer_too_large_no_end", chunked(b"0\r\nA: 1\r\nB: 2\r\nC: " + b"t" * 60), 431, SMALL
        ),
    ]


def _invalid_lines() -> list[Invalid]:
    """Line endings and field-line syntax (RFC 9112 §2.2, §5)."""
    return [
        Invalid("bare_lf_everywhere", b"GET / HTTP/1.1\nHost: a\n\n", 400),
        Invalid("bare_lf_request_line", b"GET / HTTP/1.1\nHost: a\r\n\r\n", 400),
        Invalid("bare_lf_field", b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", 400),
        Invalid("bare_lf_end_of_head", b"GET / HTTP/1.1\r\nHost: a\r\n\n", 400),
        Invalid("lf_cr_end_of_head", b"GET / HTTP/1.1\r\nHost: a\n\r\n\r\n", 400),
        Invalid("bare_cr_request_line", b"GET /\r HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        Invalid("bare_cr_field_value", b"GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n", 400),
        Invalid("bare_cr_before_crlf", b"GET / HTTP/1.1\r\nHost: a\r\r\n\r\n", 400),
        Invalid("bare_cr_end_of_head", b"GET / HTTP/1.1\r\nHost: a\r\n\r\r\n", 400),
        Invalid("obs_fold_space", head(HOST[:-2], b"X: a", b" b"), 400),
        Invalid("obs_fold_tab", head(HOST[:-2], b"X: a", b"\tb"), 400),
        Invalid("obs_fold_first_line", head(b" Host: a"), 400),
        Invalid("ws_before_colon", head(b"Host : a"), 400),
        Invalid("tab_before_colon", head(HOST[:-2], b"X\t: a"), 400),
        Invalid("empty_field_name", head(HOST[:-2], b": a"), 400),
        Invalid("field_name_paren", head(HOST[:-2], b"X(Y): a"), 400),
        Invalid("field_name_space", head(HOST[:-2], b"X Y: a"), 400),
        Invalid("field_name_non_ascii", head(HOST[:-2], b"X\xe9: a"), 400),
        Invalid("field_name_nul", head(HOST[:-2], b"X\x00: a"), 400),
        Invalid("field_no_colon", head(HOST[:-2], b"X-No-Colon"), 400),
        Invalid("field_value_nul", head(HOST[:-2], b"X: a\x00b"), 400),
        Invalid("field_value_soh", head(HOST[:-2], b"X: \x01"), 400),
        Invalid("field_value_esc", head(HOST[:-2], b"X: \x1b[31m"), 400),
        Invalid("field_value_del", head(HOST[:-2], b"X: a\x7f"), 400),
        Invalid("field_value_vt", head(HOST[:-2], b"X: a\x0bb"), 400),
        Invalid("field_value_ff", head(HOST[:-2], b"X: \x0c"), 400),
        Invalid("too_many_empty_lines", b"\r\n" * 9 + GET, 400),
        Invalid("eof_in_head", b"GET / HTTP/1.1\r\nHost: a\r\n", 400, at_eof=True),
        Invalid("eof_in_request_line", b"GET / HTT", 400, at_eof=True),
        Invalid("eof_after_lone_cr", b"\r", 400, at_eof=True),
    ]


def _invalid_request_line() -> list[Invalid]:
    return [
        Invalid("method_non_token", head(HOST[:-2], request_line=b"G(T / HTTP/1.1"), 400),
        Invalid("method_empty", head(HOST[:-2], request_line=b" / HTTP/1.1"), 400),
        Invalid("method_nul", head(HOST[:-2], request_line=b"G\x00ET / HTTP/1.1"), 400),
        Invalid("method_non_ascii", head(HOST[:-2], request_line=b"G\xc9T / HTTP/1.1"), 400),
        Invalid("double_space", head(HOST[:-2], request_line=b"GET  / HTTP/1.1"), 400),
        Invalid("tab_separator", head(HOST[:-2], request_line=b"GET\t/ HTTP/1.1"), 400),
        Invalid("trailing_space", head(HOST[:-2], request_line=b"GET / HTTP/1.1 "), 400),
        Invalid("leading_space", head(HOST[:-2], request_line=b" GET / HTTP/1.1"), 400),
        Invalid("http09_style", b"GET /\r\n\r\n", 400),
        Invalid("http09_style_with_fields", head(HOST[:-2], request_line=b"GET /"), 400),
        Invalid("missing_version", head(HOST[:-2], request_line=b"GET / "), 400),
        Invalid("target_space", head(HOST[:-2], request_line=b"GET /a b HTTP/1.1"), 400),
        Invalid("target_ctl", head(HOST[:-2], request_line=b"GET /\x01 HTTP/1.1"), 400),
        Invalid("target_del", head(HOST[:-2], request_line=b"GET /\x7f HTTP/1.1"), 400),
        Invalid("target_non_ascii", head(HOST[:-2], request_line=b"GET /caf\xe9 HTTP/1.1"), 400),
        Invalid("target_relative", head(HOST[:-2], request_line=b"GET index.html HTTP/1.1"), 400),
        Invalid("asterisk_not_options", head(HOST[:-2], request_line=b"GET * HTTP/1.1"), 400),
        Invalid(
            "authority_not_connect",
            head(HOST[:-2], request_line=b"GET example.com:80 HTTP/1.1"),
            400,
        ),
        Invalid("connect_origin_form", head(HOST[:-2], request_line=b"CONNECT / HTTP/1.1"), 400),
        Invalid(  # found by tests/differential: llhttp frames these bytes as the tunnel, not a body
            "connect_with_content",
            head(b"Host: a:443", b"Content-Length: 5", request_line=b"CONNECT a:443 HTTP/1.1")
            + b"hello",
            400,
        ),
        Invalid(
            "connect_chunked",
            head(
                b"Host: a:443",
                b"Transfer-Encoding: chunked",
                request_line=b"CONNECT a:443 HTTP/1.1",
            )
            + b"0\r\n\r\n",
            400,
        ),
        Invalid(
            "connect_no_port", head(HOST[:-2], request_line=b"CONNECT example.com HTTP/1.1"), 400
        ),
        Invalid(
            "absolute_ftp", head(HOST[:-2], request_line=b"GET ftp://example.com/ HTTP/1.1"), 400
        ),
        Invalid(
            "absolute_empty_host", head(HOST[:-2], request_line=b"GET http:///x HTTP/1.1"), 400
        ),
        Invalid("version_lowercase", head(HOST[:-2], request_line=b"GET / http/1.1"), 400),
        Invalid("version_garbage", head(HOST[:-2], request_line=b"GET / HTTP/1.x"), 400),
        Invalid("version_no_minor", head(HOST[:-2], request_line=b"GET / HTTP/1"), 400),
        Invalid("version_two_digit_major", head(HOST[:-2], request_line=b"GET / HTTP/10.0"), 400),
        Invalid("version_three_parts", head(HOST[:-2], request_line=b"GET / HTTP/1.1.1"), 400),
        Invalid("version_other_protocol", head(HOST[:-2], request_line=b"GET / FOO/1.1"), 400),
        Invalid("version_2_0", head(HOST[:-2], request_line=b"GET / HTTP/2.0"), 505),
        Invalid("version_3_0", head(HOST[:-2], request_line=b"GET / HTTP/3.0"), 505),
        Invalid("version_0_9_explicit", head(HOST[:-2], request_line=b"GET / HTTP/0.9"), 505),
        Invalid("h2_prior_knowledge_preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
        Invalid("tls_client_hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),
    ]


def _invalid_semantics() -> list[Invalid]:
    """Host, Expect and the limits (RFC 9112 §3.2, RFC 9110 §10.1.1, the defaults of ``Limits``)."""
    long_line = b"GET /" + b"a" * 51 + b" HTTP/1.1"  # 65 > 64
    return [
        Invalid("host_missing", b"GET / HTTP/1.1\r\n\r\n", 400),
        Invalid("host_missing_with_fields", head(b"X-Host: a"), 400),
        Invalid("host_duplicate", head(b"Host: a", b"Host: b"), 400),
        Invalid("host_duplicate_same", head(b"Host: a", b"Host: a"), 400),
        Invalid(
            "host_duplicate_http10",
            head(b"Host: a", b"Host: a", request_line=b"GET / HTTP/1.0"),
            400,
        ),
        Invalid("host_space", head(b"Host: a b"), 400),
        Invalid("host_slash", head(b"Host: a/b"), 400),
        Invalid("host_userinfo", head(b"Host: user@a"), 400),
        Invalid("host_bad_port", head(b"Host: a:b"), 400),
        Invalid("host_unclosed_bracket", head(b"Host: [::1"), 400),
        Invalid("host_list", head(b"Host: a, b"), 400),
        Invalid("expect_other", head(HOST[:-2], b"Expect: 200-ok"), 417),
        Invalid("expect_continue_and_other", head(HOST[:-2], b"Expect: 100-continue, foo"), 417),
        Invalid("expect_empty", head(HOST[:-2], b"Expect:"), 417),
        Invalid("request_line_too_long", head(b"Host: a", request_line=long_line), 414, SMALL),
        Invalid("request_line_too_long_no_crlf", long_line + b"xxxx", 414, SMALL),
        Invalid("request_line_too_long_default", b"GET /" + b"a" * 8200 + b" HTTP/1.1\r\n", 414),
        Invalid(
            "too_many_fields",
            head(b"Host: a", b"A: 1", b"B: 2", b"C: 3", b"D: 4", b"E: 5"),
            431,
            SMALL,
        ),
        Invalid(
            "too_many_fields_default", head(b"Host: a", *[b"X: %d" % i for i in range(100)]), 431
        ),
        Invalid("field_too_long", head(b"Host: a", b"X: " + b"v" * 62), 431, SMALL),
        Invalid(
            "field_too_long_no_crlf", b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * 80, 431, SMALL
        ),
        Invalid("field_too_long_default", head(b"Host: a", b"X: " + b"v" * 8190), 431),
        Invalid("head_too_large", padded_head(257), 431, Limits(limit_request_head=256)),
        Invalid(
            "head_too_large_no_end", padded_head(300)[:-4], 431, Limits(limit_request_head=256)
        ),
        Invalid("head_too_large_default", head(b"Host: a", *[b"X: " + b"v" * 700] * 95), 431),
    ]


def _invalid_pipelines() -> list[Invalid]:
    """Valid requests followed by a bad one: exact message boundaries, nothing parsed after the error."""
    return [
        Invalid(
            "pipeline_get_then_cl_te",
            GET
            + head(
                HOST[:-2],
                b"Content-Length: 4",
                b"Transfer-Encoding: chunked",
                request_line=b"POST / HTTP/1.1",
                body=b"0\r\n\r\n",
            ),
            400,
            parsed=1,
        ),
        Invalid(
            "pipeline_body_overrun", post_cl(b"5", body=b"helloGARBAGE\r\n\r\n"), 400, parsed=1
        ),
        Invalid(
            "pipeline_underscore_te_body",
            head(HOST[:-2], b"Transfer_Encoding: chunked", body=b"0\r\n\r\n"),
            400,
            parsed=1,
        ),
        Invalid(
            "pipeline_chunked_then_garbage", chunked(b"0\r\n\r\n") + b"X\r\n\r\n", 400, parsed=1
        ),
        Invalid(
            "pipeline_then_505",
            GET * 2 + head(HOST[:-2], request_line=b"GET / HTTP/2.0"),
            505,
            parsed=2,
        ),
        Invalid(
            "pipeline_then_eof_in_head", GET + b"GET / HTTP/1.1\r\n", 400, at_eof=True, parsed=1
        ),
    ]


INVALID: list[Invalid] = (
    _invalid_framing()
    + _invalid_chunks()
    + _invalid_lines()
    + _invalid_request_line()
    + _invalid_semantics()
    + _invalid_pipelines()
)
