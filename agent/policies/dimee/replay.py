"""DIMEE learned from an exit profile and replayed on its rows, with the paper's baselines.

``fit`` is what every place that runs DIMEE does at start-up (the agent's nodes, the simulator,
``plan``): alpha* by eq. 3 over S on the validation rows, then Alg. 1's pools at alpha*. The
same inputs give the same model everywhere, so nodes agree without messages. ``replay`` runs
the post-deployment inference of III-E on the profile's rows (ascending order: Ours-D's updates
depend on the order) through the per-sample functions of ``rules``, vectorised where no state
carries from one row to the next. ``plan_report`` is ``edge-agent plan --policy dimee``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np

from agent.config.fields import Fields
from agent.errors import UsageError
from agent.policies.dimee import rules as R
from agent.policies.plan_report import PlanReport
from agent.policies.splits import test_rows, validation_rows
from engines.exit_profile import ExitProfile

BASELINES = ("tier-cloud", "tier-edge", "tier-mobile", "tier-random", "tier-oracle")
# what each name fixes of DIMEE's knobs: a node's or a testbed's knobs of that name may not set
# them otherwise (``check_variant_knobs``); a scenario's shared ``knobs.dimee`` is DIMEE's own
VARIANTS: Dict[str, Dict[str, Any]] = {"dimee": {}, "dimee-f": {"adaptive": False}}


def check_variant_knobs(name: str, knobs: Mapping[str, Any], where: str,
                        fixed: Optional[Mapping[str, Any]] = None) -> None:
    """Refuse a knob of ``knobs`` (those given to policy ``name`` itself) that the variant
    fixes (``fixed``, default ``VARIANTS[name]``), set to another value: ``where.adaptive:
    dimee-f fixes it at false (use policy "dimee" to set it), got true``; the value it fixes
    is accepted."""
    fixed = VARIANTS.get(name, {}) if fixed is None else fixed
    Fields(knobs, where, R.DimeeParamsError).refuse_fixed(fixed, name, R.POLICY_NAME)


@dataclass(frozen=True)
class DimeeModel:
    """What ``fit`` learns: alpha*, E[r] per candidate, the pools at alpha*, the tier layout."""

    alpha: float
    reward_by_alpha: Dict[float, float]
    pools: Optional[R.Pools]  # None when the profile has no embedding
    layout: R.Layout
    num_classes: int


def num_classes(profile: ExitProfile, params: R.DimeeParams) -> int:
    """C: from the profile's logits, else the ``num_classes`` knob."""
    c = profile.num_classes or params.num_classes
    if c is None:
        raise R.DimeeParamsError("dimee.num_classes: the exit profile has no logits; give the "
                                 "number of classes")
    return int(c)


def check_embedding(profile: ExitProfile, params: R.DimeeParams) -> None:
    """The profile must carry the embedding kind the knobs name (the pools are built from it
    and a node embeds new inputs the same way)."""
    if profile.embedding is None:
        raise R.DimeeParamsError("dimee: the exit profile has no input embedding; profile the "
                                 "bundle again (edge-agent profile --embedding auto)")
    if profile.embedding_kind != params.embedding:
        raise R.DimeeParamsError("dimee.embedding: %r, but the exit profile's embedding is %r"
                                 % (params.embedding, profile.embedding_kind))


def fit(profile: ExitProfile, params: R.DimeeParams, rows: Optional[Sequence[int]] = None,
        flops: Optional[Sequence[float]] = None) -> DimeeModel:
    """alpha* (eq. 3 over S on ``rows``, default the validation rows) and Alg. 1's pools at
    alpha*; ``flops`` per stage for ``stage_units = flops``."""
    rows = validation_rows(profile.num_samples) if rows is None else np.asarray(rows)
    lay = R.layout(profile, params, flops)
    c = num_classes(profile, params)
    grid = params.grid if params.grid is not None else R.threshold_grid(c)
    conf = profile.confidence[rows]
    alpha, table = R.choose_alpha(conf, params.costs, lay, grid)
    pools = None
    if params.assign == "nearest":
        check_embedding(profile, params)
    if profile.embedding is not None:
        pools = R.build_pools(profile.embedding[rows], R.oracle_tiers(conf, alpha, lay))
    return DimeeModel(alpha, table, pools, lay, c)


