"""atheris (libFuzzer) target for the sans-IO HTTP/1.x core. Not a pytest module (no ``test_`` prefix).

Run for a bounded time (see tests/fuzz/README.md)::

    pip install atheris
    python tests/fuzz/fuzz_h1.py -max_total_time=60                 # 60 s, no corpus
    python tests/fuzz/fuzz_h1.py -max_total_time=600 -jobs=2 corpus/  # keep and grow a corpus

Each input is decoded as: one byte choosing the limits (small ones reach every limit check), one byte
choosing how many pieces to cut the stream into, the cut offsets, then the stream itself. The stream goes
through ``tests.worker.http.driver.run`` - the same invariants as the hypothesis tests: only valid events or one
RemoteProtocolError with a 4xx/5xx status, never another exception, bounded buffering. A crash is a find.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

import atheris  # noqa: E402

with atheris.instrument_imports():
    from tests.worker.http.driver import SMALL_LIMITS, run, split
    from webcluster.worker.http.protocol import Limits

LIMITS = (Limits(), SMALL_LIMITS)


def test_one_input(data: bytes) -> None:
    """libFuzzer entry point: decode (limits, cuts, stream) and check the invariants."""
    fdp = atheris.FuzzedDataProvider(data)
    limits = LIMITS[fdp.ConsumeIntInRange(0, len(LIMITS) - 1)]
    cuts = [fdp.ConsumeUInt(2) for _ in range(fdp.ConsumeIntInRange(0, 8))]
    stream = fdp.ConsumeBytes(fdp.remaining_bytes())
    whole = run([stream], limits)
    pieces = run(split(stream, cuts), limits)
    # The split must not change what the application sees nor how the connection ends.
    assert pieces.requests == whole.requests
    assert (pieces.status, pieces.closed, pieces.stopped) == (
        whole.status,
        whole.closed,
        whole.stopped,
    )


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
