"""At most one log line per interval about a recurring event, and how many went unlogged.

A flood (garbage on a socket, an engine failing on every task, a capacity estimate flipping
around its threshold) must not flood the journal: on a device's flash every line is wear, and
one line a minute with a count says as much as thousands.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Callable, Optional


class Throttle:
    """``due(key)`` says whether an event may be logged now: None while the last line is
    younger than ``interval_s`` (the event is counted under ``key``), else the counts by key
    of the events left unlogged since that line (empty for the first)."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic):
        self.interval_s = float(interval_s)
        self.clock = clock
        self._logged_at: Optional[float] = None  # clock() of the last line
        self._unlogged: Counter = Counter()

    def due(self, key: str = "") -> "Optional[Counter]":
        """None: do not log (counted); else the unlogged counts, which the caller's line names."""
        now = self.clock()
        if self._logged_at is not None and now - self._logged_at < self.interval_s:
            self._unlogged[key] += 1
            return None
        left, self._unlogged = self._unlogged, Counter()
        self._logged_at = now
        return left

    def mark(self) -> None:
        """A line about these events was logged another way now: the interval starts again
        (the counts left unlogged are kept for the next line)."""
        self._logged_at = self.clock()


def more_since(left: "Counter", what: str = "more") -> str:
    """`` (and N more since the last line: a 3, b 1)`` for ``due``'s counts ("" when none);
    ``what`` names the events (the key list is left out when there is only the empty key)."""
    n = sum(left.values())
    if not n:
        return ""
    keys = ", ".join("%s %d" % kv for kv in sorted(left.items()) if kv[0])
    return " (and %d %s since the last line%s)" % (n, what, ": " + keys if keys else "")
