"""A node's bind endpoints tried, and held, before the slow steps of its start-up.

A node binds its ZeroMQ sockets (``Transport.open``) only once it is built: after a worker's
engines are loaded and timed, which takes minutes where a TensorRT plan is built. So each
``tcp://`` bind is first made with a plain socket as libzmq's TCP listener makes it, bound and
not listening (a connect to it is refused, as to no agent at all), right after the state
directory is locked; a port another process holds, an address that is none of this
machine's, a host name that does not resolve fail the start at once, with the ``zmq.ZMQError``
libzmq's own bind would raise (``agent.ops.bindfault`` words it). The held sockets are let go
just before the sockets bind; meanwhile they keep the port from becoming an outgoing
connection's local port (the ephemeral range may hold it).

The plain socket is libzmq's (4.3) listener's: the family the endpoint's ``zmq.IPV6`` option
gives (``agent.net.addrfamily``), ``SO_REUSEADDR`` set (so connections of an agent stopped an
instant ago, left in TIME_WAIT, never refuse its restart; on Linux such a bind still fails on
a port another socket listens on), an IPv6 socket dual stack (``IPV6_V6ONLY`` off); its
address is the one libzmq's resolver takes: ``*`` every address (``::`` or ``0.0.0.0``), an
interface name its address of that family (else the name resolved), an IP address itself, a
host name the first address of that family it resolves to. Where the address cannot be told
here as libzmq would take it (an IPv6-only interface with several addresses, an interface
without an address of that family, a name still resolving after ``RESOLVE_WAIT_S``, a bind
error libzmq answers otherwise, e.g. no IPv6 in the kernel), that endpoint is not tried: its
own bind tells, as before.

``ipc://`` binds get ``agent.net.ipcbind``'s check now (a path a live process serves), and
are left to ZeroMQ to bind; other schemes are not tried.
"""

from __future__ import annotations

import errno
import socket
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import zmq

from agent.net import addrfamily as af
from agent.net.ipcbind import ipc_path, refuse_served

Address = Tuple[int, Tuple[Any, ...]]  # (family, sockaddr) a socket binds
Lookup = Callable[[str], Tuple[Address, ...]]

# what a plain bind finds that libzmq's bind would fail on in the same way; any other error
# (e.g. EAFNOSUPPORT: libzmq then falls back to IPv4) is left to libzmq's own bind
FAULTS = (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES)


def endpoint_port(endpoint: str) -> Optional[int]:
    """The TCP port of a ``tcp://`` endpoint (``*``: 0, any free one); None where it is none
    (libzmq's bind says why)."""
    port = endpoint.rpartition(":")[2]
    if port == "*":
        return 0
    return int(port) if port.isdigit() and int(port) <= 65535 else None


def lookup(host: str) -> Tuple[Address, ...]:
    """Each address ``host`` resolves to here, in the resolver's order (empty: none)."""
    try:
        infos = socket.getaddrinfo(host, None, 0, socket.SOCK_STREAM)
    except (OSError, UnicodeError):  # socket.gaierror is an OSError
        return ()
    return tuple((int(i[0]), i[4]) for i in infos if int(i[0]) in (af.IPV4, af.IPV6))


def interface_address(name: str, family: int) -> Optional[Tuple[Any, ...]]:
    """The sockaddr (port 0) libzmq binds for interface ``name`` in ``family``: its IPv4
    address, or its one IPv6 address (with the interface's scope); None where it has none,
    or several IPv6 ones (which one libzmq takes first is not known here)."""
    if family == af.IPV4:
        import fcntl
        import struct

        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                req = fcntl.ioctl(s.fileno(), af.SIOCGIFADDR,
                                  struct.pack("256s", name.encode()[:15]))
        except OSError:  # EADDRNOTAVAIL: no IPv4 address on it
            return None
        return (socket.inet_ntoa(req[20:24]), 0)  # struct ifreq: name[16], sockaddr_in
    try:
        with open("/proc/net/if_inet6") as f:  # ADDRESS INDEX PREFIX SCOPE FLAGS NAME
            rows = [line.split() for line in f]
    except OSError:
        return None
    mine = [r for r in rows if len(r) >= 6 and r[5] == name]
    if len(mine) != 1:
        return None
    hexa, index = mine[0][0], int(mine[0][1], 16)
    addr = ":".join(hexa[i:i + 4] for i in range(0, 32, 4))
    return (addr, 0, 0, index)


