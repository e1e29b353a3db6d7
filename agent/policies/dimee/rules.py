"""DIMEE (seed paper 004, Bajpai & Hanawal): assign each sample to the mobile, the edge or the
cloud before any layer runs, by the distance of its input embedding to three pool means.

The paper's symbols (Section III; IV-D's second notation in brackets) and their names here:

- l layers, each with an exit head; the mobile holds layers 1..m, the edge 1..n, the cloud 1..l.
  Here a layer is a stage of the bundle, and m, n must be stages that carry a head.
- C_i = max_c P_i(c), the confidence at layer i (the profile's ``confidence``).
- alpha, the single exit threshold, chosen from S = ten equidistant values from 1/C to 1.
- lambda_m [lambda_1 = 3/2 lambda], lambda_e [lambda_2 = lambda]: processing cost of one layer
  on the mobile / edge; o_e [o_1 = 5/2 lambda], o_c [o_2 = 3 lambda]: offloading cost mobile ->
  edge / cloud; gamma [mu]: the cloud's fee per sample (no value in the paper).
  ``DimeeCosts`` holds them in units of lambda (``unit``, reward units per layer).
- P_e, P_m, P_h: the easy, moderate and hard pools of validation embeddings (Alg. 1); their means
  P^a and sizes n_e, n_m, n_h (``Pools``).

Equations and algorithms, each implemented once here:

- Alg. 1 (``oracle_tiers``): easy if C_i >= alpha at some head i <= m; moderate if not, but at
  some head m < i <= n; hard otherwise.
- eq. 2 (``rewards``): r = C_i - lambda_m U_i on the mobile, C_i - lambda_e U_i - o_e on the edge,
  C_l - o_c - gamma on the cloud, i the head the sample leaves at (``answer_head``) and U_i the
  layers (cost units) up to it; ``sample_cost`` is the cost part. eq. 3 (``expected_reward``)
  is its mean over the rows; ``choose_alpha`` maximises it over S (the first maximiser).
- III-E: the tier of a new sample is that of the nearest pool mean (``nearest_tier``, Euclidean,
  ties to the lower tier, empty pools never chosen); Alg. 2 (Ours-D) moves the chosen mean
  towards the sample (``update_pool``); Ours-F keeps the means.

Decided here where the paper is silent (spec 2.6): a tier answers at its last head when no head
reached alpha (DIMEE never cascades); the edge applies alpha from head 1 on (it runs from layer
1); the cloud never exits early (eq. 2 rewards C_l). The exit comparison is the project's one
rule, ``engines.exit_profile.should_exit`` (C >= alpha, the paper's own).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from agent.config.checks import short
from agent.config.fields import Fields
from agent.errors import UsageError
from engines.exit_profile import ExitProfile, should_exit

POLICY_NAME = "dimee"
MOBILE, EDGE, CLOUD = 0, 1, 2
TIERS = ("mobile", "edge", "cloud")
ASSIGN = ("nearest", "oracle", "random", "mobile", "edge", "cloud")
STAGE_UNITS = ("count", "flops")


# eq. 2's costs at most: ``unit`` (reward units per layer), each ratio (in lambda) and
# ``model_units`` (layers). A sample's cost then stays below 1e9 reward units, where float64
# still resolves its confidence (in [0, 1]) to 1e-7; past 1e308 it overflows to inf and every
# reward is -inf or NaN.
MAX_COST = 1e3


class DimeeParamsError(UsageError):
    """A DIMEE knob is out of range; the message names the field."""


TIER_KNOB = "tiers"
# The ``tiers`` knob's default in each place it is read. The simulator's tiers name scenario
# devices (``scenario dimee-demo`` puts them on the devices mob, edge, cloud); a node's name
# node ids (the shipped ``dimee`` topology's workers mobile, edge, cloud): one default, written
# in the two namings.
SCENARIO_TIERS: Mapping[str, Tuple[str, ...]] = {"mobile": ("mob",), "edge": ("edge",),
                                                 "cloud": ("cloud",)}
NODE_TIERS: Mapping[str, Tuple[str, ...]] = {name: (name,) for name in TIERS}


def parse_tiers(raw: Any, path: str, member: str, error: Any = DimeeParamsError
                ) -> Dict[str, Tuple[str, ...]]:
    """The ``tiers`` knob's value ``raw`` (at ``path``, e.g. ``policy_knobs.tiers``): {tier:
    names} for every tier, each given as one ``member`` (a device name, a node id) or a list of
    them, a missing tier holding none. An unknown tier, a wrong type or a name in two tiers
    raises ``error`` naming the field."""
    if not isinstance(raw, Mapping) or set(raw) - set(TIERS):
        raise error("%s: must be an object with keys among %s, got %s"
                    % (path, ", ".join(TIERS), short(raw, 80)))
    out: Dict[str, Tuple[str, ...]] = {}
    tier_of: Dict[str, str] = {}
    for name in TIERS:
        names = raw.get(name, ())
        names = [names] if isinstance(names, str) else names
        # tuples are the defaults' own form (the files give lists)
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) and n
                                                           for n in names):
            raise error("%s.%s: must be a %s or a list of them, got %s"
                        % (path, name, member, short(raw[name], 80)))
        for n in names:
            if tier_of.setdefault(n, name) != name:
                raise error("%s: %r is in both the %s and the %s tier"
                            % (path, n, tier_of[n], name))
        out[name] = tuple(names)
    return out


@dataclass(frozen=True)
class DimeeCosts:
    """eq. 2's costs; every one but ``unit`` in units of lambda (the edge's cost per layer)."""

    unit: float = 0.05  # lambda in reward units (confidence) per layer; the paper gives ratios only
    mobile: float = 1.5  # lambda_m / lambda
    edge: float = 1.0  # lambda_e / lambda
    edge_offload: float = 2.5  # o_e / lambda
    cloud_offload: float = 3.0  # o_c / lambda
    cloud_fee: float = 5.0  # gamma / lambda (no value in the paper; our default)
    stage_units: str = "count"  # "count": every stage is one layer; "flops": by its compute
    model_units: Optional[float] = None  # "flops": layers the whole model counts as (None = H)


@dataclass(frozen=True)
class DimeeParams:
    """DIMEE's knobs (``knobs.dimee``): tiers, costs, threshold grid, assignment."""

    m: int = 1  # the mobile holds stages 1..m (0: no mobile tier)
    n: int = 2  # the edge holds stages 1..n, m <= n (n = m: no edge tier)
    costs: DimeeCosts = field(default_factory=DimeeCosts)
    grid: Optional[Tuple[float, ...]] = None  # alpha candidates; None = threshold_grid(C)
    num_classes: Optional[int] = None  # C for the grid when the profile has no logits
    embedding: str = "patchnorm4"  # the embedding kind the pools are built from
    adaptive: bool = True  # Ours-D (Alg. 2 updates); False = Ours-F
    assign: str = "nearest"  # nearest (DIMEE) | oracle | random | mobile | edge | cloud


