"""The DTO-EE paper's baselines (Section 4.1): CF, BF, NGTO and GA, as pure functions.

- ``cf_routing``: Computing-First, every offloader splits in proportion to its receivers'
  capacities mu_j.
- ``bf_routing``: Bandwidth-First, in proportion to the link rates r_ij.
- ``ngto``: non-cooperative game; offloaders, in turn, take their selfish best response (the
  split minimising their own tasks' hop + compute delay at the next stage, given everyone
  else's load) until no one moves (a Nash equilibrium); ``rounds`` counts full passes.
- ``ga``: every source runs a genetic search over whole paths on global state that is
  ``staleness`` rounds old, and moves part of its traffic to the best path found; workers
  forward in proportion to the path traffic through them.

All return a ``PolicyResult`` (``agent.policies.model``). With an exit profile the thresholds
are tuned as the paper does for every baseline: the same threshold step (eqs. 17-18), with the
marginal delays of the baseline's routing, alternating with the routing until neither moves.
The scenario knob ``baseline_thresholds`` = "fixed" turns that off for all four: they route
only, at the scenario's initial thresholds, as the agents' ``cf`` and ``bf`` run (a node cannot
tune without DTO-EE's messages), so ``plan`` and ``simulate`` predict what a testbed measures.
``mean_response_time`` (eq. 8) is re-exported here for callers that evaluate a routing.
"""

from __future__ import annotations

from typing import Any, Callable, Collection, Dict, Mapping, Optional, Tuple

import numpy as np

from agent.policies.api import bounded_weights
from agent.policies.dtoee.network import exact_marginals
from agent.policies.dtoee.knobs import DtoeeParams, parse_knobs
from agent.policies.model import (
    Network,
    PolicyResult,
    accuracy_range,
    compile_network,
    loads,
    make_result,
    node_rates,
    stage_remaining,
    uniform_routing,
)
from agent.config.fields import Fields
from agent.policies.thresholds import ThresholdReport, choose_threshold
from agent.policies.setting import Scenario, ScenarioError
from engines.exit_profile import exit_stats

# ga's staleness at most this many rounds, as the scenario knob ga_staleness and plan
# --staleness both take it: plan --rounds stops at the same number, and a state older than
# every round of a run changes nothing
MAX_STALENESS_ROUNDS = 100000

# the scenario knob baseline_thresholds: "tuned", the DTO-EE paper's baselines ("We adaptively
# adjust confidence thresholds across all baselines"), or "fixed", routing only at the initial
# thresholds, as a node's cf and bf run
BASELINE_THRESHOLDS = ("tuned", "fixed")

# baseline knobs only the whole-network planners read; in a node's policy_knobs they would be
# silently without effect, so a node config refuses them, saying why
NOT_IN_AGENT = {
    "baseline_thresholds": "a node's cf and bf keep the thresholds of its config (tuning them "
                           "takes DTO-EE's messages); plan and simulate only",
}

Router = Callable[[np.ndarray, Optional[np.ndarray]], Tuple[np.ndarray, int, bool]]


def proportional_split(weights: Mapping[Any, float],
                       usable: Optional[Collection[Any]] = None) -> Dict[Any, float]:
    """CF's and BF's rule for one offloader: p_j = w_j / sum_k w_k (w = mu_j for CF, r_ij for
    BF) over the successors in ``usable`` (default: all); the others, and every one when no
    usable weight is positive, get 0. The agent's ``cf``/``bf`` and the planners share it."""
    keep = weights.keys() if usable is None else usable
    w = dict(zip(weights, bounded_weights([v if j in keep else 0.0
                                           for j, v in weights.items()])))
    total = sum(w.values())
    return {j: (v / total if total > 0 else 0.0) for j, v in w.items()}


def _proportional(net: Network, weight: np.ndarray) -> np.ndarray:
    """``proportional_split`` of every offloader's row, as one vector over the edges."""
    p = np.zeros(len(weight))
    for i in np.unique(net.edge_src):
        edges = np.flatnonzero(net.edge_src == i)
        row = proportional_split({int(e): float(weight[e]) for e in edges})
        p[edges] = [row[int(e)] for e in edges]
    return p


def cf_routing(scenario: Scenario, thresholds: Optional[Mapping[int, float]] = None
               ) -> PolicyResult:
    """Computing-First: p_ij = mu_j / sum_{k in L_i} mu_k."""
    net = compile_network(scenario)
    p = _proportional(net, net.capacity[net.edge_dst])
    return _with_thresholds("cf", scenario, net, lambda rem, prev: (p, 1, True), thresholds)


def bf_routing(scenario: Scenario, thresholds: Optional[Mapping[int, float]] = None
               ) -> PolicyResult:
    """Bandwidth-First: p_ij = r_ij / sum_{k in L_i} r_ik."""
    net = compile_network(scenario)
    p = _proportional(net, net.edge_rate.copy())
    return _with_thresholds("bf", scenario, net, lambda rem, prev: (p, 1, True), thresholds)


