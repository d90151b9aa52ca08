"""RFC 9110/9112 ABNF as precompiled regular expressions, each citing its rule.

Heads are decoded once with latin-1 (a 1:1 byte <-> code point map), so the ``str`` patterns below match
exactly the bytes of the wire; chunk-size lines are matched as ``bytes`` (no decode on the body path).
Whitespace is never "skipped" implicitly: every place where the grammar allows OWS says so.
"""

from __future__ import annotations

import re

# RFC 9110 §5.6.2: tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" / "`"
#                          / "|" / "~" / DIGIT / ALPHA ;  token = 1*tchar
TCHAR = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
TOKEN = TCHAR + "+"
TOKEN_RE = re.compile(TOKEN)

# RFC 9110 §5.5: field-value = *field-content; field-vchar = VCHAR / obs-text; SP and HTAB allowed inside.
# Everything else (NUL, CR, LF, the other CTLs and DEL) is forbidden.
FIELD_VALUE_CHARS = r"[\t\x20-\x7e\x80-\xff]"
BAD_VALUE_CHAR_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

# RFC 9112 §5: field-line = field-name ":" OWS field-value OWS. No whitespace between name and colon
# (§5.1: MUST reject with 400), no obs-fold (§5.2: we reject it). The value group excludes the OWS.
FIELD_LINE_RE = re.compile(
    r"(" + TOKEN + r"):[ \t]*"
    r"((?:[\x21-\x7e\x80-\xff](?:[\t\x20-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)?)"
    r"[ \t]*"
)

# RFC 9112 §3: request-line = method SP request-target SP HTTP-version, exactly one SP each.
# The target here is only "visible ASCII, no SP/CTL/DEL/non-ASCII"; its form is checked by TARGET_*_RE.
REQUEST_LINE_RE = re.compile(r"(" + TOKEN + r") ([\x21-\x7e]+) (HTTP/[0-9]\.[0-9])")
# RFC 9112 §2.3: HTTP-version = HTTP-name "/" DIGIT "." DIGIT; HTTP-name is case-sensitive "HTTP".
HTTP_VERSION_RE = re.compile(r"HTTP/([0-9])\.([0-9])")

# RFC 3986 §3.2.2 host (IP-literal / IPv4address / reg-name) and §3.2.3 port; RFC 9110 §7.2 Host.
_IP_LITERAL = r"\[[0-9A-Za-z:.\-_~!$&'()*+,;=%]+\]"
_REG_CHAR = r"[0-9A-Za-z\-._~%!$&'()*+,;=]"
_REG_NAME = _REG_CHAR + "*"
HOST_RE = re.compile(r"(?:" + _IP_LITERAL + "|" + _REG_NAME + r")(?::[0-9]*)?")
# RFC 9112 §3.2.3 authority-form (CONNECT only): uri-host ":" port, both required.
AUTHORITY_FORM_RE = re.compile(r"(?:" + _IP_LITERAL + "|" + _REG_NAME + r"):[0-9]+")
# RFC 9112 §3.2.2 absolute-form; as an origin server we accept only the http and https schemes and
# require a non-empty authority (RFC 9110 §4.2.1: "A sender MUST NOT generate an http URI with an
# empty host identifier").
ABSOLUTE_FORM_RE = re.compile(
    r"(?i:https?)://(?:" + _IP_LITERAL + "|" + _REG_CHAR + "+" + r")(?::[0-9]*)?(?:[/?].*)?"
)

# RFC 9110 §8.6: Content-Length = 1*DIGIT. ASCII digits only: str.isdigit() would accept "²" and
# int() would accept "+1", " 1", "1_0" - never call int() on an unvalidated value.
CONTENT_LENGTH_RE = re.compile(r"[0-9]+")

# RFC 9112 §7.1: chunk = chunk-size [ chunk-ext ] CRLF ...; chunk-size = 1*HEXDIG;
# chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] ).
# Policy: no whitespace at all (BWS is "bad" whitespace and a known smuggling vector), at most 16 hex
# digits (64 bits; longer is an overflow attempt), no sign, no "0x".
_QUOTED_STRING = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_BTOKEN = TOKEN.encode()
CHUNK_LINE_RE = re.compile(
    rb"([0-9A-Fa-f]{1,16})(?:;"
    + _BTOKEN
    + rb"(?:=(?:"
    + _BTOKEN
    + rb"|"
    + _QUOTED_STRING
    + rb"))?)*"
)
