"""The statsd client against a real UDP socket on loopback: gunicorn's metric names and formats."""

from __future__ import annotations

import logging
import socket

import pytest

from webcluster.worker.statsd import Statsd, StatsdError, StatsdLogHandler, install_log_counter


@pytest.fixture
def daemon():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    yield sock
    sock.close()


def recv(sock: socket.socket) -> list[str]:
    return sock.recv(65536).decode().split("\n")


def client(daemon, prefix: str = "") -> Statsd:
    return Statsd(f"127.0.0.1:{daemon.getsockname()[1]}", prefix)


def test_a_request_is_one_datagram_of_gunicorns_three_metrics(daemon) -> None:
    statsd = client(daemon)
    statsd.request(404, 0.0123456)
    assert recv(daemon) == [
        "gunicorn.request.duration:12.346|ms",
        "gunicorn.requests:1|c|@1.0",
        "gunicorn.request.status.404:1|c|@1.0",
    ]
    statsd.close()


@pytest.mark.parametrize(("prefix", "name"), [("app", "app."), ("app.", "app."), ("", "")])
def test_prefix_gets_one_dot(daemon, prefix, name) -> None:
    statsd = client(daemon, prefix)
    statsd.gauge("gunicorn.workers", 3)
    assert recv(daemon) == [f"{name}gunicorn.workers:3|g"]
    statsd.close()


def test_log_records_are_counted_by_level(daemon) -> None:
    statsd = client(daemon)
    handler = StatsdLogHandler(statsd)
    logger = logging.getLogger("test.statsd.counter")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.info("not counted")
        logger.warning("w")
        logger.error("e")
        try:
            raise ValueError("x")
        except ValueError:
            logger.exception("boom")
        logger.critical("c")
    finally:
        logger.removeHandler(handler)
    got = [recv(daemon)[0] for _ in range(4)]
    assert got == [
        "gunicorn.log.warning:1|c|@1.0",
        "gunicorn.log.error:1|c|@1.0",
        "gunicorn.log.exception:1|c|@1.0",
        "gunicorn.log.critical:1|c|@1.0",
    ]
    statsd.close()


def test_install_replaces_the_counter(daemon) -> None:
    first, second = client(daemon), client(daemon)
    install_log_counter(first)
    install_log_counter(second)
    for name in ("webcluster.error", "webcluster.supervisor"):
        counters = [h for h in logging.getLogger(name).handlers if isinstance(h, StatsdLogHandler)]
        assert [h.statsd for h in counters] == [second]
    install_log_counter(None)
    assert not [
        h for h in logging.getLogger("webcluster.error").handlers if isinstance(h, StatsdLogHandler)
    ]
    first.close()
    second.close()


def test_no_daemon_listening_is_never_an_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed below: nobody listens there any more
    statsd = Statsd(f"127.0.0.1:{port}")
    for _ in range(5):
        statsd.request(200, 0.001)  # the ICMP refusal surfaces as ECONNREFUSED on a later send
    assert statsd.sent + statsd.dropped == 5
    statsd.close()


def test_unresolvable_host_names_the_fix(monkeypatch) -> None:
    def no_dns(*_args, **_kw):  # a resolver that fails at once: the test must not wait on DNS
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(StatsdError, match="give an IP address"):
        Statsd("no-such-host.invalid:8125")
