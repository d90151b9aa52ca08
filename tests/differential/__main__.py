"""The differential report: ``python -m tests.differential [--examples N] [--seed S]``.

Frames the HTTP test cases (``tests/worker/http/cases.py``, default limits) and N generated streams
(``streams.build``) with webcluster, llhttp and h11 and prints the counts: streams tried, disagreements
by kind and parser, and how each was resolved (``compare.EXCEPTIONS``, "stricter", or "unresolved").
Exits 1 if anything webcluster accepts is unresolved.
"""

from __future__ import annotations

import argparse
import random
import sys
import time

from tests.differential.compare import run
from tests.differential.streams import build
from tests.worker.http.cases import INVALID, VALID
from webcluster.worker.http.protocol import Limits


def case_streams() -> list[bytes]:
    """The raw bytes of every HTTP test case that uses the default limits."""
    return [c.raw for c in VALID + INVALID if c.limits == Limits()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.differential", description=__doc__)
    parser.add_argument("--examples", type=int, default=20_000, help="generated streams")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    began = time.monotonic()
    cases = run(case_streams())
    rng = random.Random(args.seed)
    generated = run(build(rng) for _ in range(args.examples))
    print("## HTTP test cases\n")
    print(cases.render())
    print(f"\n## Generated streams (seed {args.seed})\n")
    print(generated.render())
    print(f"\n{time.monotonic() - began:.0f} s")
    return 1 if cases.unresolved() or generated.unresolved() else 0


if __name__ == "__main__":
    sys.exit(main())
