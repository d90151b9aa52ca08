"""cluster.listeners against real loopback sockets (no processes): per-slot reuse-port groups, shared
sockets, steering a removed slot, dual-stack IPv6, unix sockets, bind errors."""

from __future__ import annotations

import os
import resource
import socket
import sys

import pytest

from tests.conftest import poll
from webcluster.cluster.listeners import (
    BindError,
    Listeners,
    raise_nofile_limit,
    systemd_fds,
)

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="Linux reuse-port/TCP_INFO"
)


@pytest.fixture
def opened():
    made: list[Listeners] = []

    def open_(*binds: str, slots: int = 3, reuse_port: bool = True) -> Listeners:
        lst = Listeners.open(binds, slots=slots, backlog=128, reuse_port=reuse_port)
        made.append(lst)
        return lst

    yield open_
    for lst in made:
        lst.close()


def connect_many(port: int, n: int, host: str = "127.0.0.1") -> list[socket.socket]:
    return [socket.create_connection((host, port), timeout=5) for _ in range(n)]


def wait_queued(lst: Listeners, slots, total: int) -> dict[int, int]:
    """Queue lengths per slot once ``total`` connections are queued (handshakes finish asynchronously)."""

    def counts() -> dict[int, int] | None:
        found = {s: lst.queue_length(s) for s in slots}
        return found if sum(found.values()) >= total else None

    return poll(f"{total} queued connections", counts, 5.0)


def test_a_bad_address_is_a_bind_error():
    with pytest.raises(BindError, match="bind 'host:http'"):
        Listeners.open(["host:http"], slots=1, backlog=8)


def test_systemd_fds_only_for_our_pid():
    assert systemd_fds({"LISTEN_PID": "42", "LISTEN_FDS": "2"}, 42) == [3, 4]
    assert systemd_fds({"LISTEN_PID": "41", "LISTEN_FDS": "2"}, 42) == []
    assert systemd_fds({"LISTEN_PID": "42", "LISTEN_FDS": "x"}, 42) == []
    assert systemd_fds({}, 42) == []


def test_raise_nofile_limit_reaches_hard_limit():
    raise_nofile_limit()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft == hard or hard == resource.RLIM_INFINITY


# -- reuse-port: one socket per slot -------------------------------------------------------------------


@linux_only
def test_one_reuseport_socket_per_slot_same_port(opened):
    lst = opened("127.0.0.1:0", slots=3)
    socks = [lst.sockets(s)[0] for s in range(3)]
    assert len({s.fileno() for s in socks}) == 3
    ports = {s.getsockname()[1] for s in socks}
    assert len(ports) == 1 and ports != {0}
    assert all(s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for s in socks)
    assert all(s.get_inheritable() for s in socks)
    assert lst.open_slots() == {0, 1, 2}
    assert lst.urls() == [f"http://127.0.0.1:{ports.pop()}"]


@linux_only
def test_kernel_spreads_connections_over_slots(opened):
    lst = opened("127.0.0.1:0", slots=3)
    port = lst.sockets(0)[0].getsockname()[1]
    clients = connect_many(port, 90)
    counts = wait_queued(lst, range(3), 90)
    assert sum(counts.values()) == 90
    assert all(n > 0 for n in counts.values()), counts  # P(a slot gets none) = 3*(2/3)^90
    for c in clients:
        c.close()


@linux_only
def test_queue_survives_while_supervisor_holds_slot(opened):
    """A worker's death closes only its copy: the supervisor's keeps the queue for the next worker."""
    lst = opened("127.0.0.1:0", slots=1)
    sock = lst.sockets(0)[0]
    worker_copy = socket.socket(fileno=os.dup(sock.fileno()))
    client = socket.create_connection(sock.getsockname(), timeout=5)
    worker_copy.close()  # "the worker died"
    conn, _ = sock.accept()  # the next worker of the slot still gets the queued connection
    conn.sendall(b"hi")
    assert client.recv(2) == b"hi"
    conn.close()
    client.close()


@linux_only
def test_added_slot_joins_the_same_port(opened):
    lst = opened("127.0.0.1:0", slots=2)
    port = lst.sockets(0)[0].getsockname()[1]
    new = lst.sockets(2)[0]  # TTIN
    assert new.getsockname()[1] == port
    assert lst.open_slots() == {0, 1, 2}


@linux_only
def test_draining_slot_gets_no_new_connections(opened):
    lst = opened("127.0.0.1:0", slots=3)
    port = lst.sockets(0)[0].getsockname()[1]
    lst.set_draining({2})
    clients = connect_many(port, 60)
    counts = wait_queued(lst, range(3), 60)
    assert counts[2] == 0 and counts[0] + counts[1] == 60, counts
    lst.close_slot(2)
    assert lst.open_slots() == {0, 1}
    lst.set_draining(set())
    for c in clients:
        c.close()


@linux_only
def test_steering_follows_kernel_order_after_closing_a_middle_slot(opened):
    lst = opened("127.0.0.1:0", slots=4)
    port = lst.sockets(0)[0].getsockname()[1]
    lst.close_slot(1)  # the kernel moves slot 3's socket into index 1
    lst.set_draining({3})
    clients = connect_many(port, 60)
    counts = wait_queued(lst, [0, 2, 3], 60)
    assert counts[3] == 0 and counts[0] > 0 and counts[2] > 0, counts
    lst.set_draining(set())  # back to plain hashing over 0, 2, 3
    clients += connect_many(port, 60)
    counts = wait_queued(lst, [0, 2, 3], 120)
    assert counts[3] > 0, counts
    for c in clients:
        c.close()


