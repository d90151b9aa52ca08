"""Listening addresses: the one parser of ``--bind`` and ``--admin`` values, and their parsed form.

``HOST:PORT``, ``[IPv6]:PORT``, ``unix:/path`` and ``fd://N`` (an inherited descriptor, e.g. systemd socket
activation). The settings table checks values with ``parse_bind``/``parse_admin``; the supervisor opens
sockets from the ``BindAddress`` that ``split_address`` returns for the same text.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from webcluster.cluster.parsers import InvalidValue, as_text, items, unique

_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")
_BIND_FORMS = "write HOST:PORT, [IPv6]:PORT, unix:/path or fd://N"


@dataclass(frozen=True)
class BindAddress:
    """One parsed address: ``kind`` is "tcp" (host, port), "unix" (path) or "fd" (fd)."""

    raw: str
    kind: str
    host: str = ""
    port: int = 0
    path: str = ""
    fd: int = -1

    def display(self, port: int | None = None) -> str:
        """The address as the user writes it, with ``port`` (the bound one) when given."""
        if self.kind == "unix":
            return f"unix:{self.path}"
        if self.kind == "fd":
            return f"fd://{self.fd}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port if port is None else port}"


def _port(text: str, address: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise InvalidValue(f"{address!r} has a bad port {text!r}", "use a port from 0 to 65535")
    return int(text)


def _host(host: str, address: str) -> str:
    if not host:
        raise InvalidValue(
            f"{address!r} has no host", "write 0.0.0.0:PORT for every IPv4 interface"
        )
    if ":" in host:
        raise InvalidValue(f"{address!r} has an IPv6 host without brackets", "write [::1]:PORT")
    try:
        if re.fullmatch(r"[\d.]+", host):  # looks numeric: must be a real IPv4 address
            ipaddress.IPv4Address(host)
        elif not _HOSTNAME.fullmatch(host) or len(host) > 253:
            raise ValueError(host)
    except ValueError:
        raise InvalidValue(f"{address!r} has an invalid host {host!r}", _BIND_FORMS) from None
    return host


def split_address(address: str, *, allow_fd: bool = True) -> BindAddress:
    """Parse and check one address; raises ``InvalidValue`` naming the problem and the fix."""
    if address.startswith("unix:"):
        if not address[5:]:
            raise InvalidValue(f"{address!r} has no path", "write unix:/run/webcluster.sock")
        return BindAddress(address, "unix", path=address[5:])
    if address.startswith("fd://") and allow_fd:
        if not address[5:].isdigit():
            raise InvalidValue(f"{address!r} has a bad descriptor", "write fd://3 (a number)")
        return BindAddress(address, "fd", fd=int(address[5:]))
    if address.startswith("["):
        host, sep, port = address[1:].partition("]:")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise InvalidValue(
                f"{address!r} is not a valid [IPv6]:PORT", "write e.g. [::1]:8080"
            ) from None
        return BindAddress(address, "tcp", host=host, port=_port(port if sep else "", address))
    host, sep, port = address.rpartition(":")
    if not sep:
        raise InvalidValue(f"{address!r} has no port", _BIND_FORMS)
    return BindAddress(address, "tcp", host=_host(host, address), port=_port(port, address))


def parse_address(value: object, *, allow_fd: bool = True) -> str:
    """One address as a setting value, checked (see ``split_address``) and returned unchanged."""
    return split_address(as_text(value, _BIND_FORMS), allow_fd=allow_fd).raw


def parse_bind(value: object) -> tuple[str, ...]:
    """One or more listening addresses (see ``parse_address``); duplicates are refused."""
    addresses = unique((parse_address(a) for a in items(value, "addresses")), "address")
    if not addresses:
        raise InvalidValue("no address given", _BIND_FORMS)
    return addresses


def parse_admin(value: object) -> str:
    """``off`` (no admin endpoint) or one address (not ``fd://``)."""
    if isinstance(value, str) and value.strip().lower() == "off":
        return "off"
    return parse_address(value, allow_fd=False)
