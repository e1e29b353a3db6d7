"""The numeric addresses a node's sockets connect to, in place of its peers' host names.

libzmq resolves a host name given to ``connect`` with a blocking ``getaddrinfo`` on the
context's I/O thread, at the connect and again at every reconnect (every 0.1-0.5 s while a
peer is down). A name that takes seconds to fail (DNS down) then stalls every socket of the
node, heartbeats included, and live neighbours are taken for gone. So each name is resolved
here, off the I/O thread, and libzmq is handed only numeric endpoints:

- ``Transport.open`` resolves every name once, with a bound (``agent.net.addrfamily``, whose
  resolver is ``PeerAddresses.families``: the addresses are kept along with the families);
- a peer's socket connects to the first address of the family ``addrfamily`` chose (its IPv4
  address when it has one; libzmq would take the same), ``tcp://1.2.3.4:P`` or
  ``tcp://[fd00::2]:P`` (the socket's ``zmq.IPV6`` on); ``ipc://`` and numeric endpoints as
  they are;
- a name not resolved within the bound (or not at all) leaves its socket made but not
  connected: the peer is not heard, and ``agent.node.reach`` names it. ``retry`` resolves
  such names again every ``RETRY_S``, on a daemon thread (a slow resolver never holds up the
  loop), and connects a socket once its name has an address.

Every ``REFRESH_S`` the names this node dialled are resolved again on that thread (libzmq
did so at each reconnect): a socket whose address its name no longer gives (a device back
with a new DHCP lease, an mDNS name moved) is disconnected from the old one and connected to
the new. A name that resolves to nothing then (DNS down) keeps its address, and so does one
whose addresses came in another order (DNS round robin).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any, Callable, Dict, FrozenSet, Optional, Tuple

import zmq

from agent.net.addrfamily import IPV4, IPV6, endpoint_host, literal_family

log = logging.getLogger("agent.net.transport")  # one of the transport's parts

RETRY_S = 5.0  # names that did not resolve are tried again this often
REFRESH_S = 30.0  # names dialled are resolved again this often, for an address that moved

Addresses = Tuple[Tuple[int, str], ...]  # (family, numeric address) in the resolver's order
Lookup = Callable[[str], Addresses]


def getaddrinfo_addresses(host: str) -> Addresses:
    """The addresses ``host`` resolves to here, in the resolver's order (empty: none)."""
    try:
        infos = socket.getaddrinfo(host, None, 0, socket.SOCK_STREAM)
    except (OSError, UnicodeError):  # socket.gaierror is an OSError
        return ()
    out = []
    for info in infos:
        fam, addr = int(info[0]), str(info[4][0])
        if fam in (IPV4, IPV6) and (fam, addr) not in out:
            out.append((fam, addr))
    return tuple(out)


def with_host(endpoint: str, address: str) -> str:
    """``endpoint`` (``tcp://``, maybe with a ``SRC;`` part) with its host replaced by the
    numeric ``address`` (bracketed when IPv6)."""
    scheme, _, rest = endpoint.partition("://")
    src, sep, target = rest.rpartition(";")
    port = target.rpartition(":")[2]
    host = "[%s]" % address if literal_family(address) == IPV6 else address
    return "%s://%s%s%s:%s" % (scheme, src, sep, host, port)


def pick(addresses: Addresses) -> Optional[Tuple[int, str]]:
    """The address to connect to: the first IPv4 one, else the first IPv6 one (the choice of
    ``agent.net.addrfamily``: IPv6 only for a name with no IPv4 address)."""
    for want in (IPV4, IPV6):
        for fam, addr in addresses:
            if fam == want:
                return fam, addr
    return None


