"""The stage-joint step of DTO-EE in the agent (``step = "joint"``): one part of ``DtoeePolicy``.

Once a round's requests and its live successors' statuses are in, an offloader sends the other
offloaders of its stage (its siblings: the workers of its stage, or the other sources, listed
as peers) a ``StageReport`` and holds its step until the round's report of every live sibling
is in (or the round stalls for ``round_interval_s``). Then each solves the same stage problem
(``joint.stage_problem`` and ``joint_routing`` on the same reports) and keeps its own routing,
answers its predecessors and sends its next requests as after the default step (the policy
does that with the ``OffloaderResult`` that ``release`` returns). A round thus costs one hop
forward and 2H back. A settled node answers a sibling's later report with its last one,
restamped. A report is refused (ValueError: the node counts it ``drop_bad_payload``) when
malformed, forged, past the phase, or routing to a node known to serve no next stage (``learn``):
taken in, such a name became a receiver of the stage problem. See ``agent.policies.dtoee.joint``
for the maths.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple

from agent.policies.api import NodeView, Outgoing
from agent.policies.dtoee import joint as J
from agent.policies.dtoee import protocol as D
from agent.policies.dtoee.payload import from_payload, to_payload
from agent.policies.dtoee.threshold_sync import ThresholdSync
from agent.protocol.wire import Kind

log = logging.getLogger(__name__)

# what a held step needs when it is taken: (phi_i, the routing it started from, own report, the
# share of the tasks its successors heard from carry, the routing of those not heard yet)
Held = Tuple[float, Dict[str, float], Any, float, Dict[str, float]]


class JointSync:
    """The stage's reports by round and this node's held step (all its own state)."""

    def __init__(self, params: Any):
        self.params = params  # DtoeeParams: the joint solve's knobs
        self.siblings: Tuple[str, ...] = ()  # the other offloaders of this stage (configure)
        self.reports: Dict[int, Dict[str, Any]] = {}  # round -> sender -> StageReport
        self.held: Optional[Held] = None  # the step waiting for the siblings' reports
        self.last_report: Optional[Any] = None  # own, echoed once settled
        self.warned_slot = -1  # slot of the last missing-report warning (one per slot)
        self.warned_slots = 0  # slots with a missing report: logged at the 1st, 10th, 100th...
        self.rounds = 0  # the phase's rounds (start): reports for later rounds are refused
        self.not_receivers: FrozenSet[str] = frozenset()  # ``learn``: refused as receivers

    def learn(self, view: NodeView) -> None:
        """Note the nodes this node knows serve no stage after its own (a sibling's report
        routing to one is refused): itself, its predecessors and the peers that do not serve
        the next stage (its siblings among them), never one of its successors. A node that is
        no peer of this one is unknown here and accepted: siblings need not share successors."""
        nxt = view.stage + 1
        known = {view.node_id} | set(view.predecessors) | set(self.siblings) | {
            p for p, (first, last) in view.peer_stages.items() if not 0 < first <= nxt <= last}
        self.not_receivers = frozenset(known - set(view.successors))

    def start(self, rounds: int) -> None:
        """A new phase of ``rounds`` rounds: no reports, nothing held."""
        self.reports, self.held, self.rounds = {}, None, rounds

    def report(self, view: NodeView, rnd: int, rate: float, remaining: float, quiet: int,
               rates: Mapping[str, float], statuses: Mapping[str, D.Status],
               before: Dict[str, float], unheard: Sequence[str], slot: int
               ) -> Tuple[List[Outgoing], bool]:
        """Round ``rnd``'s report to the live siblings, and whether the step is now held for
        theirs (False: every successor is gone, no routing until one returns; the siblings
        still get the report, so they do not wait for it). ``unheard`` keep their share of the
        routing (``Neighbours.unheard``): only the rest is in the report and moves."""
        self.learn(view)
        live = [s for s in before if s in statuses]
        kept = [s for s in unheard if s in before]
        p, share, held = D.split_heard(before, live, kept) if live else ((), 1.0, {})
        st = {s: statuses[s] for s in live}
        rep = J.StageReport(
            view.node_id, rnd, rate * remaining * share, {s: float(x) for s, x in zip(live, p)},
            {s: float(rates[s]) for s in live},
            {s: x.load_flops_s for s, x in st.items()},
            {s: x.capacity_flops_s for s, x in st.items()},
            {s: x.omega_s for s, x in st.items()}, {s: x.curvature_s2 for s, x in st.items()},
            {s: x.damping for s, x in st.items()},
            {s: float(x.predecessors) for s, x in st.items()}, quiet)
        out = self._out(rep, [s for s in self.siblings if s in view.alive], slot)
        self.last_report = rep
        if not live:
            return out, False
        self.reports.setdefault(rnd, {})[view.node_id] = rep
        self.held = (rate, before, rep, share, held)
        return out, True

    def warn_missing(self, slot: int, stage: int, receivers: Sequence[str]) -> None:
        """Say that ``receivers`` have predecessors whose stage reports did not come: once a
        slot, and then only at the 1st, 10th, 100th... slot with one (a sibling missing from
        the peers would otherwise log a line a slot for good: 17,000 a day at 5 s slots)."""
        if self.warned_slot == slot:
            return
        self.warned_slot, self.warned_slots = slot, self.warned_slots + 1
        if str(self.warned_slots).strip("0") == "1":
            log.warning("joint step: receivers %s have predecessors that sent this node no stage "
                        "report (not listed as peers of stage %d, or late); their flows count "
                        "as fixed (slot %d with this: %d)", ", ".join(receivers), stage, slot,
                        self.warned_slots)

    def release(self, view: NodeView, rnd: int, th: ThresholdSync, req_rate: float, slot: int,
                force: bool = False
                ) -> Optional[Tuple[D.OffloaderResult, float, Dict[str, float]]]:
        """The held step, taken once every live sibling's report of round ``rnd`` is in
        (``force``: the round stalled; go on with the reports there are): (the step's result,
        phi_i, the routing it started from). None: nothing held, or still waiting. ``th`` is
        the ``ThresholdSync`` part (C, its version and I_h for the next requests);
        ``req_rate`` the rate the pending requests were built with."""
        if self.held is None:
            return None
        reports = self.reports.get(rnd, {})
        if not force and not all(s in reports for s in self.siblings if s in view.alive):
            return None
        rate, before, mine, share, kept = self.held
        self.held = None
        for r in [r for r in self.reports if r <= rnd]:
            del self.reports[r]
        h = view.stage
        flops, size, rem = view.stage_flops[h], view.stage_input_bytes[h], th.remaining(view, h)
        prob = J.stage_problem(list(reports.values()), flops, size, self.params,
                               own=view.node_id)
        if prob.background.any():
            self.warn_missing(slot, h, [j for j, b in zip(prob.receivers, prob.background)
                                        if b > 0])
        routing, loads = J.joint_routing(prob, self.params)
        new = routing[prob.offloaders.index(view.node_id)]
        delta, omega, psi = J.joint_row(mine, new, loads, rem, flops, size, self.params,
                                        (rate - req_rate) * share)
        full = dict({s: 0.0 for s in before}, **kept)
        full.update({s: x * share for s, x in new.items()})
        requests = D.make_requests(view.node_id, rnd + 1, {s: full[s] for s in [*new, *kept]},
                                   rate, rem, flops, th.th, th.version)
        return (D.OffloaderResult(full, omega, psi, delta, requests, {
            s: (new[s] - mine.routing[s]) * share for s in new}), rate, before)

    def on_report(self, sender: str, payload: Any, rnd: int,
                  view: Optional[NodeView] = None) -> Any:
        """A sibling's report, checked; kept for its round unless it is older than ``rnd``
        (this node's round: late). Raises ``ValueError`` for a malformed or forged one, one
        for a round past the phase (``start``), or one routing to a node known to serve no
        next stage: the sender, a sibling, or what ``learn`` noted (from ``view`` when given,
        else from this node's last report)."""
        if view is not None:
            self.learn(view)
        rep = J.check_report(from_payload(J.StageReport, payload))
        if rep.sender != sender:
            raise ValueError("stage report of %r sent by %r" % (rep.sender, sender))
        J.check_receivers(rep, self.not_receivers | set(self.siblings) | {sender})
        if rep.round >= self.rounds:
            # kept, such reports would pile up until the next slot: one entry per round sent
            raise ValueError("stage report of %r for round %d, the phase has %d"
                             % (sender, rep.round, self.rounds))
        if rep.round >= rnd:
            self.reports.setdefault(rep.round, {})[sender] = rep
        return rep

    def echo(self, rep: Any, answers: bool, slot: int) -> List[Outgoing]:
        """A settled node's answer to a sibling still in the phase (``answers``, from the
        ``Settle`` part): its last report, restamped with the sibling's round, so the sibling
        does not wait out the round."""
        mine = self.last_report
        if mine is None or not answers:  # two settled nodes send each other nothing
            return []
        return self._out(dataclasses.replace(mine, round=rep.round), [rep.sender], slot)

    @staticmethod
    def _out(rep: Any, dests: List[str], slot: int) -> List[Outgoing]:
        """``rep`` addressed to each of ``dests`` (siblings): a broadcast would wake every
        predecessor and successor too, each round."""
        payload = to_payload(rep)
        return [Outgoing(Kind.DTOEE_STAGE, s, {"payload": payload}, slot, rep.round)
                for s in dests]
