"""The paper's baselines: CF and BF equal their closed forms, NGTO ends at a Nash equilibrium
(no offloader can lower its own next-hop delay alone), GA gives valid routings from stale
state, and every baseline tunes thresholds with DTO-EE's step when given an exit profile."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from agent.policies.baselines.plans import (best_response, bf_routing, cf_routing, ga, ngto,
                                            proportional_split)
from agent.policies.model import (
    compile_network,
    loads,
    mean_response_time,
    node_rates,
    routing_vector,
)
from agent.policies.setting import ScenarioError
from tests.unit.dtoee_scenarios import random_scenario, synthetic_profile


def test_cf_splits_by_receiver_capacity():
    """CF: p_ij = mu_j / sum_k mu_k over the offloader's successors."""
    sc = random_scenario(61, 0.3)
    cap = {w.id: w.capacity for w in sc.workers}
    res = cf_routing(sc)
    for node, row in res.routing.items():
        total = sum(cap[s] for s in row)
        for s, p in row.items():
            assert p == pytest.approx(cap[s] / total, rel=1e-12)


def test_bf_splits_by_link_rate():
    """BF: p_ij = r_ij / sum_k r_ik."""
    sc = random_scenario(62, 0.3)
    res = bf_routing(sc)
    for node, row in res.routing.items():
        total = sum(sc.link_rate(node, s) for s in row)
        for s, p in row.items():
            assert p == pytest.approx(sc.link_rate(node, s) / total, rel=1e-12)
    assert res.delay_s == pytest.approx(mean_response_time(sc, res.routing))


def _own_cost(net, p, rem, row, split):
    """An offloader's selfish cost: its flow's next-hop transmission + compute delay."""
    es = net.slots[row][net.slots[row] >= 0]
    node = net.offloaders[row]
    phi = node_rates(net, p, rem)
    lam = loads(net, phi)
    h = int(net.stage[node])
    flow = phi[node] * (1.0 if h == 0 else rem[h - 1])
    a = net.flops[h + 1]
    dst = net.edge_dst[es]
    others = lam[dst] - a * p[es] * flow
    x = split * flow
    free = net.capacity[dst] - others - a * x
    if np.any(free <= 0):
        return math.inf
    return float(np.sum(x * (a / free + net.input_bytes[h + 1] / net.edge_rate[es])))


def test_ngto_ends_at_a_nash_equilibrium():
    """No offloader lowers its own cost by moving probability between two successors."""
    sc = random_scenario(63, 0.5)
    res = ngto(sc)
    assert res.converged and res.rounds >= 1 and math.isfinite(res.delay_s)
    net = compile_network(sc)
    p = routing_vector(net, res.routing)
    for row in range(len(net.offloaders)):
        es = net.slots[row][net.slots[row] >= 0]
        base = _own_cost(net, p, sc.remaining, row, p[es])
        for i in range(len(es)):
            for j in range(len(es)):
                if i == j or p[es][i] < 0.02:
                    continue
                trial = p[es].copy()
                trial[i] -= 0.02
                trial[j] += 0.02
                assert _own_cost(net, p, sc.remaining, row, trial) >= base * (1 - 1e-6)


def test_best_response_equalises_marginal_delays():
    """The selfish split equalises alpha*free/(free - alpha*x)^2 + hop on used receivers."""
    free = np.array([4e10, 2e10, 1e10])
    hop = np.array([0.01, 0.02, 0.0])
    x = best_response(12.0, 1e9, free, hop) * 12.0
    marg = 1e9 * free / (free - 1e9 * x) ** 2 + hop
    used = x > 1e-9
    assert np.ptp(marg[used]) < 1e-6 * marg[used].max()
    assert np.all(marg[~used] >= marg[used].min() - 1e-9)


def test_ga_gives_valid_routing_and_uses_staleness():
    """GA routings are probability rows over existing links; staleness changes what it sees."""
    sc = random_scenario(64, 0.4)
    fresh = ga(sc, staleness=0, rounds=8, seed=1)
    stale = ga(sc, staleness=3, rounds=8, seed=1)
    for res in (fresh, stale):
        for node, row in res.routing.items():
            assert set(row) == set(sc.successors(node))
            assert sum(row.values()) == pytest.approx(1.0)
    assert fresh.routing != stale.routing
    with pytest.raises(ScenarioError, match="staleness"):
        ga(sc, staleness=-1)


@pytest.mark.parametrize("fn", [cf_routing, bf_routing, ngto])
def test_baselines_tune_thresholds_with_dtoee_step(fn):
    """With an exit profile and a = 1 (delay only), a baseline's thresholds go down."""
    sc = dataclasses.replace(random_scenario(65, 0.4), remaining=None, exit_profile=synthetic_profile(),
                             tradeoff=1.0)
    res = fn(sc)
    assert res.thresholds and min(res.thresholds.values()) < 0.8
    assert res.accuracy is not None and res.utility is not None


def test_proportional_split_is_cf_and_bf_rule_for_one_offloader():
    """p_j = w_j / sum_k w_k over the usable successors; unusable ones and all-zero rows get 0."""
    assert proportional_split({"a": 1.0, "b": 3.0}) == {"a": 0.25, "b": 0.75}
    assert proportional_split({"a": 1.0, "b": 3.0}, usable={"a"}) == {"a": 1.0, "b": 0.0}
    assert proportional_split({"a": 0.0, "b": 0.0}) == {"a": 0.0, "b": 0.0}
    assert proportional_split({"a": 2.0, "b": 2.0}, usable=()) == {"a": 0.0, "b": 0.0}


def test_proportional_split_of_huge_or_infinite_weights_still_sums_to_one():
    """Weights whose sum overflows (two capacities of 1e308) are scaled first, and infinite
    ones share the row alone: the row never sums to 0 while a weight is positive."""
    assert proportional_split({"a": 1e308, "b": 1e308}) == {"a": 0.5, "b": 0.5}
    assert proportional_split({"a": 1e308, "b": 1.7e308, "c": 1.0}, usable={"a", "b"})["c"] == 0
    assert proportional_split({"a": float("inf"), "b": 1e308}) == {"a": 1.0, "b": 0.0}
