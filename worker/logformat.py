"""``--access-log-format``: access-log lines in gunicorn's format syntax, compiled once per worker.

A format is text with ``%(ATOM)s`` placeholders (``%%`` is a literal ``%``), the syntax of gunicorn's
``access_log_format``, so a gunicorn setting can be copied unchanged::

    %(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(M)sms

Atoms (gunicorn's): ``h`` remote address, ``l`` "-", ``u`` user of Basic authentication, ``t`` time
``[10/Oct/2000:13:55:36 -0700]``, ``r`` request line, ``m`` method, ``U`` URL path, ``q`` query string,
``H`` protocol, ``s`` status, ``B`` response body bytes, ``b`` the same or "-" for none, ``f`` Referer,
``a`` User-Agent, ``T`` duration in whole seconds, ``M`` in milliseconds, ``D`` in microseconds, ``L`` in
decimal seconds, ``p`` ``<pid>``, ``{Name}i`` a request header, ``{Name}o`` a response header (as the
application set it), ``{NAME}e`` a variable of the worker's environment. Missing values are "-".

Unlike gunicorn, every text atom is escaped as in the default format (``"``, ``\\``, control and non-ASCII
bytes as ``\\xHH``): a client cannot forge lines whatever the format. An unknown atom is refused when the
configuration is read, not at the first request.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from webcluster.worker.accesslog import escape


@dataclass(slots=True)
class Entry:
    """What one access-log line may show (built only when a format is configured)."""

    remote: str
    when: float  # time.time() when the response was done
    request_line: str  # "-" when the head was refused before its request line was complete
    method: str | None
    target: str | None
    version: str | None  # "1.1"
    status: int
    size: int  # response body bytes
    duration: float  # seconds
    request_headers: Sequence[tuple[str, str]] = ()  # lower-case names, as parsed
    response_headers: Sequence[tuple[str, str]] = field(default_factory=tuple)


Getter = Callable[[Entry], str]
_PLACEHOLDER = re.compile(r"%\(([^)]*)\)s|%%|%")


def _header(headers: Sequence[tuple[str, str]], name: str) -> str:
    for key, value in headers:
        if key.lower() == name:
            return escape(value)
    return "-"


def _user(entry: Entry) -> str:
    auth = _header(entry.request_headers, "authorization")
    scheme, _, credentials = auth.partition(" ")
    if scheme.lower() != "basic" or not credentials:
        return "-"
    try:
        user = base64.b64decode(credentials.strip(), validate=True).split(b":", 1)[0]
        return escape(user.decode("utf-8")) or "-"
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return "-"


def _path(entry: Entry) -> str:
    return escape(entry.target.split("?", 1)[0]) if entry.target else "-"


def _query(entry: Entry) -> str:
    target = entry.target or ""
    return escape(target.partition("?")[2]) if "?" in target else "-"


def _micros(entry: Entry) -> int:
    return int(entry.duration * 1_000_000)


_ATOMS: dict[str, Getter] = {
    "h": lambda e: e.remote or "-",
    "l": lambda e: "-",
    "u": _user,
    "t": lambda e: time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(e.when)),
    "r": lambda e: escape(e.request_line),
    "m": lambda e: escape(e.method) if e.method else "-",
    "U": _path,
    "q": _query,
    "H": lambda e: f"HTTP/{e.version}" if e.version else "-",
    "s": lambda e: str(e.status),
    "B": lambda e: str(e.size),
    "b": lambda e: str(e.size) if e.size else "-",
    "f": lambda e: _header(e.request_headers, "referer"),
    "a": lambda e: _header(e.request_headers, "user-agent"),
    "T": lambda e: str(int(e.duration)),
    "M": lambda e: str(_micros(e) // 1000),
    "D": lambda e: str(_micros(e)),
    "L": lambda e: f"{_micros(e) // 1_000_000}.{_micros(e) % 1_000_000:06d}",
    "p": lambda e: f"<{os.getpid()}>",
}
ATOMS = tuple(_ATOMS) + ("{Name}i", "{Name}o", "{NAME}e")


def _atom(name: str) -> Getter:
    if name in _ATOMS:
        return _ATOMS[name]
    match = re.fullmatch(r"\{([^{}]+)\}([ioe])", name)
    if match is None:
        raise ValueError(
            f"unknown atom %({name})s; use one of {', '.join(ATOMS)} (gunicorn's access-log atoms)"
        )
    key, kind = match.group(1), match.group(2)
    if kind == "e":
        return lambda e: escape(os.environ.get(key, "-"))
    lower = key.lower()
    if kind == "i":
        return lambda e: _header(e.request_headers, lower)
    return lambda e: _header(e.response_headers, lower)


def compile_format(fmt: str) -> Callable[[Entry], str]:
    """The function turning an ``Entry`` into one line; raises ValueError naming the bad placeholder.

    The format is parsed once: each line is a join of literal text and the atoms it uses, so an atom
    that is not in the format costs nothing."""
    parts: list[str | Getter] = []
    pos = 0
    for match in _PLACEHOLDER.finditer(fmt):
        parts.append(fmt[pos : match.start()])
        pos = match.end()
        if match.group(0) == "%%":
            parts.append("%")
        elif match.group(1) is None:
            raise ValueError(
                f"a lone % at offset {match.start()}; write atoms as %(h)s and a literal % as %%"
            )
        else:
            parts.append(_atom(match.group(1)))
    parts.append(fmt[pos:])
    pieces = tuple(p for p in parts if p != "")
    if "\n" in fmt or "\r" in fmt:
        raise ValueError("the format contains a line break; one request is one line")

    def render(entry: Entry) -> str:
        return "".join(p if type(p) is str else p(entry) for p in pieces)

    return render
