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

A host is an IPv4 or IPv6 address or an RFC 1123 host name, without a port (the ports are the
keys); a user is a POSIX user name (``[a-z_][a-z0-9_-]*`` with an optional final ``$``, at
most 32 characters). Both go into the sheet's shell commands, so nothing else is accepted.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

from agent.config.checks import short
from agent.errors import UsageError

DEFAULT_PORTS = {"control": 5551, "data": 5552, "client": 5560, "metrics": 9464}
INVENTORY_MAX_BYTES = 1 << 20  # one line per node


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

    def netloc(self, port: int) -> str:
        """``HOST:PORT`` (IPv6 addresses in brackets)."""
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "%s:%d" % (host, port)

    def endpoint(self, port: int) -> str:
        """``tcp://HOST:PORT`` (IPv6 addresses in brackets)."""
        return "tcp://" + self.netloc(port)


_ZONE = re.compile(r"\A[A-Za-z0-9_.-]{1,15}\Z")  # an IPv6 zone id: an interface name
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
_USER = re.compile(r"[a-z_][a-z0-9_-]*[$]?\Z")
USER_MAX_CHARS = 32


def split_zone(host: str) -> Tuple[str, Optional[str]]:
    """``(address, zone)`` of ``ADDRESS%ZONE`` (zone None without a ``%``). The address is
    parsed alone: Python 3.8's ``ipaddress`` refuses any zone id, 3.9+ takes any."""
    addr, pct, zone = host.partition("%")
    return (addr, zone) if pct else (host, None)


def host_problem(host: str) -> str:
    """Why ``host`` is not an IPv4/IPv6 address or an RFC 1123 host name ("" when it is one)."""
    addr, zone = split_zone(host)
    try:
        version = ipaddress.ip_address(addr).version
    except ValueError:
        version = 0
    if version == 6 and zone is not None and not _ZONE.match(zone):
        return ("has the zone id %r: give an interface name (letters, digits, '_', '.' "
                "and '-', at most 15 characters)" % zone)
    if version == 6 or (version == 4 and zone is None):
        return ""
    if host.startswith("[") and host.endswith("]") and not host_problem(host[1:-1]):
        return "is in brackets: give the address alone"
    name, colon, port = host.rpartition(":")
    if colon and port.isascii() and port.isdigit() and not host_problem(name.strip("[]")):
        return "has a port: give the host alone and the ports as control=P data=P ..."
    labels = host.split(".")
    if len(host) > 253 or not host.isascii() or not all(_LABEL.match(x) for x in labels):
        return ("is neither an IP address nor a host name (letters, digits and '-' in labels "
                "of 1-63 characters, separated by '.')")
    if labels[-1].isdigit():
        return "is not an IP address (and a host name cannot end in a number)"
    return ""


def user_problem(user: str) -> str:
    """Why ``user`` is not a POSIX user name ("" when it is one)."""
    if len(user) > USER_MAX_CHARS or not user.isascii() or not _USER.match(user):
        return ("is not a user name ([a-z_][a-z0-9_-]*, optionally ending in $, at most %d "
                "characters)" % USER_MAX_CHARS)
    return ""


def parse_inventory(text: str, node_ids: Sequence[str], path: str = "inventory",
                    sources: Sequence[str] = ()) -> Dict[str, Host]:
    """Validate an inventory's text against the topology's node ids; one ``Host`` per node.

    ``sources`` are the nodes with a client endpoint (their client port must be free too).
    A port is refused here when one host text gives it twice; hosts that are one machine under
    other text (``localhost`` and ``127.0.0.1``, a name and its address in ``/etc/hosts``) are
    compared by ``fleet render`` on the binds it writes (``agent.fleet.render_ports``, by
    ``agent.config.addr_machine``'s rule), which knows which address each node binds.
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
        why = host_problem(host)
        if why:
            raise InventoryError("%s: %s: host %s %s" % (where, node, short(host), why))
        ports = dict(DEFAULT_PORTS)
        user = ""
        for item in words[2:]:
            key, eq, value = item.partition("=")
            if not eq:
                raise InventoryError("%s: %s: %r is not key=value" % (where, node, item))
            if key == "user":
                why = user_problem(value)
                if why:
                    raise InventoryError("%s: %s: user=%s %s" % (where, node, short(value), why))
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
                raise InventoryError("%s: %s: port %d on %s is already %s's: give one of them "
                                     "other ports" % (where, node, ports[key], host, owner))
            if owner == node:
                raise InventoryError("%s: %s: port %d is given twice: give each of its "
                                     "endpoints its own port" % (where, node, ports[key]))
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
    """Read and validate an inventory file (a regular file of UTF-8 text)."""
    from agent.ops.files import FileFault, read_text

    try:
        text = read_text(path, "--inventory", INVENTORY_MAX_BYTES)
    except FileFault as exc:
        raise InventoryError(str(exc)) from None
    return parse_inventory(text, node_ids, path, sources)
