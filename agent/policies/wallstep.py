"""How far the wall clock stepped: the one measure of a step, for the node and for DTO-EE.

A Jetson without an RTC battery boots on a stale wall clock that NTP steps later, and an
operator may ``date -s``. A step is a change of wall minus monotonic time between two reads: a
stalled loop moves both clocks alike and is no step. The node's watch
(``agent.node.clockstep``) logs each step; DTO-EE's slot clock
(``agent.policies.dtoee.slotclock``) follows it.
"""

from __future__ import annotations

from typing import Optional

# A smaller change of wall minus monotonic time between two reads is no step: the loop reads
# the monotonic clock before a pass and the policy reads the wall clock later in it, and NTP's
# slewing moves the wall clock by at most 0.5 ms a second.
STEP_MIN_S = 2.0


class WallOffset:
    """Wall minus monotonic time at the last read, and how far it moved since."""

    def __init__(self) -> None:
        self.offset: Optional[float] = None  # wall minus monotonic time (s) at the last read

    def step_s(self, now: float, wall_s: float) -> float:
        """How far the wall clock stepped (s, < 0: back) since the last call, beyond what the
        monotonic clock ``now`` moved; 0 at the first call."""
        offset, before = wall_s - now, self.offset
        self.offset = offset
        return 0.0 if before is None else offset - before