def best_response(flow: float, alpha: float, free: np.ndarray, hop: np.ndarray,
                  link_rate: Optional[np.ndarray] = None, link_bytes: float = 0.0
                  ) -> np.ndarray:
    """Split ``flow`` tasks/s over receivers with spare capacity ``free`` (FLOP/s) and hop
    delays ``hop`` minimising sum_j x_j (alpha / (free_j - alpha x_j) + hop_j); with
    ``link_rate`` (links as servers, ``link_model`` "shared") the hop is instead
    link_bytes / (r_j - link_bytes x_j) on the node's own link to j."""
    if link_rate is not None:
        return _best_response_shared(flow, alpha, free, link_rate, link_bytes)
    ok = free > 0
    if flow <= 0 or not ok.any():
        return np.full(len(free), 1.0 / len(free))
    if np.sum(free[ok]) / alpha <= flow:  # cannot fit: spread by spare capacity, overloaded
        w = np.where(ok, free, 0.0)
        return w / w.sum()
    safe = np.where(ok, free, 1.0)

    def split(nu):
        root = np.sqrt(alpha * safe / np.maximum(nu - hop, 1e-12))
        return np.where(ok & (nu > hop + alpha / safe), (safe - root) / alpha, 0.0)

    return _water_level(split, float(np.min(np.where(ok, hop + alpha / safe, np.inf))), flow)


def _water_level(split, lo: float, flow: float) -> np.ndarray:
    """The split at the marginal delay nu where ``split(nu)`` sums to ``flow`` (bisection).
    The bracket grows from a step the size of ``lo``: above 2**53 s, lo + 1.0 is lo itself."""
    hi = lo + max(1.0, abs(lo))
    while split(hi).sum() < flow:
        hi = lo + 2.0 * (hi - lo)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if split(mid).sum() < flow else (lo, mid)
    x = split(hi)
    return x / x.sum()


def _best_response_shared(flow, alpha, free, rate, b) -> np.ndarray:
    """``best_response`` with each link a server of ``rate`` bytes/s (b bytes per task): x_j
    solves alpha F/(F - alpha x)^2 + b r/(r - b x)^2 = nu, by Newton from the right (from the
    smaller of the two one-server solutions, where the convex sum is above nu)."""
    ok = (free > 0) & (rate > 0)
    if flow <= 0 or not ok.any():
        return np.full(len(free), 1.0 / len(free))
    top = np.where(ok, np.minimum(free / alpha, rate / b), 0.0)  # most each one can take
    if np.sum(top) <= flow:  # cannot fit: spread by what each can take, overloaded
        return top / top.sum()
    f = np.where(ok, free, 1.0)
    r = np.where(ok, rate, 1.0)

    def split(nu):
        xc = (f - np.sqrt(alpha * f / nu)) / alpha
        xl = (r - np.sqrt(b * r / nu)) / b
        x = np.maximum(np.minimum(xc, xl), 0.0)
        for _ in range(8):
            gc, gl = f - alpha * x, r - b * x
            g = alpha * f / gc ** 2 + b * r / gl ** 2 - nu
            dg = 2 * alpha * alpha * f / gc ** 3 + 2 * b * b * r / gl ** 3
            x = np.maximum(x - g / dg, 0.0)
        return np.where(ok & (nu > alpha / f + b / r), x, 0.0)

    return _water_level(split, float(np.min(np.where(ok, alpha / f + b / r, np.inf))), flow)


def ngto(scenario: Scenario, thresholds: Optional[Mapping[int, float]] = None,
         max_rounds: int = 100, tolerance: float = 1e-4) -> PolicyResult:
    """Best responses in turn (stage by stage, file order) until no probability moves more
    than ``tolerance`` in a full pass, or ``max_rounds`` passes."""
    net = compile_network(scenario)
    shared = net.link_model == "shared"

    def route(rem, prev):
        p = uniform_routing(net) if prev is None else prev.copy()
        remv = stage_remaining(rem)
        for rnd in range(1, max_rounds + 1):
            moved = 0.0
            for row, node in enumerate(net.offloaders):
                es = net.slots[row][net.slots[row] >= 0]
                phi = node_rates(net, p, rem)
                lam = loads(net, phi)
                h = int(net.stage[node])
                flow = phi[node] * remv[h]
                dst = net.edge_dst[es]
                alpha = net.flops[h + 1]
                free = net.capacity[dst] - (lam[dst] - alpha * p[es] * flow)
                if shared:  # the node's own link to each receiver is a server of r B/s
                    new = best_response(flow, alpha, free, 0.0, net.edge_rate[es],
                                        float(net.hop_bytes[h + 1]))
                else:
                    new = best_response(flow, alpha, free,
                                        net.input_bytes[h + 1] / net.edge_rate[es])
                moved = max(moved, float(np.max(np.abs(new - p[es]))))
                p[es] = new
            if moved < tolerance:
                return p, rnd, True
        return p, max_rounds, False

    return _with_thresholds("ngto", scenario, net, route, thresholds)


