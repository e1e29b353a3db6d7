"""The inventory of a fleet: which host each node of a topology runs on, and its ports.

A plain text file, one node per line, ``#`` starts a comment::

    # node  host          optional key=value settings
    cam1    10.0.0.10     client=5560
    w1      10.0.0.11     user=jetson
    w2a     10.0.0.12     control=5551 data=5552 metrics=9464

Keys: ``control``, ``data`` (the agent's two ports, default 5551 and 5552), ``client`` (a
source's client endpoint port, default 5560), ``metrics`` (the Prometheus port, default 9464;
0 = off) and ``user`` (the ssh login named on the device's sheet). Every node of the topology
needs a line; an error names the file, the line and the entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Sequence

from agent.errors import UsageError

DEFAULT_PORTS = {"control": 5551, "data": 5552, "client": 5560, "metrics": 9464}


class InventoryError(UsageError):
    """An inventory entry is malformed; the message names the file, line and entry."""


@dataclass(frozen=True)
class Host:
    """Where one node runs."""

    node_id: str
    host: str  # address its peers and the workstation reach it at
    control_port: int = DEFAULT_PORTS["control"]
    data_port: int = DEFAULT_PORTS["data"]
    client_port: int = DEFAULT_PORTS["client"]  # sources only
    metrics_port: int = DEFAULT_PORTS["metrics"]  # 0 = no metrics endpoint
    user: str = ""  # ssh login for the sheet; "" = the operator's own

    def endpoint(self, port: int) -> str:
        """``tcp://HOST:PORT`` (IPv6 addresses in brackets)."""
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "tcp://%s:%d" % (host, port)


def parse_inventory(text: str, node_ids: Sequence[str], path: str = "inventory",
                    sources: Sequence[str] = ()) -> Dict[str, Host]:
    """Validate an inventory's text against the topology's node ids; one ``Host`` per node.

    ``sources`` are the nodes with a client endpoint (their client port must be free too).
    """
    hosts: Dict[str, Host] = {}
    used: Dict[tuple, str] = {}
    for no, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = "%s:%d" % (path, no)
        words = line.split()
        if len(words) < 2:
            raise InventoryError("%s: %r: expected NODE HOST [key=value ...]" % (where, line))
        node, host = words[0], words[1]
        if node not in node_ids:
            raise InventoryError("%s: %s: not a node of the topology (nodes: %s)"
                                 % (where, node, ", ".join(node_ids)))
        if node in hosts:
            raise InventoryError("%s: %s: listed twice" % (where, node))
        if "=" in host or "/" in host:
            raise InventoryError("%s: %s: %r is not a host name or address" % (where, node, host))
        ports = dict(DEFAULT_PORTS)
        user = ""
        for item in words[2:]:
            key, eq, value = item.partition("=")
            if not eq:
                raise InventoryError("%s: %s: %r is not key=value" % (where, node, item))
            if key == "user":
                user = value
                continue
            if key not in ports:
                raise InventoryError("%s: %s: unknown key %r (known: %s, user)"
                                     % (where, node, key, ", ".join(sorted(ports))))
            lo = 0 if key == "metrics" else 1
            if not (value.isascii() and value.isdigit()) or not lo <= int(value) <= 65535:
                raise InventoryError("%s: %s: %s=%s is not a port number"
                                     % (where, node, key, value))
            ports[key] = int(value)
        for key in ("control", "data", "client", "metrics"):
            if (key == "metrics" and not ports[key]) or (key == "client" and node not in sources):
                continue
            owner = used.get((host, ports[key]))
            if owner is not None and owner != node:
                raise InventoryError("%s: %s: port %d on %s is already %s's" % (
                    where, node, ports[key], host, owner))
            if owner == node:
                raise InventoryError("%s: %s: port %d is given twice" % (where, node, ports[key]))
            used[(host, ports[key])] = node
        hosts[node] = Host(node, host, ports["control"], ports["data"], ports["client"],
                           ports["metrics"], user)
    missing = [n for n in node_ids if n not in hosts]
    if missing:
        raise InventoryError("%s: no line for %s (every node of the topology needs a host)"
                             % (path, ", ".join(missing)))
    return hosts


def load_inventory(path: str, node_ids: Sequence[str], sources: Sequence[str] = ()
                   ) -> Dict[str, Host]:
    """Read and validate an inventory file."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise InventoryError("%s: cannot read: %s" % (path, exc.strerror or exc)) from None
    return parse_inventory(text, node_ids, path, sources)
