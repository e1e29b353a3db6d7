"""DTO-EE's slot clock: the slot a node's tick runs in, and how a stepped wall clock is followed.

Slots are aligned to the wall clock (slot n starts at n * slot_length_s). That clock may step:
a device without an RTC battery boots with a stale time (the last shutdown's, or 1970) that
NTP corrects later, maybe while the agent serves, and an operator may ``date -s``. Each tick
compares how far the wall clock moved with how far the monotonic clock did, so a step is told
from a loop that stalled (both move alike then). What a tick does:

- forward (the usual NTP correction at boot): it starts the slot the clock now gives; the slots
  in between are skipped, never run as a burst of catch-up phases. One INFO line names the step
  (the nodes that refused this node's slots as too far ahead, or whose messages it refused,
  named NTP: this line says the clock moved).
- back by more than a slot: it starts the slot the clock now gives, with one WARNING (else the
  node would idle until the clock passed its old slot again: an hour's step is 720 slots of 5 s
  without configuration).
- back by a slot or less: the node stays in its slot (its clock one slot behind is also what a
  neighbour's newer slot leaves: it joined that slot) and starts the next one when the clock
  reaches it: at most two slots without a phase.
"""

from __future__ import annotations

import logging

from agent.policies.wallstep import STEP_MIN_S, WallOffset

log = logging.getLogger("agent.policies.dtoee.agent")  # the policy's lines: one logger name


class SlotClock:
    """The slot each tick runs in, following the wall clock through its steps (module doc)."""

    def __init__(self) -> None:
        self.wall = WallOffset()  # how far the wall clock moved between ticks

    def tick(self, current: int, now: float, wall_s: float, slot_length_s: float) -> int:
        """The slot a tick at monotonic ``now`` and wall time ``wall_s`` runs in, for a node in
        slot ``current`` (-1: none yet): the wall clock's when it is ahead or more than one slot
        behind, else ``current``. A step is logged once, at the tick that sees it."""
        step = self.wall.step_s(now, wall_s)
        slot = int(wall_s // slot_length_s)
        if slot < current - 1:  # stepped back: follow it, or idle till the clock is back
            log.info("the wall clock stepped back about %.0f s: DTO-EE slots go on from slot "
                     "%d (was %d)", -step if step < 0 else (current - slot) * slot_length_s,
                     slot, current)
            return slot
        if current >= 0 and step >= max(STEP_MIN_S, slot_length_s):
            log.info("the wall clock stepped forward about %.0f s (NTP, date -s): DTO-EE slots "
                     "go on from slot %d (was %d); the slots between are skipped",
                     step, max(slot, current), current)
        return slot if slot > current else current
