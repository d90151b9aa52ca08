"""The worker's glibc malloc policy (worker/allocator.py): what it sets, that the environment wins, and
that it does nothing, silently, where the C library is not glibc."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from webcluster.worker import allocator


class FakeLibc:
    def __init__(self, result: int = 1) -> None:
        self.calls: list[tuple[int, int]] = []
        self.result = result

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return self.result


def test_caps_arenas_and_fixes_the_mmap_threshold() -> None:
    libc = FakeLibc()
    applied = allocator.tune({}, libc)  # type: ignore[arg-type]
    assert libc.calls == [
        (allocator.M_ARENA_MAX, allocator.ARENA_MAX),
        (allocator.M_MMAP_THRESHOLD, allocator.MMAP_THRESHOLD),
    ]
    assert applied == [
        f"MALLOC_ARENA_MAX={allocator.ARENA_MAX}",
        f"MALLOC_MMAP_THRESHOLD={allocator.MMAP_THRESHOLD}",
    ]


def test_the_environment_wins() -> None:
    libc = FakeLibc()
    env = {"MALLOC_ARENA_MAX": "4", "MALLOC_MMAP_THRESHOLD_": "1048576"}
    assert allocator.tune(env, libc) == []  # type: ignore[arg-type]
    assert libc.calls == []


def test_a_refused_setting_is_not_reported_as_applied() -> None:
    assert allocator.tune({}, FakeLibc(result=0)) == []  # type: ignore[arg-type]


def test_not_glibc_means_nothing_done_and_no_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_such_name(name: str) -> str:
        raise ValueError(f"unrecognized configuration name {name!r}")  # what musl/macOS give

    monkeypatch.setattr(allocator.os, "confstr", no_such_name)
    assert allocator.glibc() is None
    assert allocator.tune({}) == []
    assert allocator.trimmer() is None


ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.system
@pytest.mark.skipif(not os.confstr_names.get("CS_GNU_LIBC_VERSION"), reason="glibc only")
def test_on_glibc_the_real_calls_succeed() -> None:
    # In a child process: the settings are process-wide and must not leak into the test run.
    code = (
        "import supervisor; from webcluster.worker import allocator; "
        "print(allocator.tune({})); trim = allocator.trimmer(); print(trim() in (0, 1))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.split("\n")
    assert out[0] == str(
        [
            f"MALLOC_ARENA_MAX={allocator.ARENA_MAX}",
            f"MALLOC_MMAP_THRESHOLD={allocator.MMAP_THRESHOLD}",
        ]
    )
    assert out[1] == "True"


def test_the_trim_runs_at_most_once_a_second_and_only_after_requests() -> None:
    trims: list[float] = []
    served = [0]
    schedule = allocator.TrimSchedule(lambda: trims.append(now), lambda: served[0])
    for i in range(300):  # the loop's passes over 3 s, a request before each
        now = i / 100
        served[0] += 1
        schedule.tick(now)
    assert trims == [0.0, 1.0, 2.0]
    now = 10.0
    schedule.tick(now)  # requests since the last trim: one more
    now = 20.0
    schedule.tick(now)  # none since: an idle worker is not trimmed again
    assert trims == [0.0, 1.0, 2.0, 10.0]
