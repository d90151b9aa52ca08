"""H1Connection: the server side of one HTTP/1.x connection, sans-IO.  (API CONTRACT - to be implemented)

Bytes in (``receive_data``), events out (``next_event``); response events in (``send_response`` /
``send_data`` / ``send_end``), bytes out. No socket, selector or thread is imported here.

Typical use by the I/O layer::

    conn = H1Connection(Limits())
    conn.receive_data(sock.recv(65536))          # b"" signals EOF
    ev = conn.next_event()                        # Request | Data | EndOfMessage | ConnectionClosed
                                                  # | NEED_DATA | PAUSED; raises RemoteProtocolError
    out = conn.send_response(200, [("content-type", "text/plain")], date=b"Sun, 06 Nov 1994 08:49:37 GMT")
    out += conn.send_data(b"hello") + conn.send_end()
    if conn.keep_alive: conn.start_next_cycle()   # then next_event() again (pipelined bytes are kept)
    else: close the socket after flushing

On ``RemoteProtocolError`` the I/O layer sends ``conn.error_response(exc, date=...)`` and closes; the core
never parses another request after an error (``next_event`` keeps raising / returns nothing new).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    """Parser limits. Defaults follow DESIGN §3 (precedents: nginx large_client_header_buffers 8k,
    Apache LimitRequestFields 100, node's 16 KiB total; we allow 64 KiB total head)."""

    max_request_line: int = 8192  # longer -> 414
    max_header_count: int = 100  # more fields -> 431
    max_header_field: int = 8192  # one field line longer -> 431
    max_head: int = 65536  # whole head longer -> 431
    max_body: int = 1 << 30  # 0 = unlimited; Content-Length or chunked total above -> 413
    max_chunk_line: int = 4096  # chunk-size line incl. extensions -> 400
    max_trailer: int = 16384  # total trailer section -> 431
