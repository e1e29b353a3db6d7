"""``doctor --config``'s lines of a node's bind endpoints: whether ``run`` can bind them.

"node endpoints": a WARN where another process serves one of the node's ``ipc://`` binds
(``run`` exits 78 while it does: a live endpoint is never taken over, ``agent.net.ipcbind``).

"node binds": ``run`` tries its ``tcp://`` binds right after it locks the state directory
(``agent.ops.bindfault.hold_binds``) and exits 78 on the first it cannot bind. Doctor makes
those same binds (``agent.net.bindprobe.BindHold``: bound, never listening) and lets them go
at once: a port another process holds is a FAIL with run's line and a fix naming the port,
unless this node's own agent is running (it holds the state_dir's lock, as the "node state
lock" line says, and so the port is most likely its own): a WARN then; an address none of
this machine's (or a port closed to the user) is a FAIL too. A host name that does not
resolve is the "node addresses" line's to report; no line where every bind works.
"""

from __future__ import annotations

import errno
import os
from typing import Any, Optional

from agent.errors import UsageError
from agent.ops.doctor_check import BIND_FIX, FAIL, WARN, Check

NAME = "node binds"
IN_USE_FIX = ("stop the process that holds port %d (sudo ss -tanp 'sport = :%d' names it) or "
              "give %s_bind a free port; then run doctor --config again")
OWN_FIX = "none if that agent is this node's (stop it before starting another)"


def check_tcp_binds(cfg: Any) -> Optional[Check]:
    """The "node binds" line of node config ``cfg`` (module docstring): None where each of
    its ``tcp://`` binds can be bound, or the first that cannot is a host name that does not
    resolve; WARN where a port is in use while this node's agent holds its state_dir; FAIL
    with the line ``run`` would exit 78 with otherwise."""
    import zmq

    from agent.net.addrfamily import endpoint_host, interface_families
    from agent.net.bindprobe import BindHold, endpoint_port
    from agent.ops.bindfault import bind_fault, node_binds

    hold = BindHold(node_binds(cfg), ipc=False)  # ipc://: the "node endpoints" line's
    try:
        hold.take()
        return None
    except zmq.ZMQError as exc:
        line, code = bind_fault(cfg, hold.bound, exc), exc.errno
    finally:
        hold.close()
    plane, endpoint = next(b for b in node_binds(cfg) if b[0] not in hold.bound)
    if code == errno.ENODEV and interface_families(endpoint_host(endpoint) or "") is None:
        return None  # a name that does not resolve: "node addresses" FAILs it
    if code != errno.EADDRINUSE:
        return Check(NAME, FAIL, "%s; run exits 78 on it" % line,
                     "%s in %s_bind, then run doctor --config again" % (BIND_FIX, plane))
    pid = own_agent_pid(cfg)
    if pid is not None:
        return Check(NAME, WARN, "%s: in use while this node's agent runs (pid %s): run exits "
                     "78 while it runs" % (endpoint, pid), OWN_FIX)
    port = endpoint_port(endpoint) or 0
    return Check(NAME, FAIL, "%s; run exits 78 on it before it loads anything" % line,
                 IN_USE_FIX % (port, port, plane))


def own_agent_pid(cfg: Any) -> Optional[str]:
    """The pid of the agent holding ``cfg``'s state_dir lock under this node's id ("unknown"
    where its lock file names none); None where no agent of this node holds it."""
    from agent.node.statelock import holder, parse_holder

    try:
        held = holder(cfg.state_dir) if os.path.isdir(cfg.state_dir) else None
    except UsageError:  # a lock file that cannot be used: "node state lock" FAILs on it
        return None
    if held is None:
        return None
    pid, node = parse_holder(held)
    return (pid or "unknown") if node == cfg.node_id else None


def check_ipc_binds(cfg: Any) -> Optional[Check]:
    """A WARN where another process serves one of ``cfg``'s ``ipc://`` binds (``run`` exits
    78 while it does: a live endpoint is never taken over); None where none is served (a stale
    socket file left by a stopped agent is replaced, as ``run`` does)."""
    from agent.net.ipcbind import ipc_path, served
    from agent.ops.bindfault import node_binds

    live = ["%s_bind %s" % (plane, ep) for plane, ep in node_binds(cfg)
            if ipc_path(ep) and served(ipc_path(ep))]
    if not live:
        return None
    return Check("node endpoints", WARN, "%s: another process serves there: run exits 78 while "
                 "it does" % ", ".join(live), "stop that process (this node's agent already "
                 "running?), or give this node its own path")
