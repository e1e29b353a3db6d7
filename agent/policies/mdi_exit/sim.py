"""MDI-Exit behind the simulator's per-task hook, and the MDI-Exit paper's topologies.

How MDI-Exit maps onto the scenario model. An MDI-Exit node that holds stages 1..H is H scenario
workers ``n/1`` .. ``n/H`` naming one ``device`` ``n``: the simulator gives them one server (one
capacity, one FIFO queue), and that queue is the node's input queue I_n. The node's data enter
through a source ``n/src`` on the same device, linked to ``n/1`` only (the node that has the
data runs the first task itself). A one-hop neighbour m of n is a link ``n/h -> m/h+1`` for every
stage h; the link ``n/h -> n/h+1`` (at ``local_rate_bytes_s``) is "keep it" (Alg. 1 LOCAL). The
output queue O_n is the tasks the simulator holds at n's workers because ``route`` returned None.
Any scenario works the same way: a node that cannot run the next stage itself (a worker of the
DTO-EE setting, a source without a processor) offloads every task it does not exit by Alg. 2,
counting its own wait as unbounded, so a neighbour m takes the task as soon as O_n > I_m.

Per task (``route``): Alg. 1 puts the next stage's task in the input or output queue
(``agent.policies.mdi_exit.next_step``); from the output queue Alg. 2 (``choose_neighbour``)
sends it at once or holds it, and held tasks are re-offered after every tick. Exits use the
engine's ``should_exit`` with the threshold this policy gives per device (Alg. 4 when adapting).
Every ``state_interval_s`` each device publishes I_m and Gamma_m (mean stage compute time at its
capacity); between publications a node adds the tasks it sent to m since, so one stale snapshot
does not send a burst to the same neighbour. D_nm is the hop time beta_{h+1} / r. Sources with
admission control (Alg. 3) admit a task when at least mu seconds passed since the last admitted
one; the others are recorded as rejected.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from agent.errors import UsageError
from agent.policies.mdi_exit import rules as mx
from agent.policies.setting import Link, Scenario, Source, Worker
from agent.policies.sim_api import Decision, SimPolicy, SlotView

TOPOLOGIES = ("local", "2-node", "3-node-mesh", "3-node-circular", "5-node-mesh")
NO_EXIT_SUFFIX = "-noee"  # "3-node-mesh-noee": the same topology with early exit switched off


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
        self._rng = random.Random(seed * 7907 + 11)
        self.params = mx.params_from_knobs(self._overrides, where="mdi-exit")
        self.history: List[Dict[str, Any]] = []  # per adaptation: time, thresholds, rates

    # --- topology, built from the first slot's scenario -------------------------------------
    def start_slot(self, view: SlotView) -> Decision:
        sc = view.scenario
        if view.slot == 0:
            knobs = dict(sc.knobs.get(mx.POLICY_NAME, {}) or {})
            knobs.update(self._overrides)
            self.params = mx.params_from_knobs(knobs, where="knobs.mdi-exit")
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
        self._nbrs: Dict[str, List[Tuple[str, str, float]]] = {}
        stage_of = {w.id: w.stage for w in sc.workers}
        for n in sc.sources + sc.workers:
            local, nbrs = None, []
            for l in sc.links:
                if l.src != n.id:
                    continue
                hop_s = sc.stages[stage_of[l.dst] - 1].input_bytes / l.rate
                if self._dev[l.dst] == self._dev[n.id]:
                    local = l.dst
                else:
                    nbrs.append((l.dst, self._dev[l.dst], hop_s))
            self._local[n.id], self._nbrs[n.id] = local, nbrs
        devs = list(self._members)
        self._published = {d: 0 for d in devs}  # I_m as last published
        self._sent: Dict[str, Dict[str, int]] = {d: defaultdict(int) for d in devs}
        self._threshold = {d: p.threshold for d in devs}
        self._mu = {s.id: p.initial_interarrival_s for s in sc.sources}
        self._last_admit = {s.id: -math.inf for s in sc.sources}
        self._held: set = set()
        self._sources = {s.id for s in sc.sources}
        self._next_publish = 0.0
        self._next_adapt = p.adapt_interval_s

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
        return view.input_queue(node) if node is not None else 0

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
                return local
            step = mx.next_step(None, 1.0, self._input_len(dev, view),
                                self._output_len(dev, view), self.params,
                                has_neighbours=bool(self._nbrs[node]))
            if step == mx.LOCAL:
                return local
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
        target = mx.choose_neighbour(out_len, in_len, own, states, self._rng.random)
        if target is None and self._local[node] is not None and \
                mx.should_reclaim(self._input_len(dev, view), out_len, self.params):
            target = self._local[node]
        if target is None:
            self._held.add(task)
            return None
        self._held.discard(task)
        if target != self._local[node]:
            self._sent[dev][self._dev[target]] += 1
        return target

    def threshold(self, node: str, stage: int, view: Any) -> float:
        """The device's exit threshold (fixed, or Alg. 4's); no exit in the no-exit variant."""
        return self._threshold[self._dev[node]] if self.params.early_exit else math.inf

    def admit(self, source: str, task: int, view: Any) -> bool:
        """Alg. 3's admission: one task per mu seconds; always when admission is off."""
        if not self.params.admission_control:
            return True
        if view.now_s - self._last_admit[source] >= self._mu[source]:
            self._last_admit[source] = view.now_s
            return True
        return False

    def on_tick(self, view: Any) -> None:
        """Publish queue state every ``state_interval_s``; run Algs. 3/4 every
        ``adapt_interval_s``."""
        p, now = self.params, view.now_s
        if now >= self._next_publish:
            for d in self._published:
                self._published[d] = self._input_len(d, view)
                self._sent[d].clear()
            self._next_publish = now + p.state_interval_s
        if now >= self._next_adapt and (p.admission_control or p.threshold_adaptation):
            totals = {d: self._input_len(d, view) + self._output_len(d, view)
                      for d in self._members}
            if p.threshold_adaptation:
                for d in self._threshold:
                    self._threshold[d] = mx.adapt_threshold(self._threshold[d], totals[d], p)
            if p.admission_control:
                for s in self._mu:
                    self._mu[s] = mx.adapt_interarrival(self._mu[s], totals[self._dev[s]], p)
            self.history.append({"t_s": now, "thresholds": dict(self._threshold),
                                 "interarrival_s": dict(self._mu)})
            self._next_adapt = now + p.adapt_interval_s