def bind_address(endpoint: str, ipv6: bool, found: Dict[str, Any]) -> Optional[Address]:
    """Where libzmq binds tcp ``endpoint`` with ``zmq.IPV6`` = ``ipv6`` (module docstring),
    port 0; ``found``: what each host name resolved to (``lookup``; None: still resolving).
    None where that cannot be told here; ``zmq.ZMQError(ENODEV)`` for a host that is neither
    an address, nor an interface of this machine, nor a name that resolves."""
    host = af.endpoint_host(endpoint) or ""
    family = af.IPV6 if ipv6 else af.IPV4
    if host == "*":
        return family, ("::", 0, 0, 0) if ipv6 else ("0.0.0.0", 0)
    if af.literal_family(host) is not None:
        try:  # the numeric form with its %zone, as the resolver reads it
            info = socket.getaddrinfo(host, 0, family, socket.SOCK_STREAM, 0,
                                      socket.AI_NUMERICHOST)
        except (OSError, UnicodeError):
            return None
        return family, info[0][4]
    if af.interface_families(host) is not None:  # an interface name before a host name
        nic = interface_address(host, family)
        if nic is not None:
            return family, nic
    got = found.get(host)
    if got is None:  # not resolved within the wait (or not tried): its own bind tells
        return None
    for fam, sockaddr in got:
        if fam == family:
            return family, sockaddr
    if got:  # none of that family (not as addrfamily decides): its own bind tells
        return None
    raise zmq.ZMQError(errno.ENODEV, "cannot bind %s: no such address" % endpoint)


def probe(address: Address, port: int) -> Optional[socket.socket]:
    """A socket bound (not listening) on ``address`` at ``port`` as libzmq's listener binds
    (module docstring); ``zmq.ZMQError`` with the bind's errno for one of ``FAULTS``, None
    for any other error (left to libzmq's own bind)."""
    family, sockaddr = address
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError:  # no IPv6 here: libzmq falls back to IPv4
        return None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == af.IPV6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((sockaddr[0], port) + tuple(sockaddr[2:]))
    except OSError as exc:
        sock.close()
        if exc.errno in FAULTS:
            raise zmq.ZMQError(exc.errno, exc.strerror or str(exc)) from None
        return None
    return sock


class BindHold:
    """Each of a node's binds (``(plane, endpoint)``, in the order it binds them) tried and
    held (``take``) until ``close``; ``bound``: the planes taken or not tried so far.
    ``ipc``: whether an ``ipc://`` path a live process serves is refused too."""

    def __init__(self, binds: Sequence[Tuple[str, str]], wait_s: float = af.RESOLVE_WAIT_S,
                 resolve: Lookup = lookup, ipc: bool = True) -> None:
        self.binds = [(plane, ep) for plane, ep in binds if ep]
        self.wait_s, self.resolve, self.ipc = wait_s, resolve, ipc
        self.bound: Dict[str, str] = {}
        self._held: List[socket.socket] = []

    def take(self) -> None:
        """Try each bind in order; ``zmq.ZMQError`` (as libzmq's bind would raise it) at the
        first that cannot be bound, the ones before it held (``close`` lets them go)."""
        tcp = [ep for _, ep in self.binds if ep.startswith("tcp://")]
        hosts = [af.endpoint_host(ep) or "" for ep in tcp]
        names = [h for h in hosts if h != "*" and af.literal_family(h) is None
                 and af.interface_families(h) is None]  # libzmq takes an interface unresolved
        found = af.resolve_all(names, self.wait_s, self.resolve) if names else {}  # at once

        def families(host: str) -> af.Families:
            got = found.get(host)
            return None if got is None else frozenset(fam for fam, _ in got)
        ipv6 = af.choose([(ep, True) for ep in tcp], self.wait_s, families)
        for plane, endpoint in self.binds:
            if self.ipc and ipc_path(endpoint):
                refuse_served(endpoint, grace_s=0.0)  # a live path: EADDRINUSE
            port = endpoint_port(endpoint) if endpoint.startswith("tcp://") else None
            if port is not None:
                address = bind_address(endpoint, ipv6[(endpoint, True)], found)
                sock = probe(address, port) if address is not None else None
                if sock is not None:
                    self._held.append(sock)
            self.bound[plane] = endpoint

    def close(self) -> None:
        """Let every held address go (again: nothing)."""
        held, self._held = self._held, []
        for sock in held:
            sock.close()

    def __enter__(self) -> "BindHold":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
