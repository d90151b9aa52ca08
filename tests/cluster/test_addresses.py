"""cluster.addresses: the one parser of listening addresses (--bind, --admin)."""

from __future__ import annotations

import pytest

from webcluster.cluster.addresses import BindAddress, split_address
from webcluster.cluster.parsers import InvalidValue

PARSE = [
    ("127.0.0.1:8080", BindAddress("127.0.0.1:8080", "tcp", host="127.0.0.1", port=8080)),
    ("[::]:8080", BindAddress("[::]:8080", "tcp", host="::", port=8080)),
    ("[::1]:0", BindAddress("[::1]:0", "tcp", host="::1", port=0)),
    ("localhost:80", BindAddress("localhost:80", "tcp", host="localhost", port=80)),
    ("unix:/tmp/x.sock", BindAddress("unix:/tmp/x.sock", "unix", path="/tmp/x.sock")),
    ("fd://3", BindAddress("fd://3", "fd", fd=3)),
]


@pytest.mark.parametrize("text,expected", PARSE)
def test_split_address(text, expected):
    assert split_address(text) == expected


@pytest.mark.parametrize(
    "text", ["8080", ":8080", "host:", "host:http", "::1:80", "1.2.3.4:70000", "unix:", "fd://x"]
)
def test_split_address_rejects(text):
    with pytest.raises(InvalidValue):
        split_address(text)


def test_display_uses_bound_port():
    assert split_address("[::1]:0").display(4242) == "[::1]:4242"
    assert split_address("unix:/run/a.sock").display() == "unix:/run/a.sock"
