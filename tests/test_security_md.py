"""SECURITY.md names the test that proves each defence: every ``tests/<file>.py::<test>`` it cites exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REF = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def test_every_cited_test_exists() -> None:
    text = (ROOT / "SECURITY.md").read_text()
    refs = REF.findall(text)
    assert len(refs) >= 20, "SECURITY.md should cite its tests as `tests/file.py::test_name`"
    missing = []
    for path, name in refs:
        source = ROOT / path
        if not source.exists() or not re.search(rf"^def {name}\(", source.read_text(), re.M):
            missing.append(f"{path}::{name}")
    assert not missing, f"SECURITY.md cites tests that do not exist: {missing}"


def test_every_attack_row_cites_a_test() -> None:
    text = (ROOT / "SECURITY.md").read_text()
    section = text.split("## Attack classes", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")][1:]  # minus the header
    assert len(rows) >= 12
    for row in rows:
        assert REF.search(row), f"row without a test: {row[:80]}"