@dataclass(frozen=True)
class DimeeReplay:
    """Per-row outcome of a replay (rows ascending) and its aggregates."""

    rows: np.ndarray
    tier: np.ndarray  # MOBILE / EDGE / CLOUD per row
    head: np.ndarray  # the profile column that answered
    correct: np.ndarray  # bool
    cost: np.ndarray  # eq. 2's cost part, reward units
    cloud_cost: float  # the cost of a sample sent to the cloud (the paper's 1.00 reference)
    pools: Optional[R.Pools]  # after the replay (Ours-D moved them)

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean())

    @property
    def mean_cost(self) -> float:
        return float(self.cost.mean())

    @property
    def cost_vs_cloud(self) -> Optional[float]:
        """Mean cost relative to cloud-only, minus 1 (-0.42 = 42 % cheaper); None if free."""
        return R.cost_vs_cloud(self.mean_cost, self.cloud_cost)

    @property
    def tier_fractions(self) -> np.ndarray:
        return np.bincount(self.tier, minlength=3) / float(len(self.tier))

    def summary(self) -> Dict[str, Any]:
        """accuracy, cost, cost_vs_cloud and tier fractions as plain numbers."""
        return {"accuracy": self.accuracy, "cost": self.mean_cost,
                "cost_vs_cloud": self.cost_vs_cloud,
                "tier_fractions": dict(zip(R.TIERS, map(float, self.tier_fractions)))}


def tiers_available(lay: R.Layout) -> np.ndarray:
    """The tiers that hold a stage (the mobile is absent when m = 0, the edge when n = m)."""
    return np.array([t for t, col in ((R.MOBILE, lay.mobile_col), (R.EDGE, lay.edge_col),
                                      (R.CLOUD, 0)) if col >= 0])


def assign_tiers(profile: ExitProfile, model: DimeeModel, params: R.DimeeParams,
                 rows: np.ndarray, seed: int = 0):
    """The tier of every row under ``params.assign`` and the pools after the last row."""
    pools = model.pools
    if params.assign == "nearest":
        if pools is None:
            raise UsageError("dimee: nearest-mean assignment needs the profile's embedding")
        emb = profile.embedding[rows]
        if not params.adaptive:  # Ours-F: no state carries over, one vectorised argmin
            return np.argmin(R.distances(pools, emb), axis=1), pools
        tiers = np.empty(len(rows), dtype=np.int64)
        for i, e in enumerate(emb):  # Ours-D, Alg. 2: each row moves its pool's mean
            tiers[i] = R.nearest_tier(pools, e)
            pools = R.update_pool(pools, int(tiers[i]), e)
        return tiers, pools
    if params.assign == "oracle":  # Alg. 1 on the row's own confidences: an upper bound
        return R.oracle_tiers(profile.confidence[rows], model.alpha, model.layout), pools
    if params.assign == "random":
        avail = tiers_available(model.layout)
        return avail[np.random.default_rng(seed).integers(0, len(avail), len(rows))], pools
    return np.full(len(rows), R.TIERS.index(params.assign)), pools


