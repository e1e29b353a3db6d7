"""MDI-Exit behind the simulator's per-task hook (the paper's topologies: ``agent.scenario.mdi``).

How MDI-Exit maps onto the scenario model. An MDI-Exit node that holds stages 1..H is H scenario
workers ``n/1`` .. ``n/H`` naming one ``device`` ``n``: the simulator gives them one server (one
capacity, one FIFO queue), and that queue is the node's input queue I_n. The node's data enter
through a source ``n/src`` on the same device, linked to ``n/1`` only (the node that has the
data runs the first task itself). A one-hop neighbour m of n is a link ``n/h -> m/h+1`` for every
stage h; the link ``n/h -> n/h+1`` (at ``local_rate_bytes_s``) is "keep it" (Alg. 1 LOCAL). The
output queue O_n is the tasks the simulator holds at n's workers because ``route`` returned None.
Any scenario works the same way: a node that cannot run the next stage itself (a worker of the
DTO-EE setting, a source without a processor) offloads every task it does not exit by Alg. 2,
counting its own wait as unbounded, so a neighbour m takes the task as soon as O_n > I_m (with
the knob ``count_own_service``, only a neighbour that would finish it soonest: ``offload``).

Per task (``route``): Alg. 1 puts the next stage's task in the input or output queue
(``agent.policies.mdi_exit.rules.next_step``); from the output queue Alg. 2 (``choose_neighbour``)
sends it at once or holds it, and held tasks are re-offered after every tick. Alg. 2 offers the
head of the output queue only: a task joins a node's held tasks at the tail (the engine offers
the head after every tick and stops at the first kept), and the agent's outbox does the same
(``agent.node.outqueue``). Exits use the
engine's ``should_exit`` with the threshold this policy gives per device: the knob ``threshold``
at every exit, Alg. 4's from it when adapting (``rules.exit_threshold``, as on a node).
Every ``state_interval_s`` each device publishes I_m and Gamma_m (mean stage compute time at its
capacity); between publications a node adds the tasks it sent to m since, so one stale snapshot
does not send a burst to the same neighbour. D_nm is the hop time beta_{h+1} / r. Sources with
admission control (Alg. 3) admit through ``rules.Admission`` (a task when at least mu seconds
passed since the last admitted one; the others are recorded as rejected), mu adapting from the
source device's I_n + O_n; a held task that Alg. 2 keeps again goes back to its own node's input
queue when that is empty (``rules.should_reclaim``). The agent adapter decides through the same
two rules.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from typing import Any, Dict, List, Mapping, Optional, Tuple

from agent.policies.mdi_exit import rules as mx
from agent.policies.model import transmission_delay
from agent.policies.setting import Scenario
from agent.policies.sim_api import Decision, SimPolicy, SlotView


class MdiExitSimPolicy(SimPolicy):
    """MDI-Exit (Algs. 1-4) as a per-task simulator policy; parameters from the scenario's
    ``knobs["mdi-exit"]``, overridden by ``overrides``."""

    per_task = True
    per_node_thresholds = True
    admission = True

    def __init__(self, name: str = mx.POLICY_NAME, overrides: Optional[Mapping[str, Any]] = None,
                 seed: int = 0, tick_s: float = 0.01):
        self.name = name
        self.tick_s = tick_s  # how often the sender re-offers held tasks and state is checked
        self._overrides = dict(overrides or {})
        self._rng = random.Random(seed * 7907 + 11)  # until a run starts: slot 0 takes its seed
        self.params = mx.params_from_knobs(self._overrides, where="mdi-exit")
        self.history: List[Dict[str, Any]] = []  # per adaptation: time, thresholds, rates

    # --- topology, built from the first slot's scenario -------------------------------------
    def start_slot(self, view: SlotView) -> Decision:
        sc = view.scenario
        if view.slot == 0:
            knobs = dict(sc.knobs.get(mx.POLICY_NAME, {}) or {})
            knobs.update(self._overrides)
            self.params = mx.params_from_knobs(knobs, where="knobs.mdi-exit")
            self._rng = random.Random(view.seed * 7907 + 11)  # the run's seed (tie-breaks)
            self._build(sc)
        self._gamma = self._compute_delays(sc)
        return Decision(info={"policy": self.name})

    def _build(self, sc: Scenario) -> None:
        p = self.params
        self._dev = {n.id: sc.device_of(n.id) for n in sc.sources + sc.workers}
        self._members: Dict[str, List[str]] = defaultdict(list)
        for node, dev in self._dev.items():
            self._members[dev].append(node)
        self._server_node = {}  # device -> one of its workers (to read the shared queue)
        for w in sc.workers:
            self._server_node.setdefault(self._dev[w.id], w.id)
        self._local: Dict[str, Optional[str]] = {}
        self._local_hop_s: Dict[str, float] = {}
        self._nbrs: Dict[str, List[Tuple[str, str, float]]] = {}
        stage_of = {w.id: w.stage for w in sc.workers}
        for n in sc.sources + sc.workers:
            local, nbrs = None, []
            for l in sc.links:
                if l.src != n.id:
                    continue
                hop_s = transmission_delay(sc.stages[stage_of[l.dst] - 1].input_bytes, l.rate)
                if self._dev[l.dst] == self._dev[n.id]:
                    local = l.dst
                    self._local_hop_s[n.id] = hop_s
                else:
                    nbrs.append((l.dst, self._dev[l.dst], hop_s))
            self._local[n.id], self._nbrs[n.id] = local, nbrs
        devs = list(self._members)
        self._published = {d: 0 for d in devs}  # I_m as last published
        self._sent: Dict[str, Dict[str, int]] = {d: defaultdict(int) for d in devs}
        self._threshold = {d: p.threshold for d in devs}
        self._admission = {s.id: mx.Admission(p) for s in sc.sources}
        self._held: set = set()
        # per device, arrival times of the tasks it kept that are still on its own link: the
        # agent puts a kept task straight into its input queue, so they count in I_n
        self._arriving: Dict[str, List[float]] = {d: [] for d in devs}
        self._sources = {s.id for s in sc.sources}
        self._next_publish = 0.0
        self._adapt = mx.Period(p.adapt_interval_s, start_s=0.0)

    def _compute_delays(self, sc: Scenario) -> Dict[str, float]:
        """Gamma per device: mean compute time of its stages at its capacity (paper fn. 1)."""
        per: Dict[str, List[float]] = defaultdict(list)
        for w in sc.workers:
            per[self._dev[w.id]].append(sc.stages[w.stage - 1].flops / w.capacity)
        return {d: (sum(v) / len(v) if v else math.inf) for d, v in
                ((d, per.get(d, [])) for d in self._members)}

    # --- queue state ------------------------------------------------------------------------
    def _input_len(self, dev: str, view: Any) -> int:
        node = self._server_node.get(dev)
        due = self._arriving[dev]
        if due:
            due[:] = [t for t in due if t > view.now_s]
        return (view.input_queue(node) if node is not None else 0) + len(due)

    def _keep(self, node: str, dev: str, view: Any) -> str:
        """Send the task to ``node``'s own next stage (it counts in I_n from now on)."""
        self._arriving[dev].append(view.now_s + self._local_hop_s[node])
        return self._local[node]  # type: ignore[return-value]

    def _output_len(self, dev: str, view: Any) -> int:
        return sum(view.output_queue(n) for n in self._members[dev])

    # --- hooks ------------------------------------------------------------------------------
    def route(self, node: str, task: int, view: Any) -> Optional[str]:
        """Alg. 1 for a task that continues past ``node`` (or a new task at a source), then
        Alg. 2 if it is queued for offloading; None holds it in the output queue."""
        dev = self._dev[node]
        local = self._local[node]
        if task in self._held:  # re-offered from the output queue
            return self._offload(node, dev, task, view, queued=True)
        if local is not None:
            if node in self._sources:  # the node with the data runs the first task itself
                return self._keep(node, dev, view)
            step = mx.next_step(None, 1.0, self._input_len(dev, view),
                                self._output_len(dev, view), self.params,
                                has_neighbours=bool(self._nbrs[node]))
            if step == mx.LOCAL:
                return self._keep(node, dev, view)
        if view.output_queue(node):  # Alg. 2 offers the head: a new task queues behind it
            self._held.add(task)
            return None
        return self._offload(node, dev, task, view, queued=False)

    def _offload(self, node: str, dev: str, task: int, view: Any, queued: bool) -> Optional[str]:
        out_len = self._output_len(dev, view) + (0 if queued else 1)
        if self._local[node] is not None:
            in_len, own = self._input_len(dev, view), self._gamma[dev]
        else:  # this node cannot run the next stage: waiting here never ends
            in_len, own = 1, math.inf
        states = [mx.NeighbourState(m, self._published[md] + self._sent[dev][md],
                                    self._gamma[md], hop_s)
                  for m, md, hop_s in self._nbrs[node]]
        target = mx.choose_neighbour(out_len, in_len, own, states, self._rng.random,
                                     self.params.count_own_service)
        if target is None and self._local[node] is not None and \
                mx.should_reclaim(self._input_len(dev, view), out_len, self.params):
            self._held.discard(task)
            return self._keep(node, dev, view)
        if target is None:
            self._held.add(task)
            return None
        self._held.discard(task)
        self._sent[dev][self._dev[target]] += 1
        return target

    def threshold(self, node: str, stage: int, view: Any) -> float:
        """The device's exit threshold, as a node applies it (``rules.exit_threshold``: the knob
        ``threshold``, or Alg. 4's from it); no exit in the no-exit variant."""
        th = mx.exit_threshold(self.params, self._threshold[self._dev[node]])
        return math.inf if th is None else th

    def admit(self, source: str, task: int, view: Any) -> bool:
        """Alg. 3's admission: one task per mu seconds; always when admission is off."""
        return self._admission[source].admit(view.now_s)

    def on_tick(self, view: Any) -> None:
        """Publish queue state every ``state_interval_s``; run Algs. 3/4 every
        ``adapt_interval_s``."""
        p, now = self.params, view.now_s
        if now >= self._next_publish:
            for d in self._published:
                self._published[d] = self._input_len(d, view)
                self._sent[d].clear()
            self._next_publish = now + p.state_interval_s
        if (p.admission_control or p.threshold_adaptation) and self._adapt.due(now):
            totals = {d: self._input_len(d, view) + self._output_len(d, view)
                      for d in self._members}
            if p.threshold_adaptation:
                for d in self._threshold:
                    self._threshold[d] = mx.adapt_threshold(self._threshold[d], totals[d], p)
            for s, adm in self._admission.items():
                adm.adapt(totals[self._dev[s]])
            self.history.append({"t_s": now, "thresholds": dict(self._threshold),
                                 "queued": {s: totals[self._dev[s]] for s in self._admission},
                                 "interarrival_s": {s: a.interarrival_s
                                                    for s, a in self._admission.items()}})
