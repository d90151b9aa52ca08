"""Seeded mutation fuzzing: the parser's verdict must not depend on how the bytes were split.

Two parsers that disagree about where a message ends is what request smuggling exploits; the same parser
disagreeing with itself across TCP segmentations would be just as bad. For mutated variants of every
valid fixture: only RemoteProtocolError may escape, and whole / byte-by-byte / random splits must yield
the same requests and the same error status.
"""

from __future__ import annotations

import random

import pytest

from tests.worker.http.cases import VALID, Valid
from tests.worker.http.driver import Driver, splits

pytestmark = pytest.mark.timeout(60)

# Bytes that matter to the grammar: line ends, separators, digits, CTLs, obs-text.
SPECIAL = [
    b"\r",
    b"\n",
    b"\r\n",
    b" ",
    b"\t",
    b":",
    b",",
    b";",
    b"0",
    b"f",
    b"\x00",
    b"\x7f",
    b"\xff",
    b"-",
]


def mutate(raw: bytes, rng: random.Random) -> bytes:
    data = bytearray(raw)
    for _ in range(rng.randint(1, 3)):
        pos = rng.randrange(len(data) + 1)
        op = rng.randrange(3)
        if op == 0 and pos < len(data):
            del data[pos]
        elif op == 1:
            data[pos:pos] = rng.choice(SPECIAL)
        elif pos < len(data):
            data[pos : pos + 1] = rng.choice(SPECIAL)
    return bytes(data)


def outcome(case: Valid, raw: bytes, mode: str) -> tuple:
    driver = Driver(case.limits)
    for piece in splits(raw, mode):
        driver.feed(piece)  # anything but RemoteProtocolError propagates and fails the test
        if driver.error is not None:
            break
    driver.feed(b"")
    status = driver.error.status if driver.error is not None else None
    return tuple(driver.requests), status, driver.closed, driver.stopped


@pytest.mark.parametrize("case", VALID, ids=lambda c: c.name)
def test_mutations_split_independent(case: Valid) -> None:
    rng = random.Random(case.name)
    for _ in range(25):
        raw = mutate(case.raw, rng)
        whole = outcome(case, raw, "whole")
        for mode in ("bytes", "random:3"):
            assert outcome(case, raw, mode) == whole, f"{mode} differs for {raw!r}"
