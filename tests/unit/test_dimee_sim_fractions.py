"""DIMEE's ``tier_fractions`` in ``simulate`` count the tasks its source sent to each tier in
the summary window, completed or not, so a tier too slow to finish its tasks shows its share
instead of 0; its cost counts the completed tasks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from agent.policies.dimee import rules as DR
from agent.policies.registry import make_sim_policy
from agent.policies.sim_api import measured
from agent.scenario.tiered import dimee_demo
from agent.sim import SimConfig, simulate

DAY_S = 86400.0  # the longest service time a peer accepts (a scenario's capacities at load)


@pytest.fixture(scope="module")
def demo():
    return dimee_demo()


def _slow_mobile(sc):
    """``sc`` with the mobile device's workers at the least capacity a scenario accepts (a
    service time just under a day): nothing sent there finishes in a run of minutes."""
    return dataclasses.replace(sc, workers=tuple(
        dataclasses.replace(w, capacity=1.01 * sc.stages[w.stage - 1].flops / DAY_S)
        if sc.device_of(w.id) == "mob" else w for w in sc.workers))


def _run(sc, name, duration_s=200.0, warmup_s=20.0):
    policy = make_sim_policy(name)
    res = simulate(sc, policy, SimConfig(duration_s=duration_s, warmup_s=warmup_s, seed=1,
                                         sample_rows="test"))
    return res, policy, policy.extra_summary(res, sc)


def _window(res):
    c = res.created_s
    return (c >= res.config.warmup_s) & (c < res.config.duration_s)


@pytest.mark.parametrize("name", ["dimee", "dimee-f"])
def test_a_tier_too_slow_to_finish_shows_the_share_it_was_sent(demo, name):
    """Rule: with the mobile tier too slow to finish anything, ``tier_fractions`` still give
    it the share of the window's tasks the source sent there (DIMEE sends it about 40%), the
    fractions sum to 1, and ``cost`` counts the completed tasks, none of them the mobile's."""
    sc = _slow_mobile(demo)
    res, pol, extra = _run(sc, name)
    tiers = pol.routed_tiers(res)
    win = _window(res)
    mobile = win & (tiers == DR.TIERS.index("mobile"))
    assert mobile.sum() > 0.2 * win.sum()
    assert not (res.status[mobile] == 1).any()
    frac = extra["tier_fractions"]
    assert frac["mobile"] == pytest.approx(mobile.sum() / win.sum(), abs=1e-12)
    assert sum(frac.values()) == pytest.approx(1.0)
    done = pol.task_outcomes(res, sc)
    assert extra["cost"] == pytest.approx(float(done["cost"][measured(res)].mean()))
    assert not (done["tier"][measured(res)] == DR.TIERS.index("mobile")).any()


def test_when_every_task_completes_the_fractions_are_the_answering_tiers(demo):
    """Rule: where every task completes (the demo at 5 tasks/s), the tier each task was sent
    to is the tier that answered it, so ``tier_fractions`` are the answering tiers' shares of
    the measured tasks (what they counted when they counted completed tasks only)."""
    res, pol, extra = _run(demo, "dimee-f")
    assert (res.status == 1).all()
    sel = measured(res)
    answered = pol.task_outcomes(res, demo)["tier"][sel]
    assert np.array_equal(answered, pol.routed_tiers(res)[sel])
    want = np.bincount(answered, minlength=len(DR.TIERS)) / float(sel.sum())
    assert [extra["tier_fractions"][t] for t in DR.TIERS] == pytest.approx(want.tolist(),
                                                                          abs=1e-12)


def test_a_run_where_nothing_completes_still_gives_the_fractions_and_no_cost(demo):
    """Rule: ``tier-mobile`` on a mobile too slow to finish anything completes no task: the
    summary has ``alpha`` and ``tier_fractions`` (every task on the mobile) and no cost."""
    res, _, extra = _run(_slow_mobile(demo), "tier-mobile")
    assert not (res.status == 1).any()
    assert extra["tier_fractions"] == {"mobile": 1.0, "edge": 0.0, "cloud": 0.0}
    assert set(extra) == {"alpha", "tier_fractions"}


def test_a_policy_run_twice_counts_only_its_last_run(demo):
    """Rule: the tiers kept per task start afresh at slot 0, so a policy object simulated
    again reports its second run alone (task ids restart at 0 in every run)."""
    sc = _slow_mobile(demo)
    pol = make_sim_policy("tier-mobile")
    simulate(sc, pol, SimConfig(duration_s=200.0, seed=1, sample_rows="test"))
    res = simulate(demo, pol, SimConfig(duration_s=50.0, seed=2, sample_rows="test"))
    assert len(pol.tier_of_task) == len(res.status)
