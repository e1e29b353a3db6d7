"""DIMEE behind the simulator's per-task hook (scenario ``edge-agent scenario dimee-demo``).

A tier is the workers of its devices (``knobs.dimee.tiers``: ``{"mobile": [DEVICE, ...], "edge":
[...], "cloud": [...]}``, default ``mob``/``edge``/``cloud``, ``rules.SCENARIO_TIERS``): the
mobile's hold stages 1..m and the edge's 1..n, each ending in a ``terminal`` worker; the cloud's
hold 1..H. At slot 0 the policy does what every place running DIMEE does, ``replay.fit`` on the
validation rows (alpha* and the pools), from the scenario's exit profile (format 2 with an
embedding) and stage FLOPs.

Per task (``route`` at the source): the tier by ``params.assign`` through the same per-sample
functions the replay uses (``rules.nearest_tier`` and, for Ours-D, ``rules.update_pool`` once per
task; ``rules.oracle_tiers``, a seeded random tier, or a fixed tier for the baselines), then a
stage-1 worker of that tier the source links to. Inside a tier the task goes to its device's next
stage; exits use the engine's ``should_exit`` with alpha below a tier's last stage and no exit on
the cloud (``threshold``), so a task leaves where ``rules.answer_head`` says. The cost of each
task (eq. 2's cost part, ``rules.costs_of``) comes after the run from the answering worker's tier
and the exit stage (``task_outcomes``).
"""

from __future__ import annotations

import math
import random
from dataclasses import replace
from typing import Any, Dict, List, Mapping, Optional

import numpy as np

from agent.policies.dimee import replay as P
from agent.policies.dimee import rules as R
from agent.policies.setting import Scenario, ScenarioError
from agent.policies.sim_api import Decision, SlotView, TieredSimPolicy, measured

# the paper's baselines as fixed assignments (``replay.BASELINES``; tier-oracle is Alg. 1 on the
# task's own confidences, an unattainable upper bound)
VARIANTS: Dict[str, Dict[str, Any]] = dict(
    P.VARIANTS, **{b: {"assign": b[len("tier-"):], "adaptive": False} for b in P.BASELINES})


def tier_devices(knobs: Mapping[str, Any], where: str = "knobs.dimee.tiers") -> Dict[str, int]:
    """{device: tier} from the ``tiers`` knob (``rules.parse_tiers``: a device name or a list of
    them per tier; default ``rules.SCENARIO_TIERS``)."""
    tiers = R.parse_tiers(knobs.get(R.TIER_KNOB, R.SCENARIO_TIERS), where, "device name",
                          ScenarioError)
    return {d: R.TIERS.index(name) for name, devs in tiers.items() for d in devs}


