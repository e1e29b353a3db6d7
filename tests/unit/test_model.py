"""DTO-EE's network model (eqs. 3-9, 11) on a network small enough to compute by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agent.policies.model import (
    accuracy_range,
    compile_network,
    loads,
    mean_response_time,
    network_delay,
    node_delays,
    node_rates,
    penalty,
    pressure,
    routing_vector,
    utility,
)
from agent.scenario.format import parse_scenario
from agent.policies.setting import ScenarioError
from engines.exit_profile import ExitProfile

# two stages, stage 1 has an exit keeping 60% of tasks; one source, two stage-1 workers, one
# stage-2 worker; the paper's hop model (fixed beta/r; links as servers: test_dtoee_links.py)
OBJ = {"knobs": {"link_model": "delay"},
       "stages": [{"flops": 1e9, "input_bytes": 1e5, "exit": True},
                  {"flops": 2e9, "input_bytes": 2e5, "exit": False}],
       "remaining": [0.6, 1.0],
       "sources": [{"id": "s", "rate": 10.0}],
       "workers": [{"id": "a", "stage": 1, "capacity": 2e10},
                   {"id": "b", "stage": 1, "capacity": 4e10},
                   {"id": "c", "stage": 2, "capacity": 3e10}],
       "links": [{"from": "s", "to": "a", "rate": 1e6}, {"from": "s", "to": "b", "rate": 2e6},
                 {"from": "a", "to": "c", "rate": 1e7}, {"from": "b", "to": "c", "rate": 1e7}]}
ROUTING = {"s": {"a": 0.25, "b": 0.75}, "a": {"c": 1.0}, "b": {"c": 1.0}}


def _by_hand():
    """T of ROUTING, term by term (eqs. 3-8)."""
    phi_a, phi_b = 2.5, 7.5  # eq. 3
    phi_c = 0.6 * (phi_a + phi_b)
    lam = {"a": 1e9 * phi_a, "b": 1e9 * phi_b, "c": 2e9 * phi_c}  # eq. 5
    mu = {"a": 2e10, "b": 4e10, "c": 3e10}
    compute = sum(lam[j] / (mu[j] - lam[j]) for j in lam)
    hops = phi_a * 1e5 / 1e6 + phi_b * 1e5 / 2e6 + 0.6 * phi_a * 2e5 / 1e7 \
        + 0.6 * phi_b * 2e5 / 1e7  # eq. 4 per task, times the flow
    return (compute + hops) / 10.0  # eq. 8


def test_rates_loads_and_mean_response_time_match_hand_computation():
    """eqs. 3, 5 and 8: arrival rates, loads and the mean response time of a routing."""
    sc = parse_scenario(OBJ)
    net = compile_network(sc)
    p = routing_vector(net, ROUTING)
    idx = net.index()
    phi = node_rates(net, p, sc.remaining)
    assert phi[idx["a"]] == pytest.approx(2.5) and phi[idx["c"]] == pytest.approx(6.0)
    assert loads(net, phi)[idx["c"]] == pytest.approx(1.2e10)
    assert network_delay(net, p, sc.remaining) == pytest.approx(_by_hand(), rel=1e-12)
    assert mean_response_time(sc, ROUTING) == pytest.approx(_by_hand(), rel=1e-12)


def test_node_delay_is_compute_plus_mean_hop():
    """eq. 7: T_c = alpha/(mu - lambda) + the flow-weighted hop delay into c."""
    sc = parse_scenario(OBJ)
    net = compile_network(sc)
    t = node_delays(net, routing_vector(net, ROUTING), sc.remaining)
    want = 2e9 / (3e10 - 1.2e10) + (1.5 * 0.02 + 4.5 * 0.02) / 6.0
    assert t[net.index()["c"]] == pytest.approx(want)


def test_overloaded_routing_has_infinite_delay():
    """A worker at or past capacity makes T infinite (the model has no steady state)."""
    sc = parse_scenario(dict(OBJ, sources=[{"id": "s", "rate": 25.0}]))
    assert mean_response_time(sc, {"s": {"a": 1.0, "b": 0.0}, "a": {"c": 1.0},
                                   "b": {"c": 1.0}}) == math.inf


def test_routing_errors_name_the_node():
    """A routing row that does not sum to 1, or an edge that does not exist, is refused."""
    sc = parse_scenario(OBJ)
    with pytest.raises(ScenarioError, match="probabilities of s sum to 0.5"):
        mean_response_time(sc, {"s": {"a": 0.25, "b": 0.25}, "a": {"c": 1.0}, "b": {"c": 1.0}})
    with pytest.raises(ScenarioError, match="no link s -> c"):
        mean_response_time(sc, {"s": {"c": 1.0}})


def test_pressure_continues_smoothly_past_capacity():
    """The delay continuation is exact below rho_ext*mu and C1 with growing slope beyond."""
    mu = 10.0
    v, d1, d2 = pressure(np.array([5.0, 9.9, 12.0]), mu, rho_ext=0.99)
    assert v[0] == pytest.approx(1.0) and d1[0] == pytest.approx(10.0 / 25.0)
    assert np.all(np.isfinite(v)) and d1[2] > d1[1] > d1[0]


def test_utility_and_penalty():
    """eq. 9 normalises accuracy to [A_min, A_max]; eq. 11 only counts excess utilisation."""
    assert utility(0.2, 0.7, 0.5, 0.6, 0.8) == pytest.approx(0.5 * 0.2 - 0.5 * 0.5)
    assert penalty([5.0, 9.95], [10.0, 10.0], k=100.0, epsilon=0.01) == pytest.approx(
        100.0 * 0.005 ** 2)
    assert penalty([1.0], [10.0], 100.0, 0.01) == 0.0


def test_accuracy_range_from_profile():
    """A_min: everyone leaves at the first head; A_max: everyone runs to the final head."""
    conf = np.array([[0.9, 0.9], [0.95, 0.9], [0.2, 0.9]])
    correct = np.array([[False, True], [True, True], [False, True]])
    prof = ExitProfile(2, (1, 2), conf, correct).validate()
    assert accuracy_range(prof) == pytest.approx((1.0 / 3.0, 1.0))
