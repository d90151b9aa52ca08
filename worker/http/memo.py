"""Bounded memo dicts for checks whose answer depends only on their input (a field line, a Host value, a
response head): each is emptied when full, so what clients or applications send cannot grow it."""

from __future__ import annotations

from typing import Any


def remember(cache: dict, key: Any, value: Any, limit: int) -> None:
    """Store ``key -> value`` in ``cache``, emptying it first when it holds ``limit`` entries."""
    if len(cache) >= limit:
        cache.clear()
    cache[key] = value
