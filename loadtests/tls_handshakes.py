"""TLS handshake rate with and without session resumption, against a running server.

    python -m loadtests.tls_handshakes --port 8443 --cafile ca.pem --clients 4 --seconds 10 \
        --supervisor-pid "$(cat webcluster.pid)"

Each client process loops: connect, handshake (offering its last session when resuming), one
``GET / HTTP/1.1`` with ``Connection: close``, read to EOF. It prints new connections per second and
the share of handshakes that were resumptions, for TLS 1.2 and 1.3, resumption off and on, and (with
``--supervisor-pid``) the workers' CPU time per connection: on a small machine the Python clients are
the bottleneck, so the server's cost per handshake is the figure that shows what resumption saves. Clients set
TCP_NODELAY, as browsers and curl do: without it, the resumed TLS 1.2 path waits for a delayed ACK.
"""

from __future__ import annotations

import argparse
import multiprocessing
import socket
import ssl
import time

import psutil

VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def _client(port: int, cafile: str, version: str, resume: bool, seconds: float, out) -> None:
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.maximum_version = VERSIONS[version]
    session, count, reused = None, 0, 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            while s.recv(65536):
                pass
            count += 1
            reused += s.session_reused
            if resume:
                session = s.session
    out.put((count, reused))


def measure(port: int, cafile: str, version: str, resume: bool, clients: int, seconds: float):
    """(connections per second, resumed fraction) over ``clients`` processes."""
    queue: multiprocessing.Queue = multiprocessing.Queue()
    procs = [
        multiprocessing.Process(
            target=_client, args=(port, cafile, version, resume, seconds, queue)
        )
        for _ in range(clients)
    ]
    for p in procs:
        p.start()
    results = [queue.get(timeout=seconds + 60) for _ in procs]
    for p in procs:
        p.join()
    count = sum(c for c, _ in results)
    return count / seconds, sum(r for _, r in results) / max(count, 1)


def worker_cpu(supervisor_pid: int | None) -> float:
    """CPU seconds (user + system) used so far by the supervisor's children, 0 without a pid."""
    if not supervisor_pid:
        return 0.0
    total = 0.0
    for child in psutil.Process(supervisor_pid).children():
        times = child.cpu_times()
        total += times.user + times.system
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cafile", required=True, help="CA that signed the server certificate")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--supervisor-pid", type=int, help="for the workers' CPU per connection")
    args = parser.parse_args()
    print("| TLS | resumption | connections/s | resumed | worker CPU per connection |")
    print("|---|---|---|---|---|")
    for version in ("1.2", "1.3"):
        for resume in (False, True):
            before = worker_cpu(args.supervisor_pid)
            rate, share = measure(
                args.port, args.cafile, version, resume, args.clients, args.seconds
            )
            cpu = (worker_cpu(args.supervisor_pid) - before) / (rate * args.seconds) * 1e6
            cost = f"{cpu:.0f} µs" if args.supervisor_pid else "-"
            print(
                f"| {version} | {'on' if resume else 'off'} | {rate:.0f} | {share:.0%} | {cost} |"
            )


if __name__ == "__main__":
    main()