class PeerAddresses:
    """Host name -> addresses found, the numeric endpoint each socket was connected to
    (``dialled``: (peer id, plane) -> endpoint), and the sockets still waiting for theirs.

    ``lookup``: the resolver (``getaddrinfo_addresses``; a test passes its own); ``clock``:
    when a retry is due."""

    def __init__(self, lookup: Lookup = getaddrinfo_addresses,
                 clock: Callable[[], float] = time.monotonic, retry_s: float = RETRY_S,
                 refresh_s: float = REFRESH_S):
        self.lookup, self.clock, self.retry_s = lookup, clock, retry_s
        self.refresh_s = refresh_s
        self.found: Dict[str, Addresses] = {}  # host -> its addresses (empty: none)
        self.dialled: Dict[Tuple[str, str], str] = {}
        self.waiting: Dict[Tuple[str, str], Tuple[Any, str]] = {}  # key -> (socket, endpoint)
        # key -> (socket, configured endpoint) of each socket dialled by a name's address
        self.named: Dict[Tuple[str, str], Tuple[Any, str]] = {}
        self.moved = 0  # sockets moved to a name's new address so far
        self._lock = threading.Lock()  # ``found`` is written by resolver threads
        self._next_retry = 0.0
        self._next_refresh = 0.0
        self._fresh = False  # a refresh round's results are in (set by its thread)
        self._retrying: Optional[threading.Thread] = None

    def families(self, host: str) -> FrozenSet[int]:
        """Resolve ``host``, keep its addresses, return their families (the resolver handed to
        ``addrfamily.for_node``; runs on its threads)."""
        addrs = self.lookup(host)
        with self._lock:
            self.found[host] = addrs
        return frozenset(fam for fam, _ in addrs)

    def numeric(self, endpoint: str) -> Optional[str]:
        """The endpoint to hand libzmq for ``endpoint``: itself when not a ``tcp://`` name,
        the host replaced by its address, or None while the name has no address."""
        host = endpoint_host(endpoint)
        if not host or host == "*" or literal_family(host) is not None:
            return endpoint
        with self._lock:
            chosen = pick(self.found.get(host, ()))
        return None if chosen is None else with_host(endpoint, chosen[1])

    def connect(self, sock: Any, key: Tuple[str, str], endpoint: str) -> bool:
        """Connect ``sock`` (``key``: peer id, plane) to ``endpoint``'s numeric endpoint; a
        name with no address yet leaves it waiting for ``retry``. True when connected."""
        target = self.numeric(endpoint)
        if target is None:
            self.waiting[key] = (sock, endpoint)
            if not self._next_retry:
                self._next_retry = self.clock() + self.retry_s
            return False
        if target != endpoint:  # the address's family decides; a name's choice was made blind
            sock.setsockopt(zmq.IPV6, int(literal_family(endpoint_host(target) or "") == IPV6))
        sock.connect(target)
        self.waiting.pop(key, None)
        self.dialled[key] = target
        if target != endpoint:
            self.named[key] = (sock, endpoint)
            if not self._next_refresh:
                self._next_refresh = self.clock() + self.refresh_s
        return True

    def refresh(self, on_move: Callable[[Tuple[str, str], Any, str, str], None]) -> None:
        """Move each named socket whose name picks another address since the last round
        (``on_move(key, socket, old, new)`` after it is connected to the new one); every
        ``refresh_s``, resolve those names again on a daemon thread (one round at a time).
        Call it only while ``named`` holds a socket (the loop's thread)."""
        if self._fresh:
            self._fresh = False
            for key, (sock, endpoint) in list(self.named.items()):
                old, new = self.dialled.get(key), self.numeric(endpoint)
                if new is None or new == old or self._still_listed(endpoint, old):
                    continue  # nothing found (DNS down), or the same: keep the address
                try:
                    sock.disconnect(old)
                except zmq.ZMQError:  # libzmq dropped it already, or a redial holds it off
                    pass
                self.connect(sock, key, endpoint)
                self.moved += 1
                log.info("%s connection to %s (%s): its address moved from %s to %s",
                         key[1], key[0], endpoint, old, new)
                on_move(key, sock, old or "", new)
        if self.clock() < self._next_refresh:
            return
        self._next_refresh = self.clock() + self.refresh_s
        if self._retrying is not None and self._retrying.is_alive():
            return
        hosts = sorted({endpoint_host(ep) or "" for _, ep in self.named.values()})
        self._retrying = threading.Thread(target=self._resolve, args=(hosts, True),
                                          name="re-resolve", daemon=True)
        self._retrying.start()

    def _still_listed(self, endpoint: str, dialled: Optional[str]) -> bool:
        """True when the address ``dialled`` for ``endpoint``'s name is still among the name's
        addresses, of the family ``pick`` takes: a name with several addresses, which a DNS
        server hands out in turn (round robin), is not moved (and its connections cut) each
        time another comes first."""
        host, addr = endpoint_host(endpoint), endpoint_host(dialled or "")
        with self._lock:
            found = self.found.get(host or "", ())
        chosen = pick(found)
        return chosen is not None and (chosen[0], addr) in found

    def retry(self) -> None:
        """Connect the waiting sockets whose names have an address now; every ``retry_s``,
        resolve the names still without one again on a daemon thread (one at a time)."""
        for key, (sock, endpoint) in list(self.waiting.items()):
            if self.numeric(endpoint) is not None:
                self.connect(sock, key, endpoint)
        if not self.waiting or self.clock() < self._next_retry:
            return
        self._next_retry = self.clock() + self.retry_s
        if self._retrying is not None and self._retrying.is_alive():
            return  # the last round is still waiting on the resolver
        hosts = sorted({endpoint_host(ep) or "" for _, ep in self.waiting.values()})
        self._retrying = threading.Thread(target=self._resolve, args=(hosts,),
                                          name="re-resolve", daemon=True)
        self._retrying.start()

    def _resolve(self, hosts: Any, refresh: bool = False) -> None:
        for host in hosts:
            self.families(host)
        if refresh:
            self._fresh = True