def staleness_knob(knobs: Mapping[str, Any], where: str = "knobs") -> int:
    """GA's ``ga_staleness`` scenario knob: an integer in [0, MAX_STALENESS_ROUNDS], default 1
    (errors name ``where.ga_staleness``)."""
    return Fields(knobs, where, ScenarioError).int("ga_staleness", 1, lo=0,
                                                   hi=MAX_STALENESS_ROUNDS)


def baseline_thresholds_knob(knobs: Mapping[str, Any], where: str = "knobs") -> str:
    """The ``baseline_thresholds`` scenario knob: "tuned" (the default) or "fixed"; anything else
    is an error naming ``where.baseline_thresholds`` and both values."""
    f = Fields(knobs, where, ScenarioError)
    value = f.value("baseline_thresholds", BASELINE_THRESHOLDS[0])
    if not isinstance(value, str) or value not in BASELINE_THRESHOLDS:
        raise f.fail("baseline_thresholds", "must be one of %s" % "|".join(BASELINE_THRESHOLDS))
    return value


def ga(scenario: Scenario, thresholds: Optional[Mapping[int, float]] = None,
       rounds: int = 20, staleness: int = 1, mix: float = 0.2, population: int = 12,
       generations: int = 6, seed: int = 0) -> PolicyResult:
    """Sources' genetic path search on ``staleness``-round-old loads, ``rounds`` rounds.

    Each round every source (in a random order) searches paths with a GA (``population``
    paths, ``generations`` generations, one-point crossover and mutation with repair so that
    every path follows existing links) and moves ``mix`` of its traffic to the best one.
    """
    staleness_knob({"ga_staleness": staleness})  # plan checked --staleness: it is the knob
    if rounds < 1 or not 0 < mix <= 1:
        raise ScenarioError("ga: need rounds >= 1 and 0 < mix <= 1, got rounds %s, mix %s"
                            % (rounds, mix))
    from agent.policies.baselines.ga_search import ga_routing
    net = compile_network(scenario)

    def route(rem, prev):
        return ga_routing(net, rem, rounds, staleness, mix, population, generations, seed)

    return _with_thresholds("ga", scenario, net, route, thresholds)


def _with_thresholds(policy: str, scenario: Scenario, net: Network, route: Router,
                     thresholds: Optional[Mapping[int, float]],
                     params: Optional[DtoeeParams] = None, max_alternations: int = 4
                     ) -> PolicyResult:
    """Run ``route`` and, with an exit profile, DTO-EE's threshold step on its routing
    (unless ``thresholds`` are given or the ``baseline_thresholds`` knob is "fixed")."""
    profile = scenario.exit_profile
    fixed = baseline_thresholds_knob(scenario.knobs) == "fixed"
    if profile is None:
        p, rounds, conv = route(np.asarray(scenario.remaining, dtype=np.float64), None)
        return make_result(policy, scenario, net, p, None, rounds, conv)
    params = params or parse_knobs(scenario.knobs)
    exits = profile.early_exit_stages
    th = {h: params.initial_threshold for h in exits}
    th.update({int(k): float(v) for k, v in (thresholds or {}).items()})
    if thresholds is not None or not exits or fixed:  # thresholds given or fixed: route only
        p, rounds, conv = route(exit_stats(profile, th).remaining, None)
        return make_result(policy, scenario, net, p, th, rounds, conv)
    bounds = accuracy_range(profile)
    p, total, conv = None, 0, False
    budget = max(1, params.rounds // params.m)  # threshold steps, as DTO-EE gets in a phase
    for _ in range(max_alternations):
        rem = exit_stats(profile, th).remaining
        p, rounds, conv = route(rem, p)
        total += rounds
        start = dict(th)
        quiet = 0
        while quiet < len(exits) and budget > 0:
            for h in exits:
                rem = exit_stats(profile, th).remaining
                delta, _, phi = exact_marginals(net, p, rem, params)
                rows = [n for n in net.offloaders if net.stage[n] == h]
                g = np.bincount(net.edge_src, weights=p * delta, minlength=len(net.ids))
                reports = [ThresholdReport(net.ids[n], 0, h, float(phi[n]), float(g[n]))
                           for n in rows]
                new = choose_threshold(h, th, reports, net.total_rate, profile,
                                       scenario.tradeoff, params.threshold_step, bounds)
                budget -= 1
                quiet = quiet + 1 if new == th else 0
                th = new
                if quiet >= len(exits) or budget <= 0:
                    break
        if th == start:
            break
    return make_result(policy, scenario, net, p, th, total, conv)
