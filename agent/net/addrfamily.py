"""Which address family a ZeroMQ tcp endpoint's socket uses (its ``zmq.IPV6`` option).

With ``IPV6 = 1`` libzmq takes only the first address a host name resolves to, and the
resolver puts IPv6 first: a name with IPv6 and IPv4 addresses (Debian's ``localhost``, ::1
then 127.0.0.1; any name with AAAA and A records) then never reaches a peer bound on IPv4,
a bind on it listens on the IPv6 address alone, and a bind on an interface name
(``tcp://eth0:5551``) takes the interface's IPv6 address instead of its IPv4 one. So the
option is decided per endpoint (``wants_ipv6``), on only where IPv6 is meant:

- an IPv6 address (``tcp://[fd00::2]:5552``, ``tcp://[::]:5551``);
- a ``*`` bind: the socket listens on IPv6 and IPv4 alike (dual stack);
- a name (a host name, or in a bind an interface name) with IPv6 addresses and no IPv4 one;

and off for everything else: IPv4 addresses, names with an IPv4 address, names that do not
resolve (yet), ``ipc://`` and ``inproc://``. A name is resolved once, when its socket is made,
for at most ``RESOLVE_WAIT_S`` (all of a node's names at once, so a slow DNS delays the start
by that much at most). Each decision is remembered (``chosen``), so that a peer never heard
can be explained later (``resolution_problem``, from ``agent.node.reach``).

Pure Python (``socket``, ``ipaddress``): the client library imports it too.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from typing import Any, Callable, Dict, FrozenSet, Iterable, Optional, Sequence, Tuple

RESOLVE_WAIT_S = 5.0  # longest wait for the names of a node's endpoints, all resolved at once
IPV4, IPV6 = int(socket.AF_INET), int(socket.AF_INET6)
SIOCGIFADDR = 0x8915  # Linux ioctl: an interface's IPv4 address (EADDRNOTAVAIL: none)

Families = Optional[FrozenSet[int]]  # None: not known (still resolving); empty: no address
Resolver = Callable[[str], FrozenSet[int]]

_chosen: Dict[str, bool] = {}  # endpoint -> the IPV6 option its socket was given (this process)


def endpoint_host(endpoint: str) -> Optional[str]:
    """The host of a ``tcp://`` endpoint, without brackets (``*``, a name, an address, with a
    ``%zone`` if given); None for other schemes. A connect's source part (``SRC;HOST:PORT``)
    is left out: the host is where the socket connects to."""
    scheme, _, rest = endpoint.partition("://")
    if scheme != "tcp":
        return None
    host = rest.rpartition(";")[2].rpartition(":")[0]
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host


def literal_family(host: str) -> Optional[int]:
    """``IPV4`` or ``IPV6`` for an IP address (an IPv6 one may carry a ``%zone``), else None."""
    addr, _, _ = host.partition("%")  # Python 3.8's ipaddress takes no zone id
    try:
        return IPV6 if ipaddress.ip_address(addr).version == 6 else IPV4
    except ValueError:
        return None


def getaddrinfo_families(host: str) -> FrozenSet[int]:
    """The families ``host`` resolves to here (empty when it does not resolve)."""
    try:
        infos = socket.getaddrinfo(host, None, 0, socket.SOCK_STREAM)
    except (OSError, UnicodeError):  # socket.gaierror is an OSError
        return frozenset()
    return frozenset(int(i[0]) for i in infos if int(i[0]) in (IPV4, IPV6))


def interface_families(name: str) -> Families:
    """The families of the addresses interface ``name`` holds (Linux), or None when no
    interface has that name (or this platform cannot tell)."""
    try:
        if name not in {n for _, n in socket.if_nameindex()}:
            return None
        import fcntl
        import struct
    except (OSError, AttributeError, ImportError):
        return None
    found = set()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
        found.add(IPV4)
    except OSError:  # EADDRNOTAVAIL: no IPv4 address on it
        pass
    try:
        with open("/proc/net/if_inet6") as f:  # one line per address: ... NAME at the end
            if any(line.split()[-1:] == [name] for line in f):
                found.add(IPV6)
    except OSError:
        pass
    return frozenset(found)


def resolve_all(hosts: Iterable[str], wait_s: Optional[float] = RESOLVE_WAIT_S,
                resolve: Resolver = getaddrinfo_families) -> Dict[str, Families]:
    """Each host's families, resolved in parallel for at most ``wait_s`` in all (None: as
    long as the resolver takes; one daemon thread per host, so a resolver that hangs is left
    behind); None for a host not done by then."""
    out: Dict[str, Families] = {}
    threads = []
    for host in set(hosts):
        t = threading.Thread(target=lambda h=host: out.__setitem__(h, resolve(h)),
                             name="resolve", daemon=True)
        t.start()
        threads.append(t)
    deadline = None if wait_s is None else time.monotonic() + wait_s
    for t in threads:
        t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
    return {h: out.get(h) for h in set(hosts)}


def _decide(host: Optional[str], bind: bool, families: Families) -> bool:
    if host is None:  # ipc://, inproc://: no family
        return False
    if host == "*":
        return bind  # a dual-stack listener
    family = literal_family(host)
    if family is not None:
        return family == IPV6
    return families is not None and IPV6 in families and IPV4 not in families


def _families(host: str, bind: bool, resolved: Dict[str, Families]) -> Families:
    if bind:  # libzmq takes an interface name before a host name when it binds
        nic = interface_families(host)
        if nic is not None:
            return nic
    return resolved.get(host)


def choose(endpoints: Sequence[Tuple[str, bool]], wait_s: float = RESOLVE_WAIT_S,
           resolve: Resolver = getaddrinfo_families) -> Dict[Tuple[str, bool], bool]:
    """The IPV6 option for each ``(endpoint, bind)``, the names among them resolved together
    (``resolve_all``); each decision is remembered for ``chosen``."""
    hosts = [endpoint_host(ep) for ep, _ in endpoints]
    names = [h for h in hosts if h and h != "*" and literal_family(h) is None]
    resolved = resolve_all(names, wait_s, resolve) if names else {}
    out = {}
    for (ep, bind), host in zip(endpoints, hosts):
        fams = _families(host, bind, resolved) if host else None
        out[(ep, bind)] = _chosen[ep] = _decide(host, bind, fams)
    return out


def wants_ipv6(endpoint: str, bind: bool = False, wait_s: float = RESOLVE_WAIT_S,
               resolve: Resolver = getaddrinfo_families) -> bool:
    """Whether a socket that binds (``bind``) or connects to ``endpoint`` needs ``zmq.IPV6``
    (the module docstring's rule)."""
    return choose([(endpoint, bind)], wait_s, resolve)[(endpoint, bind)]


def chosen(endpoint: str) -> Optional[bool]:
    """The IPV6 option this process gave a socket for ``endpoint`` (None: none was made)."""
    return _chosen.get(endpoint)


def resolution_problem(endpoint: str, wait_s: Optional[float] = RESOLVE_WAIT_S,
                       resolve: Resolver = getaddrinfo_families) -> str:
    """Why a connection to ``endpoint`` cannot be made as its socket stands, from what its
    host name resolves to now ("" when nothing is wrong there, and for an address): the name
    does not resolve, it resolves only to IPv6 addresses while this process made the socket
    for IPv4 (``chosen``: the name had an IPv4 address, or none, then), or resolving it takes
    longer than ``wait_s`` seconds (None: no limit)."""
    host = endpoint_host(endpoint)
    if not host or host == "*" or literal_family(host) is not None:
        return ""
    fams = resolve_all([host], wait_s, resolve)[host]
    if fams is None:
        return "resolving the host %s takes longer than %g s" % (host, wait_s)
    if not fams:
        return "the host %s does not resolve" % host
    if fams == frozenset([IPV6]) and chosen(endpoint) is False:
        return ("the host %s resolves only to IPv6 addresses now, and the socket for it was "
                "made for IPv4 (the name had an IPv4 address, or none, then): only a socket "
                "made again reaches it" % host)
    return ""


def for_node(binds: Sequence[str], peers: Iterable[Any], wait_s: float = RESOLVE_WAIT_S,
             resolve: Resolver = getaddrinfo_families) -> Dict[Tuple[str, bool], bool]:
    """``choose`` for a node's sockets: its bind endpoints (empty ones left out) and each
    peer's ``control_address`` and ``data_address`` (``resolve``: the transport's, which keeps
    the addresses too, ``agent.net.peeraddr``)."""
    return choose([(e, True) for e in binds if e]
                  + [(a, False) for p in peers for a in (p.control_address, p.data_address)],
                  wait_s, resolve)
