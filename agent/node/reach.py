"""Whether this node and its peers reach each other: what cannot connect says so once.

Every agent connects a DEALER to the data socket of each peer in its config. A node whose id
(or data address, or key) the peers' configs do not hold still hears them, since it subscribes
to their heartbeats, but no peer ever connects to it: no task, ACK or result can reach it, and
it would idle without a word. ``ReachWatch`` notices that from the data socket's connection
count (``Transport.data_accepted``): once peers have been heard for twice the start-up grace
and none has connected, it logs one WARNING naming the fix. A node that some peer connected to
is never warned about again (a peer that restarts connects anew).

The other way round, a configured peer never heard for that long is looked up: when its
``control_address`` or ``data_address`` names a host that does not resolve here, or resolves
only to IPv6 addresses while its socket was made for IPv4, one WARNING per peer names the
config field and what the name gives (``agent.net.addrfamily.resolution_problem``). The names
are resolved on a thread of their own, so a slow DNS never holds up the loop; a peer that is
simply not running (its name resolves) is left to the loop's own route lines.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Collection, List, Optional, Set

from agent.config.node import NodeConfig
from agent.net.addrfamily import resolution_problem
from agent.net.peeraddr import RETRY_S

log = logging.getLogger("agent.node.loop")  # one of the loop's checks: logged under its name
# a name's lookup on the watch's own thread: as long as a resolver with no DNS server to ask
# takes to give up (attempts x timeouts), so that it is told as not resolving
LOOKUP_WAIT_S = 60.0


class ReachWatch:
    """One warning, the first time peers are heard long enough with no connection in; one per
    peer never heard that long whose address does not resolve as its socket needs."""

    def __init__(self, cfg: NodeConfig, grace_s: float):
        self.node_id = cfg.node_id
        self.data_bind = cfg.data_bind
        self.peers = list(cfg.peers)
        # a peer heard has connected its DEALER already (it connects at start, reconnecting
        # every 0.5 s at most): the loop gives twice its route grace, room for a busy host
        self.grace_s = grace_s
        self._heard_since = math.inf  # when a peer was first heard
        self._done = False  # warned, or a peer connected: nothing more to say
        self._started = math.inf  # the first check: the unheard peers' clock starts there
        self._ever_heard: Set[str] = set()
        self._looked_up = False  # the unheard peers' addresses were looked up (once)
        self.lookup: Optional[threading.Thread] = None  # the thread looking them up

    def check(self, now: float, heard: Collection[str], accepted: int) -> Optional[str]:
        """Log the warning when it is due (once) and return it, else None. ``heard``: the
        peers heard now, ``accepted``: connections made to this node's data socket so far.
        Peers not heard once since the first check after the grace have their addresses
        looked up (``lookup``, once) and a warning logged for each that does not resolve."""
        self._started = min(self._started, now)
        self._ever_heard.update(heard)
        if not self._looked_up and now - self._started >= self.grace_s:
            self._looked_up = True
            silent = [(i, p) for i, p in enumerate(self.peers) if p.id not in self._ever_heard]
            if silent:
                self.lookup = threading.Thread(target=self._look_up, name="peer-lookup",
                                               args=(silent, now - self._started), daemon=True)
                self.lookup.start()
        return self._unreached(now, heard, accepted)

    def _look_up(self, silent: List[tuple], after_s: float) -> None:
        """Resolve each silent peer's addresses (off the loop's thread) and warn about those
        that cannot be reached as configured."""
        for i, peer in silent:
            found = []  # (config field, endpoint, problem)
            for field in ("control_address", "data_address"):
                endpoint = getattr(peer, field)
                problem = resolution_problem(endpoint, LOOKUP_WAIT_S)
                if problem:
                    found.append(("peers[%d].%s" % (i, field), endpoint, problem))
            if not found:
                continue
            where = " and ".join("%s %s" % (f, ep) for f, ep, _ in found)
            causes = "; ".join(dict.fromkeys(p for _, _, p in found))  # one host: said once
            log.warning("neighbour %s not heard %.0f s after start: %s: %s (fix the address "
                        "in this node's config and restart the agent, or this host's name "
                        "resolution: DNS, /etc/hosts, which the agent retries every %.0f s)",
                        peer.id, after_s, where, causes, RETRY_S)

    def _unreached(self, now: float, heard: Collection[str], accepted: int) -> Optional[str]:
        if self._done:
            return None
        if accepted:
            self._done = True
            return None
        if not heard:  # none now: the grace starts again with the next one heard
            self._heard_since = math.inf
            return None
        self._heard_since = min(self._heard_since, now)
        if now - self._heard_since < self.grace_s:
            return None
        self._done = True
        names = sorted(heard)
        text = ("no peer has connected to this node's data socket (%s) %.0f s after %s %s "
                "heard: their configs do not list node id %r at an address that reaches this "
                "node (another host or port, or a name that does not resolve there), or hold "
                "another key for it, so no task or result can reach this node"
                % (self.data_bind, now - self._heard_since, ", ".join(names[:5])
                   + (" and %d more" % (len(names) - 5) if len(names) > 5 else ""),
                   "was" if len(names) == 1 else "were", self.node_id))
        log.warning("%s", text)
        return text
