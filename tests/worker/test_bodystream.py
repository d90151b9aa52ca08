"""``BodyStream`` (wsgi.input) against ``io.BytesIO``: whatever the pieces the body arrives in, every mix
of read/readline/iteration returns what a file over the same bytes returns; a read of exactly one held
piece hands out that piece without copying it."""

from __future__ import annotations

import io
import random

import pytest

from webcluster.worker.exchange import BodyStream
from webcluster.worker.http.events import NEED_DATA, Data, EndOfMessage


class _H1:
    def send_continue(self) -> bytes:
        return b""


class PieceConn:
    """The slice of ``Conn`` BodyStream uses: body events from a list of pieces, NEED_DATA between them."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.h1 = _H1()
        self.body_error = None
        self._events: list = []
        for piece in pieces:
            self._events += [NEED_DATA, Data(piece)]
        self._events.append(EndOfMessage())
        self.recvs = 0

    def next_body_event(self):
        if self._events and self._events[0] is NEED_DATA:
            return NEED_DATA
        return self._events.pop(0)

    def recv_body_bytes(self) -> None:
        self.recvs += 1
        self._events.pop(0)  # the NEED_DATA this recv satisfies

    def send(self, data: bytes, more: bool = False) -> None:
        raise AssertionError("nothing is sent for a body without Expect")


def split(data: bytes, rng: random.Random) -> list[bytes]:
    pieces, pos = [], 0
    while pos < len(data):
        n = rng.choice((1, 2, 7, 100, 4096, 65536))
        pieces.append(data[pos : pos + n])
        pos += n
    return pieces


@pytest.mark.parametrize("seed", range(40))
def test_any_mix_of_reads_matches_a_file(seed: int) -> None:
    rng = random.Random(seed)
    lines = [
        bytes(rng.randrange(256) for _ in range(rng.choice((0, 5, 300, 9000)))) for _ in range(8)
    ]
    data = b"\n".join(lines) + rng.choice((b"", b"\n", b"tail"))
    stream, ref = BodyStream(PieceConn(split(data, rng))), io.BytesIO(data)
    while True:
        op, arg = rng.choice(("read", "readline")), rng.choice((-1, 0, 1, 3, 64, 5000, None))
        if op == "read" and arg == -1 and rng.random() < 0.7:
            arg = 4096  # read(-1) ends the test; let the other mixes run first most of the time
        got, want = getattr(stream, op)(arg), getattr(ref, op)(arg)
        assert got == want and type(got) is bytes, (op, arg)
        if ref.tell() == len(data) and not want and arg != 0:
            break
    assert stream.consumed == len(data)
    assert stream.read() == b"" and stream.readline() == b"" and stream.done


def test_iteration_and_readlines_match_a_file() -> None:
    data = b"first\nsecond line\n\nlast without LF"
    pieces = [data[i : i + 3] for i in range(0, len(data), 3)]
    assert list(BodyStream(PieceConn(pieces))) == io.BytesIO(data).readlines()
    assert BodyStream(PieceConn(pieces)).readlines(8) == io.BytesIO(data).readlines(8)


def test_a_read_of_one_whole_piece_is_that_piece() -> None:
    pieces = [bytes([i]) * 65536 for i in range(3)]
    stream = BodyStream(PieceConn(pieces))
    assert all(stream.read(65536) is piece for piece in pieces)
    assert stream.read(65536) == b""


def test_discard_drops_the_rest_within_a_budget() -> None:
    stream = BodyStream(PieceConn([b"a" * 1000] * 10))
    assert stream.read(10) == b"a" * 10
    assert not stream.discard(3000)  # budget spent before the end
    assert stream.discard(10_000) and stream.done
