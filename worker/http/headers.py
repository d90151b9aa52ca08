"""Request header rules: field-line syntax and the headers that decide framing and persistence.

Everything here raises ``RemoteProtocolError`` with the status the client must see. Policies (all chosen
to leave no room for request smuggling, i.e. for two parsers to disagree on where a message ends):

* Content-Length (RFC 9112 §6.3, RFC 9110 §8.6): exactly one field line whose value is ``1*DIGIT``.
  Duplicates are rejected even when equal, and so is the list form ``5, 5`` (RFC allows collapsing them;
  we don't: a proxy in front may have picked another one). A value above ``max_body`` -> 413.
* Transfer-Encoding (RFC 9112 §6.1): only valid on HTTP/1.1, never together with Content-Length (400).
  All field lines are joined into one list, then, in this order:
    malformed list (empty element, non-token, parameters on a coding)  -> 400
    ``chunked`` more than once ("chunked, chunked")                     -> 400 (§7: MUST NOT apply twice)
    ``chunked`` present but not last ("chunked, gzip")                   -> 400 (§6.3: MUST respond 400)
    any other coding, including ``identity`` and ``gzip, chunked``       -> 501 (§6.1: not understood)
  so the only accepted value is ``chunked`` (case-insensitive, surrounding OWS stripped as for every
  field value: ``Transfer-Encoding:\\tchunked`` and ``chunked `` are valid).
* Host (RFC 9112 §3.2): required on 1.1, at most one, value must be ``uri-host [":" port]``.
* Expect (RFC 9110 §10.1.1): only ``100-continue`` (case-insensitive); anything else -> 417. A 1.0
  client's expectation is ignored ("MUST ignore") but still validated.
* Connection (RFC 9112 §9.3): 1.1 persists unless ``close``; 1.0 only with ``keep-alive``; CONNECT
  and requests carrying ``Upgrade`` never persist (a proxy may have turned the connection into a tunnel).
"""

from __future__ import annotations

from webcluster.worker.http.errors import RemoteProtocolError
from webcluster.worker.http.events import Request
from webcluster.worker.http.grammar import (
    ABSOLUTE_FORM_RE,
    AUTHORITY_FORM_RE,
    BAD_VALUE_CHAR_RE,
    CONTENT_LENGTH_RE,
    FIELD_LINE_RE,
    HOST_RE,
    TOKEN_RE,
)
from webcluster.worker.http.memo import remember

# Names that need a look; everything else passes straight through.
_SPECIAL = frozenset(
    ("host", "content-length", "transfer-encoding", "connection", "expect", "upgrade")
)
# 18 decimal digits always fit in 63 bits; longer (after leading zeros) is larger than any body limit.
_MAX_LENGTH_DIGITS = 18


# Field lines already parsed, by their text: clients repeat the same Host, User-Agent, Accept... on every
# request, and a line that matched once parses the same way again. Only short lines, and emptied when full,
# so it holds at most _PARSED_MAX * _PARSED_LINE characters whatever clients send.
_PARSED: dict[str, tuple[str, str]] = {}
_PARSED_MAX = 1024
_PARSED_LINE = 256
# Host values that matched HOST_RE, bounded the same way: a client names the same host every time.
_HOSTS: dict[str, bool] = {}


def parse_field_lines(lines: list[str]) -> list[tuple[str, str]]:
    """``name: value`` lines -> [(lower-case name, OWS-stripped value)] (RFC 9112 §5)."""
    match = FIELD_LINE_RE.fullmatch
    seen = _PARSED.get
    fields = []
    append = fields.append
    for line in lines:
        field = seen(line)
        if field is None:
            m = match(line)
            if m is None:
                raise RemoteProtocolError(_diagnose_field_line(line))
            name, value = m.groups()
            field = (name.lower(), value)
            if len(line) <= _PARSED_LINE:
                remember(_PARSED, line, field, _PARSED_MAX)
        append(field)
    return fields


def _diagnose_field_line(line: str) -> str:
    """Why FIELD_LINE_RE refused ``line`` (slow path, error messages only)."""
    if "\r" in line or "\n" in line:
        return "bare CR or LF in field line (strict CRLF, RFC 9112 §2.2)"
    if line[:1] in (" ", "\t"):
        return "obs-fold (line folding) is not accepted (RFC 9112 §5.2)"
    name, colon, value = line.partition(":")
    if not colon:
        return "field line without a colon"
    if not name:
        return "empty field name"
    if name != name.rstrip(" \t"):
        return "whitespace between field name and colon (RFC 9112 §5.1)"
    if not TOKEN_RE.fullmatch(name):
        return "field name is not a token (RFC 9110 §5.1)"
    if BAD_VALUE_CHAR_RE.search(value):
        return "control character in field value (RFC 9110 §5.5)"
    return "malformed field line"


def check_target(method: str, target: str) -> None:
    """The request-target form must fit the method (RFC 9112 §3.2.1-§3.2.4)."""
    first = target[0]
    if method == "CONNECT":
        if not AUTHORITY_FORM_RE.fullmatch(target):
            raise RemoteProtocolError("CONNECT needs an authority-form target (RFC 9112 §3.2.3)")
    elif first == "/":
        return
    elif target == "*":
        if method != "OPTIONS":
            raise RemoteProtocolError("asterisk-form is only for OPTIONS (RFC 9112 §3.2.4)")
    elif not ABSOLUTE_FORM_RE.fullmatch(target):
        raise RemoteProtocolError("invalid request-target (RFC 9112 §3.2)")


