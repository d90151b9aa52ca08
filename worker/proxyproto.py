"""PROXY protocol v1 and v2 headers (HAProxy's spec, "The PROXY protocol", versions 1 and 2): sans-IO.

A load balancer that balances TCP (or HTTP with pooled connections) can tell the server who the client
is by sending one header before the first byte of the connection's own data (before a TLS ClientHello).
This module only parses: bytes in, a :class:`ProxyHeader`, "need more" or :class:`ProxyProtocolError` out.
No socket, no threads: the worker's loop does the reading (``worker.loop``) and may never read past the
header, because with TLS the bytes after it belong to OpenSSL. :meth:`ProxyReader.take` therefore says how
many of the bytes *peeked* from the socket belong to the header, and :meth:`ProxyReader.feed` consumes
exactly those.

Choices:
- v1 (§2.1): ``PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\\r\\n`` with single spaces, at most 107 bytes;
  addresses must be literal addresses of the named family; ports decimal 0-65535 without leading zeros.
  ``PROXY UNKNOWN ...\\r\\n`` is accepted and keeps the real peer address (the spec's rule).
- v2 (§2.2): the 12-byte signature, version 2, command ``LOCAL`` (the balancer's own connection, e.g. a
  health check: accepted, the peer address is kept) or ``PROXY``. ``AF_INET``/``AF_INET6`` over
  ``STREAM`` give the client address; ``AF_UNSPEC`` and ``AF_UNIX`` keep the peer address; ``DGRAM`` is
  refused (this is a TCP server). TLVs after the addresses are skipped unread (§2.2.7: a receiver must
  ignore the types it does not know; we use none), bounded by the header's own length field.
- Anything else, including a connection that starts with an ordinary HTTP request, is an error: with
  ``--proxy-protocol`` every connection must carry a header, or a client could pose as the balancer.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

V1_PREFIX = b"PROXY "
V1_MAX = 107  # §2.1: the longest v1 line, CRLF included
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16  # signature, version/command, family/transport, length
_V1_MIN = 15  # "PROXY UNKNOWN\r\n": no header is shorter, so reading this much is always safe

# v2 family/transport byte (§2.2): high nibble address family, low nibble transport protocol.
_AF_UNSPEC, _AF_INET, _AF_INET6, _AF_UNIX = 0, 1, 2, 3
_STREAM, _DGRAM = 1, 2
_ADDRESS_LEN = {_AF_INET: 12, _AF_INET6: 36, _AF_UNIX: 216}


class ProxyProtocolError(ValueError):
    """The connection does not start with a valid PROXY header; ``str()`` says what is wrong."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A parsed header. ``source`` is the client's (address, port), or None when the header says to
    keep the connection's own peer address (v1 ``UNKNOWN``, v2 ``LOCAL``, ``AF_UNSPEC``, ``AF_UNIX``)."""

    version: int
    local: bool  # v2 LOCAL: the balancer speaking for itself (health checks)
    source: tuple[str, int] | None
    destination: tuple[str, int] | None
    length: int  # bytes of the header on the wire


def parse(data: bytes) -> ProxyHeader | None:
    """Parse a header at the start of ``data``; None when more bytes are needed. Raises
    ProxyProtocolError as soon as the bytes cannot be the start of a valid header."""
    if data[:1] == V2_SIGNATURE[:1]:
        return _parse_v2(data)
    return _parse_v1(data)


def header_length(data: bytes) -> int | None:
    """How many leading bytes of ``data`` are the header, when that is known yet (else None).
    Raises ProxyProtocolError like :func:`parse`."""
    if data[:1] == V2_SIGNATURE[:1]:
        _check_prefix(data, V2_SIGNATURE)
        if len(data) < V2_FIXED:
            return None
        return V2_FIXED + int.from_bytes(data[14:16], "big")
    _check_prefix(data, V1_PREFIX)
    end = data.find(b"\r\n", 0, V1_MAX)
    if end >= 0:
        return end + 2
    if len(data) >= V1_MAX:
        raise ProxyProtocolError("v1 header longer than 107 bytes")
    return None


