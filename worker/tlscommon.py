"""The TLS names that plain-HTTP code needs too (the loop, the connection, the settings), without
importing ``ssl``: loading OpenSSL adds to the memory of every process that imports it, and a worker
forked from a supervisor that imported it carries that memory whether it serves TLS or not.
``worker.tls``, imported only when TLS is configured, holds the rest.
"""

from __future__ import annotations

# Outcomes of one handshake step (loop thread).
HS_DONE = 0  # established: the connection enters the normal READING state
HS_READ = 1  # wait until readable
HS_WRITE = 2  # wait until writable
HS_PLAIN_HTTP = (
    3  # a plaintext HTTP request reached the TLS port: answer 400 in clear text, then close
)
HS_FAILED = 4  # not TLS, a bad handshake, a refused client certificate, or the peer left: close

# Mozilla's "intermediate" TLS 1.2 suites without the DHE ones (finite-field DH needs a parameter file the
# stdlib cannot generate): ECDHE key exchange (forward secrecy) with an AEAD cipher only. No CBC suite, so
# no LUCKY13-style padding oracle; no RSA key exchange, so no ROBOT. TLS 1.3 suites are not affected by
# this string (OpenSSL configures them separately) and all three of OpenSSL's are AEAD already.
DEFAULT_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)


class TLSConfigError(ValueError):
    """The certificate, key or CA file cannot be used; ``str()`` names the setting."""


class WantWrite(BlockingIOError):
    """A TLS read cannot progress until the socket is writable (OpenSSL must send something first)."""
