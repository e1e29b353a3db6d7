"""Loopback endpoints for tests that bind real sockets.

Free ports claimed for this process (``agent.testbed.ports.free_ports``), never fixed numbers:
tests running at the same time (the suite runs on two pytest-xdist workers) then neither fail
to bind nor reach each other's sockets.
"""

from __future__ import annotations

import socket

from typing import Dict, Hashable, Iterable

from agent.testbed.ports import free_ports


def loopback_endpoints(names: Iterable[Hashable]) -> Dict[Hashable, str]:
    """{name: "tcp://127.0.0.1:PORT"}, one free port per name (names are just labels)."""
    names = list(names)
    return {n: "tcp://127.0.0.1:%d" % p for n, p in zip(names, free_ports(len(names)))}


def has_ipv6_loopback() -> bool:
    """True when this machine can bind IPv6's loopback (::1): IPv6 tests skip without it."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False
