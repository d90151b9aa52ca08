"""Every test under tests/system starts real processes or external tools: mark them ``system``.

``python -m pytest -m "not system"`` is then the fast tier (pure units and in-process sockets).
"""

from __future__ import annotations

from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.system)
