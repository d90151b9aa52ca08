"""Listening sockets, created and owned by the supervisor (docs/ARCHITECTURE.md, Processes; nginx's
``ngx_clone_listening``).

For every ``--bind`` address the supervisor opens, per worker slot, one SO_REUSEPORT socket; the kernel
spreads new connections over them. Worker *i* inherits the slot-*i* sockets through fork and the supervisor
keeps its own copy open for the whole run, so connections queued on slot *i* survive the death, recycling
or reload of its worker: the next process of slot *i* accepts them. Unix sockets, ``fd://N``, systemd
socket activation and ``--no-reuse-port`` use one socket shared by every slot.

Removing a slot (TTOU) first steers new connections away from it (cluster/steering.py), so that its
worker can drain the accept queue before the socket is closed.

Called only from the supervisor's main thread.
"""

from __future__ import annotations

import errno
import os
import resource
import socket
import stat
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from webcluster.cluster import steering
from webcluster.cluster.addresses import BindAddress, split_address
from webcluster.cluster.parsers import InvalidValue

SD_LISTEN_FDS_START = 3  # sd_listen_fds(3): the first passed descriptor


class BindError(Exception):
    """A listening socket could not be created; ``str()`` is the one-line message for the user."""


def _address(text: str) -> BindAddress:
    try:
        return split_address(text)
    except InvalidValue as exc:
        raise BindError(f"bind {text!r}: {exc}") from None


def systemd_fds(environ: Mapping[str, str], pid: int) -> list[int]:
    """Descriptors passed by systemd socket activation (sd_listen_fds(3)), or [] when none are ours."""
    if environ.get("LISTEN_PID", "") != str(pid):
        return []
    try:
        count = int(environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    return list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + max(count, 0)))


def _socket_owned_by(uid: int | None, family: int) -> socket.socket:
    """A TCP socket whose owner (sk_uid, the SO_REUSEPORT group key) is ``uid``: created under that
    effective uid when we are root, the rest (bind, listen) done as root again."""
    if uid is None or uid == 0 or os.geteuid() != 0:
        return socket.socket(family, socket.SOCK_STREAM)
    os.seteuid(uid)
    try:
        return socket.socket(family, socket.SOCK_STREAM)
    finally:
        os.seteuid(0)


def raise_nofile_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit (every connection is a descriptor)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
        except (ValueError, OSError):
            pass
    return soft


