"""The early end of DTO-EE's configuration phase in the agent: one part of ``DtoeePolicy``.

Each node keeps a quiet streak (``protocol.quiet_streak``) and sends it in every request and
status. Its phase ends once the streak reaches ``needed`` (the ``settle_rounds`` knob, raised to
one threshold cycle). A node that has ended (``settled``) still answers a neighbour whose
message shows a shorter streak, from its final state, so that neighbour never waits out
``round_interval_s``: its last status restamped with the request's round, its last requests
with the round after the status's, its last threshold or stage report with the sibling's
round (the policy and the other parts send those; ``answers`` says when). Two settled nodes
send each other nothing, so the exchange dies out.

``ended`` counts how each phase ended (``ends``, saved with the policy's state): settled early,
after all its rounds, or cut short (its time or the next slot came first: a neighbour late or
gone), the last logged at INFO the 1st, 10th, 100th... time (a cut-short first phase after
start, with neighbours still starting, is counted but not logged at INFO); every other end of a
phase that did not settle leaves one DEBUG line, so each slot's outcome is in a DEBUG log.
"""

from __future__ import annotations

import logging
from typing import List

from agent.policies.dtoee import protocol as D

log = logging.getLogger("agent.policies.dtoee.agent")  # one of the policy's parts


class Settle:
    """One node's quiet streak and whether its phase has ended early (all its own state)."""

    def __init__(self, tolerance: float):
        self.tolerance = tolerance  # relative change that breaks the streak (settle_tolerance)
        self.needed = 0  # streak that ends a phase (0: every phase runs all its rounds)
        self.quiet = 0  # the streak after this node's last round
        self.settled = False  # this phase ended early: answering late neighbours only
        self._version = 0  # thresholds version at the last update (a change breaks the streak)
        self.ends = {"settled": 0, "all_rounds": 0, "cut_short": 0}  # how phases ended
        self._unlogged = 0  # 1 when the first phase after start was cut short (not logged)

    def configure(self, settle_rounds: int, threshold_cycle: int) -> None:
        """``settle_rounds`` 0 turns the early end off; else a quiet window must hold a
        threshold decision of every exit stage (``threshold_cycle`` rounds)."""
        self.needed = max(settle_rounds, threshold_cycle) if settle_rounds > 0 else 0

    def start(self, thresholds_version: int) -> None:
        """A new phase: no streak, not settled."""
        self.quiet, self.settled, self._version = 0, False, thresholds_version

    def answers(self, their_quiet: int, their_round: int, rounds: int) -> bool:
        """A settled node answers a neighbour still in the phase (a shorter streak), for a
        round the phase has."""
        return self.settled and their_quiet < self.needed and their_round < rounds

    def update(self, moved: float, thresholds_version: int, heard: List[int]) -> None:
        """The streak after this round's step (``moved``: the larger of the relative changes
        ``protocol.omega_shift`` and ``protocol.load_shift``; ``heard``: the neighbours'
        streaks, 0 for one not heard from this round)."""
        changed = thresholds_version != self._version
        self._version = thresholds_version
        self.quiet = D.quiet_streak(self.quiet, moved, self.tolerance, changed, heard)

    def ends_now(self) -> bool:
        """True once, when the streak first reaches ``needed`` (the node then settles)."""
        if self.needed and self.quiet >= self.needed and not self.settled:
            self.settled = True
            return True
        return False

    def ended(self, slot: int, rnd: int, rounds: int) -> str:
        """Count how the phase of ``slot`` ended after ``rnd`` of ``rounds`` rounds; its kind."""
        kind = "settled" if self.settled else "all_rounds" if rnd >= rounds else "cut_short"
        self.ends[kind] += 1
        n = self.ends[kind]
        if kind == "cut_short" and sum(self.ends.values()) == 1:
            self._unlogged = 1  # the first phase after start: its neighbours may be starting
        elif kind == "cut_short" and str(n - self._unlogged).strip("0") == "1":  # 1, 10, ...
            log.info("configuration phase of slot %d ended after %d of %d rounds (a neighbour "
                     "late or gone; %d phase(s) cut short so far)", slot, rnd, rounds, n)
            return kind
        if kind != "settled":  # a settled phase has its DEBUG line where it settles
            log.debug("configuration phase of slot %d ended (%s) after %d of %d rounds", slot,
                      kind, rnd, rounds)
        return kind
