"""Whether the peers know this node: a node no peer connects to says so once.

Every agent connects a DEALER to the data socket of each peer in its config. A node whose id
(or data address, or key) the peers' configs do not hold still hears them, since it subscribes
to their heartbeats, but no peer ever connects to it: no task, ACK or result can reach it, and
it would idle without a word. ``ReachWatch`` notices that from the data socket's connection
count (``Transport.data_accepted``): once peers have been heard for twice the start-up grace
and none has connected, it logs one WARNING naming the fix. A node that some peer connected to
is never warned about again (a peer that restarts connects anew).
"""

from __future__ import annotations

import logging
import math
from typing import Collection, Optional

from agent.config.node import NodeConfig

log = logging.getLogger("agent.node.loop")  # one of the loop's checks: logged under its name


class ReachWatch:
    """One warning, the first time peers are heard long enough with no connection in."""

    def __init__(self, cfg: NodeConfig, grace_s: float):
        self.node_id = cfg.node_id
        self.data_bind = cfg.data_bind
        # a peer heard has connected its DEALER already (it connects at start, reconnecting
        # every 0.5 s at most): the loop gives twice its route grace, room for a busy host
        self.grace_s = grace_s
        self._heard_since = math.inf  # when a peer was first heard
        self._done = False  # warned, or a peer connected: nothing more to say

    def check(self, now: float, heard: Collection[str], accepted: int) -> Optional[str]:
        """Log the warning when it is due (once) and return it, else None. ``heard``: the
        peers heard now, ``accepted``: connections made to this node's data socket so far."""
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
                "heard: their configs do not list node id %r at this address (or hold another "
                "key for it), so no task or result can reach this node"
                % (self.data_bind, now - self._heard_since, ", ".join(names[:5])
                   + (" and %d more" % (len(names) - 5) if len(names) > 5 else ""),
                   "was" if len(names) == 1 else "were", self.node_id))
        log.warning("%s", text)
        return text
