"""The early end of DTO-EE's configuration phase in the agent (``DtoeePolicy``'s part of it).

Each node keeps a quiet streak (``protocol.quiet_streak``) and sends it in every request and
status. Its phase ends once the streak reaches ``settle`` (the ``settle_rounds`` knob, raised to
one threshold cycle). A node that has ended (``settled``) still answers a neighbour whose
message shows a shorter streak, from its final state, so that neighbour never waits out
``round_interval_s``: its last status restamped with the request's round, its last requests
with the round after the status's, its last threshold report with the sibling's round. Two
settled nodes send each other nothing, so the exchange dies out.
"""

from __future__ import annotations

import logging
from typing import Any, List

from agent.policies.api import NodeView, Outgoing
from agent.policies.dtoee import protocol as D
from agent.policies.dtoee.payload import to_payload
from agent.policies.thresholds import ThresholdReport
from agent.protocol.wire import BROADCAST, Kind

log = logging.getLogger(__name__)


class SettleMixin:
    """Quiet streak, early end and answers of a settled node; state lives on the policy
    (``quiet``, ``settled``, ``settle``, ``last_report``, ``_quiet_version``)."""

    def _answers(self, msg: Any, ahead: int = 0) -> bool:
        """A settled node answers a neighbour still in the phase (shorter streak), for rounds
        the phase has (``msg.round + ahead`` below ``rounds``)."""
        return (self.settled and msg.quiet < self.settle
                and msg.round + ahead < self.rounds)

    def _note_quiet(self, view: NodeView, moved: float) -> None:
        """Update the quiet streak after this round's step (``moved``: the larger of the
        relative changes ``protocol.omega_shift`` and ``protocol.load_shift``)."""
        heard = []
        if self.receiver:
            heard += [self.last_request[p].quiet
                      if self.request_round.get(p, -1) >= self.round else 0
                      for p in view.predecessors if p in view.alive]
        if self.offloader:
            heard += [self.last_status[s].quiet
                      if self.status_round.get(s, -1) >= self.round else 0
                      for s in view.successors if s in view.alive]
        changed = self.th_version != self._quiet_version
        self._quiet_version = self.th_version
        self.quiet = D.quiet_streak(self.quiet, moved, self.params.settle_tolerance, changed,
                                    heard)

    def _settle_if_quiet(self) -> None:
        """End the phase once the streak is long enough (after a round of this node)."""
        if self.settle and self.quiet >= self.settle and not self.settled:
            log.debug("configuration phase of slot %d settled after %d rounds", self.slot,
                      self.round)
            self._finish_phase()
            self.settled = True

    def _echo_report(self, rnd: int) -> List[Outgoing]:
        """A settled node's answer to a sibling's threshold report of round ``rnd``: its own
        last report, restamped, so the sibling does not wait for it."""
        mine = self.last_report
        if not self.settled or mine is None or rnd <= mine.round:
            return []
        self.last_report = mine = ThresholdReport(mine.sender, rnd, mine.stage,
                                                  mine.arrival_rate_tasks_s, mine.marginal_s)
        return [Outgoing(Kind.THRESHOLD, BROADCAST, {"payload": to_payload(mine)}, self.slot,
                         rnd)]