def mdi_topology(name: str, model: Scenario, capacity_flops: float, link_rate_bytes_s: float,
                 source_rate: float, local_rate_bytes_s: float = 1.0e12,
                 knobs: Optional[Mapping[str, Any]] = None) -> Scenario:
    """One of the MDI-Exit paper's topologies as a scenario, every node holding every stage.

    ``model`` gives the stages and the exit profile (or remaining ratios); its sources, workers
    and links are ignored. Node ``n1`` has the data (source ``n1/src``, ``source_rate`` tasks/s).
    ``3-node-circular`` is a directed ring n1 -> n2 -> n3 -> n1 (an undirected ring of three is
    the mesh); ``local`` is one node; a ``-noee`` suffix switches early exit off through
    ``knobs["mdi-exit"]["early_exit"]``.
    """
    base = name[:-len(NO_EXIT_SUFFIX)] if name.endswith(NO_EXIT_SUFFIX) else name
    sizes = {"local": 1, "2-node": 2, "3-node-mesh": 3, "3-node-circular": 3, "5-node-mesh": 5}
    if base not in sizes:
        raise UsageError("MDI-Exit topology %r: known %s, each also with %r"
                         % (name, ", ".join(TOPOLOGIES), NO_EXIT_SUFFIX))
    nodes = ["n%d" % (i + 1) for i in range(sizes[base])]
    if base == "3-node-circular":
        nbrs = {n: [nodes[(i + 1) % 3]] for i, n in enumerate(nodes)}
    else:
        nbrs = {n: [m for m in nodes if m != n] for n in nodes}
    H = model.num_stages
    workers = tuple(Worker("%s/%d" % (n, h), h, float(capacity_flops), device=n)
                    for n in nodes for h in range(1, H + 1))
    links = [Link("n1/src", "n1/1", float(local_rate_bytes_s))]
    for n in nodes:
        for h in range(1, H):
            links.append(Link("%s/%d" % (n, h), "%s/%d" % (n, h + 1), float(local_rate_bytes_s)))
            links.extend(Link("%s/%d" % (n, h), "%s/%d" % (m, h + 1), float(link_rate_bytes_s))
                         for m in nbrs[n])
    mk = dict((knobs or {}).get(mx.POLICY_NAME, {}))
    if base != name:
        mk["early_exit"] = False
    all_knobs = dict(knobs or {})
    all_knobs[mx.POLICY_NAME] = mx.params_dict(mx.params_from_knobs(mk))
    return Scenario(model.stages, (Source("n1/src", float(source_rate), device="n1"),), workers,
                    tuple(links), model.tradeoff, model.remaining, model.exit_profile, all_knobs,
                    comment="MDI-Exit %s topology: %d node(s), each holding all %d stages; "
                            "capacity %.3g FLOP/s per node, links %.3g B/s"
                            % (name, len(nodes), H, capacity_flops, link_rate_bytes_s),
                    synthetic=True)


def topology_names() -> Sequence[str]:
    """Every topology name ``mdi_topology`` accepts."""
    return tuple(TOPOLOGIES) + tuple(t + NO_EXIT_SUFFIX for t in TOPOLOGIES)


# the paper's two scenarios plus a plain run: knobs switched on, and the default source rate
MODES = {
    "fixed": ({}, 3.0),  # fixed threshold, Poisson arrivals
    "admission": ({"admission_control": True}, 100.0),  # Alg. 3 thins a fast camera's frames
    "adapt": ({"threshold_adaptation": True, "threshold": 0.9}, 6.0),  # Alg. 4, Poisson
}


def mdi_setting(setting: str, mode: str = "fixed", seed: int = 0, rate: Optional[float] = None,
                capacity_flops: float = 2.0e10, link_rate_bytes_s: float = 12.5e6,
                num_samples: int = 10000, tradeoff: float = 0.5,
                model: str = "paper-resnet101") -> Scenario:
    """``mdi-<topology>`` as a scenario: ``model``'s stages and synthetic exit profile from the
    DTO-EE paper's Table 2 (so MDI-Exit and DTO-EE run the same work) on an MDI-Exit topology.

    Defaults: 2e10 FLOP/s per node (a Jetson Nano-class device: ResNet101 in about 0.4 s) and
    12.5 MB/s links (100 Mbit/s WiFi); ``mode`` picks the paper's scenario (``MODES``).
    """
    from agent.scenario.paper import paper_scenario

    if not setting.startswith("mdi-"):
        raise UsageError("scenario: %r is not an MDI-Exit setting (mdi-TOPOLOGY)" % setting)
    if mode not in MODES:
        raise UsageError("--mdi-mode: must be one of %s, got %r" % (", ".join(MODES), mode))
    knobs, default_rate = MODES[mode]
    base = paper_scenario(model, seed=seed, num_sources=1, num_samples=num_samples,
                          tradeoff=tradeoff)
    return mdi_topology(setting[len("mdi-"):], base, capacity_flops, link_rate_bytes_s,
                        default_rate if rate is None else rate,
                        knobs={mx.POLICY_NAME: dict(knobs)})