_COST_KEYS = tuple(f.name for f in fields(DimeeCosts))
KNOB_NAMES = ("m", "n", "grid", "num_classes", "embedding", "adaptive", "assign") + _COST_KEYS


def _cost(f: Fields, key: str, default: Optional[float], lo_open: bool = False
          ) -> Optional[float]:
    """A cost knob: a number >= 0 (> 0 with ``lo_open``) and at most MAX_COST."""
    v = f.num(key, default, lo=0.0, lo_open=lo_open)
    if v is not None and v > MAX_COST:
        raise f.fail(key, "must be in %s0, %g]" % ("(" if lo_open else "[", MAX_COST))
    return v


def params_from_knobs(knobs: Optional[Mapping[str, Any]], where: str = "knobs.dimee",
                      extra: Sequence[str] = ()) -> DimeeParams:
    """``DimeeParams`` from a knob table; unknown keys (``extra`` are allowed and ignored: an
    adapter's own) and bad values raise ``DimeeParamsError`` naming ``where.key``."""
    f = Fields({} if knobs is None else knobs, where, DimeeParamsError)
    f.reject_unknown(KNOB_NAMES + tuple(extra))
    d = DimeeCosts()
    costs = DimeeCosts(
        unit=_cost(f, "unit", d.unit),
        mobile=_cost(f, "mobile", d.mobile), edge=_cost(f, "edge", d.edge),
        edge_offload=_cost(f, "edge_offload", d.edge_offload),
        cloud_offload=_cost(f, "cloud_offload", d.cloud_offload),
        cloud_fee=_cost(f, "cloud_fee", d.cloud_fee),
        stage_units=f.str("stage_units", d.stage_units, choices=STAGE_UNITS),
        model_units=_cost(f, "model_units", None, lo_open=True))
    m = f.int("m", 1, lo=0)
    n = f.int("n", 2, lo=0)
    if n < m:
        raise f.fail("n", "must be >= m (%d)" % m)
    grid = None
    if f.has("grid") and f.value("grid") is not None:
        values = f.list("grid", min_len=1)
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0
               for v in values):
            raise f.fail("grid", "must list thresholds in [0, 1]")
        grid = tuple(float(v) for v in values)
    classes = (f.int("num_classes", lo=2) if f.has("num_classes")
               and f.value("num_classes") is not None else None)
    return DimeeParams(m=m, n=n, costs=costs, grid=grid, num_classes=classes,
                       embedding=f.str("embedding", "patchnorm4", non_empty=True),
                       adaptive=f.bool("adaptive", True),
                       assign=f.str("assign", "nearest", choices=ASSIGN))


