"""``doctor --config``'s "node metrics" line: whether ``run`` can bind the node's metrics address.

``run`` serves ``metrics_host:metrics_port`` right after it locks the state directory
(``agent.ops.metrics_start``) and exits 78 when it cannot bind it. Doctor makes that same bind
(``metrics_server.hold``) and lets it go at once: a port another process listens on is a FAIL
naming the port and the fix, unless what serves there is this node's own running agent (it
holds the state_dir's lock, as the "node state lock" line says, and its endpoint answers as
this node): a WARN then, as for an ``ipc://`` bind that agent serves ("node endpoints"). A
``metrics_host`` name that does not resolve (or not within ``RESOLVE_WAIT_S``), or ``*``, is
the "node addresses" line's to report; no line where the bind works or metrics are off.
"""

from __future__ import annotations

import errno
import socket
from typing import Any, Optional

from agent.ops.doctor_check import FAIL, METRICS_FIX, WARN, Check, metrics_host_of

NAME = "node metrics"
ANSWER_WAIT_S = 2.0  # the running agent's endpoint answers a scrape at once (`status`'s wait)
IN_USE_FIX = ("stop the process that listens on port %d (sudo ss -ltnp 'sport = :%d' names "
              "it), give metrics_port a free port, or set metrics_port = 0 (no metrics); then "
              "run doctor --config again")
OWN_FIX = "none if that agent is this node's (stop it before starting another)"


def check_metrics_port(cfg: Any, answer_wait_s: float = ANSWER_WAIT_S) -> Optional[Check]:
    """The "node metrics" line of node config ``cfg`` (module docstring): None where
    ``metrics_port`` is 0, the bind works or the host is the "node addresses" line's; WARN
    where this node's running agent serves there (its endpoint read for ``answer_wait_s`` at
    most); FAIL with the line ``run`` would exit 78 with otherwise."""
    from agent.net import addrfamily as af
    from agent.ops.metrics_server import hold, serve_fault

    if not cfg.metrics_port:
        return None
    name = metrics_host_of(cfg)  # a host name: resolved within the wait, else not tried
    if name is not None and not af.resolve_all([name], af.RESOLVE_WAIT_S,
                                               af.getaddrinfo_families).get(name):
        return None
    try:
        hold(cfg.metrics_host, cfg.metrics_port).server_close()
        return None
    except socket.gaierror:  # "*", or a name that stopped resolving: "node addresses" says it
        return None
    except (OSError, OverflowError) as exc:
        line = serve_fault(cfg.metrics_host, cfg.metrics_port, exc)
        in_use = getattr(exc, "errno", None) == errno.EADDRINUSE
    if not in_use:  # an address none of this machine's, a port below 1024 as a user, ...
        return Check(NAME, FAIL, "%s; run exits 78 on it" % line,
                     METRICS_FIX + ", then run doctor --config again")
    pid = own_agent(cfg, answer_wait_s)
    if pid is not None:
        return Check(NAME, WARN, "%s is served by this node's running agent (pid %s): run exits "
                     "78 while it runs" % (_url(cfg), pid), OWN_FIX)
    return Check(NAME, FAIL, "%s; run exits 78 on it before it loads anything" % line,
                 IN_USE_FIX % (cfg.metrics_port, cfg.metrics_port))


def own_agent(cfg: Any, answer_wait_s: float = ANSWER_WAIT_S) -> Optional[str]:
    """The pid of this node's running agent ("unknown" where its lock file names none) where it
    holds ``cfg``'s state_dir lock and its metrics endpoint answers as node ``cfg.node_id``;
    None otherwise (no agent there, another node's, or another process on the port)."""
    from agent.fleet.status import read_node
    from agent.ops.doctor_binds import own_agent_pid

    pid = own_agent_pid(cfg)
    if pid is None:
        return None
    answer = read_node(_url(cfg), answer_wait_s)
    if not answer.get("alive") or answer.get("node_reported") != cfg.node_id:
        return None
    return pid


def _url(cfg: Any) -> str:
    from agent.ops.metrics_server import url

    return url(cfg.metrics_host, cfg.metrics_port)
