"""Fake worker targets for ``Arbiter(cfg, worker_target=...)``: the supervisor's side without the HTTP
engine. Run one with ``python -m tests.apps.fake_workers TARGET [supervisor args...]``; the Config is
built by ``cluster.config.load_config`` from the remaining arguments.
"""

from __future__ import annotations

import os
import sys

from webcluster.worker import ipc


def crash(cfg, sockets, channel, *, slot: int, generation: int, **_) -> int:
    """Dies at once, before saying ready: a crash loop the supervisor must back off from."""
    return 1


def boot_error(cfg, sockets, channel, *, slot: int, generation: int, **_) -> int:
    """Reports an import failure like worker.main does, then exits 3."""
    channel.send_bytes(ipc.encode(ipc.boot_error(os.getpid(), "ImportError: fake app is broken")))
    return 3


def ready_then_crash(cfg, sockets, channel, *, slot: int, generation: int, **_) -> int:
    """Says ready, then dies at once: a request that kills every replacement, at the fastest."""
    channel.send_bytes(ipc.encode(ipc.ready(os.getpid(), slot, generation)))
    return 1


def raises(cfg, sockets, channel, *, slot: int, generation: int, **_) -> int:
    """An uncaught exception: the child prints the traceback and exits 1."""
    raise RuntimeError("fake worker blew up")


TARGETS = {
    "crash": crash,
    "boot_error": boot_error,
    "raises": raises,
    "ready_then_crash": ready_then_crash,
}


def main(argv: list[str]) -> int:
    from webcluster.cluster.arbiter import Arbiter
    from webcluster.cluster.config import load_config

    target = TARGETS[argv[0]]
    return Arbiter(load_config(argv[1:]), worker_target=target).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
