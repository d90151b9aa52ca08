"""The sans-IO PROXY protocol parser (worker/proxyproto.py): valid and malformed v1/v2 headers, fed whole,
byte by byte and in random splits through the same peek/take/feed steps the loop uses, never reading past
the header; and hypothesis properties (any bytes: a header, "need more" or ProxyProtocolError, nothing else).
"""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webcluster.worker.proxyproto import (
    V2_SIGNATURE,
    ProxyHeader,
    ProxyProtocolError,
    ProxyReader,
    header_length,
    parse,
    v1_header,
    v2_header,
)

REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
CLIENT_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"  # the start of a TLS ClientHello


def _tlv(kind: int, value: bytes) -> bytes:
    return bytes((kind,)) + len(value).to_bytes(2, "big") + value


VALID: list[tuple[bytes, ProxyHeader]] = [
    (b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n",
     ProxyHeader(1, False, ("192.0.2.1", 56324), ("198.51.100.2", 443), 44)),
    (b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n",
     ProxyHeader(1, False, ("2001:db8::1", 1), ("2001:db8::2", 65535), 45)),
    (b"PROXY UNKNOWN\r\n", ProxyHeader(1, False, None, None, 15)),
    (b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n",
     ProxyHeader(1, False, None, None, 59)),
    (b"PROXY TCP4 0.0.0.0 255.255.255.255 0 0\r\n",
     ProxyHeader(1, False, ("0.0.0.0", 0), ("255.255.255.255", 0), 40)),
    (v2_header(("203.0.113.7", 40000), ("198.18.0.11", 8080)),
     ProxyHeader(2, False, ("203.0.113.7", 40000), ("198.18.0.11", 8080), 28)),
    (v2_header(("2001:db8::7", 5), ("2001:db8::8", 80)),
     ProxyHeader(2, False, ("2001:db8::7", 5), ("2001:db8::8", 80), 52)),
    (v2_header(None), ProxyHeader(2, True, None, None, 16)),  # LOCAL: a health check
    # LOCAL with an address block and TLVs: all ignored
    (v2_header(None, tlvs=b"\x00" * 12 + _tlv(0x05, b"id")), ProxyHeader(2, True, None, None, 33)),
    # TLVs after the addresses: ALPN, authority, unique id, SSL (with sub-TLVs), NOOP, a custom type
    (v2_header(("10.1.2.3", 1234), ("10.0.0.1", 80),
               tlvs=_tlv(0x01, b"h2") + _tlv(0x02, b"example.com") + _tlv(0x05, b"x" * 64)
               + _tlv(0x20, b"\x07\x00\x00\x00\x00" + _tlv(0x21, b"TLSv1.3")) + _tlv(0x04, b"")
               + _tlv(0xE0, bytes(range(256)))),
     ProxyHeader(2, False, ("10.1.2.3", 1234), ("10.0.0.1", 80), 412)),
    # a TLV whose own length is wrong is still skipped safely: only the header's length counts
    (v2_header(("10.1.2.3", 1), ("10.0.0.1", 2), tlvs=b"\x01\xff\xff"),
     ProxyHeader(2, False, ("10.1.2.3", 1), ("10.0.0.1", 2), 31)),
    # AF_UNSPEC, AF_UNIX: keep the peer address
    (V2_SIGNATURE + b"\x21\x00\x00\x00", ProxyHeader(2, False, None, None, 16)),
    (V2_SIGNATURE + b"\x21\x31\x00\xd8" + b"\x00" * 216, ProxyHeader(2, False, None, None, 232)),
]  # fmt: skip
# a header's length is the whole of its bytes (the lengths above are placeholders)
VALID = [(raw, dataclasses.replace(header, length=len(raw))) for raw, header in VALID]

MALFORMED: list[bytes] = [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # no header at all
    CLIENT_HELLO,  # TLS without a header
    b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\n",  # bare LF, then the 107-byte limit
    b"PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n",  # a field missing
    b"PROXY TCP4 192.0.2.1  198.51.100.2 1 2\r\n",  # double space
    b"PROXY TCP4 2001:db8::1 198.51.100.2 1 2\r\n",  # v6 address on TCP4
    b"PROXY TCP6 192.0.2.1 2001:db8::2 1 2\r\n",  # v4 address on TCP6
    b"PROXY TCP4 192.0.2.01 198.51.100.2 1 2\r\n",  # leading zero in an octet
    b"PROXY TCP4 192.0.2.1 198.51.100.2 65536 2\r\n",  # port too large
    b"PROXY TCP4 192.0.2.1 198.51.100.2 080 2\r\n",  # leading zero in a port
    b"PROXY TCP4 192.0.2.1 198.51.100.2 -1 2\r\n",
    b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2 \r\n",  # trailing space
    b"PROXY UDP4 192.0.2.1 198.51.100.2 1 2\r\n",
    b"PROXY TCP4 h\xc3\xa9 198.51.100.2 1 2\r\n",
    b"PROXY \r\n",
    b"proxy TCP4 192.0.2.1 198.51.100.2 1 2\r\n",
    b"PROXY TCP4 " + b"1" * 100 + b"\r\n",  # longer than 107 bytes
    V2_SIGNATURE[:11] + b"X",  # a broken signature
    V2_SIGNATURE + b"\x11\x11\x00\x0c" + b"\x00" * 12,  # version 1 in a v2 header
    V2_SIGNATURE + b"\x22\x11\x00\x0c" + b"\x00" * 12,  # command 2
    V2_SIGNATURE + b"\x21\x41\x00\x0c" + b"\x00" * 12,  # family 4
    V2_SIGNATURE + b"\x21\x13\x00\x0c" + b"\x00" * 12,  # transport 3
    V2_SIGNATURE + b"\x21\x12\x00\x0c" + b"\x00" * 12,  # DGRAM
    V2_SIGNATURE + b"\x21\x11\x00\x08" + b"\x00" * 8,  # INET with an 8-byte address block
    V2_SIGNATURE + b"\x21\x21\x00\x0c" + b"\x00" * 12,  # INET6 with an INET-sized block
]


