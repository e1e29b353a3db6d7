"""The line of a node's bind that failed (``agent.node.build`` raises it as a start-up fault,
found by the binds held before the engines load, ``hold_binds``, or by the sockets' own binds):
which endpoint, why, and the fix that fits the cause."""

from __future__ import annotations

import errno
import os
from typing import Any, Dict, List, Tuple

import zmq

from agent.errors import UsageError
from agent.net.addrfamily import endpoint_host, resolution_problem
from agent.net.bindprobe import BindHold


def node_binds(cfg: Any) -> List[Tuple[str, str]]:
    """``(plane, endpoint)`` of each socket node config ``cfg`` binds, in the order it binds
    them: control, data, and a client-fed source's client socket."""
    binds = [("control", cfg.control_bind), ("data", cfg.data_bind)]
    return binds + ([("client", cfg.client_bind)] if cfg.arrival == "client" else [])


def hold_binds(cfg: Any) -> BindHold:
    """Each bind of node config ``cfg`` tried and held, not listening (``BindHold``), until
    its ``close``; ``UsageError`` (exit 78) with ``bind_fault``'s line at the first that
    cannot be bound: a port another process holds, an address none of this machine's, a host
    name that does not resolve, an ipc:// path a live process serves."""
    hold = BindHold(node_binds(cfg))
    try:
        hold.take()
    except zmq.ZMQError as exc:
        hold.close()
        raise UsageError(bind_fault(cfg, hold.bound, exc)) from None
    return hold


def bind_sockets(cfg: Any, transport: Any, held: Any = None) -> None:
    """Let ``held`` (``hold_binds``'s, or None) go and open ``transport`` (node config
    ``cfg``'s sockets bound there at once); ``UsageError`` with ``bind_fault``'s line where a
    bind fails."""
    if held is not None:
        held.close()
    try:
        transport.open()
    except zmq.ZMQError as exc:
        raise UsageError(bind_fault(cfg, transport.bound, exc)) from None


def bind_fault(cfg: Any, bound: Dict[str, str], exc: zmq.ZMQError) -> str:
    """The line of a bind that failed: the first endpoint not bound (``bound``: those that
    were), why and the fix: a host name that does not resolve, an address that is none of
    this machine's, or an ipc:// path another process serves, is not told to free a port."""
    binds = node_binds(cfg)
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