class DimeeSimPolicy(TieredSimPolicy):
    """DIMEE (Ours-D ``dimee``, Ours-F ``dimee-f``) as a per-task simulator policy; knobs from
    the scenario's ``knobs.dimee``, overridden by ``overrides``."""

    per_node_thresholds = True
    knob_key = R.POLICY_NAME

    def __init__(self, name: str = R.POLICY_NAME, overrides: Optional[Mapping[str, Any]] = None):
        super().__init__(name, overrides)
        self._variant = VARIANTS.get(name, {})
        self.model: Optional[P.DimeeModel] = None
        self.tier_of_task: Dict[int, int] = {}  # task -> the tier its source chose

    def start_slot(self, view: SlotView) -> Decision:
        if view.slot == 0:
            self._build(view.scenario, view.seed)
        return Decision(info={"policy": self.name, "alpha": self.model.alpha})

    def _build(self, sc: Scenario, seed: int) -> None:
        knobs = self.knobs(sc)
        self.params = replace(R.params_from_knobs(knobs, extra=(R.TIER_KNOB,)),
                              **self._variant)
        P.check_variant_knobs(self.name, self._overrides, self.name, self._variant)  # its own
        if sc.exit_profile is None:
            raise ScenarioError("%s: the scenario needs an exit_profile (format 2, with an input "
                                "embedding)" % self.name)
        self.profile = sc.exit_profile
        self.model = P.fit(self.profile, self.params, flops=[s.flops for s in sc.stages])
        self.pools = self.model.pools
        self._rng = random.Random(seed * 7919 + 0xD1)
        self.tier_of_task = {}  # a run's task ids start at 0: none kept from an earlier run
        self._tier_dev = tier_devices(knobs)
        dev = {n.id: sc.device_of(n.id) for n in sc.sources + sc.workers}
        self._tier_node = {w.id: self._tier_dev.get(dev[w.id], -1) for w in sc.workers}
        lay = self.model.layout
        last = {R.MOBILE: lay.stages[lay.mobile_col] if lay.mobile_col >= 0 else 0,
                R.EDGE: lay.stages[lay.edge_col] if lay.edge_col >= 0 else 0,
                R.CLOUD: sc.num_stages}
        for w in sc.workers:
            t = self._tier_node[w.id]
            if t < 0:
                raise ScenarioError("knobs.dimee.tiers: worker %r (device %r) is in no tier"
                                    % (w.id, dev[w.id]))
            if w.stage > last[t] or (t != R.CLOUD and w.terminal != (w.stage == last[t])):
                raise ScenarioError("%s: the %s tier holds stages 1..%d, its last one terminal; "
                                    "worker %r holds stage %d%s" % (
                                        self.name, R.TIERS[t], last[t], w.id, w.stage,
                                        " (terminal)" if w.terminal else ""))
        self._next: Dict[str, str] = {}
        self._entry: Dict[str, Dict[int, List[str]]] = {s.id: {} for s in sc.sources}
        stage = {w.id: w.stage for w in sc.workers}
        for l in sc.links:
            if l.src in self._entry:
                self._entry[l.src].setdefault(self._tier_node[l.dst], []).append(l.dst)
            elif dev[l.dst] == dev[l.src] and stage[l.dst] == stage[l.src] + 1:
                self._next[l.src] = l.dst
        self._cloud_cost = R.cloud_cost(self.params.costs)

    # --- hooks ------------------------------------------------------------------------------
    def choose_tier(self, row: int) -> int:
        """III-E for the sample on profile ``row`` (Alg. 2's update for Ours-D), or the
        baseline's tier."""
        p, m = self.params, self.model
        if p.assign == "nearest":
            e = self.profile.embedding[row]
            tier = R.nearest_tier(self.pools, e)
            if p.adaptive:
                self.pools = R.update_pool(self.pools, tier, e)
            return tier
        if p.assign == "oracle":
            return int(R.oracle_tiers(self.profile.confidence[row][None, :], m.alpha,
                                      m.layout)[0])
        if p.assign == "random":
            return self._rng.choice(sorted(P.tiers_available(m.layout).tolist()))
        return R.TIERS.index(p.assign)

    def route(self, node: str, task: int, view: Any) -> Optional[str]:
        """A new task at a source goes to a stage-1 worker of its tier; inside a tier, to the
        device's next stage."""
        if node not in self._entry:
            return self._next[node]
        tier = self.choose_tier(view.sample_of(task))
        self.tier_of_task[task] = tier
        choices = self._entry[node].get(tier)
        if not choices:
            raise ScenarioError("%s: source %r has no link to the %s tier"
                                % (self.name, node, R.TIERS[tier]))
        return choices[0] if len(choices) == 1 else self._rng.choice(choices)

    def threshold(self, node: str, stage: int, view: Any) -> float:
        """alpha on the mobile and the edge (their last stage answers anyway: terminal); the
        cloud answers at the final head only."""
        return math.inf if self._tier_node[node] == R.CLOUD else self.model.alpha

    # --- after the run ----------------------------------------------------------------------
    def task_outcomes(self, result: Any, scenario: Scenario) -> Dict[str, np.ndarray]:
        """Per completed task: the answering tier, its profile column and eq. 2's cost."""
        ok = result.status == 1
        tiers = np.full(len(ok), -1)
        cols = np.full(len(ok), -1)
        ids = np.array([self._tier_node[w.id] for w in scenario.workers])
        tiers[ok] = ids[result.answered_by[ok]]
        col_of = {s: c for c, s in enumerate(self.profile.exit_stages)}
        cols[ok] = [col_of[int(s)] for s in result.exit_stage[ok]]
        cost = np.full(len(ok), np.nan)
        cost[ok] = R.costs_of(tiers[ok], cols[ok], self.params.costs, self.model.layout)
        return {"tier": tiers, "col": cols, "cost": cost}

    def routed_tiers(self, result: Any) -> np.ndarray:
        """Per task: the tier its source sent it to (-1 for a task no source routed), whether
        or not it completed."""
        tiers = np.full(len(result.status), -1, dtype=np.int64)
        if self.tier_of_task:
            ids = np.fromiter(self.tier_of_task.keys(), dtype=np.int64,
                              count=len(self.tier_of_task))
            tiers[ids] = np.fromiter(self.tier_of_task.values(), dtype=np.int64,
                                     count=len(self.tier_of_task))
        return tiers

    def extra_summary(self, result: Any, scenario: Scenario) -> Dict[str, Any]:
        """alpha*; ``tier_fractions``: the share of the tasks created in the summary window that
        the source sent to each tier, completed or not (over completed tasks only, a tier too
        slow to finish its tasks would read 0 however many it was sent); ``cost`` and
        ``cost_vs_cloud`` over the completed ones (a cost needs the exit stage)."""
        out: Dict[str, Any] = {"alpha": self.model.alpha}
        c = result.created_s
        tiers = self.routed_tiers(result)
        window = (c >= result.config.warmup_s) & (c < result.config.duration_s) & (tiers >= 0)
        sel = measured(result)
        if sel.any():
            cost = float(self.task_outcomes(result, scenario)["cost"][sel].mean())
            out.update(cost=cost, cost_vs_cloud=R.cost_vs_cloud(cost, self._cloud_cost))
        if window.any():
            frac = np.bincount(tiers[window], minlength=len(R.TIERS)) / float(window.sum())
            out["tier_fractions"] = dict(zip(R.TIERS, map(float, frac)))
        return out
