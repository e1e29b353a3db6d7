"""Loopback endpoints for tests that bind real sockets.

Free ports claimed for this process (``agent.testbed.procs.free_ports``), never fixed numbers:
tests running at the same time (the suite runs on two pytest-xdist workers) then neither fail
to bind nor reach each other's sockets.
"""

from __future__ import annotations

from typing import Dict, Hashable, Iterable

from agent.testbed.procs import free_ports


def loopback_endpoints(names: Iterable[Hashable]) -> Dict[Hashable, str]:
    """{name: "tcp://127.0.0.1:PORT"}, one free port per name (names are just labels)."""
    names = list(names)
    return {n: "tcp://127.0.0.1:%d" % p for n, p in zip(names, free_ports(len(names)))}
