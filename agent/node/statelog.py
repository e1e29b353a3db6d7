"""Log lines about things that come and go, bounded per thing: data connections dropping and
returning, neighbours gone and alive again, a stage's route lost and back.

Each of these can flap: a peer with a mismatched CURVE key is dropped on every handshake (about
ten times a second), a link loses and regains carrier, a crash-looping neighbour comes and goes
every few seconds, two agents under one node id take a connection from each other in turn. A
line per change would fill the journal. Here the changes of one key are logged at most
``burst`` times per ``interval_s`` (two: a drop and its return, a loss and its end, are both
logged at once; a key's first state does not count); a change held back by the limit is
logged by ``flush()`` once due, with the
counts since the last line (at the most severe level among them), so the last line about a key
always tells its present state. The end of a trouble whose line went out at WARNING (a route
back, after the line that said it was lost) is logged at once, whatever the limit: an operator
must not read a route as lost for up to ``interval_s`` after it came back, and such lines are
no more than the WARNING lines before them. A line that goes out more than ``LATE_S`` after the change it
tells of says when that change happened, by the wall clock (``(at 10:17:48)``; with the counts,
``(3 changes since the last line: alive 1, gone 2; the last at 10:17:48)``): the line's own
time stamp is the flush's, up to ``interval_s`` later. That time is the wall clock's now less the
monotonic time since the change, so a wall clock stepped in between (NTP after a stale boot)
never dates the change after the line that tells of it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from typing import Callable, Deque, Dict, List

log = logging.getLogger("agent.node.loop")

LATE_S = 1.0  # a line logged this long after its change says when the change happened


class _Key:
    __slots__ = ("line", "logged_at", "since", "held_level", "changed_at", "logged_level")

    def __init__(self, burst: int) -> None:
        self.line = ""  # the line of the present state
        self.logged_at: Deque[float] = deque(maxlen=burst)  # clock() of the last lines
        self.since: Counter = Counter()  # changes by state since that line, logged or not
        # the most severe level among the changes not yet logged (the next line's level)
        self.held_level = logging.NOTSET
        self.changed_at = 0.0  # clock() of the latest change
        self.logged_level = logging.NOTSET  # the level of the last line logged


class StateLog:
    """``event(key, state, line)`` for each change; ``flush()`` now and then (the node calls it
    with its status line) and with ``final`` when it stops."""

    def __init__(self, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 burst: int = 2, wall: Callable[[], float] = time.time):
        self.interval_s = float(interval_s)
        self.burst = burst
        self.clock = clock
        # Unix seconds, for the time a late line names: now's, less the monotonic time since
        # the change (a wall clock stepped in between must not put the change after its line)
        self.wall = wall
        self._keys: Dict[str, _Key] = {}  # a few per configured peer: bounded by the config

    def event(self, key: str, state: str, line: str, level: int = logging.INFO) -> None:
        """``key`` (a peer's data connection, a neighbour, a route) changed to ``state``;
        ``line`` says so, logged at ``level`` when due."""
        k = self._keys.get(key)
        if k is None:  # a key's first state (a neighbour first heard, a connection first up)
            # is logged outside the burst: else a drop and its return within the first
            # interval would find one line of the burst taken, and the return held back
            self._keys[key] = k = _Key(self.burst)
            k.line, k.logged_level = line, level
            log.log(level, "%s", line)
            return
        k.line = line
        k.since[state] += 1
        k.held_level = max(k.held_level, level)
        k.changed_at = self.clock()
        # the trouble a WARNING line told of is over: said at once (module docstring)
        self._log_if_due(k, final=level < logging.WARNING <= k.logged_level)

    def flush(self, final: bool = False) -> None:
        """Log each key whose changes were held back and whose interval has passed (all of them
        when ``final``: the node is stopping)."""
        for k in self._keys.values():
            if k.since:
                self._log_if_due(k, final)

    def pending(self) -> List[str]:
        """Keys with changes not yet logged."""
        return sorted(key for key, k in self._keys.items() if k.since)

    def _log_if_due(self, k: _Key, final: bool = False) -> None:
        now = self.clock()
        full = len(k.logged_at) == self.burst
        if not final and full and now - k.logged_at[0] < self.interval_s:
            return
        n = sum(k.since.values())
        parts = []
        if n > 1:
            parts.append("%d changes since the last line: %s" % (
                n, ", ".join("%s %d" % kv for kv in sorted(k.since.items()))))
        if now - k.changed_at > LATE_S:  # held back: the line's own stamp is not the change's
            wall = self.wall()
            at = _clock_time(wall - (now - k.changed_at), wall)
            parts.append(("the last at " if parts else "at ") + at)
        more = " (%s)" % "; ".join(parts) if parts else ""
        log.log(k.held_level, "%s%s", k.line, more)
        k.logged_level = k.held_level
        k.logged_at.append(now)
        k.since, k.held_level = Counter(), logging.NOTSET


def _clock_time(wall_s: float, now_wall_s: float) -> str:
    """``wall_s`` as local time of day (the journal's own stamps are local), with its date when
    that is not today's (a change held back over midnight, or logged at a late stop)."""
    then = time.localtime(wall_s)
    same_day = then[:3] == time.localtime(now_wall_s)[:3]
    return time.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M:%S", then)