# -- shared sockets ------------------------------------------------------------------------------------


def test_no_reuse_port_shares_one_socket(opened):
    lst = opened("127.0.0.1:0", slots=3, reuse_port=False)
    socks = [lst.sockets(s)[0] for s in range(3)]
    assert socks[0] is socks[1] is socks[2]
    assert not socks[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
    assert lst.open_slots() == frozenset() and not lst.per_slot


def test_several_addresses_one_socket_each_per_slot(opened, tmp_path):
    path = str(tmp_path / "s.sock")
    lst = opened("127.0.0.1:0", f"unix:{path}", slots=2)
    s0, s1 = lst.sockets(0), lst.sockets(1)
    assert len(s0) == 2 and s0[1] is s1[1]  # unix: shared
    assert s0[0] is not s1[0]  # tcp: per slot
    assert lst.urls()[1] == f"unix:{path}"


def test_fd_address_is_adopted_and_shared(opened):
    pre = socket.create_server(("127.0.0.1", 0))
    fd = os.dup(pre.fileno())
    port = pre.getsockname()[1]
    pre.close()
    lst = opened(f"fd://{fd}", slots=2)
    assert lst.sockets(0)[0] is lst.sockets(1)[0]
    assert lst.sockets(0)[0].getsockname()[1] == port


# -- IPv6 ----------------------------------------------------------------------------------------------


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 loopback")
def test_ipv6_wildcard_is_dual_stack(opened):
    lst = opened("[::]:0", slots=2)
    port = lst.sockets(0)[0].getsockname()[1]
    assert lst.sockets(0)[0].getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
    for host in ("127.0.0.1", "::1"):
        socket.create_connection((host, port), timeout=5).close()
    assert lst.urls() == [f"http://[::]:{port}"]


@pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 loopback")
def test_ipv6_loopback(opened):
    lst = opened("[::1]:0", slots=2)
    port = lst.sockets(1)[0].getsockname()[1]
    socket.create_connection(("::1", port), timeout=5).close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=5)


# -- errors --------------------------------------------------------------------------------------------


def test_port_in_use_one_line_message():
    other = socket.create_server(("127.0.0.1", 0))
    port = other.getsockname()[1]
    try:
        with pytest.raises(BindError) as err:
            Listeners.open([f"127.0.0.1:{port}"], slots=2, backlog=16)
        assert str(err.value) == (
            f"address 127.0.0.1:{port} is already in use; stop the other server or pass --bind"
        )
    finally:
        other.close()


@linux_only
def test_port_of_another_reuseport_server_is_in_use(opened):
    """Same-user SO_REUSEPORT sockets could silently share a port: the probe refuses it."""
    first = opened("127.0.0.1:0", slots=2)
    port = first.sockets(0)[0].getsockname()[1]
    with pytest.raises(BindError, match="already in use"):
        Listeners.open([f"127.0.0.1:{port}"], slots=2, backlog=16)


def test_failed_open_closes_what_it_opened():
    other = socket.create_server(("127.0.0.1", 0))
    port = other.getsockname()[1]
    before = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    try:
        with pytest.raises(BindError):
            Listeners.open(["127.0.0.1:0", f"127.0.0.1:{port}"], slots=2, backlog=16)
    finally:
        other.close()
    if before is not None:
        assert len(os.listdir("/proc/self/fd")) == before - 1


# -- unix sockets --------------------------------------------------------------------------------------


def test_unix_socket_serves_and_is_removed_on_close(tmp_path):
    path = str(tmp_path / "web.sock")
    lst = Listeners.open([f"unix:{path}"], slots=2, backlog=16)
    try:
        client = socket.socket(socket.AF_UNIX)
        client.connect(path)
        conn, _ = lst.sockets(1)[0].accept()
        conn.close()
        client.close()
    finally:
        lst.close()
    assert not os.path.exists(path)


def test_unix_stale_socket_file_is_replaced(tmp_path):
    path = str(tmp_path / "web.sock")
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(path)
    dead.close()  # the file stays, nobody listens
    lst = Listeners.open([f"unix:{path}"], slots=1, backlog=16)
    try:
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(path)  # the new listener answers on the old path
        assert lst.urls() == [f"unix:{path}"]
    finally:
        lst.close()


def test_unix_socket_in_use(tmp_path):
    path = str(tmp_path / "web.sock")
    live = socket.socket(socket.AF_UNIX)
    live.bind(path)
    live.listen()
    try:
        with pytest.raises(BindError, match=f"address unix:{path} is already in use"):
            Listeners.open([f"unix:{path}"], slots=1, backlog=16)
        assert os.path.exists(path)
    finally:
        live.close()


def test_unix_path_that_is_not_a_socket(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(BindError, match="exists and is not a socket"):
        Listeners.open([f"unix:{path}"], slots=1, backlog=16)
    assert path.read_text() == "x"
