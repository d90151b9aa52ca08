"""``--reload`` (development): reload the workers when the app's source changes (stdlib polling).

The supervisor never imports the app itself (``--reload`` is refused with ``--preload``), so it learns
which files to watch from a *probe*: a short-lived forked child that imports the app exactly as a worker
does, then sends back the files of every module it has loaded. The arbiter calls :meth:`Reloader.poll`
once a second; it compares the mtimes of those files, of ``--reload-extra-file`` files, of every file
under ``--reload-dir`` and of the ``--config`` file. On a change it probes again, in a fresh fork:

- the app imports: the new file list replaces the old one and ``poll`` returns True (the arbiter then
  reloads the workers as on ``HUP``: new ones ready first, then the old ones drain);
- it does not (a syntax error, an import-time exception): the error is logged once, the workers keep
  the old code, and nothing happens until the next change.

Main thread of the supervisor only; a probe blocks the loop for as long as the import takes (bounded
by ``PROBE_TIMEOUT_S``), acceptable for a development server.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import select
import signal
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from webcluster.cluster import signals

log = logging.getLogger("webcluster.supervisor")

PROBE_TIMEOUT_S = 60.0
Probe = Callable[[Any], tuple[list[str], str | None]]  # cfg -> (module files, error or None)


class Reloader:
    """Watches the files; ``poll(cfg)`` says whether the workers should be reloaded now."""

    def __init__(self, cfg: Any, probe: Probe | None = None) -> None:
        self._probe = probe or probe_app
        self._modules: list[str] = []
        self._mtimes: dict[str, int | None] = {}
        files, error = self._probe(cfg)
        if error is None:  # otherwise the workers fail to boot too and the supervisor halts
            self._modules = files
        self._mtimes = snapshot(watched(cfg, self._modules))
        log.info("--reload: watching %d files", len(self._mtimes))

    def poll(self, cfg: Any) -> bool:
        """True when a watched file changed and the app (as it is now on disk) imports."""
        current = snapshot(watched(cfg, self._modules))
        if current == self._mtimes:
            return False
        changed = sorted(
            p for p in current.keys() | self._mtimes if current.get(p) != self._mtimes.get(p)
        )
        self._mtimes = current
        log.info("--reload: %s changed", ", ".join(changed[:3]) + (" ..." if changed[3:] else ""))
        drop_bytecode(changed)
        files, error = self._probe(cfg)
        if error is not None:
            log.error("--reload: not reloading, the workers keep the old code: %s", error)
            return False
        self._modules = files
        self._mtimes = snapshot(watched(cfg, files))
        return True


def watched(cfg: Any, modules: Iterable[str]) -> set[str]:
    """Every file to poll: the app's modules, the extra files, the files under the dirs, the config."""
    paths = set(modules) | set(cfg.reload_extra_file)
    if cfg.config:
        paths.add(cfg.config)
    for top in cfg.reload_dir:
        for directory, subdirs, files in os.walk(top):
            subdirs[:] = [d for d in subdirs if not d.startswith(".") and d != "__pycache__"]
            paths.update(os.path.join(directory, f) for f in files if not f.endswith(".pyc"))
    return paths


def snapshot(paths: Iterable[str]) -> dict[str, int | None]:
    """mtime (ns) of each path; None for a file that is missing (its coming back is a change too)."""
    out: dict[str, int | None] = {}
    for path in paths:
        try:
            out[path] = os.stat(path).st_mtime_ns
        except OSError:
            out[path] = None
    return out


def drop_bytecode(paths: Iterable[str]) -> None:
    """Remove the cached bytecode of changed sources: its validation compares whole-second mtimes
    and sizes (PEP 552's default), so an edit within the second could otherwise load the old code."""
    for path in paths:
        if path.endswith(".py"):
            try:
                os.unlink(importlib.util.cache_from_source(path))
            except (OSError, ValueError, NotImplementedError):
                pass


def probe_app(cfg: Any) -> tuple[list[str], str | None]:
    """Import the app in a forked child: (the files of its loaded modules, None) or ([], error)."""
    read_fd, write_fd = os.pipe()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(read_fd)
        _probe_child(cfg, write_fd)
    os.close(write_fd)
    try:
        data = _read_all(read_fd, time.monotonic() + PROBE_TIMEOUT_S)
    finally:
        os.close(read_fd)
        _reap(pid)
    if data is None:
        return [], f"importing the app took more than {PROBE_TIMEOUT_S:.0f}s"
    try:
        result = json.loads(data)
    except ValueError:
        return [], "the import probe died without an answer (see the lines above)"
    return result.get("files", []), result.get("error")


def _probe_child(cfg: Any, fd: int) -> None:  # pragma: no cover - child
    code = 0
    try:
        signals.reset_in_child()  # signals must not reach the supervisor's wake-up pipe
        from webcluster.worker.handlers.dispatch import AppImportError
        from webcluster.worker.main import load_handler

        try:
            load_handler(cfg, multiprocess=cfg.procs > 1)
            files = [getattr(m, "__file__", None) for m in list(sys.modules.values())]
            answer: dict[str, Any] = {"files": sorted({f for f in files if f})}
        except AppImportError as exc:
            answer = {"error": str(exc)}
        data = json.dumps(answer).encode()
        while data:
            data = data[os.write(fd, data) :]
    except BaseException:
        code = 1
    finally:
        os._exit(code)


def _read_all(fd: int, deadline: float) -> bytes | None:
    chunks = []
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(left * 1000):
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)  # gone already, or stuck past the deadline
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