def build_request(
    method: str, target: str, version: str, headers: list[tuple[str, str]], max_body: int
) -> Request:
    """Apply the framing/persistence rules above to a parsed head and return the Request."""
    hosts: list[str] = []
    lengths: list[str] = []
    codings: list[str] = []
    connection: list[str] = []
    expect: list[str] = []
    for name, value in headers:
        if name in _SPECIAL:
            if name == "host":
                hosts.append(value)
            elif name == "content-length":
                lengths.append(value)
            elif name == "transfer-encoding":
                codings.append(value)
            elif name == "connection":
                connection.append(value.lower())
            elif name == "upgrade":
                connection.append("close")  # see _keep_alive
            else:
                expect.append(value)
    if len(hosts) != 1 or hosts[0] not in _HOSTS:  # else a Host seen valid before: no call
        _check_host(hosts, version)
    request = Request(method, target, version, headers)
    if codings:
        if lengths:
            raise RemoteProtocolError("both Content-Length and Transfer-Encoding (RFC 9112 §6.3)")
        if version == "1.0":
            raise RemoteProtocolError("Transfer-Encoding in an HTTP/1.0 request (RFC 9112 §6.1)")
        _check_chunked(codings)
        request.chunked = True
    elif lengths:
        request.content_length = _content_length(lengths, max_body)
    if method == "CONNECT" and (request.chunked or request.content_length):
        # RFC 9110 §9.3.6: a CONNECT request has no content; llhttp reads what follows the head as
        # the tunnel, so a body we would read is bytes another parser hands to the far end.
        raise RemoteProtocolError("CONNECT with content (RFC 9110 §9.3.6)")
    if connection or version == "1.0" or method == "CONNECT":
        request.keep_alive = _keep_alive(connection, version) and method != "CONNECT"
    if expect:
        request.expect_continue = _expect_continue(expect) and version == "1.1"
    return request


def _check_host(hosts: list[str], version: str) -> None:
    # RFC 9112 §3.2: "A server MUST respond with a 400 ... to any HTTP/1.1 request message that lacks a
    # Host header field and to any request message that contains more than one Host header field line or
    # a Host header field with an invalid field value."
    if not hosts:
        if version == "1.1":
            raise RemoteProtocolError("missing Host header (RFC 9112 §3.2)")
        return
    if len(hosts) > 1:
        raise RemoteProtocolError("more than one Host header (RFC 9112 §3.2)")
    host = hosts[0]  # not in _HOSTS: build_request looked there first
    if not HOST_RE.fullmatch(host):
        raise RemoteProtocolError("invalid Host header (RFC 9112 §3.2)")
    if len(host) <= _PARSED_LINE:
        remember(_HOSTS, host, True, _PARSED_MAX)


def _content_length(values: list[str], max_body: int) -> int:
    if len(values) > 1:
        raise RemoteProtocolError("duplicate Content-Length (RFC 9112 §6.3)")
    value = values[0]
    if not CONTENT_LENGTH_RE.fullmatch(value):
        raise RemoteProtocolError("invalid Content-Length (RFC 9110 §8.6)")
    digits = value.lstrip("0") or "0"
    if len(digits) > _MAX_LENGTH_DIGITS:
        raise RemoteProtocolError("Content-Length too large", 413)
    length = int(digits)
    if max_body and length > max_body:
        raise RemoteProtocolError("Content-Length above the body limit", 413)
    return length


def _keep_alive(connection: list[str], version: str) -> bool:
    """RFC 9112 §9.3: 1.1 persists unless "close"; 1.0 only with "keep-alive" (and no "close").

    CONNECT and any request with ``Upgrade`` (RFC 9110 §9.3.6, §7.8) end the connection after their
    response: we never switch protocols, but a proxy in front may already treat the connection as a
    tunnel (llhttp stops parsing HTTP there), and bytes it passes on raw must not be read as requests.
    """
    tokens = [item.strip(" \t") for value in connection for item in value.split(",")]
    if "close" in tokens:
        return False
    return version == "1.1" or "keep-alive" in tokens


def _check_chunked(values: list[str]) -> None:
    codings = [item.strip(" \t").lower() for value in values for item in value.split(",")]
    for coding in codings:
        if not TOKEN_RE.fullmatch(coding):
            raise RemoteProtocolError("malformed Transfer-Encoding (RFC 9112 §6.1)")
    if codings.count("chunked") > 1:
        raise RemoteProtocolError("chunked applied more than once (RFC 9112 §7)")
    if "chunked" in codings and codings[-1] != "chunked":
        raise RemoteProtocolError("chunked is not the final transfer coding (RFC 9112 §6.3)")
    if codings != ["chunked"]:
        raise RemoteProtocolError("unsupported transfer coding (RFC 9112 §6.1)", 501)


def _expect_continue(values: list[str]) -> bool:
    items = [item.strip(" \t").lower() for value in values for item in value.split(",")]
    if any(item != "100-continue" for item in items):
        raise RemoteProtocolError("unsupported expectation (RFC 9110 §10.1.1)", 417)
    return True
