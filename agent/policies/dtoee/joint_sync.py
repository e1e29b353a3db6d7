"""The stage-joint step of DTO-EE in the agent (``step = "joint"``; ``DtoeePolicy``'s part).

Once a round's requests and its live successors' statuses are in, an offloader sends the other
offloaders of its stage (its siblings: the workers of its stage, or the other sources, listed
as peers) a ``StageReport`` and holds its step until the round's report of every live sibling
is in (or the round stalls for ``round_interval_s``). Then each solves the same stage problem
(``joint.stage_problem`` and ``joint_routing`` on the same reports) and keeps its own routing,
answers its predecessors and sends its next requests as after the default step. A round thus
costs one hop forward and 2H back. A settled node answers a sibling's later report with its
last one, restamped. See ``agent.policies.dtoee.joint`` for the maths.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Dict, List, Mapping

from agent.policies.api import NodeView, Outgoing
from agent.policies.dtoee import joint as J
from agent.policies.dtoee import protocol as D
from agent.policies.dtoee.payload import from_payload, to_payload
from agent.protocol.wire import Kind

log = logging.getLogger(__name__)


class JointSyncMixin:
    """Stage reports and the held joint step; state lives on the policy (``stage_reports``,
    ``joint_held``, ``last_stage_report``, ``background_slot``, ``round``, ``req_rate``,
    ``siblings``)."""

    def _joint_report(self, view: NodeView, now: float, rate: float,
                      rates: Mapping[str, float], statuses: Mapping[str, D.Status],
                      before: Dict[str, float]) -> List[Outgoing]:
        """Send this round's report to the siblings and hold the step for theirs."""
        live = [s for s in before if s in statuses]
        total = sum(max(0.0, before[s]) for s in live)
        st = {s: statuses[s] for s in live}
        rep = J.StageReport(
            view.node_id, self.round, rate * self._remaining(view, view.stage),
            {s: max(0.0, before[s]) / total if total > 0 else 1.0 / len(live) for s in live},
            {s: float(rates[s]) for s in live},
            {s: x.load_flops_s for s, x in st.items()},
            {s: x.capacity_flops_s for s, x in st.items()},
            {s: x.omega_s for s, x in st.items()}, {s: x.curvature_s2 for s, x in st.items()},
            {s: x.damping for s, x in st.items()},
            {s: float(x.predecessors) for s, x in st.items()}, self.quiet)
        out = self._stage_out(rep, [s for s in self.siblings if s in view.alive])
        self.last_stage_report = rep
        if not live:  # every successor gone: no routing until one returns (the siblings
            # still get the report, so they do not wait for it)
            return self._answer(view, now, self._apply(view, D.OffloaderResult(
                {}, 0.0, 0.0, {}, {}), rate, before)) + out
        self.stage_reports.setdefault(self.round, {})[view.node_id] = rep
        self.joint_held = (rate, before, rep)
        # the siblings get here on the same wave: give their reports round_interval_s from now,
        # not from this node's last round (a whole round earlier)
        self.progress_at = now
        return out + self._joint_release(view, now)

    def _joint_release(self, view: NodeView, now: float, force: bool = False
                       ) -> List[Outgoing]:
        """Take the held step once every live sibling's report of the round is in (``force``:
        the round stalled; go on with the reports there are)."""
        if self.joint_held is None:
            return []
        rnd, reports = self.round, self.stage_reports.get(self.round, {})
        if not force and not all(s in reports for s in self.siblings if s in view.alive):
            return []
        rate, before, mine = self.joint_held
        self.joint_held = None
        for r in [r for r in self.stage_reports if r <= rnd]:
            del self.stage_reports[r]
        h = view.stage
        flops, size, rem = view.stage_flops[h], view.stage_input_bytes[h], self._remaining(view, h)
        prob = J.stage_problem(list(reports.values()), flops, size, self.params)
        if prob.background.any() and self.background_slot != self.slot:
            self.background_slot = self.slot  # once per slot: a missing peer, or a dead one
            log.warning("joint step: receivers %s have predecessors that sent this node no "
                        "stage report (not listed as peers of stage %d, or late); their flows "
                        "count as fixed", ", ".join(j for j, b in zip(prob.receivers,
                                                                     prob.background) if b > 0),
                        h)
        routing, loads = J.joint_routing(prob, self.params)
        new = routing[prob.offloaders.index(view.node_id)]
        delta, omega, psi = J.joint_row(mine, new, loads, rem, flops, size, self.params,
                                        rate - self.req_rate)
        full = {s: 0.0 for s in before}
        full.update(new)
        requests = D.make_requests(view.node_id, rnd + 1, new, rate, rem, flops, self.th,
                                   self.th_version)
        res = D.OffloaderResult(full, omega, psi, delta, requests,
                                {s: new[s] - mine.routing[s] for s in new})
        return self._answer(view, now, self._apply(view, res, rate, before))

    def _on_stage_report(self, sender: str, payload: Any, view: NodeView, now: float
                         ) -> List[Outgoing]:
        """A sibling's report: kept for its round (a late one is dropped); it may complete the
        held step, and a settled node answers it with its own last report."""
        rep = J.check_report(from_payload(J.StageReport, payload))
        if rep.sender != sender:
            raise ValueError("stage report of %r sent by %r" % (rep.sender, sender))
        if rep.round >= self.round:
            self.stage_reports.setdefault(rep.round, {})[sender] = rep
        out = self._echo_stage(rep)
        if self.joint_held is not None and rep.round == self.round:
            out += self._joint_release(view, now)
        return out

    def _echo_stage(self, rep: Any) -> List[Outgoing]:
        """A settled node's answer to a sibling still in the phase: its last report, restamped
        with the sibling's round, so the sibling does not wait out the round."""
        mine = self.last_stage_report
        if mine is None or not self._answers(rep):  # two settled nodes send each other nothing
            return []
        return self._stage_out(dataclasses.replace(mine, round=rep.round), [rep.sender])

    def _stage_out(self, rep: Any, dests: List[str]) -> List[Outgoing]:
        """``rep`` addressed to each of ``dests`` (siblings): a broadcast would wake every
        predecessor and successor too, each round."""
        payload = to_payload(rep)
        return [Outgoing(Kind.DTOEE_STAGE, s, {"payload": payload}, self.slot, rep.round)
                for s in dests]
