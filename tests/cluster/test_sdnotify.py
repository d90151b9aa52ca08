"""cluster/sdnotify.py: datagrams on a real unix socket (path and abstract namespace)."""

from __future__ import annotations

import os
import socket

from webcluster.cluster import sdnotify


def test_notify_path_and_abstract_socket(tmp_path) -> None:
    path = str(tmp_path / "notify")
    abstract = f"webcluster-test-{os.getpid()}"
    with (
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as by_path,
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as by_name,
    ):
        by_path.bind(path)
        by_name.bind("\0" + abstract)
        assert sdnotify.notify("READY=1", "MAINPID=7", environ={"NOTIFY_SOCKET": path})
        assert by_path.recv(100) == b"READY=1\nMAINPID=7"
        assert sdnotify.notify(*sdnotify.reloading(), environ={"NOTIFY_SOCKET": "@" + abstract})
        first, second = by_name.recv(100).decode().split("\n")
        assert first == "RELOADING=1" and second.startswith("MONOTONIC_USEC=")
        assert int(second.split("=")[1]) > 0


def test_notify_without_a_listener_is_a_quiet_no_op(tmp_path) -> None:
    assert not sdnotify.notify("READY=1", environ={})
    assert not sdnotify.notify("READY=1", environ={"NOTIFY_SOCKET": str(tmp_path / "none")})
