"""The central optimum depends neither on the scale of the rates nor on their spread: the LP of
``min_max_utilisation`` is posed per unit of the total rate and of a utilisation every routing
reaches, SLSQP in units taken at its start point (solvers' tolerances are absolute), and
``converged`` is false where SLSQP failed or ended worse than where it started."""

from __future__ import annotations

import dataclasses
import types

import numpy as np
import pytest

from agent.policies import optimum as O
from agent.policies.baselines.plans import cf_routing
from agent.policies.dtoee.network import run_dtoee
from agent.policies.model import compile_network, mean_response_time, routing_vector
from agent.scenario.format import parse_scenario
from tests.unit.dtoee_scenarios import link_bound_scenario, random_scenario

LINKS = (("ed0", "w1a"), ("ed0", "w1b"), ("w1a", "w2a"), ("w1a", "w2b"), ("w1b", "w2a"),
         ("w1b", "w2b"))


def _two_by_two(rate, capacity, link_rate):
    """Two stages of two workers ({worker: FLOP/s}) behind the links ({(a, b): bytes/s})."""
    return parse_scenario({
        "stages": [{"flops": 1e9, "input_bytes": 1e5, "exit": True},
                   {"flops": 1e9, "input_bytes": 5e4, "exit": False}],
        "remaining": [0.5, 1.0], "sources": [{"id": "ed0", "rate": rate}],
        "workers": [{"id": w, "stage": int(w[1]), "capacity": capacity[w]} for w in capacity],
        "links": [{"from": a, "to": b, "rate": link_rate[a, b]} for a, b in LINKS],
        "tradeoff": 0.5})


def _scaled(sc, k):
    """``sc`` with every rate (sources' tasks/s, capacities, link bytes/s) times ``k``: every
    utilisation the same, every delay over ``k``."""
    return dataclasses.replace(
        sc, sources=tuple(dataclasses.replace(s, rate=s.rate * k) for s in sc.sources),
        workers=tuple(dataclasses.replace(w, capacity=w.capacity * k) for w in sc.workers),
        links=tuple(dataclasses.replace(ln, rate=ln.rate * k) for ln in sc.links))


@pytest.mark.parametrize("k", [1e-6, 1e-3, 1e3, 1e6, 1e9])
def test_every_rate_times_k_gives_the_same_optimum_at_a_delay_over_k(k):
    """Rule: scaling every rate by k (1e-6 to 1e9: delays of hours down to nanoseconds) scales
    the optimum's delay by 1/k, to 1e-9, converged, on a compute-bound network ("delay"
    links) and a link-bound one ("shared")."""
    for sc in (random_scenario(42, 0.7),
               link_bound_scenario(7002, 0.85, sources=4, workers=(3, 3, 2, 2))):
        base = O.optimum(sc)
        res = O.optimum(_scaled(sc, k))
        assert base.converged and res.converged
        assert res.delay_s * k == pytest.approx(base.delay_s, rel=1e-9)


def test_a_microsecond_fleet_gets_an_optimum_no_worse_than_dtoee_and_cf():
    """Rule: on a fleet whose delays are microseconds (1e14 FLOP/s workers, 1e15 B/s links,
    10000 tasks/s) the optimum is no worse than DTO-EE's or CF's routing (it was 0.86% worse,
    stopped at its start point by an absolute tolerance)."""
    caps = dict.fromkeys(("w1a", "w1b", "w2a", "w2b"), 1e14)
    sc = _two_by_two(1e4, caps, dict.fromkeys(LINKS, 1e15))
    best = O.optimum(sc)
    assert best.converged and best.delay_s < 1e-4
    for other in (run_dtoee(sc), cf_routing(sc)):
        assert best.delay_s <= other.delay_s * (1 + 1e-9)


