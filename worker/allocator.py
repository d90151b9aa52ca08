"""The C allocator's policy in a worker process (glibc only): few arenas, large blocks mmapped, free
pages handed back on the worker's tick.

Why: request bodies pass through a worker as pieces of up to 64 KiB (one ``recv``), and every piece is
copied a few times on its way to the application; those blocks are too large for CPython's own
allocator, so they come from glibc's ``malloc``. glibc gives a thread that finds the arena it wants
locked an arena of its own, up to 8 per core, and an arena keeps the pages its threads once used:
with a pool of threads taking turns at uploads, a worker's RSS keeps climbing for many minutes, arena
after arena. The GIL already serialises almost every allocation a Python thread makes, so more arenas
buy next to no concurrency. So the worker, once, at start:

- caps the arenas at ``ARENA_MAX`` (``M_ARENA_MAX``);
- fixes the mmap threshold at ``MMAP_THRESHOLD`` (``M_MMAP_THRESHOLD``): larger blocks get pages of
  their own that go back to the kernel when freed. Left alone, glibc raises the threshold to the size
  of every mmapped block freed (up to 32 MiB), after which multi-MiB buffers (``wsgi.input.read()`` of
  a whole upload) land in an arena and stay there as long as one small block sits above them;
- and ``trim()`` (``malloc_trim(0)``, called once the worker has booted, then from the loop's
  once-a-second tick while requests come in) gives back the whole free pages inside the arenas: the ones
  the supervisor's heap had free when it forked, then those of finished requests, so RSS follows what is
  live, not the peak.

A ``MALLOC_ARENA_MAX`` / ``MALLOC_MMAP_THRESHOLD_`` set in the environment wins over our value. With
another C library (musl, macOS) nothing is done and nothing is reported: the policy is an optimisation.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Mapping

ARENA_MAX = 2
MMAP_THRESHOLD = 256 * 1024

# mallopt parameters, from glibc's <malloc.h>
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

_POLICY = (
    (M_ARENA_MAX, ARENA_MAX, "MALLOC_ARENA_MAX"),
    (M_MMAP_THRESHOLD, MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_"),
)


def glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc (``mallopt``/``malloc_trim`` mean what we expect)."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return None
        libc = ctypes.CDLL(None)
        libc.mallopt, libc.malloc_trim  # noqa: B018 - both must exist
    except (AttributeError, OSError, ValueError):
        return None
    return libc


def tune(environ: Mapping[str, str] = os.environ, libc: ctypes.CDLL | None = None) -> list[str]:
    """Apply the policy (see the module docstring) in this process, before its threads start
    allocating; returns the glibc settings applied (empty: not glibc, or all set by the environment)."""
    libc = libc if libc is not None else glibc()
    if libc is None:
        return []
    applied = []
    for param, value, env in _POLICY:
        if env not in environ and libc.mallopt(param, value) == 1:  # mallopt returns 1 on success
            applied.append(f"{env.rstrip('_')}={value}")
    return applied


def trimmer(libc: ctypes.CDLL | None = None) -> Callable[[], None] | None:
    """``malloc_trim(0)`` as a callable (ctypes releases the GIL while it runs), or None if not glibc."""
    libc = libc if libc is not None else glibc()
    if libc is None:
        return None
    trim = libc.malloc_trim
    trim.argtypes = (ctypes.c_size_t,)
    trim.restype = ctypes.c_int
    return lambda: trim(0)


class TrimSchedule:
    """When a serving worker calls ``malloc_trim``: at most once every ``every`` seconds, and only when
    requests were served since the last trim (an idle worker has nothing to give back). ``tick`` is
    called by the loop's tick (at most every 10 ms); trimming on every pass walked the heap once per
    request at one connection and cost it a fifth of its requests per second."""

    __slots__ = ("_trim", "_served", "_every", "_at", "_due")

    def __init__(
        self, trim: Callable[[], object], served: Callable[[], int], every: float = 1.0
    ) -> None:
        self._trim = trim
        self._served = served  # requests served so far
        self._every = every
        self._at = 0  # requests served at the last trim
        self._due = 0.0  # no trim before this time

    def tick(self, now: float) -> None:
        """Trim if a trim is due and requests were served since the last (loop thread)."""
        if now < self._due:
            return
        served = self._served()
        if served != self._at:
            self._at, self._due = served, now + self._every
            self._trim()
