"""DTO-EE's stage-joint step (``step = "joint"``, ``agent/policies/dtoee/joint.py``): the stage
problem's solve, the reports it is built from, and convergence to the central optimum on the
seeded networks of ``test_dtoee_convergence`` (the optimum from ``agent.policies.optimum``,
SLSQP over edge flows, independent of this code path)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy.optimize import minimize

from agent.policies.dtoee import joint as J
from agent.policies.dtoee.knobs import DtoeeParams, parse_knobs
from agent.policies.dtoee.network import run_dtoee
from agent.policies.dtoee.payload import from_payload, to_payload
from agent.policies.optimum import optimum
from agent.policies.setting import ScenarioError
from tests.unit.dtoee_scenarios import random_scenario
from tests.unit.test_dtoee_convergence import HEAVY, LIGHT, SKEWED

PARAMS = {"delay": DtoeeParams(step="joint", link_model="delay"),
          "shared": DtoeeParams(step="joint", link_model="shared")}


def _reports(seed: int, offloaders: int = 4, receivers: int = 3, util: float = 0.8):
    """Random reports of one stage: every offloader feeds 2..receivers of the receivers, whose
    statuses (load, capacity, Omega, Psi, damping) the reports carry consistently."""
    rng = np.random.default_rng(seed)
    flops = 2e9
    recv = ["r%d" % j for j in range(receivers)]
    cap = {j: float(rng.uniform(4e10, 2e11)) for j in recv}
    rates = rng.uniform(0.5, 1.5, size=offloaders)
    rates *= util * sum(cap.values()) / flops / rates.sum()
    succ = [sorted(rng.choice(recv, size=int(rng.integers(2, receivers + 1)), replace=False))
            for _ in range(offloaders)]
    p = [dict(zip(s, rng.dirichlet(np.ones(len(s))))) for s in succ]
    load = {j: flops * sum(f * row.get(j, 0.0) for f, row in zip(rates, p)) for j in recv}
    feeds = {j: float(sum(j in s for s in succ)) for j in recv}
    omega = {j: float(rng.uniform(0.0, 0.05)) for j in recv}
    psi = {j: float(rng.uniform(0.0, 1e-3)) for j in recv}
    damp = {j: float(rng.uniform(1.0, 3.0)) for j in recv}
    reps = []
    for i, (f, s, row) in enumerate(zip(rates, succ, p)):
        reps.append(J.StageReport(
            "o%d" % i, 7, float(f), {j: float(row[j]) for j in s},
            {j: float(rng.uniform(1e6, 1e7)) for j in s}, {j: load[j] for j in s},
            {j: cap[j] for j in s}, {j: omega[j] for j in s}, {j: psi[j] for j in s},
            {j: damp[j] for j in s}, {j: feeds[j] for j in s}))
    return reps, flops


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("links", ["delay", "shared"])
def test_stage_solve_meets_the_optimality_conditions(seed, links):
    """Rule: the solve's flows keep each offloader's rate, stay >= 0, and are a minimum: on
    each offloader the marginal cost of every used edge is the least of its edges (KKT)."""
    reps, flops = _reports(seed)
    params = PARAMS[links]
    prob = J.stage_problem(reps, flops, 7.7e5, params)
    y = J.solve_stage(prob, params)
    f = prob.out_rate
    assert np.all(y >= 0)
    assert np.allclose(np.bincount(prob.row, weights=y, minlength=len(f)), f, rtol=1e-9)
    _, g, _, _ = J.stage_cost(prob, y, params)
    for i in range(len(f)):
        mine = prob.row == i
        used = mine & (y > 1e-6 * f[i])
        least = g[mine].min()
        assert used.any()
        assert np.all(g[used] <= least + 1e-6 * abs(least) + 1e-9), (i, g[mine], y[mine])


@pytest.mark.parametrize("seed", range(4))
def test_stage_solve_reaches_the_cost_slsqp_finds(seed):
    """Rule: the numpy Newton solve ends at the cost of a general solver (SLSQP) on the same
    stage problem, or below it."""
    reps, flops = _reports(100 + seed, offloaders=6, receivers=4, util=0.9)
    params = PARAMS["shared"]
    prob = J.stage_problem(reps, flops, 7.7e5, params)
    mine = J.stage_cost(prob, J.solve_stage(prob, params), params)[0]
    f, row = prob.out_rate, prob.row
    rowsum = np.zeros((len(f), len(row)))
    rowsum[row, np.arange(len(row))] = 1.0
    ref = minimize(lambda x: J.stage_cost(prob, x, params)[:2], prob.p * f[row], jac=True,
                   method="SLSQP", bounds=[(0.0, fi) for fi in f[row]],
                   constraints=[{"type": "eq", "fun": lambda x: (rowsum @ x - f) / f,
                                 "jac": lambda x: rowsum / f[:, None]}],
                   options={"maxiter": 500, "ftol": 1e-15}).x
    theirs = J.stage_cost(prob, np.maximum(ref, 0.0), params)[0]
    assert mine <= theirs + 1e-9 * abs(theirs)


def test_every_offloader_builds_the_same_problem_from_the_same_reports():
    """Rule: the problem is the same whatever order the reports came in (rows and receivers
    sorted by id), so every offloader of a stage gets the same routing for all."""
    reps, flops = _reports(3)
    params = PARAMS["shared"]
    a = J.joint_routing(J.stage_problem(reps, flops, 7.7e5, params), params)
    b = J.joint_routing(J.stage_problem(reps[::-1], flops, 7.7e5, params), params)
    assert a == b
    assert all(abs(sum(row.values()) - 1.0) < 1e-12 for row in a[0])


def test_a_missing_report_leaves_its_flow_as_background():
    """Rule: a receiver that summed more requests than the reports that feed it keeps the
    missing offloaders' flow as fixed background (its load minus the reported flows); a
    receiver fed only by reported offloaders has none."""
    reps, flops = _reports(5)
    params = PARAMS["delay"]
    full = J.stage_problem(reps, flops, 7.7e5, params)
    assert not full.background.any()
    gone = reps[0]
    part = J.stage_problem(reps[1:], flops, 7.7e5, params)
    for j, bg in zip(part.receivers, part.background):
        if j in gone.routing:
            assert bg == pytest.approx(gone.out_rate_tasks_s * gone.routing[j], rel=1e-9)
        else:
            assert bg == 0.0


@pytest.mark.parametrize("seed", range(6))
def test_an_idle_offloader_leans_half_way_to_its_least_cost_receiver(seed):
    """Rule: an offloader that sends nothing has no flow for the solve to move, so, as under
    the default rule, it moves half of its routing to the receiver where the stage's marginal
    cost is least (the others keep half their shares), and it keeps leaning there round after
    round."""
    reps, flops = _reports(seed)
    params = PARAMS["delay"]
    reps[0] = dataclasses.replace(reps[0], out_rate_tasks_s=0.0)
    prob = J.stage_problem(reps, flops, 7.7e5, params)
    routing, _ = J.joint_routing(prob, params)
    edges = np.flatnonzero(prob.row == 0)
    g = J.stage_cost(prob, J.solve_stage(prob, params), params)[1][edges]
    best = prob.succ[edges[int(np.argmin(g))]]
    old = reps[0].routing
    assert routing[0][best] == pytest.approx(old[best] + 0.5 * (1.0 - old[best]), abs=1e-12)
    assert all(routing[0][j] == pytest.approx(0.5 * old[j], abs=1e-12) for j in old if j != best)
    assert sum(routing[0].values()) == pytest.approx(1.0, abs=1e-12)
    for _ in range(8):  # its lean goes on while it stays idle
        reps[0] = dataclasses.replace(reps[0], routing=routing[0])
        routing, _ = J.joint_routing(J.stage_problem(reps, flops, 7.7e5, params), params)
    assert max(routing[0].values()) > 0.99


def test_a_stage_report_crosses_the_wire_and_bad_ones_are_refused():
    """Rule: a report survives encoding as it is; one whose maps disagree on the successors,
    or that carries a non-number, a negative rate or a zero capacity, is refused by name."""
    rep = _reports(1)[0][0]
    back = J.check_report(from_payload(J.StageReport, to_payload(rep)))
    assert back == rep
    bad = [dict(to_payload(rep), routing={"x": 1.0}),
           dict(to_payload(rep), omegas_s={k: "a" for k in rep.routing}),
           dict(to_payload(rep), out_rate_tasks_s=-1.0),
           dict(to_payload(rep), capacities_flops_s={k: 0.0 for k in rep.routing}),
           dict(to_payload(rep), loads_flops_s={k: float("nan") for k in rep.routing})]
    for payload in bad:
        with pytest.raises(ValueError, match="StageReport"):
            J.check_report(from_payload(J.StageReport, payload))


def test_the_step_knob_takes_joint():
    """Rule: ``step`` is one of default, paper and joint; anything else is refused by name."""
    assert parse_knobs({"step": "joint"}).step == "joint"
    with pytest.raises(ScenarioError, match="default|paper|joint"):
        parse_knobs({"step": "jointly"})


def _gap(sc, rounds, step):
    best = optimum(sc).delay_s
    assert math.isfinite(best)
    res = run_dtoee(sc, rounds=rounds, params=dataclasses.replace(DtoeeParams(), step=step),
                    stop_when_converged=False, track=True)
    return np.asarray(res.history) / best - 1.0


@pytest.mark.parametrize("seed,load", LIGHT[::2])
def test_joint_light_and_moderate_load_within_1pct_in_10_rounds(seed, load):
    """Rule: at light and moderate load (busiest stage <= 60%) the joint step is within 1% of
    the optimum after 10 rounds (the default rule needs 50)."""
    gaps = _gap(random_scenario(seed, load), 10, "joint")
    assert gaps[-1] <= 0.01


def test_joint_heavy_load_within_1pct_by_round_50():
    """Rule: at heavy load (busiest stage 70-85%) the joint step keeps every worker below
    capacity from round 2 on, is within 1% of the optimum at round 50 on the median network
    and within 3% on every one, and ends closer than the default rule on each."""
    ends = []
    for seed, load in HEAVY:
        sc = random_scenario(seed, load)
        joint = _gap(sc, 50, "joint")
        assert np.all(np.isfinite(joint[2:])), seed
        assert joint[-1] <= 0.03, seed
        assert joint[-1] <= _gap(sc, 50, "default")[-1], seed
        ends.append(joint[-1])
    assert np.median(ends) <= 0.01


@pytest.mark.parametrize("seed,load", SKEWED)
def test_joint_overloaded_start_within_2pct_by_round_50(seed, load):
    """Rule: from a uniform start that overloads a worker the joint step is feasible from
    round 2 on and within 2% of the optimum at round 50."""
    gaps = _gap(random_scenario(seed, load, skew=0.3), 50, "joint")
    assert np.all(np.isfinite(gaps[2:]))
    assert gaps[-1] <= 0.02
