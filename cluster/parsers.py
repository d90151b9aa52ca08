"""Pure value parsers and validators used by the settings table (cluster/settings.py).

A parser takes one raw value - a string from the command line or the environment, or a native TOML
value (int, float, bool, str, array, table) - and returns the typed value, or raises
``InvalidValue(problem, fix)``. Parsers never read other settings or the environment; a few look at the
filesystem (a directory must exist, a user must be known) but none change it. Relative paths are made
absolute against the current directory, so a later ``--chdir`` in the worker does not move them.
"""

from __future__ import annotations

import grp
import ipaddress
import os
import pwd
import re
from collections.abc import Callable, Iterable
from typing import Any

Parser = Callable[[object], Any]
Validator = Callable[[Any], None]


class InvalidValue(ValueError):
    """A raw value that a parser or validator rejects: what is wrong, and how to fix it."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(f"{problem}; {fix}")
        self.problem = problem
        self.fix = fix


# --- scalars ---------------------------------------------------------------------------------

_INT = re.compile(r"[+-]?\d+")
_SIZE = re.compile(r"(\d+)\s*([kmg]?)", re.IGNORECASE)
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_DURATION_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def as_text(value: object, fix: str) -> str:
    if not isinstance(value, str) or "\0" in value:  # a NUL cannot reach a path or a name lookup
        raise InvalidValue(f"expected a string without NUL, got {value!r}", fix)
    return value.strip()


def _is_number(value: object) -> bool:
    # bool is an int subclass; `threads = true` in TOML is a mistake, not 1.
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_int(value: object) -> int:
    """A whole number: ``8`` or ``"8"``."""
    if _is_number(value) and isinstance(value, int):
        return value
    fix = "write a whole number such as 8"
    if not isinstance(value, str) or not _INT.fullmatch(value.strip()):
        raise InvalidValue(f"{value!r} is not a whole number", fix)
    return int(value.strip())  # int() strips less than str.strip(): "4\x1c" (found by fuzzing)


def parse_size(value: object) -> int:
    """A byte count: ``65536``, or with a binary suffix ``64k`` / ``1m`` / ``1g`` (x1024, x1024², x1024³)."""
    if _is_number(value) and isinstance(value, int):
        return value
    fix = "write a byte count such as 65536, 64k, 1m or 1g"
    match = _SIZE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise InvalidValue(f"{value!r} is not a size", fix)
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]


def parse_duration(value: object) -> float:
    """Seconds as a float: ``5``, ``2.5``, or with a unit ``500ms`` / ``30s`` / ``2m`` / ``1h``."""
    fix = "write seconds such as 5, 2.5, 500ms, 30s, 2m or 1h"
    if _is_number(value):
        seconds = float(value)  # type: ignore[arg-type]
        if seconds != seconds or seconds in (float("inf"), float("-inf")):
            raise InvalidValue(f"{value!r} is not a finite duration", fix)
        return seconds
    match = _DURATION.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise InvalidValue(f"{value!r} is not a duration", fix)
    unit = match.group(2).lower() if match.group(2) else None
    return float(match.group(1)) * _DURATION_UNITS[unit]


def parse_bool(value: object) -> bool:
    """``true/false``, ``yes/no``, ``on/off``, ``1/0`` (any case), or a TOML boolean."""
    if isinstance(value, bool):
        return value
    word = value.strip().lower() if isinstance(value, str) else None
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise InvalidValue(
        f"{value!r} is not a boolean", "write true or false (also yes/no, on/off, 1/0)"
    )


def parse_choice(*choices: str) -> Parser:
    """A parser accepting one of ``choices`` (case-insensitive), returned in lower case."""

    def parse(value: object) -> str:
        word = as_text(value, f"write one of {', '.join(choices)}").lower()
        if word not in choices:
            raise InvalidValue(f"{value!r} is not allowed", f"use one of {', '.join(choices)}")
        return word

    return parse


def parse_header_text(value: object) -> str:
    """Printable ASCII safe to put in a header value (RFC 9110 §5.5 field-value; obs-text is left out
    because it is deprecated and the writer encodes Latin-1): no CR, LF or other controls."""
    text = as_text(value, "write plain text")
    if not all(c == "\t" or " " <= c <= "~" for c in text):
        raise InvalidValue(
            f"{value!r} has a control or non-ASCII character", "use printable ASCII only"
        )
    return text


def parse_ciphers(value: object) -> str:
    """An OpenSSL cipher string that selects at least one cipher (checked by OpenSSL itself)."""
    text = as_text(value, "write an OpenSSL cipher string such as ECDHE+AESGCM")
    import ssl  # here, not at the top: a plain-HTTP cluster never loads OpenSSL (worker/tlscommon.py)

    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(text)
    except ssl.SSLError:
        raise InvalidValue(f"{text!r} selects no cipher", "see `openssl ciphers -v`") from None
    return text


def parse_optional_text(value: object) -> str | None:
    """Any string; the empty string means unset (None)."""
    return as_text(value, "write a string, or an empty string to unset") or None


# --- validators ------------------------------------------------------------------------------


def at_least(minimum: int | float, meaning: str = "") -> Validator:
    """A validator rejecting values below ``minimum``; ``meaning`` explains the lowest value."""

    def validate(value: int | float) -> None:
        if value < minimum:
            fix = f"use {minimum} or more" + (f" ({meaning})" if meaning else "")
            raise InvalidValue(f"{value!r} is too small", fix)

    return validate


def above_zero(value: float) -> None:
    """A validator for timeouts that cannot be disabled."""
    if value <= 0:
        raise InvalidValue(f"{value!r} must be more than 0 seconds", "use a positive duration")


# --- lists -----------------------------------------------------------------------------------


def items(value: object, what: str) -> list[str]:
    """A TOML array of strings, or a comma-separated string (env, file); empty items are dropped."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value]
    raise InvalidValue(f"expected a list of {what}, got {value!r}", "use an array of strings")


