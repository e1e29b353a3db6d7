"""The central optimum (SLSQP over edge flows) satisfies the optimality conditions of the
convex routing problem and is never worse than the heuristics."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from agent.policies.baselines.plans import bf_routing, cf_routing
from agent.policies.dtoee.knobs import DtoeeParams
from agent.policies.dtoee.network import exact_marginals
from agent.policies.model import compile_network, routing_vector
from agent.policies.optimum import min_max_utilisation, optimum
from tests.unit.dtoee_scenarios import random_scenario


@pytest.mark.parametrize("seed,load", [(41, 0.4), (42, 0.7)])
def test_optimum_meets_kkt_conditions(seed, load):
    """At the optimum every offloader's used successors share the least marginal delay
    (eq. 15, exact Omega) and unused ones are no better (Wardrop / Gallager's condition)."""
    sc = random_scenario(seed, load)
    res = optimum(sc)
    assert res.converged and math.isfinite(res.delay_s)
    net = compile_network(sc)
    p = routing_vector(net, res.routing)
    delta, _, phi = exact_marginals(net, p, sc.remaining, DtoeeParams())
    for row, node in enumerate(net.offloaders):
        es = net.slots[row][net.slots[row] >= 0]
        # a node that receives (numerically) no tasks may route anywhere: its split is
        # arbitrary at the optimum and differs between scipy builds
        if phi[node] <= 1e-9 * phi.max():
            continue
        best = delta[es].min()
        used = p[es] > 1e-3
        assert np.all(delta[es][used] <= best * (1 + 2e-3) + 1e-6), net.ids[node]


def test_optimum_beats_heuristics():
    """The optimum's delay is at most CF's and BF's (where those are finite)."""
    sc = random_scenario(43, 0.3)
    best = optimum(sc).delay_s
    for res in (cf_routing(sc), bf_routing(sc)):
        assert best <= res.delay_s * (1 + 1e-9)


def test_min_max_utilisation_detects_no_fit():
    """With more work than the capacity of a stage, no routing fits (busiest worker > 1)."""
    sc = random_scenario(44, 0.5)
    net = compile_network(sc)
    u, _ = min_max_utilisation(net, sc.remaining)
    assert u <= 0.55
    tripled = dataclasses.replace(net, source_rate=net.source_rate * 3.0)
    assert min_max_utilisation(tripled, sc.remaining)[0] > 1.0
