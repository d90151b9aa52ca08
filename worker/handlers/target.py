"""Request-target helpers shared by the handlers (pure functions, any thread)."""

from __future__ import annotations

from urllib.parse import urlsplit


def split_target(target: str) -> tuple[str, str, str | None]:
    """``(path, query, authority)`` of a request-target, path still percent-encoded.

    Origin-form ``/a?b`` -> ``("/a", "b", None)``. Absolute-form ``http://h:1/a?b`` -> ``("/a", "b", "h:1")``:
    RFC 9112 §3.2.2 says the authority of an absolute-form target replaces the Host header. Asterisk-form
    (``OPTIONS *``) keeps ``"*"`` as its path. A fragment, which a client must not send, is dropped.
    """
    if target.startswith("/") or target == "*":
        if "?" not in target:
            return target, "", None  # the usual origin-form: no query
        path, _, query = target.partition("?")
        return path, query.partition("#")[0], None
    parts = urlsplit(target)
    if parts.scheme and parts.netloc:
        return parts.path or "/", parts.query, parts.netloc.rpartition("@")[2]
    # authority-form (CONNECT host:port) or garbage the core let through: no path to serve
    path, _, query = target.partition("?")
    return path, query, None
