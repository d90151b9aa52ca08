"""systemd's readiness protocol, sd_notify(3), in the standard library: one datagram per state change.

With ``Type=notify`` (or ``notify-reload``) systemd passes ``NOTIFY_SOCKET``, a unix datagram socket
(``@name`` is in the abstract namespace). The supervisor sends ``READY=1`` once its workers serve,
``RELOADING=1`` with ``MONOTONIC_USEC`` when a reload or an upgrade starts (and ``READY=1`` when it is
done), ``STOPPING=1`` when it stops, and ``MAINPID=`` when a binary upgrade hands the service over to
the new supervisor. Without ``NOTIFY_SOCKET`` every call is a no-op.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping


def notify(*fields: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``fields`` (``"READY=1"``, ...) as one datagram; False when there is no socket or it
    fails (a missing listener must never stop the server)."""
    address = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if not address or not fields:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto("\n".join(fields).encode(), address)
    except OSError:
        return False
    return True


def reloading() -> tuple[str, str]:
    """``RELOADING=1`` and the CLOCK_MONOTONIC timestamp systemd (>= 253) asks to come with it."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return "RELOADING=1", f"MONOTONIC_USEC={usec}"