def replay(profile: ExitProfile, model: DimeeModel, params: R.DimeeParams,
           rows: Optional[Sequence[int]] = None, seed: int = 0,
           tiers: Optional[np.ndarray] = None) -> DimeeReplay:
    """III-E on ``rows`` (ascending; default the test rows): tier, answering head, correctness
    and cost of each row; ``tiers`` given = replay that assignment instead."""
    rows = test_rows(profile.num_samples) if rows is None else np.sort(np.asarray(rows))
    pools = model.pools
    if tiers is None:
        tiers, pools = assign_tiers(profile, model, params, rows, seed)
    conf = profile.confidence[rows]
    heads = R.answer_heads(conf, tiers, model.alpha, model.layout)
    c = params.costs
    return DimeeReplay(rows, tiers, heads, profile.correct[rows, heads],
                       R.costs_of(tiers, heads, c, model.layout),
                       R.cloud_cost(c), pools)


def random_like(profile: ExitProfile, model: DimeeModel, params: R.DimeeParams,
                reference: DimeeReplay, seeds: int = 200) -> np.ndarray:
    """Accuracies of ``seeds`` random assignments with exactly ``reference``'s tier counts
    (seeded permutations of its tiers): is the nearest-mean choice better than chance?"""
    out = np.empty(seeds)
    for s in range(seeds):
        perm = np.random.default_rng([s, 0xD1]).permutation(reference.tier)
        out[s] = replay(profile, model, params, reference.rows, tiers=perm).accuracy
    return out


def early_exit_baseline(profile: ExitProfile, params: R.DimeeParams, alpha: float,
                        flops: Optional[Sequence[float]] = None,
                        rows: Optional[Sequence[int]] = None) -> DimeeReplay:
    """The paper's Early-Exit baseline: the whole model on the mobile, exits at ``alpha``."""
    h = profile.num_stages
    p = replace(params, m=h, n=h, assign="mobile")
    lay = R.layout(profile, p, flops)
    model = DimeeModel(alpha, {}, None, lay, num_classes(profile, params))
    return replay(profile, model, p, rows)


def plan_report(profile: ExitProfile, params: R.DimeeParams, name: str = R.POLICY_NAME,
                flops: Optional[Sequence[float]] = None, seed: int = 0) -> Dict[str, Any]:
    """``plan --policy dimee|dimee-f``: alpha*, E[r] per alpha, pool sizes (validation rows),
    and the replay on the test rows of DIMEE and of each baseline."""
    params = replace(params, **VARIANTS.get(name, {}))
    model = fit(profile, params, flops=flops)
    res = replay(profile, model, params, seed=seed)
    out: Dict[str, Any] = {"policy": name, "alpha": model.alpha,
                           "reward_by_alpha": {"%.4f" % a: r
                                               for a, r in model.reward_by_alpha.items()},
                           "pools": dict(zip(R.TIERS, (int(v) for v in model.pools.count)))
                           if model.pools is not None else None,
                           "rows": "validation rows learn, test rows report"}
    out.update(res.summary())
    base: Dict[str, Any] = {}
    for b in BASELINES:
        tier = b[len("tier-"):]
        if tier in R.TIERS and _col(model.layout, tier) < 0:
            continue  # that tier holds no stage (m = 0 or n = m)
        base[b] = replay(profile, model, replace(params, assign=tier), seed=seed).summary()
    base["early-exit"] = early_exit_baseline(profile, params, model.alpha, flops).summary()
    out["baselines"] = base
    return out


def _col(lay: R.Layout, tier: str) -> int:
    return {"mobile": lay.mobile_col, "edge": lay.edge_col}.get(tier, 0)


def planner(scenario: Any, name: str) -> Any:
    """``plan --policy dimee|dimee-f`` on a scenario: its exit profile (format 2 with an
    embedding), its stages' FLOPs and ``knobs.dimee``."""
    if scenario.exit_profile is None:
        raise UsageError("plan --policy %s: the scenario needs an exit_profile (format 2, with "
                         "an input embedding)" % name)
    params = R.params_from_knobs(scenario.knobs.get(R.POLICY_NAME), extra=(R.TIER_KNOB,))
    flops = [s.flops for s in scenario.stages]
    return PlanReport(name, plan_report(scenario.exit_profile, params, name, flops))
