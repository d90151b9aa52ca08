"""atheris (libFuzzer) target: webcluster's framing with llhttp and h11 as oracles.

    python tests/differential/fuzz_differential.py -max_total_time=600
    python -m tests.fuzz --seconds 600 --targets differential

Half the inputs are raw byte streams, half steer ``streams.build`` (every framing header, pipelining,
chunk sizes, line ends) choice by choice. The finding: a stream webcluster accepts that llhttp or h11
frames differently (or refuses) and that no ``compare.EXCEPTIONS`` entry explains.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

import atheris  # noqa: E402

with atheris.instrument_imports():
    from tests.differential.compare import UNSAFE, classify
    from tests.differential.streams import FuzzChoices, build


def test_one_input(data: bytes) -> None:
    """libFuzzer entry point."""
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeBool():
        stream = build(FuzzChoices(fdp))
    else:
        stream = fdp.ConsumeBytes(fdp.remaining_bytes())
    _, found = classify(stream)
    bad = [d for d, how in found if d.kind in UNSAFE and how == "unresolved"]
    assert not bad, (stream, bad)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
