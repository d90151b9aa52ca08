"""TLS for the worker: the server context, a non-blocking handshake the loop drives, and a socket wrapper.

Which thread calls what:

- ``share_context`` runs in the supervisor just before it forks a worker (after its privilege drop, so the
  key file must be readable by ``--user``): the context is built once per configuration and every worker
  forked from it inherits it, including OpenSSL's session-ticket key, so a client resumes its session on
  whichever worker its next connection reaches. ``worker_context`` runs once per worker at boot
  (``worker.main``): it takes the inherited context when the settings and the files (inode, size, mtime)
  are still the same, else builds its own, so a HUP reload picks up renewed certificates and a bad file
  is still a boot error reported by the worker (the supervisor halts, or rolls a reload back).
- ``TLSAcceptor.handshake`` runs on the loop thread only. The accepted socket is wrapped with
  ``do_handshake_on_connect=False`` and each readiness event advances ``do_handshake()`` one non-blocking
  step, so a client that stalls mid-handshake costs a socket and a header-timeout entry, never a thread.
- ``TLSStream`` replaces the plain socket in ``Conn.sock`` once the handshake starts. It keeps the plain
  non-blocking socket's contract (``BlockingIOError`` = "wait for readable/writable", ``OSError`` = "gone"),
  so the loop's and the pool threads' code is the same for both; the plain path pays nothing for TLS.

Only a worker (or supervisor) with TLS configured imports this module, and with it ``ssl`` and OpenSSL;
what plain-HTTP code needs to name lives in ``worker.tlscommon``.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import ssl

from webcluster.worker.tlscommon import (
    DEFAULT_CIPHERS,
    HS_DONE,
    HS_FAILED,
    HS_PLAIN_HTTP,
    HS_READ,
    HS_WRITE,
    TLSConfigError,
    WantWrite,
)

log = logging.getLogger("webcluster.error")

CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}

_TLS_HANDSHAKE_RECORD = (
    0x16  # RFC 8446 §5.1 ContentType handshake: the first byte of every ClientHello
)
_ASCII_LETTERS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


MIN_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def server_context(
    certfile: str,
    keyfile: str | None,
    *,
    ca_certs: str | None = None,
    cert_reqs: str = "none",
    ciphers: str = DEFAULT_CIPHERS,
    min_version: str = "1.2",
) -> ssl.SSLContext:
    """A server ``SSLContext``: TLS 1.2 (ECDHE + AEAD suites only, ``ciphers``) or 1.3 and later.

    ``cert_reqs`` is ``none`` / ``optional`` / ``required``: whether a client certificate is asked for,
    and whether the handshake fails without one. Client certificates are verified against ``ca_certs``
    only (never the system store). ``ciphers`` is an OpenSSL cipher string for TLS 1.2;
    ``min_version`` is ``1.2`` or ``1.3``. Session tickets stay on (OpenSSL's default): the ticket
    key belongs to the context, so every connection a worker accepts can resume every other's session.
    """
    # create_default_context: no SSLv2/3, no compression, server cipher preference. TLS 1.0 and 1.1
    # are deprecated (RFC 8996).
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    if min_version not in MIN_VERSIONS:
        raise TLSConfigError(f"setting tls_min_version: {min_version!r} is not 1.2 or 1.3")
    ctx.minimum_version = MIN_VERSIONS[min_version]
    try:
        ctx.set_ciphers(ciphers)
    except ssl.SSLError:
        raise TLSConfigError(
            f"setting ciphers: OpenSSL selects no cipher from {ciphers!r}; "
            "check the names with `openssl ciphers -v`"
        ) from None
    # Renegotiation is the one case where a write needs a read first; refusing it keeps every wait in
    # the direction of the operation (and closes an old CPU-exhaustion vector, CVE-2011-1473).
    ctx.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    ctx.set_alpn_protocols(["http/1.1"])  # RFC 7301: we speak HTTP/1.1 only; h2 clients fall back
    try:
        ctx.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise TLSConfigError(
            f"setting certfile/keyfile: cannot load {certfile} / {keyfile}: {_reason(exc)}"
        ) from None
    if ca_certs:
        try:
            ctx.load_verify_locations(cafile=ca_certs)
        except (OSError, ssl.SSLError) as exc:
            raise TLSConfigError(
                f"setting ca_certs: cannot load {ca_certs}: {_reason(exc)}"
            ) from None
    if cert_reqs not in CERT_REQS:
        raise TLSConfigError(f"setting cert_reqs: {cert_reqs!r} is not none, optional or required")
    if cert_reqs != "none" and not ca_certs:
        raise TLSConfigError("setting cert_reqs: verifying client certificates needs --ca-certs")
    ctx.verify_mode = CERT_REQS[cert_reqs]
    return ctx


_shared: tuple[tuple, ssl.SSLContext] | None = (
    None  # (settings + file stats, context), supervisor-built
)


def _fingerprint(settings: dict) -> tuple:
    """The settings plus the identity of each file they name: a changed file makes another print."""
    stats = []
    for name in ("certfile", "keyfile", "ca_certs"):
        path = settings.get(name)
        try:
            st = os.stat(path) if path else None
        except OSError:
            st = None
        stats.append((st.st_ino, st.st_size, st.st_mtime_ns) if st else None)
    return (tuple(sorted(settings.items())), tuple(stats))


def share_context(**settings) -> None:
    """Supervisor side, before a fork: build the context for ``settings`` (``server_context``'s
    arguments) unless the one already built matches. A failure is left for the worker to report."""
    global _shared
    fingerprint = _fingerprint(settings)
    if _shared is not None and _shared[0] == fingerprint:
        return
    try:
        _shared = (fingerprint, server_context(**settings))
    except TLSConfigError:
        _shared = None


def worker_context(**settings) -> ssl.SSLContext:
    """Worker side: the inherited context if it was built from these settings and files, else a new one
    (RFC 5077 tickets then resume only on this worker)."""
    if _shared is not None and _shared[0] == _fingerprint(settings):
        return _shared[1]
    return server_context(**settings)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return exc.reason.lower().replace("_", " ")
    return getattr(exc, "strerror", None) or str(exc)


class TLSStream:
    """A server-side ``SSLSocket`` behind the plain non-blocking socket's contract (see module docstring).

    Owned by one thread at a time, like the ``Conn`` that holds it (OpenSSL objects are not thread-safe).
    """

    __slots__ = ("_sock", "established")

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self._sock = sock
        self.established = False

    def fileno(self) -> int:
        return self._sock.fileno()

    @property
    def ssl_socket(self) -> ssl.SSLSocket:
        """The wrapped socket (peer certificate, cipher, version)."""
        return self._sock

    def setsockopt(self, level: int, option: int, value: int) -> None:
        """A TCP option on the connection under the TLS layer (``Conn.want_more``)."""
        self._sock.setsockopt(level, option, value)

    def do_handshake(self) -> None:
        """One non-blocking step; ``BlockingIOError`` / ``WantWrite`` ask for readable / writable."""
        try:
            self._sock.do_handshake()
        except ssl.SSLWantReadError:
            raise BlockingIOError(errno.EAGAIN, "TLS handshake needs input") from None
        except ssl.SSLWantWriteError:
            raise WantWrite(errno.EAGAIN, "TLS handshake needs to send") from None
        self.established = True

    def recv(self, size: int) -> bytes:
        """Decrypted bytes (b"" at EOF); ``BlockingIOError`` when a full record has not arrived yet."""
        sock = self._sock
        try:
            data = sock.recv(size)
        except ssl.SSLWantReadError:
            raise BlockingIOError(errno.EAGAIN, "TLS record incomplete") from None
        except ssl.SSLWantWriteError:
            raise WantWrite(errno.EAGAIN, "TLS read needs to send first") from None
        # Bytes OpenSSL already decrypted are no longer in the kernel: epoll would never report them.
        pending = sock.pending()
        if pending and data:
            parts = [data]
            while pending:
                parts.append(sock.recv(pending))
                pending = sock.pending()
            data = b"".join(parts)
        return data

    def send(self, data, flags: int = 0) -> int:
        """Encrypt and send; all of ``data`` or ``BlockingIOError``. ``flags`` (``MSG_MORE``, a hint that
        more follows) are ignored: a TLS record goes out whole, and SSLSocket refuses flags.

        Without partial-write mode SSL_write either takes everything or asks to be called again with the
        same bytes; CPython sets SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER, so a retry with the same buffer,
        moved or with more bytes appended (what ``Conn.out`` does), continues where OpenSSL stopped.
        A write that needs a read (renegotiation, refused in ``server_context``) is an ``OSError``: close.
        """
        try:
            return self._sock.send(data)
        except ssl.SSLWantWriteError:
            raise BlockingIOError(errno.EAGAIN, "TLS send buffer full") from None

    def shutdown(self, how: int) -> None:
        """Send close_notify (best effort, non-blocking), then half-close TCP; later reads are raw."""
        self._close_notify()
        self._sock.shutdown(how)  # SSLSocket.shutdown drops the SSL object: linger reads raw bytes

    def close(self) -> None:
        """close_notify when established (clients of close-delimited bodies need it), then close."""
        self._close_notify()
        self._sock.close()

    def _close_notify(self) -> None:
        if not self.established:
            return
        self.established = False
        try:
            # Sends our close_notify, then tries once to read theirs: SSLWantReadError is the normal
            # outcome on a non-blocking socket; we never wait for the peer's (RFC 8446 §6.1 allows it).
            self._sock.unwrap()
        except (OSError, ValueError):
            pass


class TLSAcceptor:
    """Drives server handshakes on the loop thread. One per worker; holds the context, no mutable state."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context

    def handshake(self, sock: socket.socket | TLSStream) -> tuple[int, socket.socket | TLSStream]:
        """Advance the handshake of an accepted socket; return (``HS_*`` outcome, the socket to keep).

        The first step looks at the first byte without consuming it: a ClientHello is wrapped and the
        handshake starts; an ASCII letter is a plaintext HTTP request (answered 400, as nginx does);
        anything else is closed.
        """
        if type(sock) is not TLSStream:
            outcome = _sniff(sock)
            if outcome != HS_DONE:
                return outcome, sock
            try:
                sock = TLSStream(
                    self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                )
            except (OSError, ValueError) as exc:
                log.debug("TLS wrap failed: %s", exc)
                return HS_FAILED, sock
        try:
            sock.do_handshake()
        except WantWrite:
            return HS_WRITE, sock
        except BlockingIOError:
            return HS_READ, sock
        except (
            OSError,
            ValueError,
        ) as exc:  # SSLError included: wrong version, bad cert, no cert...
            log.debug("TLS handshake failed: %s", exc)
            return HS_FAILED, sock
        return HS_DONE, sock


def _sniff(sock: socket.socket) -> int:
    """HS_DONE for a TLS handshake record ahead, else what to do with a non-TLS client."""
    try:
        first = sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return HS_READ
    except OSError:
        return HS_FAILED
    if not first:
        return HS_FAILED
    if first[0] == _TLS_HANDSHAKE_RECORD:
        return HS_DONE
    return HS_PLAIN_HTTP if first[0] in _ASCII_LETTERS else HS_FAILED
