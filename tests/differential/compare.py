"""Compare webcluster's framing of a stream with llhttp's and h11's, and classify every disagreement.

For each other parser, message by message over the messages webcluster completed (after a message that
ends webcluster's connection, nothing more is compared: webcluster reads no further):

* ``framing`` - both completed message *i* but disagree on its method, target, version, headers, body
  or trailers. With webcluster accepting, this is the request-smuggling shape: two parsers, two views.
* ``accepted_rejected`` - webcluster completed message *i*, the other parser refused (or could not
  finish) it. A front proxy with that parser would not forward it, but one that is more lenient still
  may: each is fixed (webcluster rejects too) or a reasoned exception.
* ``rejected_accepted`` - webcluster refused a message the other parser completed: we are stricter.
  Safe (nothing reaches the application); counted, not an error.
* ``upgrade`` - the other parser stopped at a CONNECT/``Upgrade`` request (a tunnel follows for it)
  while webcluster went on reading HTTP. See ``RESOLUTIONS`` for how webcluster handles it.

``EXCEPTIONS`` names each accepted disagreement that is not a bug, with the reason and the test pinning
webcluster's behaviour; ``classify`` marks a disagreement ``resolved`` by the first exception matching
it. Anything else webcluster accepts is ``unresolved``: a finding.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from tests.differential.parsers import Message, Outcome, frame

OTHERS = ("llhttp", "h11")
UNSAFE = ("framing", "accepted_rejected")  # webcluster accepted it: must be resolved


@dataclass(frozen=True)
class Disagreement:
    kind: str
    other: str
    index: int  # the message where the parsers part
    fields: tuple[str, ...] = ()  # for framing: which fields differ
    detail: str = ""  # the other parser's error, or webcluster's


def _fields(a: Message, b: Message) -> tuple[str, ...]:
    return tuple(f for f in ("method", "target", "version", "headers", "body", "trailers")
                 if getattr(a, f) != getattr(b, f))  # fmt: skip


def compare(ours: Outcome, theirs: Outcome) -> list[Disagreement]:
    """The disagreements of ``theirs`` with ``ours`` (webcluster's), at most one per stream and parser."""
    name = theirs.parser
    for i, mine in enumerate(ours.messages):
        if i >= len(theirs.messages):
            if theirs.end == "upgrade":
                return [Disagreement("upgrade", name, i)]
            return [Disagreement("accepted_rejected", name, i, detail=theirs.detail or theirs.end)]
        diff = _fields(mine, theirs.messages[i])
        if diff:
            return [Disagreement("framing", name, i, diff)]
    n = len(ours.messages)
    if ours.end in ("rejected", "incomplete") and len(theirs.messages) > n:
        if theirs.end == "upgrade" and len(theirs.messages) == n + 1:
            return []  # they saw one more request, then a tunnel: nothing framed differently
        return [Disagreement("rejected_accepted", name, n, detail=ours.detail)]
    return []


@dataclass(frozen=True)
class Exception_:
    """A disagreement webcluster accepts on purpose: when it applies, why, and the test that pins it."""

    name: str
    applies: Callable[[bytes, Disagreement, dict[str, Outcome]], bool]
    reason: str
    test: str


def _method(stream: bytes, d: Disagreement, outs: dict[str, Outcome]) -> bool:
    return d.other == "llhttp" and "InvalidMethod" in d.detail


def _empty_lines(stream: bytes, d: Disagreement, outs: dict[str, Outcome]) -> bool:
    return d.other == "h11" and "no request line received" in d.detail


def _http10_keep_alive(stream: bytes, d: Disagreement, outs: dict[str, Outcome]) -> bool:
    previous = outs["webcluster"].messages[d.index - 1] if d.index else None
    return (d.other == "h11" and "Got data when expecting EOF" in d.detail
            and previous is not None and previous.version == "1.0")  # fmt: skip


def _minor_version(stream: bytes, d: Disagreement, outs: dict[str, Outcome]) -> bool:
    raw = _request_line(stream, outs["webcluster"], d.index)
    higher = re.search(rb" HTTP/1\.[2-9]$", raw) is not None
    if d.other == "llhttp":
        return higher and "Invalid HTTP version" in d.detail
    return higher and d.fields == ("version",)


def _te_ows(stream: bytes, d: Disagreement, outs: dict[str, Outcome]) -> bool:
    head = _head(stream, outs["webcluster"], d.index)
    return (d.other == "llhttp" and "Transfer-Encoding" in d.detail
            and re.search(rb"(?im)^transfer-encoding:[ \t]*chunked[ \t]*\t[ \t]*\r$", head) is not None)  # fmt: skip


def _request_line(stream: bytes, ours: Outcome, index: int) -> bytes:
    return _head(stream, ours, index).lstrip(b"\r\n").split(b"\r\n", 1)[0]


def _head(stream: bytes, ours: Outcome, index: int) -> bytes:
    """The raw head of webcluster's message ``index``."""
    return ours.heads[index] if index < len(ours.heads) else b""


EXCEPTIONS: tuple[Exception_, ...] = (
    Exception_(
        "extension method",
        _method,
        "RFC 9110 §9.1: a method is any token; llhttp knows a fixed list. The method takes no part in "
        "framing here, so a proxy that refuses it forwards nothing and one that accepts it agrees.",
        "tests/worker/http/test_protocol.py::test_valid",
    ),
    Exception_(
        "empty lines before a request-line",
        _empty_lines,
        "RFC 9112 §2.2: a server SHOULD ignore at least one empty line before the request-line; "
        "webcluster skips up to 8, llhttp too, h11 refuses them. Skipping CRLFs moves no boundary.",
        "tests/worker/http/test_protocol.py::test_valid",
    ),
    Exception_(
        "HTTP/1.0 keep-alive",
        _http10_keep_alive,
        "RFC 9112 §9.3 and Appendix C.2.2: a 1.0 request with Connection: keep-alive persists "
        "(nginx, llhttp agree); h11 closes every 1.0 connection. The message ends in the same place.",
        "tests/worker/http/test_protocol.py::test_valid",
    ),
    Exception_(
        "HTTP/1.x minor version above 1",
        _minor_version,
        "RFC 9110 §2.5: a higher minor version SHOULD be processed as the highest one supported; "
        "webcluster serves it as 1.1, h11 frames it identically (only the label differs), llhttp "
        "refuses it (so forwards nothing).",
        "tests/worker/http/test_protocol.py::test_valid",
    ),
    Exception_(
        "tab after chunked",
        _te_ows,
        "RFC 9112 §5: OWS (SP or HTAB) around a field value is not part of it, so `chunked<HTAB>` "
        "is chunked; llhttp in strict mode accepts a trailing SP but refuses a trailing HTAB. Only "
        "a proxy that kept the HTAB and then ignored an unknown coding could frame it differently, "
        "and such a proxy must answer 501 instead (RFC 9112 §6.1).",
        "tests/worker/http/test_protocol.py::test_valid",
    ),
)


def classify(stream: bytes) -> tuple[dict[str, Outcome], list[tuple[Disagreement, str]]]:
    """Frame ``stream`` with all three parsers; each disagreement with its resolution: the exception's
    name, ``"stricter"`` (webcluster refuses), or ``"unresolved"``."""
    outs = {name: frame(name, stream) for name in ("webcluster", *OTHERS)}
    found = []
    for other in OTHERS:
        for d in compare(outs["webcluster"], outs[other]):
            if d.kind == "rejected_accepted":
                found.append((d, "stricter"))
            elif d.kind == "upgrade":
                found.append((d, "closes after CONNECT/Upgrade"))
            else:
                match = next((e.name for e in EXCEPTIONS if e.applies(stream, d, outs)), None)
                found.append((d, match or "unresolved"))
    return outs, found


@dataclass
class Report:
    """Counts over many streams: streams, disagreements by kind and parser, resolutions, examples."""

    streams: int = 0
    by_kind: Counter = field(default_factory=Counter)
    by_resolution: Counter = field(default_factory=Counter)
    examples: dict[tuple[str, str, str], bytes] = field(default_factory=dict)

    def add(self, stream: bytes) -> list[tuple[Disagreement, str]]:
        self.streams += 1
        _, found = classify(stream)
        for d, resolution in found:
            self.by_kind[(d.kind, d.other)] += 1
            self.by_resolution[(d.kind, resolution)] += 1
            key = (d.kind, d.other, resolution if resolution != "unresolved" else _key(d))
            if key not in self.examples or len(stream) < len(self.examples[key]):
                self.examples[key] = stream
        return found

    def unresolved(self) -> list[tuple[tuple[str, str, str], bytes]]:
        return [(k, s) for k, s in self.examples.items() if k[0] in UNSAFE and
                not any(r == k[2] for r in _RESOLVED)]  # fmt: skip

    def render(self) -> str:
        lines = [f"streams tried: {self.streams:,}", "", "| disagreement | parser | count |",
                 "|---|---|---|"]  # fmt: skip
        lines += [f"| {k} | {o} | {n:,} |" for (k, o), n in sorted(self.by_kind.items())]
        lines += ["", "| disagreement | resolution | count |", "|---|---|---|"]
        lines += [f"| {k} | {r} | {n:,} |" for (k, r), n in sorted(self.by_resolution.items())]
        bad = self.unresolved()
        lines += [
            "",
            f"unresolved (webcluster accepts, another parser frames differently): {len(bad)}",
        ]
        lines += [f"  {k}: {s[:300]!r}" for k, s in bad]
        return "\n".join(lines)


_RESOLVED = {e.name for e in EXCEPTIONS} | {"stricter", "closes after CONNECT/Upgrade"}


def _key(d: Disagreement) -> str:
    """Group unresolved findings by shape: the fields or the other parser's error, numbers removed."""
    return "fields:" + ",".join(d.fields) if d.fields else re.sub(r"\d+", "N", d.detail)[:80]


def run(streams: Iterable[bytes]) -> Report:
    report = Report()
    for stream in streams:
        report.add(stream)
    return report
