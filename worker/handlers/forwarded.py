"""Proxy headers: who the client is and which scheme it used, when a trusted proxy says so.

``X-Forwarded-For`` / ``X-Forwarded-Proto`` (de-facto) and ``Forwarded`` (RFC 7239) are believed only when
the direct peer is in ``--forwarded-allow-ips``; from anyone else they are ignored, since any client can send
them. Called from pool threads; a policy is immutable after construction, so it is shared freely.

Choices (documented in README):
- ``Forwarded`` wins over ``X-Forwarded-*`` when both are present (it is the standard).
- The client is the *rightmost untrusted hop* (nginx ``real_ip_recursive on``): walking the list from the
  right, hops that are themselves trusted proxies are skipped; the first other address is the client. Values
  to its left were written by the client and can be forged. If every hop is trusted, the leftmost one is it.
- A hop that is not an IP address (``unknown``, an RFC 7239 obfuscated ``_id``) stops the walk; the peer
  address is then kept, because a WSGI ``REMOTE_ADDR`` must be an address.
- Unix-socket peers (address ``""``) are trusted, as gunicorn does: only local processes with filesystem
  permission can connect, which in practice means the front proxy.
- Only ``http`` and ``https`` are accepted as schemes.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# RFC 7239 §4: forwarded-pair = token "=" value; value = token / quoted-string (RFC 9110 §5.6.4).
_PAIR = re.compile(r'\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)=("(?:[^"\\]|\\.)*"|[^;,\s]*)\s*')
_SCHEMES = ("http", "https")


def _parse_ip(text: str) -> IPAddress | None:
    """An address from a hop, or None. Accepts ``1.2.3.4``, ``1.2.3.4:80``, ``::1``, ``[::1]:80``."""
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # IPv4 with a port; a bare IPv6 has at least two colons
        text = text.partition(":")[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # "::ffff:10.0.0.1" from a dual-stack socket is 10.0.0.1
    return ip


def parse_forwarded(value: str) -> list[dict[str, str]]:
    """RFC 7239 ``Forwarded`` value -> one dict per element (lower-case keys, unquoted values).

    A malformed element yields whatever pairs parsed before the damage; unknown parameters are kept.
    """
    elements: list[dict[str, str]] = []
    for raw in _split_outside_quotes(value, ","):
        pairs: dict[str, str] = {}
        for part in _split_outside_quotes(raw, ";"):
            match = _PAIR.fullmatch(part)
            if match is None:
                continue
            key, val = match.group(1).lower(), match.group(2)
            if val.startswith('"'):
                val = re.sub(r"\\(.)", r"\1", val[1:-1])
            pairs[key] = val
        elements.append(pairs)
    return elements


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    """Split on ``sep`` except inside quoted-strings (a quoted IPv6 ``for`` may hold no comma, but be safe)."""
    parts, current, quoted, escaped = [], [], False, False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == sep and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


class ForwardedPolicy:
    """Which peers may tell us the client address and scheme (``--forwarded-allow-ips``).

    ``allow_ips`` entries are IP addresses, CIDR networks (``10.0.0.0/8``) or ``"*"`` (any peer).
    Raises ``ValueError`` naming the bad entry.
    """

    def __init__(self, allow_ips: Iterable[str]) -> None:
        entries = [entry.strip() for entry in allow_ips if entry.strip()]
        self.allow_any = "*" in entries
        networks = []
        for entry in entries:
            if entry == "*":
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ValueError(
                    f"--forwarded-allow-ips: {entry!r} is not an IP address, CIDR network or '*'"
                ) from None
        self.networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = tuple(networks)

    def trusts(self, addr: str) -> bool:
        """True if ``addr`` (the peer, or a hop in a forwarded list) is an allowed proxy."""
        if self.allow_any or addr == "":
            return True
        ip = _parse_ip(addr)
        return ip is not None and self._trusts_ip(ip)

    def _trusts_ip(self, ip: IPAddress) -> bool:
        return self.allow_any or any(ip in net for net in self.networks)

    def resolve(self, peer: str, headers: list[tuple[str, str]], scheme: str) -> tuple[str, str]:
        """(remote_addr, url_scheme) for a request from ``peer`` received over ``scheme``.

        ``headers`` are (lower-case name, value) pairs. Untrusted peers get ``(peer, scheme)`` back.
        """
        if not self.trusts(peer):
            return peer, scheme
        forwarded = _joined(headers, "forwarded")
        if forwarded is not None:
            elements = parse_forwarded(forwarded)
            hops = [element.get("for", "") for element in elements]
            protos = [element.get("proto", "") for element in elements]
        else:
            xff = _joined(headers, "x-forwarded-for")
            xfp = _joined(headers, "x-forwarded-proto")
            hops = [hop.strip() for hop in xff.split(",")] if xff is not None else []
            protos = [proto.strip() for proto in xfp.split(",")] if xfp is not None else []
        index = self._client_index(hops)
        remote = peer
        if index is not None:
            ip = _parse_ip(hops[index])
            remote = str(ip) if ip is not None else peer
        return remote, _pick_scheme(protos, index, len(hops)) or scheme

    def _client_index(self, hops: list[str]) -> int | None:
        """Index of the rightmost untrusted hop (or 0 when all are trusted); None for no hops."""
        for index in range(len(hops) - 1, -1, -1):
            ip = _parse_ip(hops[index])
            if ip is None or not self._trusts_ip(ip):
                return index
        return 0 if hops else None


def _joined(headers: list[tuple[str, str]], name: str) -> str | None:
    """All values of ``name`` as one comma list (RFC 9110 §5.3), or None when absent."""
    values = [value for key, value in headers if key == name]
    return ",".join(values) if values else None


def _pick_scheme(protos: list[str], index: int | None, hop_count: int) -> str | None:
    """The scheme the client used. With one proto per hop, take the chosen hop's (it was written by the
    first trusted proxy); otherwise the rightmost, written by the proxy next to us."""
    if not protos:
        return None
    chosen = protos[index] if index is not None and len(protos) == hop_count else protos[-1]
    chosen = chosen.strip().lower()
    return chosen if chosen in _SCHEMES else None
