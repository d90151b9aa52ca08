"""atheris (libFuzzer) target for the PROXY protocol v1/v2 parser (``worker/proxyproto.py``).

    python tests/fuzz/fuzz_proxy.py -max_total_time=60

Invariants, for any bytes:

* ``parse`` returns a header, None ("need more") or raises ``ProxyProtocolError``, nothing else;
* a parsed header's ``length`` is what ``header_length`` says, it fits in the data, and the header's
  own bytes alone parse to the same header (nothing after it was needed);
* the incremental reader (peek ``want()`` bytes, ``take``, ``feed``), in any split, never consumes a
  byte past the header and ends with the same header or error as ``parse`` on the whole;
* headers built by ``v1_header`` / ``v2_header`` from any addresses and ports parse back to them.
"""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

import atheris  # noqa: E402

with atheris.instrument_imports():
    from webcluster.worker import proxyproto as pp


def whole(data: bytes):
    """(header or None, error text or None) from one parse of all of ``data``."""
    try:
        header = pp.parse(data)
    except pp.ProxyProtocolError as exc:
        return None, str(exc)
    if header is not None:
        assert 0 < header.length <= len(data)
        assert pp.header_length(data) == header.length
        assert pp.parse(data[: header.length]) == header
    return header, None


def incremental(data: bytes, sizes: list[int]):
    """The reader's result when the socket delivers ``data`` in reads no larger than ``sizes``."""
    reader, pos, i = pp.ProxyReader(), 0, 0
    while pos < len(data):
        want = reader.want()
        assert want >= 1
        peek = data[pos : pos + min(want, sizes[i % len(sizes)] if sizes else want)]
        i += 1
        try:
            n = reader.take(peek)
            assert 0 <= n <= len(peek)
            header = reader.feed(peek[:n])
        except pp.ProxyProtocolError as exc:
            return None, str(exc)
        pos += n
        if header is not None:
            assert pos == header.length  # not one byte past the header was consumed
            return header, None
        if n == 0:
            return None, None
    return None, None


def round_trip(fdp: atheris.FuzzedDataProvider) -> None:
    v6 = fdp.ConsumeBool()
    size = 16 if v6 else 4
    src = (str(ipaddress.ip_address(fdp.ConsumeBytes(size).ljust(size, b"\0"))), fdp.ConsumeUInt(2))
    dst = (str(ipaddress.ip_address(fdp.ConsumeBytes(size).ljust(size, b"\0"))), fdp.ConsumeUInt(2))
    for raw in (pp.v1_header(src, dst), pp.v2_header(src, dst)):
        header = pp.parse(raw + fdp.ConsumeBytes(8))
        assert header is not None and (header.source, header.destination) == (src, dst), raw


def test_one_input(data: bytes) -> None:
    """libFuzzer entry point."""
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeIntInRange(0, 7) == 0:
        round_trip(fdp)
        return
    sizes = [fdp.ConsumeIntInRange(1, 64) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    stream = fdp.ConsumeBytes(fdp.remaining_bytes())
    header, error = whole(stream)
    got_header, got_error = incremental(stream, sizes)
    if header is not None:
        assert got_header == header, (header, got_header, got_error)
    elif error is not None:
        assert got_error is not None, (error, got_header)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
