"""Network namespaces on a private bridge: the fleet's "machines", made and removed by the runner.

Layout (``prefix`` is unique per run, e.g. ``wcf1234``): a hub namespace ``<prefix>-hub`` holds the bridge
``br0``; every other namespace gets a veth pair, its end ``eth0`` inside with a 198.18.0.0/24 address (the
benchmarking range, RFC 2544) and its peer enslaved to the bridge in the hub. Nothing is created in the
root namespace, so no packet of the run can leave the machine: the runner reaches the namespaces only by
entering them (``ip netns exec`` for processes, :class:`NetnsCaller` for its own HTTP probes) and through
unix sockets on the filesystem (HAProxy's stats socket).

Everything made is recorded as it is made and removed by :meth:`Network.close` (deleting a namespace
deletes its veth ends and the bridge with it), also after an error or Ctrl-C.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import os
import shutil
import subprocess
from collections.abc import Callable
from typing import Any, TypeVar

SUBNET = "198.18.0"  # /24
CLONE_NEWNET = 0x40000000
NETNS_DIR = "/var/run/netns"
T = TypeVar("T")


class NetnsError(RuntimeError):
    """The namespaces cannot be made here (not root, no ip netns); the message says what is missing."""


def check_support() -> None:
    """Raise NetnsError unless this process may create network namespaces with ``ip netns``."""
    if os.geteuid() != 0:
        raise NetnsError("the fleet needs root (network namespaces): run it as root, e.g. sudo")
    if shutil.which("ip") is None:
        raise NetnsError("the fleet needs `ip` from iproute2 (apt-get install iproute2)")
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if probe.returncode != 0:
        raise NetnsError(f"`ip netns` does not work here: {probe.stderr.strip()}")


def _ip(*args: str, ns: str | None = None) -> None:
    cmd = ["ip", *(("-n", ns) if ns else ()), *args]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise NetnsError(f"{' '.join(cmd)}: {done.stderr.strip()}")


class Network:
    """The bridge and the namespaces of one run. Use as a context manager."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.hub = f"{prefix}-hub"
        self.made: list[str] = []  # namespaces, in creation order
        self.addresses: dict[str, str] = {}

    def __enter__(self) -> Network:
        self._netns(self.hub)
        _ip("link", "add", "br0", "type", "bridge", ns=self.hub)
        _ip("link", "set", "br0", "up", ns=self.hub)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _netns(self, name: str) -> None:
        _ip("netns", "add", name)
        self.made.append(name)
        _ip("link", "set", "lo", "up", ns=name)

    def add(self, name: str, host_octet: int) -> tuple[str, str]:
        """A namespace ``<prefix>-<name>`` on the bridge at 198.18.0.<host_octet>; (ns, address)."""
        ns, address = f"{self.prefix}-{name}", f"{SUBNET}.{host_octet}"
        self._netns(ns)
        # interface names are at most 15 bytes: the peer is named by the octet, unique on the bridge
        peer = f"v{host_octet}"
        _ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", peer,
            "netns", self.hub)  # fmt: skip
        _ip("link", "set", peer, "master", "br0", ns=self.hub)
        _ip("link", "set", peer, "up", ns=self.hub)
        _ip("addr", "add", f"{address}/24", "dev", "eth0", ns=ns)
        _ip("link", "set", "eth0", "up", ns=ns)
        self.addresses[ns] = address
        return ns, address

    def pids(self, ns: str) -> list[int]:
        """Every process in ``ns`` (``ip netns pids``)."""
        done = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
        return [int(p) for p in done.stdout.split()]

    def close(self) -> None:
        """Kill what still runs in our namespaces (by pid) and delete them, newest first."""
        for ns in reversed(self.made):
            for pid in self.pids(ns):
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.made.clear()

    @staticmethod
    def exec_prefix(ns: str) -> tuple[str, ...]:
        """Prefix a command with this to run it in ``ns`` (``ip netns exec`` execs: same pid)."""
        return ("ip", "netns", "exec", ns)


def leftover(prefix_start: str = "wcf") -> list[str]:
    """Namespaces named like ours that exist now (for tests: none may be left behind)."""
    done = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    return [line.split()[0] for line in done.stdout.splitlines() if line.startswith(prefix_start)]


def _enter(ns: str) -> None:
    """Move the calling thread (only it: setns is per thread) into network namespace ``ns``."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(os.path.join(NETNS_DIR, ns), os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({ns}): {os.strerror(err)}")
    finally:
        os.close(fd)


class NetnsCaller:
    """Runs callables on one thread that lives in ``ns``, so the sockets they open are in ``ns``
    (the runner's /stats probes); the rest of the runner stays in the root namespace."""

    def __init__(self, ns: str) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix=f"netns-{ns}", initializer=_enter, initargs=(ns,)
        )

    def call(self, fn: Callable[..., T], *args: Any, timeout: float = 15.0) -> T:
        return self._pool.submit(fn, *args).result(timeout)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
