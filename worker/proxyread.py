"""``--proxy-protocol``: the loop thread reads a connection's PROXY header before anything else.

The header comes before the first HTTP byte and before a TLS ClientHello, so the loop reads it right
after accept, one non-blocking step per readiness event (a client that stalls holds a socket and a
header-timeout entry, never a thread). It never reads past the header: it peeks (``MSG_PEEK``), lets the
sans-IO :class:`worker.proxyproto.ProxyReader` say how many of those bytes are header, and consumes only
those, so the HTTP parser or OpenSSL finds the rest untouched in the socket. Peeked bytes that are all
header are consumed at once, so an incomplete header never leaves readable data behind a re-armed
one-shot registration (which would spin).

Trust: a header is believed only from a peer in ``--forwarded-allow-ips``; any other peer, a missing or
malformed header, or a timeout closes the connection and counts it (``proxy_rejected`` in /stats).
"""

from __future__ import annotations

import socket

from webcluster.worker.proxyproto import ProxyHeader, ProxyProtocolError, ProxyReader


def read_step(sock: socket.socket, reader: ProxyReader) -> ProxyHeader | None:
    """Read what is there of the header; the header once complete, else None (wait for more).

    Raises BlockingIOError (nothing to read yet), ProxyProtocolError (not a valid header, or EOF
    before its end) and OSError (the connection failed)."""
    peeked = sock.recv(reader.want(), socket.MSG_PEEK)
    if not peeked:
        raise ProxyProtocolError("connection closed before the end of the PROXY header")
    data = sock.recv(reader.take(peeked))  # those bytes are in the socket: no short read
    return reader.feed(data)


def apply(header: ProxyHeader, remote: tuple[str, int]) -> tuple[str, int]:
    """The client address to use: the header's source, or the peer's own when it names none."""
    return header.source if header.source is not None else remote
