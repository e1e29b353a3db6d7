"""DTO-EE's stage-joint step against hostile or overflowing numbers
(``agent/policies/dtoee/joint.py``): a sibling's report with a denormal link rate (1e-320 > 0)
once made the joint solve's KKT system NaN and LAPACK's lstsq fallback spin forever, hanging
the agent's loop. ``check_report`` now refuses such reports, and the solver takes no step on
non-finite data instead of solving. No timing asserts: a hang would hang the test."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from agent.policies.dtoee import joint as J
from tests.unit.test_dtoee_joint import PARAMS, _reports


def _with(rep: J.StageReport, field: str, value: float) -> J.StageReport:
    """``rep`` with ``field`` set to ``value`` (every successor's entry, for a map)."""
    old = getattr(rep, field)
    new = {j: value for j in old} if isinstance(old, dict) else value
    return dataclasses.replace(rep, **{field: new})


def test_check_report_accepts_the_ordinary_reports():
    """Rule: the new checks refuse nothing a healthy stage sends (finite numbers, real rates)."""
    reps, _ = _reports(3)
    for rep in reps:
        assert J.check_report(rep) is rep


@pytest.mark.parametrize("field,value", [
    ("link_rates_bytes_s", 1e-320),  # > 0 but beta / r overflows: the reported hang
    ("link_rates_bytes_s", 0.5),
    ("link_rates_bytes_s", float("inf")),
    ("capacities_flops_s", 1e-320),
])
def test_check_report_refuses_rates_below_the_floor_or_infinite(field, value):
    """Rule: link rates and capacities must be finite and >= ``MIN_RATE`` (1 byte/s, 1 FLOP/s),
    so the per-task hop cost and the utilisation stay finite; ValueError otherwise."""
    rep = _with(_reports(3)[0][0], field, value)
    with pytest.raises(ValueError, match=field):
        J.check_report(rep)


@pytest.mark.parametrize("field", ["out_rate_tasks_s", "routing", "loads_flops_s", "omegas_s",
                                   "curvatures_s2", "dampings", "predecessors",
                                   "capacities_flops_s"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_check_report_refuses_non_finite_numbers(field, value):
    """Rule: a report with any inf or NaN number is refused with a ValueError naming the field
    (Omega included, though it may be negative; NaN slips past plain range comparisons)."""
    rep = _with(_reports(3)[0][0], field, value)
    with pytest.raises(ValueError, match=field):
        J.check_report(rep)


def _assert_valid(routing, prob):
    """Each offloader's routing: finite shares >= 0 over its successors, summing to 1."""
    assert len(routing) == len(prob.offloaders)
    for row in routing:
        shares = np.array(list(row.values()))
        assert np.all(np.isfinite(shares)) and np.all(shares >= 0), row
        assert abs(shares.sum() - 1.0) < 1e-9, row


@pytest.mark.parametrize("links", ["delay", "shared"])
@pytest.mark.parametrize("field,value", [
    ("link_rates_bytes_s", 1e-320), ("link_rates_bytes_s", float("nan")),
    ("link_rates_bytes_s", 0.0), ("capacities_flops_s", 1e-320),
    ("capacities_flops_s", float("nan")), ("omegas_s", float("inf")),
    ("curvatures_s2", float("nan")), ("loads_flops_s", float("inf")),
])
def test_joint_solve_returns_a_valid_routing_on_non_finite_data(links, field, value):
    """Rule: handed a stage problem with a non-finite (or overflowing) entry, the joint solve
    returns, with each offloader's routing finite, >= 0 and summing to 1 (it takes no step
    rather than follow a NaN system)."""
    reps, flops = _reports(5)
    reps[1] = _with(reps[1], field, value)  # stage_problem does not check: the solver must cope
    params = PARAMS[links]
    with np.errstate(all="ignore"):
        prob = J.stage_problem(reps, flops, 7.7e5, params)
        routing, _ = J.joint_routing(prob, params)
    _assert_valid(routing, prob)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_joint_solve_copes_with_a_non_finite_out_rate(value):
    """Rule: a non-finite offloader rate in the problem leaves every routing finite and summing
    to 1 (an offloader whose flows cannot be normalised keeps its starting routing)."""
    reps, flops = _reports(6)
    params = PARAMS["delay"]
    prob = J.stage_problem(reps, flops, 7.7e5, params)
    rate = prob.out_rate.copy()
    rate[0] = value
    with np.errstate(all="ignore"):
        routing, _ = J.joint_routing(dataclasses.replace(prob, out_rate=rate), params)
    _assert_valid(routing, prob)


def test_newton_direction_is_zero_on_a_non_finite_system(monkeypatch):
    """Rule: the Newton step is all zeros (no move) when the curvatures or gradient hold inf or
    NaN, and neither ``np.linalg.solve`` nor its ``lstsq`` fallback is called on such input."""
    def refuse(*args, **kwargs):
        raise AssertionError("np.linalg called on a non-finite system")
    monkeypatch.setattr(np.linalg, "solve", refuse)
    monkeypatch.setattr(np.linalg, "lstsq", refuse)
    inc = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    balance = np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    h_recv = np.array([1.0, 2.0])
    h_edge = np.array([1.0, 1.0, 1.0])
    g = np.array([0.1, -0.2, 0.3])
    for bad in ("h_recv", "h_edge", "g"):
        for value in (np.inf, np.nan):
            args = {"h_recv": h_recv.copy(), "h_edge": h_edge.copy(), "g": g.copy()}
            args[bad][0] = value
            with np.errstate(all="ignore"):
                d = J._newton_direction(inc, args["h_recv"], args["h_edge"], balance, args["g"])
            assert np.array_equal(d, np.zeros(3)), (bad, value, d)


def test_lstsq_fallback_only_sees_finite_input(monkeypatch):
    """Rule: when ``np.linalg.solve`` fails, the ``lstsq`` fallback is handed only finite
    matrices and right-hand sides, and a non-finite answer becomes no step."""
    seen = []

    def fail(*args, **kwargs):
        raise np.linalg.LinAlgError("forced")

    def spy(a, b, rcond=None):
        seen.append(bool(np.isfinite(a).all() and np.isfinite(b).all()))
        return (np.full(len(b), np.nan),)  # a broken answer must not become a step either
    monkeypatch.setattr(np.linalg, "solve", fail)
    monkeypatch.setattr(np.linalg, "lstsq", spy)
    reps, flops = _reports(7)
    reps[2] = _with(reps[2], "link_rates_bytes_s", 1e-320)
    params = PARAMS["delay"]
    with np.errstate(all="ignore"):
        good = J.stage_problem(_reports(7)[0], flops, 7.7e5, params)
        _assert_valid(J.joint_routing(good, params)[0], good)
        bad = J.stage_problem(reps, flops, 7.7e5, params)
        _assert_valid(J.joint_routing(bad, params)[0], bad)
    assert seen and all(seen)


def test_a_siblings_copy_of_a_receivers_status_never_overrides_the_nodes_own():
    """Rule: solving the stage, a node takes each receiver's status from its own report when
    that report routes there; a sibling's report claiming another capacity for the receiver
    (a lie, or a stale copy) is used only where the node has none. Taken first (its id sorts
    first), a sibling's capacity of 1 FLOP/s had drawn every share of its siblings off that
    receiver."""
    reps, flops = _reports(3)
    params = PARAMS["delay"]
    liar, victim = sorted(reps, key=lambda r: r.sender)[:2]
    shared = sorted(set(liar.routing) & set(victim.routing))
    assert shared, "the fixture's first two offloaders share a receiver"
    lie = dataclasses.replace(liar, capacities_flops_s=dict(liar.capacities_flops_s,
                                                            **{shared[0]: 1.0}))
    told = [lie if r is liar else r for r in reps]
    j = J.stage_problem(told, flops, 7.7e5, params, own=victim.sender)
    k = list(j.receivers).index(shared[0])
    assert j.capacity[k] == victim.capacities_flops_s[shared[0]]
    first = J.stage_problem(told, flops, 7.7e5, params)  # no own: the first sender's copy
    assert first.capacity[list(first.receivers).index(shared[0])] == 1.0
