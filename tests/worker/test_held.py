"""Responses the loop thread makes in one poll pass are held and written at the pass's end
(``OutputQueue.holding``, ``Loop.release``): their clients get them together. Only a response after which
nothing of the handler or the application runs may be held, a lone event's response goes out at once, a
leader deposed in the middle of a pass hands what it held to the next one, and a held response the
client is slow to take is flushed like any other."""

from __future__ import annotations

import socket
import threading

import pytest

from tests.conftest import poll
from tests.support import read_response, serve
from tests.worker.test_loop_deadlines import Harness, pending
from webcluster.worker.handlers.base import Exchange
from webcluster.worker.handlers.wsgi import WSGIHandler
from webcluster.worker.outqueue import HOLD_MAX
from webcluster.worker.transport import State

pytestmark = pytest.mark.timeout(30)


def get(target: str) -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


class Observing:
    """Answers with the target as its body, as a whole response nothing runs after
    (``finish(body, hold=True)``), then records what its client holds at that moment (None: nothing,
    the response is held). Here only to observe: a real handler does nothing after such a finish."""

    def __init__(self) -> None:
        self.clients: dict[int, socket.socket] = {}  # by the client's port
        self.seen: list[bytes | None] = []

    def __call__(self, ex: Exchange) -> None:
        body = ex.request.target.encode()
        ex.start_response(200, "OK", [("Content-Length", str(len(body)))])
        ex.finish(body, True)
        self.seen.append(pending(self.clients[ex.remote_addr[1]]))


@pytest.fixture
def made():
    harnesses: list[Harness] = []
    yield harnesses
    for h in harnesses:
        h.close()


def _harness(made: list[Harness], handler) -> Harness:
    h = Harness(handler, keepalive=5.0)
    made.append(h)
    assert h.loop.lead is not None
    h.loop.lead.active = True  # the leader serves bodiless requests inline, as under Loop.run
    return h


def test_responses_of_one_pass_go_out_together_at_its_end_and_a_lone_one_at_once(made):
    app = Observing()
    h = _harness(made, app)
    c1, c2 = h.connect(), h.connect()
    for c in (c1, c2):
        app.clients[c.getsockname()[1]] = c
    c1.sendall(get("/1"))
    c2.sendall(get("/2"))
    h.loop.step()  # one poll: both requests, both served inline
    assert app.seen == [None, None]  # neither was on the wire when the next step began
    assert pending(c1).endswith(b"\r\n\r\n/1") and pending(c2).endswith(b"\r\n\r\n/2")
    c1.sendall(get("/3"))
    h.loop.step()  # a pass with one event: nothing to send it with, so nothing held
    assert app.seen[-1].endswith(b"\r\n\r\n/3")
    assert all(conn.state is State.READING for conn in h.loop._conns.values())


def test_a_response_the_application_still_runs_after_is_sent_before_that_code_runs(made):
    """A WSGI iterable's close() runs after its response ends: that response must be on the wire
    before it (a slow close() would otherwise delay it). A list, which has no close(), is held."""
    clients: dict[str, socket.socket] = {}
    closed_with: list[bytes | None] = []

    class Closing:
        def __init__(self, port: str) -> None:
            self.port = port

        def __iter__(self):
            yield b"it"

        def close(self) -> None:
            closed_with.append(pending(clients[self.port]))

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/iter":  # chunked: finish() sends the last chunk
            start_response("200 OK", [])
            return Closing(environ["REMOTE_PORT"])
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ls"]

    h = _harness(made, WSGIHandler(app))
    c1, c2 = h.connect(), h.connect()
    clients.update({str(c.getsockname()[1]): c for c in (c1, c2)})
    c2.sendall(get("/list"))
    c1.sendall(get("/iter"))
    h.loop.step()
    assert len(closed_with) == 1 and closed_with[0].endswith(b"\r\n2\r\nit\r\n0\r\n\r\n")
    assert pending(c2).endswith(b"\r\n\r\nls")


def test_a_held_response_the_client_is_slow_to_take_is_flushed_in_order(made):
    """A client that pipelines many responses' worth and reads slowly: the held responses fill its
    socket, the rest waits in the output queue (FLUSHING, bounded by --send-timeout), and every
    response arrives whole and in order once it reads."""
    size = HOLD_MAX - 200  # head and body still small enough to be held

    def big(ex: Exchange) -> None:
        body = ex.request.target.encode().ljust(size, b".")
        ex.start_response(200, "OK", [("Content-Length", str(size))])
        ex.finish(body, True)

    h = _harness(made, big)
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(h.lsock.getsockname())
    h.clients.append(slow)
    h.settle()
    (conn,) = h.loop._conns.values()
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # no autotuning to megabytes
    other = h.connect()
    n = 64  # about 1 MiB of responses: more than the two sockets' buffers take
    slow.sendall(b"".join(get(f"/{i}") for i in range(n)))
    other.sendall(get("/other"))
    h.loop.step()
    assert conn.state is State.FLUSHING
    assert pending(other).endswith(b"/other".ljust(size, b"."))
    got = bytearray()
    want = n * size
    slow.settimeout(5)
    while got.count(b"\r\n\r\n") < n or len(got) < want:  # read, then let the loop send more
        data = pending(slow)
        assert data != b""
        if data:
            got += data
        h.loop.step()
        assert len(got) < want + n * 200
    bodies = [part[: len(str(i)) + 1] for i, part in enumerate(got.split(b"\r\n\r\n")[1:])]
    assert bodies == [f"/{i}".encode() for i in range(n)]


class Blocking:
    """``/block`` waits for ``release`` before answering; anything else is answered at once, held."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def __call__(self, ex: Exchange) -> None:
        if ex.request.target == "/block":
            self.release.wait(20)
        ex.start_response(200, "OK", [("Content-Length", "2")])
        ex.finish(b"ok", True)


def test_a_leader_deposed_in_mid_pass_hands_its_held_responses_to_the_next_leader():
    """One poll brings a quick request and then one that blocks: the quick one's response, held till
    the end of that pass, goes out from the next leader while the blocked request still runs."""
    app = Blocking()
    with serve(app, threads=2, inline_budget=0.002) as srv:
        quick, blocked = srv.connect(), srv.connect()
        for c in (quick, blocked):  # both served once: idle, armed, in the poller
            c.settimeout(5)
            c.sendall(get("/"))
            assert read_response(c)[0] == 200
        entered, gate = threading.Event(), threading.Event()

        def hold_the_loop() -> None:
            entered.set()
            gate.wait(10)

        srv.loop.poller.call_soon(hold_the_loop)  # both requests arrive while the loop waits here,
        assert entered.wait(5)  # so the next poll reports them together, in this order
        quick.sendall(get("/"))
        blocked.sendall(get("/block"))
        gate.set()
        poll("the poller to move", lambda: srv.loop.lead.depositions == 1, 5)
        status, _, body = read_response(quick)
        assert (status, body) == (200, b"ok")
        assert not app.release.is_set()
        app.release.set()
        assert read_response(blocked)[0] == 200
