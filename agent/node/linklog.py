"""Log lines about data connections dropping and returning, bounded per peer.

A connection that flaps (a peer with a mismatched CURVE key is dropped on every handshake, a
link that loses and regains carrier) would write a line per event: about ten a second. Here a
peer's changes are logged at most once per ``interval_s``; a change held back by the limit is
logged by ``flush()`` once the interval has passed, with the counts since the last line, so the
last line about a peer always tells its present state.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Callable, Dict, List, Optional

log = logging.getLogger("agent.node.loop")

DOWN, UP = "dropped", "up"


class _Peer:
    __slots__ = ("state", "logged_at", "since")

    def __init__(self) -> None:
        self.state = UP
        self.logged_at: Optional[float] = None  # clock() of the last line about this peer
        self.since: Counter = Counter()  # changes since that line, logged or not


class LinkLog:
    """``event(peer, up)`` for each LINK_DOWN / LINK_UP; ``flush()`` now and then (the node
    calls it with its status line)."""

    def __init__(self, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.interval_s = float(interval_s)
        self.clock = clock
        self._peers: Dict[str, _Peer] = {}  # configured peers only: LINK_* name those

    def event(self, peer: str, up: bool) -> None:
        """A data connection to ``peer`` dropped (``up`` False) or was (re)established."""
        p = self._peers.get(peer)
        if p is None:
            p = self._peers[peer] = _Peer()
        p.state = UP if up else DOWN
        p.since[p.state] += 1
        self._log_if_due(peer, p)

    def flush(self, final: bool = False) -> None:
        """Log each peer whose changes were held back and whose interval has passed (all of
        them when ``final``: the node is stopping)."""
        for peer, p in self._peers.items():
            if p.since:
                self._log_if_due(peer, p, final)

    def pending(self) -> List[str]:
        """Peers with changes not yet logged."""
        return sorted(peer for peer, p in self._peers.items() if p.since)

    def _log_if_due(self, peer: str, p: _Peer, final: bool = False) -> None:
        now = self.clock()
        if not final and p.logged_at is not None and now - p.logged_at < self.interval_s:
            return
        n = sum(p.since.values())
        more = ""
        if n > 1:
            more = " (%d changes since the last line: dropped %d, up %d)" % (
                n, p.since[DOWN], p.since[UP])
        log.info("data connection to %s %s%s", peer, p.state, more)
        p.logged_at, p.since = now, Counter()