def read_header(stream: bytes, splits: list[int]) -> tuple[ProxyHeader | None, int]:
    """What the loop does (worker/proxyread.py): ``stream`` arrives in pieces ending at ``splits``;
    at each readiness it peeks at most ``want()`` of the bytes arrived so far, consumes what ``take``
    says and feeds it. Returns the header (or None) and how many bytes were consumed."""
    reader, consumed = ProxyReader(), 0
    for arrived in [*splits, len(stream)]:
        while consumed < arrived:
            peeked = stream[consumed : min(arrived, consumed + reader.want())]
            n = reader.take(peeked)
            assert 0 < n <= len(peeked)
            header = reader.feed(stream[consumed : consumed + n])
            consumed += n
            if header is not None:
                return header, consumed
    return None, consumed


def split_ways(n: int) -> list[list[int]]:
    rng = random.Random(n)
    ways = [[], list(range(1, n))]  # whole, byte by byte
    for _ in range(8):
        ways.append(sorted(rng.sample(range(1, n), min(n - 1, rng.randint(1, 6)))))
    return ways


@pytest.mark.parametrize(("raw", "expected"), VALID, ids=lambda v: repr(v)[:40])
@pytest.mark.parametrize("after", [b"", REQUEST, CLIENT_HELLO], ids=["alone", "http", "tls"])
def test_valid_headers_whole_byte_by_byte_and_split(raw, expected, after) -> None:
    assert parse(raw) == expected
    assert header_length(raw + after) == len(raw)
    stream = raw + after
    for splits in split_ways(len(stream)):
        header, consumed = read_header(stream, splits)
        assert header == expected, splits
        assert consumed == len(raw), "read past the header: those bytes belong to HTTP or TLS"


@pytest.mark.parametrize("raw", VALID, ids=lambda v: repr(v)[:40])
def test_every_proper_prefix_needs_more(raw) -> None:
    data = raw[0]
    for end in range(len(data)):
        assert parse(data[:end]) is None


@pytest.mark.parametrize("raw", MALFORMED, ids=lambda v: repr(v)[:40])
def test_malformed_headers_raise_whole_and_split(raw) -> None:
    with pytest.raises(ProxyProtocolError):
        parse(raw + b"\r\n" * 60)
    for splits in split_ways(len(raw)):
        with pytest.raises(ProxyProtocolError):
            read_header(raw + b"\r\n" * 60, splits)


def test_a_request_without_header_fails_at_its_first_byte() -> None:
    with pytest.raises(ProxyProtocolError, match="no PROXY protocol header"):
        ProxyReader().take(b"G")


def test_v2_want_asks_for_exactly_the_rest_of_a_long_header() -> None:
    raw = v2_header(("10.0.0.1", 1), ("10.0.0.2", 2), tlvs=_tlv(0xE0, b"z" * 60000))
    reader = ProxyReader()
    assert reader.feed(raw[:16]) is None
    assert reader.want() == len(raw) - 16
    assert reader.feed(raw[16:]) == ProxyHeader(
        2, False, ("10.0.0.1", 1), ("10.0.0.2", 2), len(raw)
    )


def test_builders_round_trip() -> None:
    assert (
        v1_header(("192.0.2.1", 1), ("192.0.2.2", 2)) == b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n"
    )
    assert parse(v1_header(("::1", 9), ("::2", 8))) == ProxyHeader(
        1, False, ("::1", 9), ("::2", 8), 24
    )


# --- properties -------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_give_a_header_need_more_or_a_protocol_error(data: bytes) -> None:
    try:
        header = parse(data)
    except ProxyProtocolError:
        return
    if header is not None:
        assert 15 <= header.length <= len(data)


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(VALID),
    st.binary(max_size=64),
    st.lists(st.integers(min_value=1, max_value=400), max_size=8),
)
def test_valid_header_then_anything_in_any_split(valid, tail: bytes, cuts: list[int]) -> None:
    raw, expected = valid
    stream = raw + tail
    splits = sorted({c for c in cuts if c < len(stream)})
    assert read_header(stream, splits) == (expected, len(raw))


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(VALID), st.data())
def test_one_corrupted_byte_never_crashes_or_overreads(valid, data) -> None:
    raw = bytearray(valid[0])
    index = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    raw[index] = data.draw(st.integers(min_value=0, max_value=255))
    stream = bytes(raw) + REQUEST
    try:
        header, consumed = read_header(stream, [])
    except ProxyProtocolError:
        return
    if header is not None:
        assert consumed == header.length <= len(stream)
