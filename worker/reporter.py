"""Sends the worker's messages (ready, boot_error, retire, stats/heartbeat) to the supervisor.

Called from the worker's poller thread only. Nothing here may block the loop or crash the worker: the
pipe is made non-blocking and every message fits one atomic pipe write (``ipc.MAX_MESSAGE_BYTES``), so
a full pipe drops the message whole and a dead supervisor (EPIPE) just stops the reporting.
Control messages (ready, retire) that could not be sent are kept and retried on the next ``tick``;
stats are simply superseded by the next one.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any, Protocol

from webcluster.worker import ipc
from webcluster.worker.stats import WorkerStats

log = logging.getLogger(__name__)

# At most this many control messages wait for a full pipe to drain (ready + retire, with room to spare).
_MAX_PENDING = 8


class Channel(Protocol):
    """The write end of ``multiprocessing.Pipe(duplex=False)`` (or a fake in tests)."""

    def send_bytes(self, buf: bytes, /) -> None: ...


class Reporter:
    """Worker -> supervisor reporting. ``gauges()`` returns a dict with some of ``ipc.GAUGE_FIELDS``.

    ``tick(now)`` sends a stats message when ``interval`` seconds of ``now`` (any monotonic clock the
    caller uses consistently) have passed since the last one; the first tick sends at once. The message's
    ``time`` field comes from ``clock`` (unix time by default).
    """

    def __init__(
        self,
        channel: Channel | None,
        stats: WorkerStats,
        gauges: Callable[[], dict[str, int]],
        *,
        slot: int,
        generation: int,
        clock: Callable[[], float] = time.time,
        interval: float = 1.0,
        pid: int | None = None,
    ) -> None:
        self._channel = channel
        self._stats = stats
        self._gauges = gauges
        self._slot = slot
        self._generation = generation
        self._clock = clock
        self._interval = interval
        self._pid = os.getpid() if pid is None else pid
        self._last_tick: float | None = None
        self._pending: list[bytes] = []
        self._broken = channel is None
        self._warned: set[str] = set()
        self.dropped = 0  # messages lost to a full pipe (stats superseded, or pending overflow)
        _make_nonblocking(channel)

    @property
    def broken(self) -> bool:
        """True once the supervisor end is gone (EPIPE / closed); nothing is sent after that."""
        return self._broken

    def send_ready(self) -> None:
        """Announce that the app is loaded and accept is live."""
        self._send_control(ipc.ready(self._pid, self._slot, self._generation))

    def send_boot_error(self, message: str) -> None:
        """Report an app import/boot failure; the worker exits with EXIT_BOOT_ERROR right after."""
        self._send_control(ipc.boot_error(self._pid, message))

    def send_retire(self, reason: str = "max_requests") -> None:
        """Ask to be replaced (request budget reached); the worker keeps serving until TERM."""
        self._send_control(ipc.retire(self._pid, reason))

    def tick(self, now: float) -> None:
        """Send pending control messages, then a stats heartbeat if one is due. Never raises."""
        try:
            self._retry_pending()
            if self._last_tick is not None and now - self._last_tick < self._interval:
                return
            self._last_tick = now
            self._send_stats()
        except Exception:  # the loop must survive any bug here; say it once
            self._warn_once("tick", "stats reporting failed", exc_info=True)

    def flush(self) -> None:
        """Send a stats message now (at clean exit, so the supervisor's totals include the last requests)."""
        try:
            self._retry_pending()
            self._send_stats()
        except Exception:
            self._warn_once("tick", "stats reporting failed", exc_info=True)

    # --- internals ---------------------------------------------------------------------------

    def _send_stats(self) -> None:
        try:
            gauges = self._gauges()
        except Exception:  # a broken gauge must not silence the heartbeat
            self._warn_once("gauges", "gauges callback failed; sending zeros", exc_info=True)
            gauges = {}
        msg = ipc.stats(
            self._pid, self._slot, self._generation, self._clock(), self._stats.snapshot(), gauges
        )
        if not self._write(ipc.encode(msg)):
            self.dropped += 1

    def _send_control(self, msg: dict[str, Any]) -> None:
        try:
            data = ipc.encode(msg)
        except ValueError:
            self._warn_once("encode", f"cannot encode {msg.get('type')} message", exc_info=True)
            return
        if self._pending or not self._write(data):
            self._queue(data)  # keep order: never overtake an earlier pending message

    def _queue(self, data: bytes) -> None:
        if len(self._pending) >= _MAX_PENDING or self._broken:
            self.dropped += 1
            return
        self._pending.append(data)

    def _retry_pending(self) -> None:
        while self._pending and self._write(self._pending[0]):
            self._pending.pop(0)

    def _write(self, data: bytes) -> bool:
        """One atomic write; False when the message was not sent (pipe full or gone)."""
        if self._broken or self._channel is None:
            return False
        try:
            self._channel.send_bytes(data)
            return True
        except BlockingIOError:  # pipe full: the supervisor is busy; drop, do not wait
            self._warn_once("full", "supervisor pipe full; dropping stats messages")
            return False
        except (OSError, ValueError, EOFError):  # EPIPE / closed handle: the supervisor is gone
            self._broken = True
            self._pending.clear()
            self._warn_once("broken", "supervisor pipe closed; stats reporting stopped")
            return False

    def _warn_once(self, key: str, text: str, exc_info: bool = False) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(text, exc_info=exc_info)


def _make_nonblocking(channel: Any) -> None:
    """Set O_NONBLOCK on the pipe so a full pipe fails at once instead of stalling the poller."""
    try:
        os.set_blocking(channel.fileno(), False)
    except (AttributeError, OSError, ValueError):
        pass  # a fake channel in tests, or no channel at all