def unique(values: Iterable[str], what: str) -> tuple[str, ...]:
    seen: list[str] = []
    for v in values:
        if v in seen:
            raise InvalidValue(f"{what} {v!r} is listed twice", "list it once")
        seen.append(v)
    return tuple(seen)


def parse_ip_list(value: object) -> tuple[str, ...]:
    """Comma list of IP addresses or CIDR networks; ``*`` trusts everyone."""
    result = items(value, "IP addresses")
    for item in result:
        if item == "*":
            continue
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise InvalidValue(
                f"{item!r} is not an IP address or network",
                "write e.g. 127.0.0.1,10.0.0.0/8,::1 or *",
            ) from None
    return unique(result, "address")


# --- paths, modules, users -------------------------------------------------------------------


def _path(value: object) -> str:
    return os.path.abspath(os.path.expanduser(as_text(value, "write a path")))


def existing_dir(value: object) -> str:
    """An existing directory, made absolute."""
    path = _path(value)
    if not os.path.isdir(path):
        raise InvalidValue(f"directory {path!r} does not exist", "create it or fix the path")
    return path


def optional_dir(value: object) -> str | None:
    """An existing directory, or the empty string for unset."""
    return existing_dir(value) if parse_optional_text(value) is not None else None


def optional_file(value: object) -> str | None:
    """An existing readable file, made absolute; the empty string means unset."""
    if parse_optional_text(value) is None:
        return None
    path = _path(value)
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise InvalidValue(f"file {path!r} does not exist or is unreadable", "fix the path")
    return path


def parse_file_list(value: object) -> tuple[str, ...]:
    """Existing readable files (an array, a repeated flag or a comma list), made absolute."""
    return unique((str(optional_file(v)) for v in items(value, "files")), "file")


def parse_dir_list(value: object) -> tuple[str, ...]:
    """Existing directories (an array, a repeated flag or a comma list), made absolute."""
    return unique((existing_dir(v) for v in items(value, "directories")), "directory")