class ProxyReader:
    """Incremental reader for one connection: accumulates header bytes until the header is complete.

    The caller peeks at most :meth:`want` bytes, hands them to :meth:`take` to learn how many belong to
    the header, consumes that many from the socket and passes them to :meth:`feed`. Nothing past the
    header is ever consumed, so what follows (an HTTP request, a TLS ClientHello) stays in the socket.
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def want(self) -> int:
        """How many bytes to peek next (never less than 1 while the header is incomplete)."""
        buf = self._buf
        if buf[:1] == V2_SIGNATURE[:1] and len(buf) >= V2_FIXED:
            return V2_FIXED + int.from_bytes(buf[14:16], "big") - len(buf)
        if buf[:1] == V2_SIGNATURE[:1]:
            return V2_FIXED - len(buf)
        return max(V1_MAX - len(buf), 1)

    def take(self, peeked: bytes) -> int:
        """How many leading bytes of ``peeked`` (the next bytes on the wire) belong to the header.
        Raises ProxyProtocolError when they cannot."""
        total = header_length(self._buf + peeked)
        if total is None:
            return len(peeked)
        return min(len(peeked), total - len(self._buf))

    def feed(self, data: bytes) -> ProxyHeader | None:
        """Add header bytes (as counted by :meth:`take`); the header once complete, else None."""
        self._buf += data
        header = parse(self._buf)
        if header is not None:
            self._buf = b""
        return header


def _check_prefix(data: bytes, expected: bytes) -> None:
    n = min(len(data), len(expected))
    if data[:n] != expected[:n]:
        raise ProxyProtocolError("no PROXY protocol header (the connection must start with one)")


# --- v1 ---------------------------------------------------------------------------------------


def _parse_v1(data: bytes) -> ProxyHeader | None:
    length = header_length(data)
    if length is None:
        return None
    if length < _V1_MIN:
        raise ProxyProtocolError("v1 header too short")
    line = data[len(V1_PREFIX) : length - 2]
    if b"\r" in line or b"\n" in line:
        raise ProxyProtocolError("v1 header: stray CR or LF")
    parts = line.split(b" ")
    if parts[0] == b"UNKNOWN":
        return ProxyHeader(1, False, None, None, length)  # §2.1: keep the real addresses
    if parts[0] not in (b"TCP4", b"TCP6") or len(parts) != 5:
        raise ProxyProtocolError("v1 header: expected TCP4|TCP6 <src> <dst> <sport> <dport>")
    version = 4 if parts[0] == b"TCP4" else 6
    src, dst = _v1_address(parts[1], version), _v1_address(parts[2], version)
    sport, dport = _v1_port(parts[3]), _v1_port(parts[4])
    return ProxyHeader(1, False, (src, sport), (dst, dport), length)


def _v1_address(raw: bytes, version: int) -> str:
    try:
        text = raw.decode("ascii")
        ip = ipaddress.ip_address(text)
    except (UnicodeDecodeError, ValueError):
        raise ProxyProtocolError(f"v1 header: {raw[:45]!r} is not an address") from None
    if ip.version != version:
        raise ProxyProtocolError(f"v1 header: {text!r} is not a TCP{version} address")
    return str(ip)


def _v1_port(raw: bytes) -> int:
    if not raw.isdigit() or len(raw) > 5 or (raw[:1] == b"0" and raw != b"0") or int(raw) > 65535:
        raise ProxyProtocolError(f"v1 header: {raw[:8]!r} is not a port")
    return int(raw)


# --- v2 ---------------------------------------------------------------------------------------


def _parse_v2(data: bytes) -> ProxyHeader | None:
    length = header_length(data)
    if length is None:
        return None
    ver_cmd, fam = data[12], data[13]
    if ver_cmd >> 4 != 2:
        raise ProxyProtocolError(f"v2 header: version {ver_cmd >> 4}, expected 2")
    command = ver_cmd & 0x0F
    if command > 1:
        raise ProxyProtocolError(f"v2 header: unknown command {command}")
    family, transport = fam >> 4, fam & 0x0F
    if family > _AF_UNIX or transport > _DGRAM:
        raise ProxyProtocolError(f"v2 header: unknown family/transport 0x{fam:02x}")
    if len(data) < length:
        return None
    if command == 0:  # LOCAL (§2.2): the address block, if any, is to be ignored
        return ProxyHeader(2, True, None, None, length)
    if family == _AF_UNSPEC:
        return ProxyHeader(2, False, None, None, length)
    if transport != _STREAM:
        raise ProxyProtocolError(
            "v2 header: only STREAM connections can be proxied to a TCP server"
        )
    need = _ADDRESS_LEN[family]
    if length - V2_FIXED < need:
        raise ProxyProtocolError(f"v2 header: address block of {length - V2_FIXED} bytes < {need}")
    if family == _AF_UNIX:
        return ProxyHeader(2, False, None, None, length)
    return ProxyHeader(2, False, *_v2_addresses(data[V2_FIXED : V2_FIXED + need], family), length)


def _v2_addresses(block: bytes, family: int) -> tuple[tuple[str, int], tuple[str, int]]:
    size = 4 if family == _AF_INET else 16
    src = ipaddress.ip_address(block[:size])
    dst = ipaddress.ip_address(block[size : 2 * size])
    sport = int.from_bytes(block[2 * size : 2 * size + 2], "big")
    dport = int.from_bytes(block[2 * size + 2 : 2 * size + 4], "big")
    return (str(src), sport), (str(dst), dport)


# --- building headers (tests and the fleet runner's probes) -------------------------------------


def v1_header(src: tuple[str, int], dst: tuple[str, int]) -> bytes:
    """A v1 header for a TCP connection from ``src`` to ``dst``."""
    proto = "TCP6" if ":" in src[0] else "TCP4"
    return f"PROXY {proto} {src[0]} {dst[0]} {src[1]} {dst[1]}\r\n".encode("ascii")


def v2_header(
    src: tuple[str, int] | None, dst: tuple[str, int] | None = None, *, tlvs: bytes = b""
) -> bytes:
    """A v2 header: PROXY from ``src`` to ``dst`` over TCP, or LOCAL when ``src`` is None."""
    if src is None:
        return V2_SIGNATURE + bytes((0x20, 0x00)) + len(tlvs).to_bytes(2, "big") + tlvs
    dst = dst or ("0.0.0.0" if ":" not in src[0] else "::", 0)
    s, d = ipaddress.ip_address(src[0]), ipaddress.ip_address(dst[0])
    family = _AF_INET if s.version == 4 else _AF_INET6
    block = s.packed + d.packed + src[1].to_bytes(2, "big") + dst[1].to_bytes(2, "big") + tlvs
    fam = bytes((0x21, family << 4 | _STREAM))
    return V2_SIGNATURE + fam + len(block).to_bytes(2, "big") + block
