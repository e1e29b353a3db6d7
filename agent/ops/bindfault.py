"""The line of a node's bind that failed (``agent.node.build.serve`` raises it as a start-up
fault): which endpoint, why, and the fix that fits the cause."""

from __future__ import annotations

import errno
import os
from typing import Any, Dict

import zmq

from agent.net.addrfamily import endpoint_host, resolution_problem


def bind_fault(cfg: Any, bound: Dict[str, str], exc: zmq.ZMQError) -> str:
    """The line of a bind that failed: the first endpoint not bound (``bound``: those that
    were), why and the fix: a host name that does not resolve, an address that is none of
    this machine's, or an ipc:// path another process serves, is not told to free a port."""
    binds = [("control", cfg.control_bind), ("data", cfg.data_bind)]
    binds += [("client", cfg.client_bind)] if cfg.arrival == "client" else []
    plane, endpoint = next((b for b in binds if b[0] not in bound), binds[0])
    why = os.strerror(exc.errno) if exc.errno else str(exc)  # without zmq's "(addr=...)"
    fix = "free the port or change the address"
    if exc.errno in (errno.ENODEV, errno.EADDRNOTAVAIL):  # libzmq: a name it took for an interface
        why = (resolution_problem(endpoint)
               or "%s is no address of this machine" % endpoint_host(endpoint))
        fix = "give an address of this machine, an interface name, or * for all"
    elif exc.errno != errno.EADDRINUSE:
        fix = "change the address"
    elif endpoint.startswith("ipc://"):  # a live socket there (agent.net.ipcbind), not a port
        why, fix = "another process serves on this path", "stop it or give this node its own path"
    return "%s_bind: cannot bind %s: %s (%s)" % (plane, endpoint, why, fix)