def _writable_path(value: object) -> str:
    path = _path(value)
    if not os.path.isdir(os.path.dirname(path)):
        raise InvalidValue(f"the directory of {path!r} does not exist", "create it or fix the path")
    return path


def optional_output(value: object) -> str | None:
    """A file to create (its directory must exist), ``-`` for stderr, or empty for unset."""
    text = parse_optional_text(value)
    return text if text in (None, "-") else _writable_path(text)


def log_output(value: object) -> str:
    """Like ``optional_output`` but required: ``-`` (stderr) or a file path."""
    result = optional_output(value)
    if result is None:
        raise InvalidValue("the value is empty", "write - for stderr or a file path")
    return result


_DOTTED = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
_APP = re.compile(rf"{_DOTTED}:{_DOTTED}")


def parse_app(value: object) -> str | None:
    """``package.module:attribute`` naming a WSGI callable (checked syntactically, not imported)."""
    text = parse_optional_text(value)
    if text is not None and not _APP.fullmatch(text):
        raise InvalidValue(
            f"{text!r} is not MODULE:CALLABLE", "write e.g. myproject.wsgi:application"
        )
    return text


def parse_root_path(value: object) -> str:
    """A URL prefix for SCRIPT_NAME: empty, or starting with ``/`` (a trailing ``/`` is dropped)."""
    text = as_text(value, "write a path like /app")
    if text and not text.startswith("/"):
        raise InvalidValue(f"{text!r} does not start with /", "write e.g. /app")
    return parse_header_text(text.rstrip("/"))


def parse_static(value: object) -> tuple[tuple[str, str], ...]:
    """Mounts ``/prefix=DIR`` (array or comma list), or a TOML table ``{"/prefix" = "DIR"}``."""
    if isinstance(value, dict):
        value = [f"{k}={v}" for k, v in value.items()]
    mounts: list[tuple[str, str]] = []
    for item in items(value, "/prefix=DIR mounts"):
        prefix, sep, directory = item.partition("=")
        if not sep or not prefix.startswith("/") or not directory:
            raise InvalidValue(f"{item!r} is not /prefix=DIR", "write e.g. /assets=./public")
        prefix = prefix.rstrip("/")
        if not prefix:
            raise InvalidValue(
                f"{item!r} mounts the whole site", "use --root DIR to serve a whole site"
            )
        if prefix in (p for p, _ in mounts):
            raise InvalidValue(f"prefix {prefix!r} is mounted twice", "mount each prefix once")
        mounts.append((prefix, existing_dir(directory)))
    return tuple(mounts)


def parse_umask(value: object) -> int | None:
    """An octal mask such as ``027`` or ``0o027`` (a TOML integer is taken as is: write 0o027)."""
    fix = "write an octal mask such as 027"
    if _is_number(value) and isinstance(value, int):
        mask = value
    elif parse_optional_text(value) is None:
        return None
    elif re.fullmatch(r"(0o)?[0-7]{1,4}", value.strip(), re.IGNORECASE):  # type: ignore[union-attr]
        mask = int(value.strip(), 8)  # type: ignore[union-attr]
    else:
        raise InvalidValue(f"{value!r} is not an octal number", fix)
    if not 0 <= mask <= 0o777:
        raise InvalidValue(f"{value!r} is outside 0..0o777", fix)
    return mask


def _account(value: object, lookup: Callable[[str], object], what: str) -> str | None:
    text = str(value) if _is_number(value) else parse_optional_text(value)
    if text is None or text.isdigit():
        return text
    try:
        lookup(text)
    except KeyError:
        raise InvalidValue(
            f"no {what} named {text!r}", f"use an existing {what} name or a number"
        ) from None
    return text


def parse_user(value: object) -> str | None:
    """A user name (must exist) or a numeric uid."""
    return _account(value, pwd.getpwnam, "user")


def parse_group(value: object) -> str | None:
    """A group name (must exist) or a numeric gid."""
    return _account(value, grp.getgrnam, "group")
