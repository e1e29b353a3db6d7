"""DTO-EE's default step converges to the central optimum (fixed thresholds), on seeded random
paper-like networks:

- light and moderate load (busiest stage <= 60%): within 1% of the optimum in 50 rounds;
- heavy load (busiest stage 70-85%), including starts where the uniform routing overloads a
  worker: feasible from round 50 on and within 2% of the optimum after 200 rounds.

The optimum comes from ``agent.policies.optimum`` (SLSQP over edge flows), independent of
DTO-EE's code path.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from agent.policies.dtoee.knobs import DtoeeParams
from agent.policies.dtoee.network import run_dtoee
from agent.policies.model import compile_network, network_delay, uniform_routing
from agent.policies.optimum import optimum
from tests.unit.dtoee_scenarios import random_scenario

LIGHT = [(1000 + i, load) for i, load in enumerate((0.2, 0.3, 0.4, 0.45, 0.5, 0.5, 0.55, 0.55,
                                                     0.6, 0.6, 0.6, 0.6))]
HEAVY = [(2000 + i, load) for i, load in enumerate((0.7, 0.75, 0.75, 0.8, 0.8, 0.85, 0.85,
                                                     0.85))]
SKEWED = [(3000 + i, load) for i, load in enumerate((0.7, 0.75, 0.8, 0.85))]


def _gaps(sc, rounds):
    best = optimum(sc).delay_s
    assert math.isfinite(best)
    res = run_dtoee(sc, rounds=rounds, params=DtoeeParams(), stop_when_converged=False,
                    track=True)
    return np.asarray(res.history) / best - 1.0


@pytest.mark.parametrize("seed,load", LIGHT)
def test_light_and_moderate_load_within_1pct_in_50_rounds(seed, load):
    gaps = _gaps(random_scenario(seed, load), 50)
    assert gaps[-1] <= 0.01, gaps[[9, 24, 49]]


@pytest.mark.parametrize("seed,load", HEAVY)
def test_heavy_load_feasible_by_50_and_within_2pct_by_200_rounds(seed, load):
    gaps = _gaps(random_scenario(seed, load), 200)
    assert np.all(np.isfinite(gaps[49:]))
    assert gaps[-1] <= 0.02, gaps[[49, 99, 199]]


@pytest.mark.parametrize("seed,load", SKEWED)
def test_overloaded_uniform_start_becomes_feasible_and_converges(seed, load):
    sc = random_scenario(seed, load, skew=0.3)
    net = compile_network(sc)
    assert network_delay(net, uniform_routing(net), sc.remaining) == math.inf
    gaps = _gaps(sc, 200)
    assert np.all(np.isfinite(gaps[49:]))
    assert gaps[-1] <= 0.02, gaps[[49, 99, 199]]
