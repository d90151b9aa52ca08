"""DeadlineQueue against the obvious model (a deque of tuples): same pops in the same order through adds,
partial expiries, full drains and the batch compaction of its arrays."""

from __future__ import annotations

import random
from collections import deque

import pytest

from webcluster.worker import timers
from webcluster.worker.timers import DeadlineQueue


@pytest.mark.parametrize("seed", range(8))
def test_matches_a_deque_of_tuples(seed: int) -> None:
    rng = random.Random(seed)
    q, model = DeadlineQueue(5.0), deque()
    now, key = 0.0, 0
    for _ in range(1500):
        if rng.random() < 0.7:
            for _ in range(rng.choice((1, 1, 3, 300))):
                key += 1
                q.add(key, key * 7 % 5, now)
                model.append((now + 5.0, key, key * 7 % 5))
        else:
            want = []
            while model and model[0][0] <= now:
                _, k, token = model.popleft()
                want.append((k, token))
            assert q.expired(now) == want
        assert len(q) == len(model)
        assert q.next_deadline() == (model[0][0] if model else None)
        now += rng.choice((0.0, 0.01, 0.5, 6.0))


def test_dead_entries_are_dropped_in_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timers, "_COMPACT_AT", 4)
    q = DeadlineQueue(1.0)
    for i in range(10):
        q.add(i, 0, float(i))
    assert q.expired(4.5) == [(0, 0), (1, 0), (2, 0), (3, 0)]  # 4 of 10 dead: kept for now
    assert len(q._keys) == 10
    assert q.expired(5.5) == [(4, 0)]  # 5 of 10 dead: cut from the arrays
    assert len(q._keys) == 5 and len(q) == 5 and q.next_deadline() == 6.0
    assert [k for k, _ in q.expired(100.0)] == [5, 6, 7, 8, 9]
    assert len(q._keys) == 0 and q.next_deadline() is None
