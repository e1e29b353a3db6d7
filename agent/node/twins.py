"""Two agents running with one node id (a cloned SD card, a config copied to a second device).

ZeroMQ hands a routing id's data connection to whichever process connected last
(``ROUTER_HANDOVER``, so that a restarted peer gets its id back at once); the other process's
messages to that node are then dropped silently, for good. Nothing fails loudly, so this
watches for it: every agent sends a HEARTBEAT carrying its ``run`` (a random id, new at each
start) once on each data connection it opens, and publishes its heartbeats with it. A node
that hears heartbeats from a peer's configured control address with one run while its data
connection came from another run, for longer than a restart takes to show, has two agents
with that id: it logs a WARNING (at most one line a minute per peer) and counts
``duplicate_node_id``.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Dict, Tuple

from agent.ops.throttle import Throttle, more_since

log = logging.getLogger("agent.node.loop")

TWIN_LOG_INTERVAL_S = 60.0


class TwinWatch:
    """``connected(peer, run)`` for the HEARTBEAT that opens a data connection;
    ``heard(peer, run)`` for each heartbeat on the control plane: True when it shows two
    agents with the id ``peer``. ``grace_s``: how long a restarted peer's old heartbeats may
    still come after its new data connection (a few heartbeat periods)."""

    def __init__(self, grace_s: float, clock: Callable[[], float] = time.monotonic):
        self.grace_s = grace_s
        self.clock = clock
        self._data: Dict[str, Tuple[str, float]] = {}  # peer -> (run, when) of its connection
        self._log: Dict[str, Throttle] = {}  # configured peers only (the loop checks first)

    def connected(self, peer: str, run: str) -> None:
        """A data connection from ``peer`` opened by the process ``run``."""
        if run:
            self._data[peer] = (run, self.clock())

    def heard(self, peer: str, run: str) -> bool:
        """A heartbeat of ``peer``'s process ``run`` on the control plane."""
        conn = self._data.get(peer)
        if not run or conn is None or conn[0] == run:
            return False
        now = self.clock()
        if now - conn[1] < self.grace_s:
            return False  # the old process's last heartbeats, before the new one's
        throttle = self._log.get(peer)
        if throttle is None:
            throttle = self._log[peer] = Throttle(TWIN_LOG_INTERVAL_S, self.clock)
        left = throttle.due()
        if left is not None:
            log.warning("two agents are running as node %s: the one publishing at its configured "
                        "control address (run %s) and another that opened its data connection "
                        "here (run %s); data between them and this node goes to the last to "
                        "connect only. "
                        "Node ids must be unique: give the device that was copied its own "
                        "config%s", peer, run, conn[0], more_since(left, "heartbeats"))
        return True
