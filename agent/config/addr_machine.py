"""Which hosts name one machine, which binds on one machine take the same port, and which
connects surely reach a bind of this machine: decided without the network (no DNS), so that a
fleet's inventory can be checked on an offline laptop, and a node config where it is read.
Pure: the hosts file's table is read by ``agent.fleet.hosts_file`` and handed in (a node
config's check hands none, so a name is its text).

A host is known as one of:

- this machine: a loopback address (``127.0.0.0/8``, ``::1``), an unspecified one
  (``0.0.0.0``, ``::``: a connect to it reaches this machine), or a localhost name
  (``localhost``, ``ip6-localhost``, ...);
- an address: an IP literal in its canonical form (``fd00:0::1`` is ``fd00::1``, an
  IPv4-mapped ``::ffff:10.0.0.1`` is ``10.0.0.1``; an IPv6 ``%zone`` is kept);
- the addresses a name has in the hosts file (``/etc/hosts``, read as a file, never through
  the resolver); a name it does not list is known by its lower-case text alone.

Two hosts are one machine when what they are known as meets. Two distinct addresses with no
name joining them count as two machines (a device's second interface cannot be known here).
"""

from __future__ import annotations

import ipaddress
from typing import Dict, FrozenSet, Tuple

HOSTS_FILE = "/etc/hosts"
LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
THIS_MACHINE = "this machine"
ANY, ANY4 = "*", "0.0.0.0"  # a bind on every address (both families), on every IPv4 one

HostsTable = Dict[str, Tuple[str, ...]]  # lower-case name -> its canonical addresses


def canonical_address(host: str) -> str:
    """``host`` as a canonical IP address (see the module docstring), "" when not a literal.
    Brackets are dropped; the address is parsed without its ``%zone`` (Python 3.8 takes none)."""
    addr, pct, zone = host.strip("[]").partition("%")
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return ""
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:
        return str(mapped)
    return str(ip) + (pct + zone if zone else "")


def is_this_machine(address: str) -> bool:
    """Whether a canonical address reaches this machine (loopback or unspecified)."""
    ip = ipaddress.ip_address(address.partition("%")[0])
    return ip.is_loopback or ip.is_unspecified


def known_as(host: str, table: HostsTable) -> Tuple[FrozenSet[str], str]:
    """What ``host`` is known as (the module docstring's keys) and how, in words ("" for a
    literal address, which is itself)."""
    addr = canonical_address(host)
    if addr:
        return frozenset([THIS_MACHINE if is_this_machine(addr) else addr]), (
            "%s is %s" % (host, THIS_MACHINE) if is_this_machine(addr) else "")
    name = host.lower()
    if name in LOCAL_NAMES:
        return frozenset([THIS_MACHINE]), "%s is %s" % (host, THIS_MACHINE)
    listed = table.get(name, ())
    if not listed:
        return frozenset(["name:" + name]), ""
    keys = frozenset(THIS_MACHINE if is_this_machine(a) else a for a in listed)
    return keys, "%s is %s in %s" % (host, " and ".join(listed), HOSTS_FILE)


def same_machine(host_a: str, host_b: str, table: HostsTable) -> Tuple[bool, str]:
    """Whether two hosts are one machine, and why in words ("" when plain: the same address
    or name)."""
    (keys_a, why_a), (keys_b, why_b) = known_as(host_a, table), known_as(host_b, table)
    if not keys_a & keys_b:
        return False, ""
    if THIS_MACHINE in keys_a & keys_b:
        return True, "%s and %s are both %s" % (host_a, host_b, THIS_MACHINE)
    return True, "; ".join(w for w in (why_a, why_b) if w)


def bind_scope(host: str, table: HostsTable) -> FrozenSet[str]:
    """What a bind on ``host`` takes on its machine: ``ANY`` (``*``, ``::``: every address of
    both families, as an agent's dual-stack socket binds it), ``ANY4`` (``0.0.0.0``), else the
    canonical addresses (a name: its hosts-file addresses, ``localhost`` 127.0.0.1, or else its
    lower-case text)."""
    addr = canonical_address(host) if host not in ("", "*") else "::"
    if addr:
        return frozenset([ANY if addr == "::" else addr])
    name = host.lower()
    if name in LOCAL_NAMES:
        return frozenset(["127.0.0.1"])
    return frozenset(table.get(name, ())) or frozenset(["name:" + name])


def binds_clash(host_a: str, host_b: str, table: HostsTable) -> bool:
    """Whether binds on ``host_a`` and ``host_b`` of one machine cannot share a port: one takes
    every address, ``0.0.0.0`` meets any IPv4 address (or a name), or they share an address."""
    a, b = bind_scope(host_a, table), bind_scope(host_b, table)
    for wild, other in ((a, b), (b, a)):
        if ANY in wild or (ANY4 in wild and any(":" not in x or x.startswith("name:")
                                                 for x in other)):
            return True
    return bool(a & b)


def _reaches_this_machine(key: str, ipv4_only: bool) -> bool:
    """Whether a ``bind_scope`` key of a connect's host is this machine (a loopback or
    unspecified address; an IPv4 one when ``ipv4_only``); a name or other address is not known
    to be."""
    if key == ANY:  # a connect to "::" goes to this machine's IPv6 loopback
        return not ipv4_only
    if key.startswith("name:") or (ipv4_only and ":" in key):
        return False
    return is_this_machine(key)


def connect_reaches_bind(connect_host: str, bind_host: str, table: HostsTable) -> bool:
    """Whether a connect to ``connect_host`` on a port surely reaches this machine's bind on
    ``bind_host`` on that port: they share an address (or a name), or the bind takes every
    address (``*``, ``::``; ``0.0.0.0``: the IPv4 ones) and ``connect_host`` is this machine
    (``localhost``, a loopback or unspecified address). An address of one of this machine's
    interfaces cannot be known here, so a connect to it is not counted."""
    to, bound = bind_scope(connect_host, table), bind_scope(bind_host, table)
    if to & bound:
        return True
    if ANY in bound or ANY4 in bound:
        return any(_reaches_this_machine(k, ANY not in bound) for k in to)
    return False