def params_dict(params: DimeeParams) -> Dict[str, Any]:
    """The knob table that ``params_from_knobs`` reads back into ``params``."""
    out: Dict[str, Any] = {k: getattr(params, k) for k in KNOB_NAMES if k not in _COST_KEYS}
    out.update({k: getattr(params.costs, k) for k in _COST_KEYS})
    out["grid"] = list(params.grid) if params.grid is not None else None
    return out


def threshold_grid(num_classes: int) -> np.ndarray:
    """S: ten equidistant values from 1/C to 1.0 (IV-D)."""
    return np.linspace(1.0 / num_classes, 1.0, 10)


def stage_units(flops: Sequence[float], kind: str = "count",
                model_units: Optional[float] = None) -> np.ndarray:
    """u_h, the cost units (layers) of each stage: 1 each (``count``, paper-literal), or
    ``model_units`` (default H) split in proportion to the stages' FLOPs (``flops``)."""
    a = np.asarray(flops, dtype=np.float64)
    if kind == "count":
        return np.ones(len(a))
    if kind != "flops":
        raise DimeeParamsError("dimee.stage_units: must be count or flops, got %r" % kind)
    total = float(len(a) if model_units is None else model_units)
    return total * a / a.sum()


@dataclass(frozen=True)
class Layout:
    """Where the tiers end, as profile columns: the mobile's last head (``mobile_col``, -1 =
    no mobile), the edge's (``edge_col``, -1 = no edge); ``units[k]`` = U_i, the layers up to
    head k; ``stages`` = the head of each column."""

    mobile_col: int
    edge_col: int
    units: np.ndarray
    stages: Tuple[int, ...]


def layout(profile: ExitProfile, params: DimeeParams,
           flops: Optional[Sequence[float]] = None) -> Layout:
    """Check m and n against the profile's heads and price every head (``stage_units``)."""
    stages = profile.exit_stages

    def col(stage: int, name: str) -> int:
        if stage == 0:
            return -1
        if stage not in stages:
            raise DimeeParamsError("dimee.%s: stage %d carries no exit head (heads at %s); "
                                   "the mobile tier ends at stage m and the edge at n, each at "
                                   "an exit head" % (name, stage, list(stages)))
        return stages.index(stage)

    mobile, edge = col(params.m, "m"), col(params.n, "n")
    if params.n == params.m:
        edge = -1
    if params.costs.stage_units == "flops" and flops is None:
        raise DimeeParamsError("dimee.stage_units: flops needs the stages' FLOPs")
    u = stage_units(flops if flops is not None else [1.0] * profile.num_stages,
                    params.costs.stage_units, params.costs.model_units)
    cum = np.cumsum(u)
    return Layout(mobile, edge, np.array([cum[s - 1] for s in stages]), tuple(stages))


def oracle_tiers(confidence: np.ndarray, alpha: float, lay: Layout) -> np.ndarray:
    """Alg. 1: the pool (MOBILE = easy, EDGE = moderate, CLOUD = hard) of each row."""
    conf = np.asarray(confidence)
    reach = conf >= alpha  # vectorised should_exit
    easy = reach[:, :lay.mobile_col + 1].any(axis=1)
    moderate = ~easy & reach[:, lay.mobile_col + 1:lay.edge_col + 1].any(axis=1)
    return np.where(easy, MOBILE, np.where(moderate, EDGE, CLOUD))


def answer_head(confidence_row: Sequence[float], tier: int, alpha: float, lay: Layout) -> int:
    """The column that answers a sample on ``tier``: the first head of the tier whose confidence
    reaches alpha, else the tier's last head; the cloud answers at the final head."""
    last = {MOBILE: lay.mobile_col, EDGE: lay.edge_col}.get(tier, len(lay.stages) - 1)
    if last < 0:
        raise DimeeParamsError("dimee: the %s tier holds no stage" % TIERS[tier])
    if tier == CLOUD:
        return last
    for k in range(last):
        if should_exit(confidence_row[k], alpha):
            return k
    return last


def answer_heads(confidence: np.ndarray, tiers: np.ndarray, alpha: float,
                 lay: Layout) -> np.ndarray:
    """``answer_head`` for every row (vectorised)."""
    n, k = confidence.shape
    out = np.full(n, k - 1)
    for tier, last in ((MOBILE, lay.mobile_col), (EDGE, lay.edge_col)):
        rows = tiers == tier
        if not rows.any():
            continue
        if last < 0:
            raise DimeeParamsError("dimee: the %s tier holds no stage" % TIERS[tier])
        leaves = np.zeros((int(rows.sum()), last + 1), dtype=bool)
        leaves[:, :last] = confidence[rows, :last] >= alpha
        leaves[:, last] = True
        out[rows] = leaves.argmax(axis=1)
    return out