def _bind_error(address: BindAddress, exc: OSError) -> BindError:
    where = address.display()
    if exc.errno == errno.EADDRINUSE:
        return BindError(f"address {where} is already in use; stop the other server or pass --bind")
    if exc.errno == errno.EACCES:
        return BindError(
            f"permission denied binding {where}; ports below 1024 need root or CAP_NET_BIND_SERVICE"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return BindError(f"address {where} is not an address of this machine; pass --bind")
    return BindError(f"cannot bind {where}: {exc.strerror or exc}")


def _resolve(address: BindAddress) -> tuple[int, tuple]:
    try:
        infos = socket.getaddrinfo(
            address.host, address.port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise BindError(f"cannot resolve {address.display()}: {exc.strerror}") from None
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr


@dataclass
class _Group:
    """The sockets of one bind address: one shared socket, or one per slot (reuse-port)."""

    address: BindAddress
    family: int = socket.AF_INET
    sockaddr: tuple = ()
    port: int = 0
    shared: socket.socket | None = None
    slots: dict[int, socket.socket] = field(default_factory=dict)
    order: list[int] = field(default_factory=list)  # slot at each kernel reuse-port index
    steered: bool = False
    v6only: bool = False  # IPV6_V6ONLY for AF_INET6 sockets
    unix_inode: int | None = None

    def url(self) -> str:
        if self.address.kind == "tcp":
            return f"http://{self.address.display(self.port)}"
        if self.address.kind == "fd" and self.shared is not None:  # show what systemd passed us
            name = self.shared.getsockname()
            if isinstance(name, tuple):
                host = f"[{name[0]}]" if ":" in name[0] else name[0]
                return f"http://{host}:{name[1]} ({self.address.display()})"
            return f"unix:{name} ({self.address.display()})"
        return self.address.display()


class Listeners:
    """Every listening socket of the supervisor; see the module docstring for the model."""

    def __init__(self, groups: list[_Group], backlog: int, owner_uid: int | None = None) -> None:
        self._groups = groups
        self._backlog = backlog
        self._owner_uid = owner_uid
        self._draining: frozenset[int] = frozenset()

    # -- construction -------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        binds: Iterable[str],
        *,
        slots: int,
        backlog: int,
        reuse_port: bool = True,
        environ: Mapping[str, str] | None = None,
        owner_uid: int | None = None,
    ) -> Listeners:
        """Bind every address (slots 0..slots-1); raise :class:`BindError` with a one-line message.

        ``owner_uid``: the user the supervisor will switch to (``--user``). TCP sockets are created as
        that user (and still bound as root), so that after the switch a new slot's socket may join
        the SO_REUSEPORT group: the kernel only groups sockets created by the same user.

        With systemd socket activation (LISTEN_PID = our pid) the passed descriptors replace ``binds``;
        the variables are then removed from ``os.environ`` so workers do not see them (sd_listen_fds).
        """
        environ = os.environ if environ is None else environ
        fds = systemd_fds(environ, os.getpid())
        if fds:
            for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
                os.environ.pop(key, None)
            addresses = [BindAddress(f"fd://{fd}", "fd", fd=fd) for fd in fds]
        else:
            addresses = [_address(b) for b in binds]
        reuse = reuse_port and hasattr(socket, "SO_REUSEPORT")
        wildcard4 = {a.port for a in addresses if a.kind == "tcp" and a.host == "0.0.0.0"}
        self = cls([], backlog, owner_uid)
        try:
            for address in addresses:
                # "[::]" is dual-stack (serves IPv4 too) unless 0.0.0.0 on the same port is bound too.
                v6only = address.host != "::" or address.port in wildcard4
                self._groups.append(self._open_group(address, slots, reuse, v6only))
        except BaseException:
            self.close()
            raise
        return self

    def _open_group(self, address: BindAddress, slots: int, reuse: bool, v6only: bool) -> _Group:
        group = _Group(address, v6only=v6only)
        if address.kind == "fd":
            group.shared = self._adopt_fd(address)
        elif address.kind == "unix":
            group.shared = self._bind_unix(address)
            group.unix_inode = os.stat(address.path).st_ino
        else:
            group.family, group.sockaddr = _resolve(address)
            if address.port:
                self._probe(group)  # refuse to join another server's reuse-port group
            if not reuse:
                group.shared = self._bind_tcp(group, reuse=False)
            for slot in range(slots) if reuse else ():
                self._add(group, slot)
        return group

    def _probe(self, group: _Group) -> None:
        # Same-user SO_REUSEPORT sockets may share a port, so a second server would silently join the
        # first one's group. A bind without SO_REUSEPORT conflicts with any listener: check first.
        probe = socket.socket(group.family, socket.SOCK_STREAM)
        try:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._v6only(probe, group)
            probe.bind(group.sockaddr)
        except OSError as exc:
            raise _bind_error(group.address, exc) from None
        finally:
            probe.close()

    def _v6only(self, sock: socket.socket, group: _Group) -> None:
        if group.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(group.v6only))

    def _bind_tcp(self, group: _Group, *, reuse: bool) -> socket.socket:
        sock = _socket_owned_by(self._owner_uid, group.family)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            self._v6only(sock, group)
            sockaddr = group.sockaddr
            if group.port:  # port 0: the first socket picks the port, the others share it
                sockaddr = (sockaddr[0], group.port, *sockaddr[2:])
            sock.bind(sockaddr)
            sock.listen(self._backlog)
        except OSError as exc:
            sock.close()
            raise _bind_error(group.address, exc) from None
        sock.set_inheritable(True)
        group.port = sock.getsockname()[1]
        return sock

    def _bind_unix(self, address: BindAddress) -> socket.socket:
        path = address.path
        if os.path.lexists(path):
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                raise BindError(
                    f"address unix:{path} exists and is not a socket; remove it or pass --bind"
                )
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(path)
            except OSError:
                os.unlink(path)  # stale: nobody accepts on it any more
            else:
                raise BindError(
                    f"address unix:{path} is already in use; stop the other server or pass --bind"
                )
            finally:
                probe.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            sock.listen(self._backlog)
        except OSError as exc:
            sock.close()
            raise _bind_error(address, exc) from None
        sock.set_inheritable(True)
        return sock

    def _adopt_fd(self, address: BindAddress) -> socket.socket:
        try:
            sock = socket.socket(fileno=address.fd)
        except OSError as exc:
            raise BindError(f"{address.display()} is not an open socket: {exc.strerror}") from None
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            sock.listen(self._backlog)
        sock.set_inheritable(True)
        return sock

    def _add(self, group: _Group, slot: int) -> None:
        group.slots[slot] = self._bind_tcp(group, reuse=True)
        group.order.append(slot)  # the kernel appends at listen()

    # -- per-slot operations ------------------------------------------------------------------------

    @property
    def per_slot(self) -> bool:
        """True when at least one address has one socket per slot."""
        return any(g.shared is None for g in self._groups)

    def open_slots(self) -> frozenset[int]:
        """Slots that currently have their own sockets."""
        return frozenset(s for g in self._groups if g.shared is None for s in g.slots)

    def sockets(self, slot: int) -> list[socket.socket]:
        """The sockets a worker of ``slot`` accepts on, one per bind address (creating missing ones)."""
        for group in self._groups:
            if group.shared is None and slot not in group.slots:
                self._add(group, slot)
                self._steer(group, self._draining)
        return [g.shared if g.shared is not None else g.slots[slot] for g in self._groups]

    def all_sockets(self) -> list[socket.socket]:
        """Every socket held (a forked worker closes those not in its own slot)."""
        return [s for g in self._groups for s in ([g.shared] if g.shared else g.slots.values())]

    def set_draining(self, draining: Iterable[int]) -> None:
        """Send new connections only to slots not in ``draining`` (Linux; no-op elsewhere)."""
        self._draining = frozenset(draining)
        for group in self._groups:
            if group.shared is None:
                self._steer(group, self._draining)

    def _steer(self, group: _Group, draining: frozenset[int]) -> None:
        if not sys.platform.startswith("linux") or not group.order:
            return
        active = [i for i, slot in enumerate(group.order) if slot not in draining]
        anchor = group.slots[group.order[0]]
        try:
            if active and len(active) < len(group.order):
                steering.attach(anchor, active)
                group.steered = True
            elif group.steered:
                steering.detach(anchor)
                group.steered = False
        except OSError:
            group.steered = False  # kernel without reuse-port BPF: the documented reset window

    def queue_length(self, slot: int) -> int | None:
        """Connections waiting in ``slot``'s accept queues (Linux TCP_INFO), None when unknown."""
        total = 0
        for group in self._groups:
            sock = group.slots.get(slot) if group.shared is None else None
            if sock is None:
                continue
            try:
                total += steering.accept_queue_length(sock)
            except (OSError, AttributeError):
                return None
        return total

    def close_slot(self, slot: int) -> None:
        """Close ``slot``'s own sockets (call once its worker has drained the queue and exited)."""
        for group in self._groups:
            sock = group.slots.pop(slot, None)
            if sock is None:
                continue
            index = group.order.index(slot)
            group.order[index] = group.order[-1]  # the kernel moves the last socket into the hole
            group.order.pop()
            sock.close()
            if group.order:
                self._steer(group, self._draining)
            else:
                group.steered = False

    def urls(self) -> list[str]:
        """Display form of every address (with the bound port), for the start banner."""
        return [g.url() for g in self._groups]

    def chown_unix(self, uid: int, gid: int) -> None:
        """Hand unix socket files to the user the supervisor drops privileges to."""
        for group in self._groups:
            if group.address.kind == "unix":
                os.chown(group.address.path, uid, gid)

    def close(self) -> None:
        """Close every socket and remove the unix socket files this supervisor created."""
        for group in self._groups:
            for sock in [group.shared, *group.slots.values()]:
                if sock is not None:
                    sock.close()
            group.slots.clear()
            group.order.clear()
            if group.unix_inode is not None:
                try:
                    if os.stat(group.address.path).st_ino == group.unix_inode:
                        os.unlink(group.address.path)
                except OSError:
                    pass
        self._groups = []
