"""Free TCP ports for local agents and tests: each process claims its own block of them."""

from __future__ import annotations

import errno
import os
import socket
import threading
from typing import List, Tuple


# Ports are handed out below the kernel's ephemeral range, where neither another program's
# bind(0) nor an outgoing connection (ZeroMQ reconnecting to a peer not yet up, which can even
# connect a socket to itself) takes one between the choice and the agent's bind. Each process
# claims a block of that range for its lifetime with an abstract unix socket name: the kernel
# grants a name once and frees it when the last process holding it dies, so two test runs or
# testbeds at once never share a block. The processes a block's ports are handed to hold the
# claim too (``claim_fds``): an agent outlives a killed testbed by its drain, and may bind then.
PORT_BLOCK = 200
LOWEST_PORT = 10000
_ports_lock = threading.Lock()
_claims: List[Tuple[int, socket.socket]] = []  # (pid of the claimer, its claim)
_next: List[int] = []  # [next port, end of the block, pid] once a block is held


def _ephemeral_start() -> int:
    """First port of the kernel's ephemeral range (32768 where it cannot be read)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", "r", encoding="ascii") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _claim_block() -> bool:
    """Claim a free block of ports for this process; False when none is left to claim."""
    blocks = (_ephemeral_start() - LOWEST_PORT) // PORT_BLOCK
    if blocks <= 0 or not hasattr(socket, "AF_UNIX"):
        return False
    first = os.getpid() % blocks
    for i in range(blocks):
        block = (first + i) % blocks
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            s.bind("\0edge-agent-ports-%d" % block)
        except OSError:
            s.close()
            continue
        _claims.append((os.getpid(), s))
        start = LOWEST_PORT + block * PORT_BLOCK
        _next[:] = [start, start + PORT_BLOCK, os.getpid()]
        return True
    return False


def _unused(port: int) -> bool:
    """Whether nothing here holds ``port`` on any address, TIME_WAIT included.

    A plain bind (no SO_REUSEADDR) of the wildcard conflicts with every socket on the port, as
    a plain listener would: ZeroMQ binds over TIME_WAIT (a block's last holder may leave some
    for a minute), but not everything that is handed a port does.
    """
    for family, host in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
        try:
            s = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue  # no IPv6 here (nor, below, where it is made but unusable): IPv4 decides
        try:
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # IPv4 too
            s.bind((host, port))
            return True
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
        finally:
            s.close()
    return False


def _kernel_ports(n: int, host: str) -> List[int]:
    """``n`` distinct ports the kernel picks (bind to port 0), all held until each is known."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def claim_fds() -> List[int]:
    """The file descriptors of this process's block claims, for ``subprocess.Popen(pass_fds=)``:
    a child handed ports from them keeps them claimed until it exits, even if this process
    exits first (a forked child's own claims only: it claims blocks of its own)."""
    with _ports_lock:
        return [s.fileno() for pid, s in _claims if pid == os.getpid()]


def free_ports(n: int, host: str = "127.0.0.1") -> List[int]:
    """``n`` distinct TCP ports, free on ``host`` now, that no other caller is handed.

    They come from this process's block below the ephemeral range (a new block when one runs
    out), skipping any port held on any address; where no block can be claimed, the kernel
    picks them (bind to port 0), which leaves the small race the blocks avoid.
    """
    out: List[int] = []
    with _ports_lock:
        while len(out) < n:
            # a forked child holds no claim of its own: it claims its own block
            if not _next or _next[0] >= _next[1] or _next[2] != os.getpid():
                if not _claim_block():
                    return out + _kernel_ports(n - len(out), host)
            port = _next[0]
            _next[0] += 1
            if _unused(port):
                out.append(port)
    return out