def cloud_cost(costs: DimeeCosts) -> float:
    """eq. 2's cost of a sample sent to the cloud: the paper's 1.00 reference."""
    return costs.unit * (costs.cloud_offload + costs.cloud_fee)


def cost_vs_cloud(mean_cost: float, cloud: float) -> Optional[float]:
    """Mean cost relative to cloud-only (``cloud``: ``cloud_cost``), minus 1 (-0.42 = 42 %
    cheaper); None when the cloud costs nothing. Rounded to 12 places, so that cloud-only reads
    0, not 2e-16."""
    return round(mean_cost / cloud - 1.0, 12) if cloud > 0 else None


def sample_cost(tier: int, head: int, costs: DimeeCosts, lay: Layout) -> float:
    """The cost part of eq. 2 for a sample answered at column ``head`` on ``tier``."""
    return float(_costs(np.array([tier]), np.array([head]), costs, lay)[0])


def _costs(tiers: np.ndarray, heads: np.ndarray, c: DimeeCosts, lay: Layout) -> np.ndarray:
    u = lay.units[heads]
    return np.where(tiers == MOBILE, c.unit * (c.mobile * u),
                    np.where(tiers == EDGE, c.unit * (c.edge * u + c.edge_offload), cloud_cost(c)))


def costs_of(tiers: np.ndarray, heads: np.ndarray, costs: DimeeCosts, lay: Layout) -> np.ndarray:
    """``sample_cost`` for every row (vectorised)."""
    return _costs(np.asarray(tiers), np.asarray(heads), costs, lay)


def rewards(confidence: np.ndarray, alpha: float, costs: DimeeCosts, lay: Layout) -> np.ndarray:
    """eq. 2 for every row under Alg. 1's tiers at ``alpha``."""
    tiers = oracle_tiers(confidence, alpha, lay)
    heads = answer_heads(confidence, tiers, alpha, lay)
    return confidence[np.arange(len(tiers)), heads] - _costs(tiers, heads, costs, lay)


def expected_reward(confidence: np.ndarray, alpha: float, costs: DimeeCosts,
                    lay: Layout) -> float:
    """eq. 3: the mean reward over the rows."""
    return float(rewards(confidence, alpha, costs, lay).mean())


def choose_alpha(confidence: np.ndarray, costs: DimeeCosts, lay: Layout,
                 grid: Sequence[float]) -> Tuple[float, Dict[float, float]]:
    """alpha* = argmax over ``grid`` of eq. 3 (the first maximiser in grid order), and E[r]
    for every candidate."""
    table = {float(a): expected_reward(confidence, float(a), costs, lay) for a in grid}
    values = np.array(list(table.values()))
    return float(list(table)[int(np.argmax(values))]), table


@dataclass(frozen=True)
class Pools:
    """Pool means P^a (3, D), sizes n (3,) and which pools have members (``present``)."""

    mean: np.ndarray
    count: np.ndarray
    present: np.ndarray


def build_pools(embedding: np.ndarray, tiers: np.ndarray) -> Pools:
    """The means and sizes of the easy, moderate and hard pools (Alg. 1's output)."""
    e = np.asarray(embedding, dtype=np.float64)
    mean = np.zeros((3, e.shape[1]))
    count = np.array([int(np.sum(tiers == t)) for t in range(3)])
    for t in range(3):
        if count[t]:
            mean[t] = e[tiers == t].mean(axis=0)
    return Pools(mean, count, count > 0)


def distances(pools: Pools, e: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances of embeddings ``e`` (N, D) to the pool means: (N, 3), inf
    for an empty pool."""
    e = np.asarray(e, dtype=np.float64)
    d = ((e[:, None, :] - pools.mean[None, :, :]) ** 2).sum(axis=2)
    d[:, ~pools.present] = np.inf
    return d


def nearest_tier(pools: Pools, e: np.ndarray) -> int:
    """III-E: the tier of the nearest pool mean (ties: the lower tier; empty pools skipped)."""
    if not pools.present.any():
        raise UsageError("dimee: every pool is empty")
    return int(np.argmin(distances(pools, np.asarray(e)[None, :])[0]))


def update_pool(pools: Pools, tier: int, e: np.ndarray) -> Pools:
    """Alg. 2: P^a <- (n P^a + x_e)/(n + 1), n <- n + 1, for the pool ``tier``."""
    mean, count = pools.mean.copy(), pools.count.copy()
    mean[tier] = (count[tier] * mean[tier] + np.asarray(e, dtype=np.float64)) / (count[tier] + 1)
    count[tier] += 1
    return replace(pools, mean=mean, count=count, present=count > 0)
