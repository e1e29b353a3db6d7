"""``fleet render``'s check that no two nodes on one machine bind the same port.

The inventory refuses a port given twice on one host's text; hosts written differently may
still be one machine (``localhost`` and ``127.0.0.1``, ``::1`` and ``localhost``, a name and
its address in ``/etc/hosts``, ``0.0.0.0`` and a loopback address), and the second agent there
would fail to bind. So every rendered bind (control, data, a source's client endpoint, metrics)
is compared on the machine its node runs on, decided without the network
(``agent.config.addr_machine``): a wildcard bind (``tcp://*:P``, which a node off loopback gets)
takes its port on every address of its machine. A clash is one line naming both nodes.

A node's peer must be reachable from the node's machine: a peer whose host is a loopback
address or name (``localhost``, ``127.0.0.1``, ``::1``) next to a node on another machine
would have that node connect to itself (``check_loopback_peers``).
"""

from __future__ import annotations

from typing import Any, List, Mapping, Optional, Tuple

from agent.config.node import NodeConfig
from agent.errors import UsageError
from agent.fleet.inventory import Host
from agent.config.addr_machine import (THIS_MACHINE, HostsTable, binds_clash, known_as,
                                       same_machine)
from agent.fleet.hosts_file import read_hosts_table
from agent.net.addrfamily import endpoint_host

METRICS_HOST = NodeConfig.__dataclass_fields__["metrics_host"].default  # the config's default
Bind = Tuple[str, str, int, str]  # (plane, host as bound, port, the bind as the config has it)


def node_binds(obj: Mapping[str, Any]) -> List[Bind]:
    """The tcp ports a node config's agent binds (``obj``: the config's fields, before
    parsing: a value of the wrong type is left to the parse to refuse): its planes' endpoints
    (the client one with ``arrival = "client"``) and its metrics server."""
    binds: List[Bind] = []
    planes = ("control", "data") + (("client",) if obj.get("arrival") == "client" else ())
    for plane in planes:
        endpoint = obj.get(plane + "_bind")
        host = endpoint_host(endpoint) if isinstance(endpoint, str) else None
        port = endpoint.rpartition(":")[2] if host is not None else ""
        if port.isascii() and port.isdigit() and int(port):
            binds.append((plane, host, int(port), endpoint))
    port, host = obj.get("metrics_port"), obj.get("metrics_host", METRICS_HOST)
    if isinstance(port, int) and not isinstance(port, bool) and port > 0 \
            and isinstance(host, str):
        shown = "[%s]" % host if ":" in host and not host.startswith("[") else host
        binds.append(("metrics", host, port, "%s:%d" % (shown, port)))
    return binds


def check_port_clashes(hosts: Mapping[str, Host], objs: Mapping[str, Mapping[str, Any]],
                       table: Optional[HostsTable] = None) -> None:
    """``UsageError`` naming the first two nodes that would bind one port on one machine
    (see the module docstring); ``objs``: every node's config fields, before parsing (so the
    clash is the line said, not a node's own check of a peer at its endpoint); ``table``: the
    hosts file's (read here when None)."""
    table = read_hosts_table() if table is None else table
    nodes = list(objs)
    binds = {n: node_binds(objs[n]) for n in nodes}
    for i, a in enumerate(nodes):
        for b in nodes[:i]:
            one, why = same_machine(hosts[b].host, hosts[a].host, table)
            if not one:
                continue
            for plane_a, host_a, port_a, shown_a in binds[a]:
                for plane_b, host_b, port_b, shown_b in binds[b]:
                    if port_a == port_b and binds_clash(host_a, host_b, table):
                        raise UsageError(
                            "inventory: %s (%s) and %s (%s) are one machine%s and both bind "
                            "port %d there (%s's %s %s, %s's %s %s; a * bind takes the port "
                            "on every address): give one of them other ports"
                            % (b, hosts[b].host, a, hosts[a].host,
                               " (%s)" % why if why else "", port_a, b, plane_b, shown_b,
                               a, plane_a, shown_a))


def check_loopback_peers(hosts: Mapping[str, Host], objs: Mapping[str, Mapping[str, Any]]
                         ) -> None:
    """``UsageError`` naming the first node whose peer's inventory host is a loopback address
    or name (``localhost``, ``127.0.0.1``, ``::1``) while the node itself is not on one: its
    connects would reach its own machine, never the peer. A fleet on one machine (every host
    loopback) is fine. Judged without the hosts file: a name it maps to loopback (a device's
    own hostname is 127.0.1.1 in its ``/etc/hosts``) is loopback only on the machine that
    renders, and the devices resolve it their own way."""
    for n, obj in objs.items():
        if THIS_MACHINE in known_as(hosts[n].host, {})[0]:
            continue
        for peer in obj.get("peers", ()):
            p = peer.get("id") if isinstance(peer, Mapping) else None
            if p in hosts and THIS_MACHINE in known_as(hosts[p].host, {})[0]:
                raise UsageError(
                    "inventory: %s (%s) has peer %s at %s, a loopback host: from %s's machine "
                    "that reaches %s's own machine, not %s; give %s an address %s can reach (or "
                    "every node a loopback host, for a fleet on one machine)"
                    % (n, hosts[n].host, p, hosts[p].host, n, n, p, p, n))
