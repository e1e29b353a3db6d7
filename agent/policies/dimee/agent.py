"""DIMEE in the agent: ``agent.policies.dimee`` behind the ``AgentPolicy`` interface.

Every node fits the same model at start-up (``replay.fit`` on the bundle's exit profile, the
validation rows: alpha* and the three pools), so all agree without messages. The tiers are
workers holding stage prefixes, named in ``policy_knobs.tiers = {mobile = [ids], edge = [ids],
cloud = [ids]}`` (default one worker each, called ``mobile``, ``edge``, ``cloud``): in a
topology every tier worker serves stage 1, so the stages alone cannot tell them apart.

- Source: ``on_issue`` embeds a new task's raw input (``engines.embedding.embed_as_stored``,
  the embedding the profile stores) and picks its tier (``rules.nearest_tier``, or the
  ``assign`` baseline: ``random`` with the policy's seeded RNG, or a fixed tier); Ours-D
  (``dimee``) moves that pool's mean once per task (Alg. 2, ``rules.update_pool``); a re-issue
  keeps the tier. ``choose_successor`` sends the raw input to an alive worker of that tier
  (uniform); none alive: the next tier up (mobile -> edge -> cloud; cloud -> edge -> mobile),
  counted in ``fallbacks`` once per task (a re-issue or re-route that falls back again is not
  counted again; the last ``MAX_TASKS_KEPT`` task ids are remembered). ``snapshot``/``restore``
  keep the adaptive means and counts with the fingerprint of the fit they moved from
  (``fit_id``): a source whose fit changed since (another exit profile, knobs that move alpha*
  or the pools) starts from its new fit instead of resuming means of the old one.
- Tier workers: thresholds alpha* at the heads below their last stage on the mobile and the
  edge, none on the cloud (eq. 2 rewards the final head); the mobile and the edge are
  ``terminal`` workers (node config), so they answer at their last stage whatever C is.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from dataclasses import replace
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from agent.policies.api import NodeView, TaskInfo, TieredPolicy
from agent.policies.dimee import replay as dimee_replay
from agent.policies.dimee import rules as R
from agent.policies.thresholds import thresholds_to_wire
from engines.embedding import embed_as_stored

log = logging.getLogger(__name__)

DEFAULT_TIERS = R.NODE_TIERS  # node ids per tier when ``policy_knobs.tiers`` is absent
FALLBACK = {R.MOBILE: (R.MOBILE, R.EDGE, R.CLOUD), R.EDGE: (R.EDGE, R.CLOUD, R.MOBILE),
            R.CLOUD: (R.CLOUD, R.EDGE, R.MOBILE)}
MAX_TASKS_KEPT = 100_000  # task id entries a source keeps for re-issues (tier, fallback)


def parse_tiers(knobs: Mapping[str, Any], where: str) -> Dict[str, tuple]:
    """``tiers = {mobile = [ids], edge = [ids], cloud = [ids]}``: node ids per tier
    (``rules.parse_tiers``: a node id or a list of them per tier; default ``DEFAULT_TIERS``)."""
    return R.parse_tiers(knobs.get(R.TIER_KNOB, DEFAULT_TIERS), "%s.%s" % (where, R.TIER_KNOB),
                         "node id")


def parse_agent_knobs(knobs: Mapping[str, Any], where: str = "policy_knobs",
                      error: Any = None, name: str = R.POLICY_NAME) -> Any:
    """Validate a node's knobs of policy ``name`` (``dimee``, ``dimee-f``): the ``knobs.dimee``
    ones plus ``tiers``, and none the variant fixes set otherwise
    (``replay.check_variant_knobs``). The params ``name`` runs, and the tiers."""
    params = R.params_from_knobs(knobs, where, extra=(R.TIER_KNOB,))
    if params.assign == "oracle":
        raise R.DimeeParamsError("%s.assign: oracle needs the task's own confidences at every "
                                 "head, which no node has before running it" % where)
    dimee_replay.check_variant_knobs(name, knobs, where)
    params = replace(params, **dimee_replay.VARIANTS.get(name, {}))
    return params, parse_tiers(knobs, where)


class DimeePolicy(TieredPolicy):
    """``dimee`` (Ours-D) and ``dimee-f`` (Ours-F, ``adaptive`` false) on a node."""

    name = R.POLICY_NAME

    def __init__(self, thresholds: Mapping[int, float], knobs: Mapping[str, Any], seed: int = 0,
                 name: str = R.POLICY_NAME):
        super().__init__(thresholds, knobs, seed)
        self.name = name
        self.params, self.tiers = parse_agent_knobs(knobs, name=name)
        self.model: Optional[dimee_replay.DimeeModel] = None
        self.pools: Optional[R.Pools] = None
        self._tier_of: "OrderedDict[str, int]" = OrderedDict()
        # ids of tasks already counted in ``fallbacks``: a re-issue or a re-route looks like a
        # first send to ``choose_successor`` (the outbox gives no attempt), so only this tells
        self._fell_back: "OrderedDict[str, None]" = OrderedDict()
        self._th: Dict[int, float] = {}
        self._role = ""  # the node's role (configure): only a source keeps pools and counts
        self._fit = ""  # fingerprint of the fitted pools (``fit_id``), saved with moved means
        self.fallbacks = 0  # tasks sent to another tier than their own (none alive there)
        self.assigned = [0, 0, 0]  # tasks assigned per tier (sources)

    def tier_of_node(self, node_id: str) -> Optional[int]:
        """The tier index of worker ``node_id`` (None: in no tier)."""
        for t, name in enumerate(R.TIERS):
            if node_id in self.tiers.get(name, ()):
                return t
        return None

    def configure(self, cfg: Any, view: NodeView) -> None:
        """Fit alpha* and the pools from the bundle's exit profile; check this tier's stages."""
        super().configure(cfg, view)
        profile = view.exit_profile
        if profile is None:
            raise R.DimeeParamsError("policy dimee: the bundle has no exit profile to fit "
                                     "alpha and the pools from")
        flops = view.stage_flops if self.params.costs.stage_units == "flops" else None
        self.model = dimee_replay.fit(profile, self.params, flops=flops)
        self.pools = self.model.pools
        self._fit = fit_id(self.model)
        self._role = view.role
        if view.role != "worker":
            return
        tier = self.tier_of_node(view.node_id)
        if tier is None:
            raise R.DimeeParamsError("policy_knobs.tiers: worker %r is in no tier (tiers: %s)"
                                     % (view.node_id, dict(self.tiers)))
        want = (self.params.m, self.params.n, view.num_stages)[tier]
        last = max(view.stage, view.last_stage)
        if view.stage != 1 or last != want:
            raise R.DimeeParamsError("policy_knobs.tiers: the %s worker %r must hold stages "
                                     "1..%d (dimee m = %d, n = %d), it holds %d..%d"
                                     % (R.TIERS[tier], view.node_id, want, self.params.m,
                                        self.params.n, view.stage, last))
        if tier != R.CLOUD:
            self._th = {h: self.model.alpha for h in view.exit_stages if h < last}

    def thresholds(self) -> Dict[int, float]:
        return dict(self._th)

    def assign(self, x: np.ndarray) -> int:
        """The tier of a new task with raw input ``x`` (III-E; Alg. 2 for Ours-D)."""
        how = self.params.assign
        if how == "nearest":
            e = embed_as_stored(x, self.params.embedding)[0]
            tier = R.nearest_tier(self.pools, e)
            if self.params.adaptive:
                self.pools = R.update_pool(self.pools, tier, e)
            return tier
        if how == "random":
            return self.rng.choice([t for t, name in enumerate(R.TIERS) if self.tiers[name]])
        return R.TIERS.index(how)

    def on_issue(self, task: TaskInfo, view: NodeView) -> None:
        """Sources: a new task's tier from its input (once per task; re-issues keep it)."""
        if view.role != "source" or task.id in self._tier_of or task.x is None:
            return
        tier = self.assign(task.x)
        self.assigned[tier] += 1
        _keep(self._tier_of, task.id, tier)

    def choose_successor(self, task: TaskInfo, view: NodeView,
                         exclude: Sequence[str] = ()) -> Optional[str]:
        """Sources: an alive worker of the task's tier, else of the next tier up."""
        if view.role != "source":
            return super().choose_successor(task, view, exclude)
        tier = self._tier_of.get(task.id, R.CLOUD)
        i, peer = self.pick([self.tiers[R.TIERS[t]] for t in FALLBACK[tier]], view, task.stage,
                            exclude)
        if i > 0 and task.id not in self._fell_back:  # each task counts once (re-issues and
            self.fallbacks += 1  # re-routes after a refusal or a lost ACK come here again)
            _keep(self._fell_back, task.id, None)
        return peer

    def snapshot(self) -> Dict[str, Any]:
        """The thresholds this node exits at (alpha* on the mobile and the edge below their
        last stage, none on the cloud or a source: not the config's, which DIMEE never uses);
        on a source its counts and, for Ours-D, the moved pool means with their fit's id."""
        state = super().snapshot()
        state["thresholds"] = thresholds_to_wire(self.thresholds())
        if self._role != "source":  # workers neither assign nor move pools
            return state
        state.update({"dimee_fallbacks": self.fallbacks, "dimee_assigned": list(self.assigned)})
        if self.pools is not None and self.params.adaptive:
            state["dimee_pools"] = {"mean": self.pools.mean.tolist(),
                                    "count": [int(c) for c in self.pools.count],
                                    "fit": self._fit}
        return state

    def restore(self, state: Mapping[str, Any]) -> None:
        """Sources: take back the adaptive pool means and counts moved from this same fit
        (``fit_id``; shapes must match the fitted ones); means moved from another fit, or
        saved without its id, are left (logged) and the source starts from its fit."""
        super().restore(state)
        saved = state.get("dimee_pools")
        if not (isinstance(saved, Mapping) and self.pools is not None and self.params.adaptive
                and self._role == "source"):
            return
        if saved.get("fit") != self._fit:
            log.info("dimee: saved pool means not resumed: they moved from another fit (saved "
                     "fit %.40r, now %s: the exit profile or the dimee knobs changed); "
                     "starting from the fitted pools (counts %s, alpha %.3f)", saved.get("fit"),
                     self._fit, [int(c) for c in self.pools.count], self.model.alpha)
            return
        try:
            mean = np.asarray(saved.get("mean"), dtype=np.float64)
            count = np.asarray(saved.get("count"), dtype=np.int64)
        except (TypeError, ValueError):
            return
        if (mean.shape == self.pools.mean.shape and count.shape == self.pools.count.shape
                and np.isfinite(mean).all() and (count >= 0).all()):
            self.pools = R.Pools(mean, count, count > 0)
            log.info("dimee: resumed the adaptive pool means (counts %s; fitted %s)",
                     [int(c) for c in count], [int(c) for c in self.model.pools.count])


def fit_id(model: "dimee_replay.DimeeModel") -> str:
    """Fingerprint of a fit: alpha* and the fitted pools' means and sizes (16 hex digits).
    Means Ours-D moved are worth resuming only on the fit they moved from."""
    h = hashlib.sha256(repr(float(model.alpha)).encode("ascii"))
    h.update(np.ascontiguousarray(model.pools.mean, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(model.pools.count, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def _keep(table: "OrderedDict[str, Any]", key: str, value: Any) -> None:
    """Enter ``key`` in a per-task table of at most ``MAX_TASKS_KEPT`` entries (the oldest go:
    a task that old has been answered or lost at its source)."""
    table[key] = value
    if len(table) > MAX_TASKS_KEPT:
        table.popitem(last=False)


def tier_counts(records: List[Mapping[str, Any]], tiers: Mapping[str, Sequence[str]]
                ) -> Dict[str, int]:
    """Completed records per tier, from the answering ``worker`` (for reports and checks)."""
    out = {name: 0 for name in R.TIERS}
    for r in records:
        for name in R.TIERS:
            if r.get("status") == "completed" and r.get("worker") in tiers.get(name, ()):
                out[name] += 1
    return out
