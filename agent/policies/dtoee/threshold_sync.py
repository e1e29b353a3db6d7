"""The threshold decision of DTO-EE in the agent: one part of ``DtoeePolicy``.

In the round an exit stage adjusts its threshold, each worker of that stage holds its next
requests until every live sibling's ``ThresholdReport`` is in, decides C with eqs. 17-18
(``agent.policies.thresholds.choose_threshold``, the same reports everywhere, so the siblings
agree), and sends the requests with the new C and I_h. This part owns the thresholds under
negotiation, the reports and the held round; the policy asks ``release`` when it may send the
held requests. See ``agent.policies.dtoee.agent``.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Mapping, Optional, Tuple

from agent.policies.api import NodeView, Outgoing
from agent.policies.dtoee import protocol as D
from agent.policies.dtoee.payload import from_payload, to_payload
from agent.policies.thresholds import (
    ThresholdReport,
    choose_threshold,
    threshold_report,
    thresholds_from_wire,
    thresholds_to_wire,
)
from agent.protocol.wire import BROADCAST, Kind
from engines.exit_profile import exit_stats

log = logging.getLogger(__name__)


class ThresholdSync:
    """C as this node knows it (``th``, ``version``), the siblings' reports and the held round."""

    def __init__(self, thresholds: Mapping[int, float], threshold_step: float):
        self.th: Dict[int, float] = {h: float(c) for h, c in thresholds.items()}
        self.version = 0  # raised at each decision that changes C; the newest wins (merge)
        self.step = threshold_step  # the knob eq. 18 moves C by
        self.siblings: Tuple[str, ...] = ()  # the other workers of this stage (configure)
        self.reports: Dict[int, Dict[str, ThresholdReport]] = {}  # round -> sender -> report
        self.held_round: Optional[int] = None  # round whose decision holds the next requests
        self.last_report: Optional[ThresholdReport] = None  # own, echoed once settled
        self.rounds = 0  # the phase's rounds (start): reports for later rounds are refused
        self.reported_c: Dict[int, Optional[float]] = {}  # round -> own stage's C when reported
        self._remaining_cache: Dict[Any, float] = {}  # (stage, thresholds) -> I_h

    def start(self, rounds: int) -> None:
        """A new phase of ``rounds`` rounds: no reports, nothing held."""
        self.reports, self.held_round, self.last_report = {}, None, None
        self.rounds, self.reported_c = rounds, {}

    def snapshot(self) -> Dict[str, Any]:
        """C and its version for the node's saved state."""
        return {"dtoee_thresholds": thresholds_to_wire(self.th),
                "thresholds_version": self.version}

    def restore(self, state: Mapping[str, Any]) -> None:
        """C and its version from saved state, when they fit these stages (else the
        configured C stays): a restart's first phase goes on from them."""
        raw, version = state.get("dtoee_thresholds"), state.get("thresholds_version")
        th = thresholds_from_wire(raw)
        if (isinstance(raw, Mapping) and len(raw) == len(th) and set(th) == set(self.th)
                and isinstance(version, int) and not isinstance(version, bool)
                and 0 <= version < D.ADOPTED_VERSION_MAX):
            self.th, self.version = th, version

    def merge(self, msg: Any) -> None:
        """Take the thresholds a request or status carries when they are newer; ValueError
        (nothing taken) when its map has other stages than ours."""
        self.th, self.version = D.merge_thresholds(self.th, self.version, [msg])

    def remaining(self, view: NodeView, stage: int) -> float:
        """I_h of ``stage`` under the current thresholds (1 for a source or without profile)."""
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

    def report(self, view: NodeView, rnd: int, rate: float, before: Dict[str, float],
               marginals_s: Dict[str, float], slot: int) -> List[Outgoing]:
        """This worker's report for round ``rnd``'s decision (g_i over the routing the step
        started from, as Alg. 3 evaluates it), to broadcast; the round's requests are held
        from now until ``release``."""
        rep = threshold_report(view.node_id, rnd, view.stage, rate, before, marginals_s)
        self.reports.setdefault(rnd, {})[view.node_id] = rep
        self.reported_c[rnd] = self.th.get(view.stage)
        self.last_report = rep
        self.held_round = rnd
        return [Outgoing(Kind.THRESHOLD, BROADCAST, {"payload": to_payload(rep)}, slot, rnd)]

    def release(self, view: NodeView, force: bool = False) -> Optional[int]:
        """The held round, once its decision is made (every live sibling's report in) or
        ``force`` (the round stalled): the requests it held may go now. None: still held, or
        nothing is."""
        rnd = self.held_round
        if rnd is None or not (self.decide(rnd, view) or force):
            return None
        self.held_round = None
        return rnd

    def under_c(self, view: NodeView, rnd: int, pending: Dict[str, D.Request],
                work: Mapping[str, float], rate: float) -> Dict[str, D.Request]:
        """``pending`` (this node's requests for round ``rnd``, built from its routing ``work``
        and arrival rate ``rate``, tasks/s) as they go out under the current C: rebuilt when a
        decision changed C since, for the new C changes this stage's I_h, which the requests
        carry (as in ``run_dtoee``)."""
        if not pending or next(iter(pending.values())).thresholds_version == self.version:
            return pending
        h = view.stage
        return D.make_requests(view.node_id, rnd, {s: work[s] for s in pending}, rate,
                               self.remaining(view, h), view.stage_flops[h], self.th,
                               self.version)

    @staticmethod
    def checked(sender: str, stage: int, payload: Any) -> ThresholdReport:
        """The ``ThresholdReport`` in ``payload``; ValueError unless it is ``sender``'s own (a
        sibling cannot report for another) and for this node's ``stage``, as every sibling's is
        (a report for another stage would enter this stage's decision)."""
        rep = from_payload(ThresholdReport, payload)
        if rep.sender != sender or rep.stage != stage:
            raise ValueError("threshold report of %r for stage %d sent by %r of stage %d"
                             % (rep.sender, rep.stage, sender, stage))
        return rep

    def on_report(self, rep: ThresholdReport, settled: bool, slot: int, rnd: int
                  ) -> List[Outgoing]:
        """A sibling's report, kept for its round if this node may still decide it (the round
        it holds, ``rnd - 1``, or later; ``rnd`` is the node's round); a settled node answers
        with its own. ValueError for a round past the phase or a negative rate."""
        if rep.round >= self.rounds:
            # kept, such reports would pile up until the next slot: one entry per round sent
            raise ValueError("threshold report of %r for round %d, the phase has %d"
                             % (rep.sender, rep.round, self.rounds))
        if not rep.arrival_rate_tasks_s >= 0:
            raise ValueError("threshold report of %r: arrival rate %r < 0"
                             % (rep.sender, rep.arrival_rate_tasks_s))
        # rnd - 1: the node has stepped past the round it holds; older rounds only while this
        # node's own report waits there (a forced release), so a late report still decides it
        if rep.round >= rnd - 1 or rep.round in self.reports:
            self.reports.setdefault(rep.round, {})[rep.sender] = rep
        mine = self.last_report
        if not settled or mine is None or rep.round <= mine.round:
            return []
        # restamped with the sibling's round, so the sibling does not wait for it
        self.last_report = mine = ThresholdReport(mine.sender, rep.round, mine.stage,
                                                  mine.arrival_rate_tasks_s, mine.marginal_s)
        return [Outgoing(Kind.THRESHOLD, BROADCAST, {"payload": to_payload(mine)}, slot,
                         rep.round)]

    def decide(self, rnd: int, view: NodeView) -> bool:
        """Eqs. 17-18 on round ``rnd``'s reports once this node's and every live sibling's are
        in; True when it decided (whether or not C changed)."""
        reps = self.reports.get(rnd, {})
        live = [s for s in self.siblings if s in view.alive]
        if view.node_id not in reps or not all(s in reps for s in live):
            return False
        h = view.stage
        if self.reported_c.pop(rnd, self.th.get(h)) != self.th.get(h):
            # this stage's C moved since these reports (the siblings' decision of this round,
            # or a later one, came in a merge while a report was late): deciding again would
            # apply the round's step twice, on this node only
            del self.reports[rnd]
            return True
        st = exit_stats(view.exit_profile, self.th)
        reach = 1.0
        for k in range(1, h):
            reach *= float(st.remaining[k - 1])
        total = sum(r.arrival_rate_tasks_s for r in reps.values()) / max(reach, 1e-9)
        if total <= 0:
            del self.reports[rnd]
            return True
        new = choose_threshold(h, self.th, list(reps.values()),
                               total, view.exit_profile, view.tradeoff, self.step)
        if any(abs(new[k] - v) > 1e-12 for k, v in self.th.items()):
            self.th = {k: float(v) for k, v in new.items()}
            self.version += 1  # far below D.MAX_THRESHOLDS_VERSION (D.ADOPTED_VERSION_MAX)
            # DEBUG: it changes every few slots; the status line shows the one in force
            log.debug("threshold of stage %d -> %.3f (version %d)", h, new[h], self.version)
        del self.reports[rnd]
        return True
