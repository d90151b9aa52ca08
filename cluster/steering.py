"""Steering new connections within a reuse-port group, and reading a listener's accept queue (Linux).

Removing a slot (TTOU) is the delicate case. On Linux, closing the last reference of a listener resets the
connections still in its accept queue (unless ``net.ipv4.tcp_migrate_req=1``, Linux >= 5.14, migrates them
to another listener of the group). So a removed slot is first *steered away*: a classic-BPF program attached
with SO_ATTACH_REUSEPORT_CBPF picks only among the remaining sockets of the reuse-port group; the retiring
worker keeps accepting until the queue, read with TCP_INFO (``tcpi_unacked`` is the accept-queue length of a
listener), is empty; only then is the worker stopped and the socket closed. The program returns an index
into the kernel's socket array of the group; the kernel appends a socket when it starts listening and, when
one closes, moves the last socket into its place, which ``cluster.listeners`` mirrors in each group's
``order``. Where this is
unavailable (not Linux, or the program is refused) the slot is closed after its worker drained, and a
connection arriving in that window may be reset: the documented limit.
"""

from __future__ import annotations

import ctypes
import socket
import struct
from collections.abc import Sequence

# Linux socket options absent from the socket module.
SO_ATTACH_REUSEPORT_CBPF = 51
SO_DETACH_REUSEPORT_BPF = 68

_BPF_LD_W_ABS, _BPF_ALU_MOD_K, _BPF_JEQ_K, _BPF_RET_K, _BPF_RET_A = 0x20, 0x94, 0x15, 0x06, 0x16
_SKF_AD_RANDOM = (-0x1000 + 56) & 0xFFFFFFFF  # SKF_AD_OFF + SKF_AD_RANDOM: a random u32


def program(active: Sequence[int]) -> tuple[bytes, ctypes.Array]:
    """cBPF: pick a random index among ``active`` (kernel indices of the sockets to use)."""
    code = [(_BPF_LD_W_ABS, 0, 0, _SKF_AD_RANDOM), (_BPF_ALU_MOD_K, 0, 0, len(active))]
    if list(active) == list(range(len(active))):
        code.append((_BPF_RET_A, 0, 0, 0))
    else:
        for i, index in enumerate(active):
            code += [(_BPF_JEQ_K, 0, 1, i), (_BPF_RET_K, 0, 0, index)]
        code.append((_BPF_RET_K, 0, 0, active[0]))
    insns = b"".join(struct.pack("=HBBI", *insn) for insn in code)
    buf = ctypes.create_string_buffer(insns, len(insns))
    # struct sock_fprog {unsigned short len; struct sock_filter *filter;}: the kernel copies the
    # instructions during setsockopt, so the caller keeps ``buf`` alive only until the call returns.
    fprog = struct.pack(
        "HL" if struct.calcsize("P") == 8 else "HI", len(code), ctypes.addressof(buf)
    )
    return fprog, buf


def attach(anchor: socket.socket, active: Sequence[int]) -> None:
    """New connections of ``anchor``'s group go only to the sockets at kernel indices ``active``."""
    fprog, _buf = program(active)  # _buf must outlive the setsockopt call
    anchor.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)


def detach(anchor: socket.socket) -> None:
    """Back to the kernel's plain hashing over the whole group."""
    anchor.setsockopt(socket.SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, 0)


def accept_queue_length(sock: socket.socket) -> int:
    """Connections waiting in a listener's accept queue (TCP_INFO); OSError/AttributeError elsewhere."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return struct.unpack_from("8B6I", info)[12]  # tcpi_unacked = sk_ack_backlog


def tcp_migrate_req_enabled() -> bool:
    """True when the kernel migrates a closing listener's queue within its reuse-port group."""
    try:
        with open("/proc/sys/net/ipv4/tcp_migrate_req") as f:
            return f.read().strip() == "1"
    except OSError:
        return False
