"""How long each neighbour may be silent on the control plane before the loop counts it gone.

The configured silence is ``neighbour_timeout_rounds`` x ``heartbeat_interval_s``. A
neighbour behind a slow link gets more: its heartbeats, or the TCP ACKs and ZMTP PINGs of
their connection, queue behind the tasks crossing that link, and on a 2,000 B/s link one
demo image takes 1.78 s. With the configured 2 s the loop declared such a neighbour gone
while a task was crossing (no connection had dropped) and its tasks were sent again
elsewhere. The extra time is the one the link's data heartbeat timeout has over a fast
link's (``agent.net.liveness.neighbour_timeout_s``, from the same link rates and message
sizes as the transport's sockets), so a fast link keeps (within a few ms) the configured
silence and a dead neighbour there is found as quickly as before.

A neighbour not heard from yet since this node started is awaited for that same limit from the
start (``joining``): tasks the routing draws for it wait for it meanwhile
(``AgentPolicy.choose_successor``), as they would not for one that is gone.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Set

from agent.net import liveness


class NeighbourSilence:
    """Per neighbour, the seconds of control-plane silence after which it is gone."""

    def __init__(self, cfg: Any, peers: Iterable[Any], sizes: liveness.StageSizes) -> None:
        self.base_s = cfg.neighbour_silence_s
        self._by_peer: Dict[str, float] = {
            peer: liveness.neighbour_timeout_s(self.base_s, ms)
            for peer, ms in liveness.link_timeouts(peers, sizes).items()}
        self.started = 0.0  # monotonic time the node started serving (``awaited``)

    def limit_s(self, peer: str) -> float:
        """``peer``'s silence limit (the configured one for a peer not in the config)."""
        return self._by_peer.get(peer, self.base_s)

    def gone(self, alive: Iterable[str], last_heard: Mapping[str, float],
             now: float) -> List[str]:
        """The ``alive`` neighbours not heard (``last_heard``: monotonic times) for longer
        than their limit at ``now``."""
        return [p for p in list(alive)
                if now - last_heard.get(p, -1e18) > self.limit_s(p)]

    def awaited(self, peers: Iterable[str], now: float) -> Set[str]:
        """The node starts serving at ``now``: ``peers``, none heard yet, are all joining."""
        self.started = now
        return set(peers)

    def joining(self, peers: Iterable[str], now: float) -> Set[str]:
        """Of ``peers`` (not heard from since the start), those whose silence limit has not run
        out since the start: still awaited, where one heard and then silent so long is gone."""
        return {p for p in peers if now - self.started <= self.limit_s(p)}
