"""MDI-Exit in the agent: ``agent.policies.mdi_exit`` behind the ``AgentPolicy`` interface.

What the node loop gives the policy (``NodeView``): its own input queue (tasks waiting for or in
the engine) and output queue O_n (``agent.node.outqueue.output_tasks``: tasks waiting to leave,
held for a successor or queued on an emulated link not yet carrying them; no results, no task
in transfer, which is D_nm), its per-task compute time ``service_time_s`` (Gamma_n), and each
neighbour's last HEARTBEAT / QUEUE_STATE fields (``input_queue`` = I_m, ``service_time_s`` =
Gamma_m). D_nm is measured: the node reports each ACKed task transfer through ``on_transfer``
(link start to ACK), and ``TransferDelay`` smooths it per neighbour and payload size; until a
task of that size has been measured to m, D_nm is its bytes over the configured link rate (0
when unknown). The policy publishes QUEUE_STATE every ``state_interval_s`` (its tick), so
neighbours see I_n more often than heartbeats carry it, and between two messages from m it
adds the tasks it sent to m since.

A worker holding several stages (``last_stage``) runs Alg. 1 in ``keep_local``: the next stage
stays here when the input queue is empty or O_n > T_O, else the task goes to the output queue
and Alg. 2 (``choose_successor``, own wait I_n Gamma_n). A node that cannot run the task's next
stage (a one-stage worker, a source) counts its own wait as unbounded, so neighbour m takes the
task as soon as O_n > I_m. The knob ``count_own_service`` adds the task's own run to both sides
and keeps such a node's tasks for its fastest neighbour, as in the simulator (``offload``).
``choose_successor`` returning None keeps the task; the node offers
it again on its next tick or heartbeat, when a refusing neighbour's hold ends or when a neighbour
comes back, oldest first with the whole O_n, and a stage's offers stop at the first task kept
(only its source's when it was kept for that source alone: ``refusal_scope.kept_for_source``),
a new task queuing behind (``held_in_order``: Alg. 2 offers the head of the output queue only,
``agent.node.outqueue``); a worker that holds the
task's stage asks ``reclaim`` after such a refusal and, when it says True (input queue empty,
``reclaim_when_idle``), runs its oldest held task itself. Alg. 3 (knob ``admission_control``)
admits a source's arrivals through ``rules.Admission`` (at least mu apart; the rest are
rejected, the Poisson rate stays the configured one) and adapts mu from the source's own queue
plus the queues of the node it feeds (the least-loaded alive stage-1 peer, as a camera on that
node would; while none is alive their queues are unknown and mu holds); every exit head applies
one threshold T_e, the knob ``threshold`` (fixed, or Alg. 4's start with
``threshold_adaptation``), as in the simulator (``rules.exit_threshold``); the node config's
``thresholds`` are not used, and a WARNING at start names them when they differ.
``early_exit = false`` is the no-exit variant. Knob errors name ``policy_knobs.<field>``.

Alg. 4 lowers T_e only when I_n + O_n > ``queue_high`` (T_Q2) and Alg. 1 keeps tasks when
O_n > ``output_queue_limit`` (T_O), while a node holds at most ``max_queue_tasks`` tasks:
``configure`` logs one WARNING at start when a worker's bound keeps it from passing them
(``queue_room_problem``; ``queue_room`` is the bound the testbed's mdi-* presets set).

A neighbour's queue state (HEARTBEAT or QUEUE_STATE) reaches ``view.peer_state`` only when a
node could report it (``agent.node.peerstate``: queues of at most ``MAX_QUEUE_TASKS``, a
service time of at most a day; else ``drop_bad_heartbeat`` and the last state holds).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from agent.protocol import wire
from agent.policies.mdi_exit import rules as mx
from agent.policies.api import AgentPolicy, NodeView, Outgoing, TaskInfo
from agent.policies.model import transmission_delay
from agent.protocol.wire import Kind, Message

log = logging.getLogger(__name__)

MIN_DELAY_S = 1e-6  # the outlier band's base at least: below any real network transfer
RECENT_DECAY = 0.98  # per task sent, in the shares routing() reports (~50 tasks' memory)


def unused_thresholds(params: mx.MdiExitParams, configured: Mapping[int, float]) -> str:
    """Why a node's ``configured`` per-exit thresholds have no effect under MDI-Exit ("" when
    no head exits, they all equal the fixed knob ``threshold``, or Alg. 4 sets the threshold:
    with ``threshold_adaptation`` on, configured thresholds are plainly the policy's to set,
    and a warning on every node of the adapt runs would only be noise)."""
    start = mx.exit_threshold(params, params.threshold)
    if start is None or params.threshold_adaptation or all(c == start
                                                            for c in configured.values()):
        return ""
    return ("mdi-exit applies policy_knobs.threshold = %g at every exit; the configured "
            "thresholds (%s) are not used" % (
                start, ", ".join("stage %d: %g" % (h, c) for h, c in sorted(configured.items()))))


def queue_room(params: mx.MdiExitParams) -> int:
    """The ``max_queue_tasks`` an MDI-Exit node should have: room above T_Q2 as wide as below
    it, and past T_O by T_Q2 (80 with the paper's T_Q2 = 30, T_O = 50; the testbed's mdi-*
    presets set it)."""
    return int(math.ceil(max(2 * params.queue_high,
                             params.output_queue_limit + params.queue_high)))


def queue_room_problem(params: mx.MdiExitParams, max_queue_tasks: int, role: str,
                       several_stages: bool) -> str:
    """Why a node of ``role`` holding at most ``max_queue_tasks`` tasks cannot follow the
    paper's queue rules ("" when it can). A worker refuses tasks past that bound (its senders
    hold them, and sources reject arrivals as ``overload``), so I_n + O_n stays at or below it:
    with at most T_Q2 + 1, Alg. 4 (``threshold_adaptation``) has a band of a task or none in
    which it lowers T_e, and a worker holding ``several_stages`` that cannot hold T_O tasks
    never sees Alg. 1's O_n > T_O. A warning, not a refusal: the node serves correctly, only
    these rules never act. A source's Alg. 3 adds its stage-1 node's queues to its own, so
    its own bound alone does not close its band and is not checked."""
    if role != "worker":
        return ""
    adapts = params.threshold_adaptation
    no_limit = several_stages and max_queue_tasks <= params.output_queue_limit
    if not (no_limit or adapts and max_queue_tasks <= params.queue_high + 1):
        return ""
    problems = []
    if adapts:  # named whenever the warning is given: its band above T_Q2 is narrow then too
        problems.append("threshold_adaptation (Alg. 4) lowers T_e only when I_n + O_n > "
                        "policy_knobs.queue_high = %g" % params.queue_high)
    if no_limit:
        problems.append("Alg. 1 keeps a task local when O_n > policy_knobs.output_queue_limit "
                        "= %g" % params.output_queue_limit)
    return ("max_queue_tasks = %d is too small for mdi-exit: %s, but this node refuses tasks "
            "past %d held (its senders hold them, sources reject them as overload); set "
            "max_queue_tasks to at least %d (max(2 queue_high, output_queue_limit + queue_high))"
            % (max_queue_tasks, "; ".join(problems), max_queue_tasks, queue_room(params)))


class TransferDelay:
    """Smoothed measured transfer delay D_nm per (neighbour, payload bytes).

    An exponentially weighted moving average (weight ``smoothing`` per sample) of the measured
    seconds. A sample more than ``outlier_factor`` times above (or below) the current estimate
    is an outlier: a single one (a GC pause, a retransmit) is ignored; when the next sample is
    an outlier in the same direction too, the link has really changed, so it is taken, clipped
    to the factor, and the estimate follows within a few tasks. Keyed by payload size because
    a node holding several stages sends tasks of different sizes to one neighbour.
    """

    def __init__(self, smoothing: float = 0.2, outlier_factor: float = 4.0):
        self.smoothing = smoothing
        self.outlier_factor = outlier_factor
        self._est: Dict[Tuple[str, int], float] = {}
        self._pending: Dict[Tuple[str, int], int] = {}  # direction (+1/-1) of an ignored outlier

    def observe(self, dest: str, seconds: float, payload_bytes: int) -> None:
        """Add one measured transfer of ``payload_bytes`` to ``dest`` taking ``seconds``."""
        if not (seconds >= 0.0 and math.isfinite(seconds)):
            return
        key = (dest, int(payload_bytes))
        est = self._est.get(key)
        if est is None:
            self._est[key] = seconds
            return
        # the band around a near-zero estimate (a first transfer timed at 0 s) would be
        # [0, 0]: every later sample clipped to 0, the estimate stuck there for good
        base = max(est, MIN_DELAY_S)
        lo, hi = base / self.outlier_factor, base * self.outlier_factor
        direction = 1 if seconds > hi else -1 if seconds < lo else 0
        if direction and self._pending.pop(key, 0) != direction:
            self._pending[key] = direction  # first outlier this way: ignore it
            return
        self._pending.pop(key, None)
        sample = min(max(seconds, lo), hi)
        self._est[key] = est + self.smoothing * (sample - est)

    def get(self, dest: str, payload_bytes: int) -> Optional[float]:
        """The smoothed delay, or None before the first measurement of that size to ``dest``."""
        return self._est.get((dest, int(payload_bytes)))

    def table(self) -> Dict[str, Dict[str, float]]:
        """``{dest: {payload bytes: seconds}}`` (JSON keys), for saved state and stats."""
        out: Dict[str, Dict[str, float]] = {}
        for (dest, nbytes), est in sorted(self._est.items()):
            out.setdefault(dest, {})[str(nbytes)] = est
        return out


class MdiExitPolicy(AgentPolicy):
    """``mdi-exit``: queue-based offloading (Alg. 2), admission (Alg. 3), thresholds (Alg. 4)."""

    name = mx.POLICY_NAME
    held_in_order = True  # the outbox re-offers held tasks as Alg. 2: the head first, to a refusal

    def __init__(self, thresholds: Mapping[int, float], knobs: Mapping[str, Any], seed: int = 0):
        super().__init__(thresholds, knobs, seed)
        self.params = mx.params_from_knobs(knobs, where="policy_knobs")
        self.tick_interval_s = self.params.state_interval_s
        self._threshold = self.params.threshold  # Alg. 4's T_e, used when adapting
        self.admission = mx.Admission(self.params)  # Alg. 3 at a source
        self._sent: Dict[str, int] = {}  # tasks sent to a neighbour since its last queue state
        # where recent tasks went ({successor: decayed count}): Alg. 2 decides task by task, so
        # this is the routing an operator sees (status, stats.json, the routing metric)
        self._recent: Dict[str, float] = {}
        self._adapt = mx.Period(self.params.adapt_interval_s)  # starts at the first tick
        self.transfer_delay = TransferDelay()  # measured D_nm
        # Alg. 3's first mu: the fleet's measured rate once heard, unless the knob sets it
        self._seed_mu = self.params.admission_control and "initial_interarrival_s" not in knobs
        unused = unused_thresholds(self.params, self._thresholds)
        if unused:  # a setting with no effect is said, not silently dropped
            log.warning("%s", unused)

    def configure(self, cfg: Any, view: NodeView) -> None:
        """One WARNING at start when ``cfg.max_queue_tasks`` is too small for the queue
        rules (``queue_room_problem``)."""
        room = queue_room_problem(self.params, int(cfg.max_queue_tasks), cfg.role,
                                  int(cfg.last_stage or 0) > int(cfg.stage))
        if room:
            log.warning("%s", room)

    def thresholds(self) -> Dict[int, float]:
        return mx.exit_thresholds(self.params, self._thresholds, self._threshold)

    def keep_local(self, task: TaskInfo, view: NodeView) -> bool:
        """Alg. 1 on a worker that holds the task's next stage: keep it or queue it to offload."""
        step = mx.next_step(None, 1.0, view.input_queue, view.output_queue, self.params,
                            has_neighbours=bool(view.alive_successors(task.stage)))
        return step == mx.LOCAL

    def choose_successor(self, task: TaskInfo, view: NodeView,
                         exclude: Sequence[str] = ()) -> Optional[str]:
        """Alg. 2 over the alive successors; None keeps the task in the output queue. In the
        node's first moments a successor not heard from yet (``view.joining``) is a candidate
        too, with nothing queued, and a task it would take waits for its first heartbeat, as
        ``AgentPolicy.choose_successor`` waits: without it a source's first tasks went to
        whichever worker was heard first, behind the slow link Alg. 2 avoids."""
        alive = view.alive_successors(task.stage)
        cands = [s for s in alive if s not in exclude] or alive
        late = view.joining_successors(task.stage, exclude)
        states = []
        for m in cands + late:
            st = view.peer_state.get(m, {})
            states.append(mx.NeighbourState(
                m, int(st.get("input_queue", 0)) + self._sent.get(m, 0),
                float(st.get("service_time_s", 0.0)), self._transfer_delay_s(m, task, view)))
        # the task itself is in the output queue now
        if view.serves(task.stage):
            in_len, own_s = view.input_queue, view.service_time_s
        else:  # this node cannot run the next stage: waiting here never ends
            in_len, own_s = 1, math.inf
        target = mx.choose_neighbour(view.output_queue + 1, in_len, own_s, states,
                                     self.rng.random, self.params.count_own_service)
        if target in late:
            return None
        if target is not None:
            self._sent[target] = self._sent.get(target, 0) + 1
            for m in self._recent:
                self._recent[m] *= RECENT_DECAY
            self._recent[target] = self._recent.get(target, 0.0) + 1.0
        return target

    def routing(self) -> Dict[str, float]:
        """The shares of the tasks this node sent lately (each task's weight decays by
        ``RECENT_DECAY`` per later one: about the last ``1 / (1 - RECENT_DECAY)`` tasks)."""
        total = sum(self._recent.values())
        return {m: w / total for m, w in sorted(self._recent.items())} if total > 0 else {}

    def _transfer_delay_s(self, dest: str, task: TaskInfo, view: NodeView) -> float:
        """D_nm: measured when known, else the task's bytes over the configured link rate."""
        measured = self.transfer_delay.get(dest, task.nbytes)
        if measured is not None:
            return measured
        rate = view.link_rate_bytes_s.get(dest, 0.0)
        return transmission_delay(task.nbytes, rate) if rate > 0 else 0.0

    def on_transfer(self, dest: str, seconds: float, payload_bytes: int) -> None:
        """A task transfer to ``dest`` was measured (link start to ACK): smooth it into D_nm."""
        self.transfer_delay.observe(dest, seconds, payload_bytes)

    def admit(self, view: NodeView, now: float) -> bool:
        """Alg. 3 at a source: admit the arrival at ``now`` when mu passed since the last one.

        The arrivals keep the configured Poisson rate (``interarrival_s`` stays None).
        """
        return view.role != "source" or self.admission.admit(now)

    def reclaim(self, view: NodeView) -> bool:
        """True: take the oldest held task this node serves back and run it here.

        The node asks after ``choose_successor`` kept a task whose stage it serves, with that
        task counted in ``view.output_queue``; a source never reclaims.
        """
        return view.stage > 0 and mx.should_reclaim(view.input_queue, view.output_queue,
                                                    self.params)

    def on_control(self, msg: Message, view: NodeView, now: float) -> List[Outgoing]:
        if msg.kind in (Kind.HEARTBEAT, Kind.QUEUE_STATE):
            self._sent.pop(msg.sender, None)  # its queue length now includes what we sent
        return []

    def on_tick(self, view: NodeView, now: float) -> List[Outgoing]:
        """Publish this node's queue state; every ``adapt_interval_s`` run Algs. 3 and 4."""
        p = self.params
        if self._adapt.due(now):
            queued = view.input_queue + view.output_queue
            if p.threshold_adaptation:
                self._threshold = mx.adapt_threshold(self._threshold, queued, p)
            fed = self._fed_queue(view) if view.role == "source" else None
            if fed is not None:
                self.admission.adapt(queued + fed)
        if self._seed_mu and view.role == "source":
            self._seed_interarrival(view)
        return [Outgoing(Kind.QUEUE_STATE, wire.BROADCAST, {
            "role": view.role, "stage": view.stage, "capacity_flops": float(view.capacity_flops),
            "input_queue": int(view.input_queue), "output_queue": int(view.output_queue),
            "service_time_s": float(view.service_time_s)})]

    def _seed_interarrival(self, view: NodeView) -> None:
        """Start Alg. 3 from what the fleet can serve instead of ``initial_interarrival_s``.

        The paper gives mu no starting value; the knob's default (1 s) makes a source admit
        one task a second and take many adaptation periods to reach the fleet's rate, starving
        it meanwhile. Once the stage-1 nodes this source feeds have published their service
        times, mu starts at the interval they can serve together (1 / sum of 1/Gamma_m), and
        Alg. 3 adapts it from there as in the paper. Done once; never when the knob is set.
        """
        rates = [1.0 / st["service_time_s"] for st in (
            view.peer_state.get(m, {}) for m in view.alive_successors(1, usable=False))
            if st.get("service_time_s", 0.0) > 0]
        if not rates:
            return
        self._seed_mu = False
        self.admission.seed(1.0 / sum(rates))  # faster than min_interarrival_s: the floor

    def _fed_queue(self, view: NodeView) -> Optional[int]:
        """Queued tasks (I_m + O_m) of the least-loaded alive node this source feeds; None
        while every stage-1 node it feeds is gone (or none has been heard yet).

        In the paper the source is a camera on node n and Alg. 3 reads that node's queues; an
        agent source is a process of its own whose output queue only holds tasks not yet handed
        over, so it adds the queues its node publishes. With that node gone its queues are
        unknown, not empty: read as 0 they sent mu down by alpha every period while nothing
        could serve (mu 0.042 -> 0.013 s in an 8 s outage of the 2-node preset's n1), and the
        node came back to a flood of admissions. None keeps mu where it was (``on_tick``).
        A source configured with no stage-1 successor at all reads 0.
        """
        totals = []
        for m in view.alive_successors(1, usable=False):
            st = view.peer_state.get(m, {})
            totals.append(int(st.get("input_queue", 0)) + int(st.get("output_queue", 0)))
        if not totals:
            return None if view.successors else 0  # a source's successors: its stage-1 nodes
        return min(totals)

    def snapshot(self) -> Dict[str, Any]:
        state = super().snapshot()
        p = self.params  # only what Algs. 3-4 set: a fixed value is the config's (restore)
        state.update({"mdi_threshold": self._threshold if p.threshold_adaptation else None,
                      "interarrival_s": self.admission.interarrival_s if p.admission_control
                      else None,
                      # for inspection only: links may differ after a restart, so not restored
                      "transfer_delay_s": self.transfer_delay.table()})
        return state

    def restore(self, state: Mapping[str, Any]) -> None:
        """Take back Alg. 4's T_e and Alg. 3's mu when this node adapts them; a run that did
        not saved none, so a restart that turns Alg. 3 or 4 on starts from the knobs."""
        super().restore(state)
        p, th, mu = self.params, state.get("mdi_threshold"), state.get("interarrival_s")
        if p.threshold_adaptation and isinstance(th, float) and p.min_threshold <= th <= 1.0:
            self._threshold = th
        if p.admission_control:
            self.admission.restore(mu)
