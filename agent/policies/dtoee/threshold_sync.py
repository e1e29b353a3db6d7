"""The threshold decision of DTO-EE in the agent (``DtoeePolicy``'s part of it).

In the round an exit stage adjusts its threshold, each worker of that stage holds its next
requests until every live sibling's ``ThresholdReport`` is in, decides C with eqs. 17-18
(``agent.policies.thresholds.choose_threshold``, the same reports everywhere, so the siblings
agree), and sends the requests with the new C and I_h. See ``agent.policies.dtoee.agent``.
"""

from __future__ import annotations

import logging
from typing import Dict, List

from agent.policies.api import NodeView, Outgoing
from agent.policies.dtoee import protocol as D
from agent.policies.dtoee.payload import to_payload
from agent.policies.thresholds import choose_threshold, threshold_report
from agent.protocol.wire import BROADCAST, Kind
from engines.exit_profile import exit_stats

log = logging.getLogger(__name__)


class ThresholdSyncMixin:
    """Held requests, the threshold decision and I_h under the thresholds; state lives on the
    policy (``held_round``, ``reports``, ``last_report``, ``th``, ``th_version``, ``pending``,
    ``work``, ``_remaining_cache``)."""

    def _remaining(self, view: NodeView, stage: int) -> float:
        """I_h of ``stage`` under the configured thresholds (1 for a source or without profile)."""
        if stage < 1 or view.exit_profile is None:
            return 1.0
        # exit_stats sweeps the whole profile and every round asks: cache it per thresholds
        key = (stage, tuple(sorted(self.th.items())))
        got = self._remaining_cache.get(key)
        if got is None:
            st = exit_stats(view.exit_profile, self.th)
            if len(self._remaining_cache) > 64:
                self._remaining_cache.clear()
            got = self._remaining_cache[key] = float(st.remaining[stage - 1])
        return got

    def _report(self, view: NodeView, rnd: int, rate: float, before: Dict[str, float],
                marginals_s: Dict[str, float]) -> List[Outgoing]:
        """Broadcast this worker's report for round ``rnd``'s threshold decision (g_i over the
        routing the step started from, as Alg. 3 evaluates it) and hold the next requests
        until the decision; sent at once when every sibling's report is already in."""
        rep = threshold_report(view.node_id, rnd, view.stage, rate, before, marginals_s)
        self.reports.setdefault(rnd, {})[view.node_id] = rep
        self.last_report = rep
        self.held_round = rnd
        return [Outgoing(Kind.THRESHOLD, BROADCAST, {"payload": to_payload(rep)}, self.slot,
                         rnd)] + self._release(view)

    def _release(self, view: NodeView, force: bool = False) -> List[Outgoing]:
        """Send the next round's requests held for this round's threshold decision, once every
        live sibling's report is in (or the round stalled): a new C changes this stage's I_h,
        which the requests carry from the next round on, as in ``run_dtoee``."""
        rnd = self.held_round
        if rnd is None or not (self._maybe_choose(rnd, view) or force):
            return []
        self.held_round = None
        if self.pending and next(iter(self.pending.values())).thresholds_version != self.th_version:
            h = view.stage
            self.pending = D.make_requests(view.node_id, rnd + 1, {s: self.work[s] for s in
                                                                   self.pending},
                                           self.req_rate, self._remaining(view, h),
                                           view.stage_flops[h], self.th, self.th_version)
        return self._send_requests(view) if rnd + 1 < self.rounds else []

    def _maybe_choose(self, rnd: int, view: NodeView) -> bool:
        """Eqs. 17-18 on round ``rnd``'s reports once this node's and every live sibling's are
        in; True when it decided (whether or not C changed)."""
        reps = self.reports.get(rnd, {})
        live = [s for s in self.siblings if s in view.alive]
        if view.node_id not in reps or not all(s in reps for s in live):
            return False
        h = view.stage
        st = exit_stats(view.exit_profile, self.th)
        reach = 1.0
        for k in range(1, h):
            reach *= float(st.remaining[k - 1])
        total = sum(r.arrival_rate_tasks_s for r in reps.values()) / max(reach, 1e-9)
        if total <= 0:
            del self.reports[rnd]
            return True
        new = choose_threshold(h, self.th, list(reps.values()),
                               total, view.exit_profile, view.tradeoff, self.params.threshold_step)
        if any(abs(new[k] - v) > 1e-12 for k, v in self.th.items()):
            self.th = {k: float(v) for k, v in new.items()}
            self.th_version += 1
            log.info("threshold of stage %d -> %.3f (version %d)", h, new[h], self.th_version)
        del self.reports[rnd]
        return True