def test_a_worker_and_a_link_1e8_times_slower_get_no_task():
    """Rule: with a stage-2 worker and a source link 1e8 times slower than the rest, the
    optimum sends them no share at all (SLSQP once left 5e-8 of the tasks on the slow link,
    which alone made the delay 1.6 times the all-fast routing's) and its delay is the
    all-fast routing's."""
    caps = {"w1a": 2e12, "w1b": 2e12, "w2a": 2e12, "w2b": 2e4}
    rates = dict.fromkeys(LINKS, 1e9)
    rates["ed0", "w1b"] = 10.0
    sc = _two_by_two(100.0, caps, rates)
    res = O.optimum(sc)
    assert res.converged
    assert res.routing["ed0"]["w1b"] == 0.0 and res.routing["w1a"]["w2b"] == 0.0
    fast = {"ed0": {"w1a": 1.0, "w1b": 0.0}, "w1a": {"w2a": 1.0, "w2b": 0.0},
            "w1b": {"w2a": 1.0, "w2b": 0.0}}
    assert res.delay_s == pytest.approx(mean_response_time(sc, fast, None), rel=1e-9)


@pytest.mark.parametrize("link_model", ["delay", "shared"])
def test_the_least_utilisation_is_proportional_to_the_total_rate(link_model):
    """Rule: from a total of 1e-9 tasks/s to 1e24 the LP's least utilisation of the busiest
    worker (or link) is the total rate times one constant, and its flows carry the sources'
    rate (at 1e-9, HiGHS's absolute tolerances once took all-zero flows for conserved and
    every utilisation for 0; at 1e24 the LP failed)."""
    sc = random_scenario(44, 0.5, knobs={"link_model": link_model})
    net = compile_network(sc)
    src = net.stage[net.edge_src] == 0
    per_task = None
    for total in (1e-9, 1e-3, 1.0, 1e6, 1e24):
        k = total / net.total_rate
        u, x = O.min_max_utilisation(
            dataclasses.replace(net, source_rate=net.source_rate * k), sc.remaining)
        per_task = per_task or u / total
        assert u / total == pytest.approx(per_task, rel=1e-9)
        assert x[src].sum() == pytest.approx(total, rel=1e-9)


def test_an_edge_1e19_times_costlier_than_its_sibling_leaves_the_lp_solvable():
    """Rule: a worker that a share of the tasks would load 1e19 times more than its sibling
    (1e24 tasks/s, a 1e5 FLOP/s worker beside 1e24 FLOP/s ones) gets nothing in the LP, whose
    answer is the sibling carrying everything (HiGHS refuses coefficients above 1e15)."""
    caps = {"w1a": 1e24, "w1b": 1e5, "w2a": 1e24, "w2b": 1e24}
    sc = _two_by_two(1e24, caps, dict.fromkeys(LINKS, 1e24))
    u, x = O.min_max_utilisation(compile_network(sc), sc.remaining)
    assert u == pytest.approx(1e9, rel=1e-9)  # w1a: 1e9 FLOP x 1e24 tasks/s over 1e24 FLOP/s
    assert x[1] == 0.0


def _fake_slsqp(result):
    """A stand-in for scipy's ``minimize`` answering ``result(z0)`` (x, success, message)."""
    def minimize(fun, z0, **_):
        x, success, message = result(np.asarray(z0, dtype=float))
        return types.SimpleNamespace(x=x, success=success, message=message)
    return minimize


def test_a_solver_that_ends_worse_than_its_start_gives_the_start_not_converged(monkeypatch):
    """Rule: when every result is worse than the start point, ``solve`` returns the start
    point with ``converged`` false (here the start is the optimum and the solver answers
    another routing)."""
    sc = random_scenario(43, 0.3)
    net = compile_network(sc)
    best = O.solve(net, sc.remaining)
    assert best.converged
    monkeypatch.setattr(O, "minimize", _fake_slsqp(lambda z0: (np.ones_like(z0), True, "ok")))
    sol = O.solve(net, sc.remaining, x0=best.flows)
    assert not sol.converged and "worse than the start point" in sol.message
    assert np.array_equal(sol.flows, best.flows) and sol.delay_s == best.delay_s


def test_a_solver_that_reports_a_failure_gives_converged_false(monkeypatch):
    """Rule: ``optimum`` reports ``converged`` false when SLSQP says it failed, even where its
    routing is feasible (here it stops at its start point)."""
    sc = random_scenario(43, 0.3)
    monkeypatch.setattr(O, "minimize", _fake_slsqp(
        lambda z0: (z0, False, "Iteration limit reached")))
    res = O.optimum(sc)
    assert np.isfinite(res.delay_s) and not res.converged
    net = compile_network(sc)
    start = O.min_max_utilisation(net, sc.remaining)[1]
    assert np.allclose(routing_vector(net, res.routing), O._flows_to_routing(net, start))
