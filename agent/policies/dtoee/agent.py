"""DTO-EE inside the agent: slots and the configuration phase's rounds.

All equations are ``agent.policies.dtoee`` / ``agent.policies.thresholds`` (see the protocol in
that module's docstring); this adapter only moves their messages and keeps the state between
calls, in parts it holds, each owning its state: ``Neighbours`` (what was heard, by round),
``ThresholdSync`` (C and its decision), ``Settle`` (early end), ``JointSync`` (joint step).

Slots are aligned to the wall clock (slot n starts at n * slot_length_s), so nodes with clocks
within a slot of each other start together without a coordinator (a message more than a slot off
is refused, ``protocol.slot_skew``); a node hearing of a newer slot joins it; a stepped wall
clock is followed as ``slotclock`` says. A slot's configuration phase lasts ``rounds_per_slot``
rounds, ``rounds_per_slot * round_interval_s`` after the slot starts at the latest. Rounds are
message-driven: a node takes round t's step once it has the round-t requests of all live
predecessors and the round-t statuses of all live successors: it sums the requests (phi_i),
steps as an offloader (new routing, the round-(t+1) requests; under ``step = "joint"`` once its
stage's reports are in, ``JointSync``), then answers with its status, which carries the Omega of
that step. Between rounds it keeps what the per-node functions carry: its previous status, the
rate its last requests were built with and its last step's change. Round 0's requests use the
node's current arrival rate. In the round an exit stage adjusts its threshold (every m rounds,
from ``first_threshold_round``), that stage's workers hold their next requests until every
sibling's report is in, so the new C and I_h travel in them. When a round stalls for
``round_interval_s`` (a lost message, a dead neighbour) the node goes on with what it has; an
alive successor whose status is late counts with its last status (an alive predecessor's late
request likewise), and one not heard from yet keeps its share of the routing, so only a
neighbour that is gone (silent on the control plane) loses its routing mass or its share of a
receiver's load. A request for a round already answered gets the newest status again; a
final-stage worker behind the round its predecessors are in (one restarted mid-phase) joins that
round (``Neighbours.joined_round``). Serving never pauses: tasks use the *active* routing and
thresholds, replaced by the configured ones when the phase ends.

The phase ends early once converged (``settle_rounds``, ``protocol.quiet_streak``, ``Settle``);
a node that has ended answers a neighbour still in the phase, so none waits out a round.

Threshold tuning needs an exit stage's workers (the joint step: the sources too) listed as
each other's peers. Phi for eq. 17: the stage's reported arrival rates summed, over the share
of tasks that reaches the stage.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Mapping, Optional

from agent.protocol.wire import Kind, Message
from agent.policies.api import AgentPolicy, NodeView, Outgoing
from agent.policies.dtoee import protocol as D
from agent.policies.dtoee.joint_sync import JointSync
from agent.policies.dtoee.knobs import parse_agent_knobs
from agent.policies.dtoee.neighbours import Neighbours, requests_out, status_out
from agent.policies.dtoee.settle import Settle
from agent.policies.dtoee.slotclock import SlotClock
from agent.policies.dtoee.threshold_sync import ThresholdSync
from agent.policies.thresholds import threshold_stage

log = logging.getLogger(__name__)

UNKNOWN_LINK_RATE = 1e12  # bytes/s assumed for a link without an estimate (transfer ~ free)
IDLE_TICK_MAX_S = 1.0  # longest sleep between phases (how late a stepped wall clock is seen)


class DtoeePolicy(AgentPolicy):
    """The ``dtoee`` policy of one node (offloader, receiver or both): slots and rounds here;
    what was heard, C, the early end and the joint step in the parts it holds (module doc)."""

    name, tunes_thresholds = "dtoee", True  # its thresholds: Alg. 3's, restored at a restart

    def __init__(self, thresholds, knobs, seed=0):
        super().__init__(thresholds, knobs, seed)
        self.params = parse_agent_knobs(self.knobs)
        self.tsync = ThresholdSync(thresholds, self.params.threshold_step)
        self.settling = Settle(self.params.settle_tolerance)
        self.joint = JointSync(self.params)
        self.neighbours = Neighbours()
        self.active: Dict[str, float] = {}
        self.work: Dict[str, float] = {}
        self.slot, self.configuring, self.phase_end = -1, False, 0.0  # no phase before a tick
        self.slot_clock = SlotClock()  # the slot each tick runs in, through clock steps
        self.round = 0  # the round this node steps / answers next in this phase
        self.phi: Optional[float] = None  # own arrival rate from the last requests summed
        self.pending: Dict[str, D.Request] = {}  # this round's requests (resent on a stall)
        self.req_rate = 0.0  # arrival rate the pending requests were built with
        self.own_status: Optional[D.Status] = None  # own previous status in this phase
        self.prev_change: Optional[Dict[str, float]] = None  # last step's change, this phase
        self.last_step: Optional[D.OffloaderResult] = None
        self.progress_at = 0.0
        self._shift = 0.0  # this round's relative load change (a receiver), for the streak
        self._reqs: List[D.Request] = []  # the requests this round summed (its status says)

    def configure(self, cfg, view: NodeView) -> None:
        self.slot_length_s = cfg.slot_length_s
        self.rounds = cfg.rounds_per_slot
        self.round_interval_s = cfg.round_interval_s
        self.tick_interval_s = cfg.round_interval_s / 2
        self.siblings = tuple(p.id for p in cfg.peers if p.stage == cfg.stage and (
            cfg.stage > 0 or self.params.step == "joint"))  # sources: for the joint step only
        self.tsync.siblings = self.joint.siblings = self.siblings
        self.offloader = cfg.stage < view.num_stages
        self.receiver = cfg.stage >= 1
        self.settling.configure(self.params.settle_rounds,
                                self.params.m * len(view.exit_stages) + 1)
        first = self.params.first_threshold_round
        if view.exit_stages and view.exit_profile is not None and self.rounds <= first:
            log.warning("thresholds stay fixed: rounds_per_slot = %d ends each phase before "
                        "round %d, the first threshold step", self.rounds, first)
        if view.successors:
            self.active = {s: 1.0 / len(view.successors) for s in view.successors}

    # -- what the node asks ------------------------------------------------------------------

    def weights(self, view: NodeView) -> Dict[str, float]:
        return self.active or super().weights(view)

    def routing(self) -> Dict[str, float]:
        return dict(self.active)

    def snapshot(self) -> Dict[str, Any]:
        out = super().snapshot()
        out.update(self.tsync.snapshot(), routing=dict(self.active), dtoee_phases=dict(
            self.settling.ends))
        return out

    def restore(self, state: Mapping[str, Any]) -> None:
        super().restore(state)
        r = state.get("routing")
        if isinstance(r, Mapping) and set(r) == set(self.active) and all(
                isinstance(v, float) and v >= 0 for v in r.values()) and sum(r.values()) > 0:
            self.active = dict(r)
        self.tsync.restore(state)

    # -- helpers -----------------------------------------------------------------------------

    def _rate(self, view: NodeView) -> float:
        """phi_i: a source's rate in its view (configured, or estimated: as the phase began);
        a worker's rate summed from its last requests (before any: the measured one)."""
        if view.stage == 0:  # a source: its rate as the phase began (plan's: one per phase)
            return self.src_rate if self.configuring else view.arrival_rate_tasks_s
        return view.arrival_rate_tasks_s if self.phi is None else self.phi

    def _live_work(self, view: NodeView) -> Dict[str, float]:
        return {s: self.work.get(s, 0.0) for s in view.successors}

    def _send_requests(self, view: NodeView, dests: Optional[Any] = None,
                       round: Optional[int] = None) -> List[Outgoing]:
        """The pending requests to the live successors (``neighbours.requests_out``)."""
        return requests_out(self.pending, view.alive, self.settling.quiet, self.slot, dests,
                            round)

    def _status_out(self, dests, round: Optional[int] = None) -> List[Outgoing]:
        """Our newest status to ``dests`` (``neighbours.status_out``)."""
        return status_out(self.own_status, self.settling.quiet, self.slot, dests, round)

    # -- slot clock --------------------------------------------------------------------------

    def _start_slot(self, slot: int, view: NodeView, now: float) -> List[Outgoing]:
        self.slot = slot  # a client source's estimate may change mid-phase: held for the phase
        self.configuring, self.src_rate = True, view.arrival_rate_tasks_s
        self.phase_end = now + max(0.0, slot * self.slot_length_s
                                   + self.rounds * self.round_interval_s - self.wall())
        self.round = 0
        self.neighbours.start(self.rounds)
        self.own_status, self.prev_change = None, None
        self.tsync.start(self.rounds)
        self.joint.start(self.rounds)
        self.progress_at = now
        self.work = dict(self.active) if self.params.slot_start == "last" else {
            s: 1.0 / len(self.active) for s in self.active}
        self.settling.start(self.tsync.version)
        if not self.offloader:
            return []
        h = view.stage
        self.req_rate = self._rate(view)
        self.pending = D.make_requests(view.node_id, 0, self._live_work(view), self.req_rate,
                                       self.tsync.remaining(view, h), view.stage_flops[h],
                                       self.tsync.th, self.tsync.version)
        return self._send_requests(view)

    def _finish_phase(self) -> None:
        self.configuring = False
        self.settling.ended(self.slot, self.round, self.rounds)
        if self.work and sum(self.work.values()) > 0:
            self.active = dict(self.work)
        self._thresholds.update({h: c for h, c in self.tsync.th.items() if h in self._thresholds})

    def next_tick_s(self, now: float) -> float:
        """Half a round in a phase; between phases, until the next slot (or a message) starts."""
        if self.configuring:
            return self.tick_interval_s
        until = (self.slot + 1) * self.slot_length_s - self.wall()
        return min(IDLE_TICK_MAX_S, max(0.001, until))  # 1 ms: no spin on a rounded boundary

    def on_tick(self, view: NodeView, now: float) -> List[Outgoing]:
        slot = self.slot_clock.tick(self.slot, now, self.wall(), self.slot_length_s)
        if slot != self.slot:  # the clock's next slot, or a step forward or back (slotclock)
            if self.configuring:
                self._finish_phase()
            return self._start_slot(slot, view, now)
        if not self.configuring:
            return []
        if now >= self.phase_end:
            self._finish_phase()
            return []
        if now - self.progress_at < self.round_interval_s or not self._open():
            return []
        # The round stalled: go on with what arrived (late neighbours count with their last
        # message), or, when nothing came back at all, repeat our requests (maybe lost).
        self.progress_at = now
        if self.tsync.held_round is not None:  # a sibling's threshold report is late
            return self._release(view, force=True)
        if self.joint.held is not None:  # a sibling's stage report is late
            return self._joint_release(view, now, force=True)
        if self.offloader:
            if any(self.neighbours.has_status(s, self.round) for s in view.successors):
                return self._advance(view, now)
            return self._send_requests(view)
        self.round = self.neighbours.joined_round(view, self.round, False, stalled=True)
        if any(self.neighbours.has_request(p, self.round) for p in view.predecessors):
            return self._advance(view, now)
        return []

    # -- messages ----------------------------------------------------------------------------

    def on_control(self, msg: Message, view: NodeView, now: float) -> List[Outgoing]:
        if msg.kind not in (Kind.DTOEE_REQUEST, Kind.DTOEE_STATUS, Kind.THRESHOLD,
                            Kind.DTOEE_STAGE):
            return []
        out: List[Outgoing] = []
        # a slot ahead: a clock off or another slot_length_s (or junk); behind: stale (below)
        skew = D.slot_skew(msg.slot, int(self.wall() // self.slot_length_s), self.slot_length_s)
        if skew:
            raise ValueError(skew)
        if msg.slot > self.slot:
            if self.configuring:
                self._finish_phase()
            out += self._start_slot(msg.slot, view, now)
        elif msg.slot < self.slot:
            return out  # stale: from a slot already over
        payload = msg.fields["payload"]
        if msg.kind == Kind.DTOEE_REQUEST and self.receiver and msg.sender in view.predecessors:
            req = self.neighbours.checked(D.Request, payload)
            self.tsync.merge(req)
            self.neighbours.on_request(msg.sender, req)
            if self.own_status is not None and req.round <= self.own_status.round:
                # a repeated or late request: its sender needs our status (again)
                out += self._status_out((msg.sender,))
            elif self._answers(req):
                out += self._status_out((msg.sender,), round=req.round)
        elif msg.kind == Kind.DTOEE_STATUS and self.offloader and msg.sender in view.successors:
            st = self.neighbours.checked(D.Status, payload)
            self.tsync.merge(st)
            self.neighbours.on_status(msg.sender, st)
            sent = self.pending.get(msg.sender)
            if sent is not None and st.round + 1 > sent.round and self._answers(st, 1):
                out += self._send_requests(view, (msg.sender,), round=st.round + 1)
        elif msg.kind == Kind.THRESHOLD and msg.sender in self.siblings:
            rep = self.tsync.checked(msg.sender, view.stage, payload)
            out += self.tsync.on_report(rep, self.settling.settled, self.slot, self.round)
            if rep.round == self.tsync.held_round:
                return out + self._release(view)
            self.tsync.decide(rep.round, view)
            return out
        elif msg.kind == Kind.DTOEE_STAGE and msg.sender in self.siblings:
            return out + self._on_stage_report(msg.sender, payload, view, now)
        else:
            return out
        if self._open() and self.joint.held is None:
            self.round = self.neighbours.joined_round(view, self.round, self.offloader)
            if self.neighbours.ready(view, self.round, self.receiver, self.offloader):
                out += self._advance(view, now)
        return out

    # -- rounds ------------------------------------------------------------------------------

    def _open(self) -> bool:
        """True while this phase has a round left for this node."""
        return self.configuring and not (self.offloader and self.round >= self.rounds)

    def _advance(self, view: NodeView, now: float) -> List[Outgoing]:
        """One round of this node: sum the requests (phi_i), step as an offloader, then answer
        the predecessors with a status carrying the Omega of that step (``step = "joint"``: the
        step once the stage's reports are in, ``JointSync``)."""
        self._reqs = []
        if self.receiver:
            self._reqs = self.neighbours.requests(view, self.round)
            if self._reqs:
                self.phi = D.arrival_rate(self._reqs, view.stage_flops[view.stage - 1])
            self._shift = D.load_shift(self._reqs, self.own_status, view.capacity_flops)
        else:
            self._shift = 0.0
        if not self.offloader:
            self._note_quiet(view, self._shift)
            return self._answer(view, now, [])
        h, rnd, rate = view.stage, self.round, self._rate(view)
        rates = {s: (view.link_rate_bytes_s.get(s) or UNKNOWN_LINK_RATE) for s in view.successors}
        statuses = self.neighbours.statuses(view, rnd)
        unheard = self.neighbours.unheard(view, statuses)
        before = self._live_work(view)
        if self.params.step == "joint":
            return self._joint_report(view, now, rate, rates, statuses, before, unheard)
        th = self.tsync
        res = D.offloader_step(view.node_id, rnd, before, rate, th.remaining(view, h),
                               view.stage_flops[h], view.stage_input_bytes[h], rates, statuses,
                               self.params, th.th, th.version,
                               previous_arrival_rate_tasks_s=self.req_rate,
                               previous_change=self.prev_change,
                               unheard=unheard)
        return self._answer(view, now, self._apply(view, res, rate, before))

    def _apply(self, view: NodeView, res: D.OffloaderResult, rate: float,
               before: Dict[str, float]) -> List[Outgoing]:
        """Take this round's offloader step: routing, quiet streak, the next round's requests
        (held instead while this stage decides its threshold)."""
        h, rnd = view.stage, self.round
        if not res.routing:
            self.settling.quiet = 0
            return []
        first = self.prev_change is None  # the phase's first step: nothing to compare with
        shift = D.omega_shift(res, None if first else self.last_step)
        self.work, self.last_step, self.prev_change = res.routing, res, res.change
        self._note_quiet(view, max(shift, self._shift))
        self.pending, self.req_rate = res.requests, rate
        if view.exit_profile is not None and threshold_stage(
                rnd, self.params.m, view.exit_stages, self.params.first_threshold_round) == h:
            return (self.tsync.report(view, rnd, rate, before, res.marginals_s, self.slot)
                    + self._release(view))
        return self._send_requests(view) if rnd + 1 < self.rounds else []

    def _answer(self, view: NodeView, now: float, out: List[Outgoing]) -> List[Outgoing]:
        """End this node's round: its status to the predecessors (ahead of ``out``, the step's
        messages), then the next round."""
        if self.receiver:
            self.own_status = D.receiver_status(
                view.node_id, self.round, view.capacity_flops, self._reqs,
                self.last_step if self.offloader else None, self.tsync.th, self.tsync.version,
                previous=self.own_status, joint=self.params.step == "joint")
            out = self._status_out(view.predecessors) + out
        self.round += 1
        self.progress_at = now
        self._settle_if_quiet()
        return out

    # -- what the parts need from the rounds -------------------------------------------------

    def _answers(self, msg: Any, ahead: int = 0) -> bool:
        """A settled node answers ``msg``'s sender, still in the phase (``Settle.answers``)."""
        return self.settling.answers(msg.quiet, msg.round + ahead, self.rounds)

    def _note_quiet(self, view: NodeView, moved: float) -> None:
        """The quiet streak after this round's step (``moved``) and the neighbours' streaks."""
        self.settling.update(moved, self.tsync.version, self.neighbours.heard(
            view, self.round, self.receiver, self.offloader))

    def _settle_if_quiet(self) -> None:
        """End the phase once the streak is long enough (after a round of this node)."""
        if self.settling.ends_now():
            log.debug("configuration phase of slot %d settled in %d rounds", self.slot, self.round)
            self._finish_phase()

    def _release(self, view: NodeView, force: bool = False) -> List[Outgoing]:
        """The next round's requests, held for this round's threshold decision, once it is made
        (or the round stalled): a new C changes this stage's I_h, which the requests carry
        from the next round on, as in ``run_dtoee``."""
        rnd = self.tsync.release(view, force)
        if rnd is None:
            return []
        self.pending = self.tsync.under_c(view, rnd + 1, self.pending, self.work, self.req_rate)
        return self._send_requests(view) if rnd + 1 < self.rounds else []

    def _joint_report(self, view: NodeView, now: float, rate: float,
                      rates: Mapping[str, float], statuses: Mapping[str, D.Status],
                      before: Dict[str, float], unheard: List[str]) -> List[Outgoing]:
        """Step "joint": this round's report to the siblings, the step held for theirs."""
        out, held = self.joint.report(view, self.round, rate,
                                      self.tsync.remaining(view, view.stage), self.settling.quiet,
                                      rates, statuses, before, unheard, self.slot)
        if not held:  # every successor gone: an empty routing until one returns
            return self._answer(view, now, self._apply(view, D.OffloaderResult(
                {}, 0.0, 0.0, {}, {}), rate, before)) + out
        # the siblings get here on the same wave: give their reports round_interval_s from now,
        # not from this node's last round (a whole round earlier)
        self.progress_at = now
        return out + self._joint_release(view, now)

    def _joint_release(self, view: NodeView, now: float, force: bool = False
                       ) -> List[Outgoing]:
        """Step "joint": the held step once the siblings' reports are in (``force``: stalled)."""
        got = self.joint.release(view, self.round, self.tsync, self.req_rate, self.slot, force)
        if got is None:
            return []
        res, rate, before = got
        return self._answer(view, now, self._apply(view, res, rate, before))

    def _on_stage_report(self, sender: str, payload: Any, view: NodeView, now: float
                         ) -> List[Outgoing]:
        """A sibling's stage report: kept, answered by a settled node, and it may complete the
        held step."""
        rep = self.joint.on_report(sender, payload, self.round, view)
        out = self.joint.echo(rep, self._answers(rep), self.slot)
        if self.joint.held is not None and rep.round == self.round:
            out += self._joint_release(view, now)
        return out
