"""README's "Failure modes" table names the tests that prove each row: every row cites one, and every
cited ``tests/<file>.py::<test>`` exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REF = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def _rows() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Failure modes\n", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| ")][1:]  # minus the header


def test_every_failure_mode_row_cites_a_test_that_exists() -> None:
    rows = _rows()
    assert len(rows) >= 7
    missing = []
    for row in rows:
        refs = REF.findall(row)
        assert refs, f"row without a test: {row[:80]}"
        for path, name in refs:
            source = ROOT / path
            if not source.exists() or not re.search(rf"^def {name}\(", source.read_text(), re.M):
                missing.append(f"{path}::{name}")
    assert not missing, f"README cites tests that do not exist: {missing}"
