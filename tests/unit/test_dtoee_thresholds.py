"""DTO-EE's threshold step (Alg. 3, eqs. 17-18) and its knobs: thresholds fall when only delay
counts (tradeoff a = 1) and rise when only accuracy counts (a = 0); bad knobs name the field."""

from __future__ import annotations

import dataclasses

import pytest

from agent.policies.dtoee.knobs import parse_knobs
from agent.policies.dtoee.network import run_dtoee
from agent.policies.thresholds import ThresholdReport, choose_threshold, threshold_stage
from agent.policies.setting import ScenarioError
from tests.unit.dtoee_scenarios import random_scenario, synthetic_profile


def _scenario(tradeoff):
    sc = random_scenario(51, 0.5)
    return dataclasses.replace(sc, remaining=None, exit_profile=synthetic_profile(), tradeoff=tradeoff)


def test_thresholds_move_down_when_only_delay_counts():
    """a = 1: every threshold step lowers c_h (more tasks exit early, less delay)."""
    res = run_dtoee(_scenario(1.0), rounds=100, stop_when_converged=False)
    assert all(c <= 0.8 for c in res.thresholds.values())
    assert min(res.thresholds.values()) < 0.8
    start = run_dtoee(_scenario(1.0), rounds=1, stop_when_converged=False)
    assert res.remaining[1] < start.remaining[1] or res.remaining[2] < start.remaining[2]


def test_thresholds_move_up_when_only_accuracy_counts():
    """a = 0: thresholds rise (fewer, surer early exits) and accuracy does not drop."""
    up = run_dtoee(_scenario(0.0), rounds=100, stop_when_converged=False)
    down = run_dtoee(_scenario(1.0), rounds=100, stop_when_converged=False)
    assert all(c >= 0.8 for c in up.thresholds.values())
    assert max(up.thresholds.values()) > 0.8
    assert up.accuracy > down.accuracy


def test_choose_threshold_uses_eq_17_delay_estimate():
    """With a = 1 the step is taken only when the estimated delay change is negative."""
    prof = synthetic_profile()
    reports = [ThresholdReport("w", 0, 2, 10.0, 0.3)]
    new = choose_threshold(2, {2: 0.8, 3: 0.8}, reports, 10.0, prof, 1.0, 0.05)
    assert new == {2: 0.75, 3: 0.8}
    # no marginal delay downstream: lowering saves nothing, a = 1 ignores accuracy: no move
    idle = [ThresholdReport("w", 0, 2, 10.0, 0.0)]
    assert choose_threshold(2, {2: 0.8, 3: 0.8}, idle, 10.0, prof, 1.0, 0.05) == {2: 0.8, 3: 0.8}


def test_threshold_stage_cycles_over_exits_every_m_rounds():
    """Alg. 3 lines 4-5: one exit stage per m rounds, in turn, from round 0 after a warm start;
    from round m after a cold one (round 0's reports describe the uniform routing)."""
    warm = [threshold_stage(t, 5, (2, 3)) for t in range(0, 21)]
    assert warm[0] == 2 and warm[5] == 3 and warm[10] == 2 and warm[1] is None
    cold = [threshold_stage(t, 5, (2, 3), first_round=5) for t in range(0, 21)]
    assert [(t, h) for t, h in enumerate(cold) if h is not None] == [(5, 2), (10, 3), (15, 2),
                                                                     (20, 3)]


def test_only_a_cold_slot_start_moves_the_first_threshold_step_to_round_m():
    """The first threshold step is in round m with slot_start "uniform" (every phase starts
    cold), in round 0 with "last" (the routing the last phase ended with)."""
    assert parse_knobs({"slot_start": "uniform", "m": 4}).first_threshold_round == 4
    assert parse_knobs({"slot_start": "last", "m": 4}).first_threshold_round == 0
    assert parse_knobs({}).first_threshold_round == 0


@pytest.mark.parametrize("knobs,field", [({"step": "fast"}, "knobs.step"),
                                         ({"m": 0}, "knobs.m"),
                                         ({"rounds": 2.5}, "knobs.rounds"),
                                         ({"momentum": 1.5}, "knobs.momentum"),
                                         ({"paper_step_size": 0}, "knobs.paper_step_size"),
                                         ({"epsilon": "x"}, "knobs.epsilon")])
def test_bad_knob_names_the_field(knobs, field):
    """A wrong DTO-EE knob is a ScenarioError that names it."""
    with pytest.raises(ScenarioError, match=field.replace(".", r"\.")):
        parse_knobs(knobs)


def test_knobs_defaults_and_overrides():
    """Unknown keys belong to other policies; known ones override the documented defaults."""
    p = parse_knobs({"step": "paper", "paper_step_size": 0.2, "ga_staleness": 3})
    assert p.step == "paper" and p.paper_step_size == 0.2 and p.m == 5


def test_a_silent_successors_mass_goes_to_the_live_ones_in_a_threshold_report():
    """g_i of a report is sum_j p_ij Delta_ij over the successors with a Delta this round, their
    probabilities renormalised as the offloader step does: a silent successor's share must not
    count as zero marginal delay (eq. 17's change of T would be understated)."""
    from agent.policies.thresholds import threshold_report

    full = threshold_report("w", 5, 2, 4.0, {"a": 0.5, "b": 0.5}, {"a": 2.0, "b": 4.0})
    assert full.marginal_s == pytest.approx(3.0)
    silent = threshold_report("w", 5, 2, 4.0, {"a": 0.5, "b": 0.5}, {"a": 2.0})
    assert silent.marginal_s == pytest.approx(2.0)
    zero_mass = threshold_report("w", 5, 2, 4.0, {"a": 1.0, "b": 0.0}, {"a": 2.0})
    assert zero_mass.marginal_s == pytest.approx(2.0)


def test_the_paper_step_takes_omega_as_eq_16_gives_it():
    """step = "paper" (Algorithm 2, eq. 19) uses Omega_i as eq. 16 computes it from the current
    routing: the default rule's extrapolation by the pending change of the arrival rate
    (Psi_i * pending) is not applied, so a pending change leaves its result unchanged."""
    import numpy as np

    from agent.policies.dtoee.knobs import DtoeeParams
    from agent.policies.dtoee.steps import update_rows

    args = dict(p=np.array([[0.5, 0.5]]), out_rate=np.array([4.0]), remaining=np.array([0.7]),
                next_flops=np.array([1e8]), next_bytes=np.array([1e4]),
                link_rate=np.array([[1e7, 1e7]]), load=np.array([[3e8, 5e8]]),
                capacity=np.array([[1e9, 1e9]]), omega=np.array([[0.01, 0.02]]),
                curvature=np.zeros((1, 2)), predecessors=np.array([[1.0, 1.0]]),
                damping=np.array([[1.0, 1.0]]), valid=np.ones((1, 2), dtype=bool))
    paper = DtoeeParams(step="paper")
    plain = update_rows(params=paper, pending=None, **args)
    moved = update_rows(params=paper, pending=np.array([3.0]), **args)
    for a, b in zip(plain, moved):
        assert np.array_equal(a, b)
    default = DtoeeParams()
    d_plain = update_rows(params=default, pending=None, **args)
    d_moved = update_rows(params=default, pending=np.array([3.0]), **args)
    assert d_moved[2][0] > d_plain[2][0]  # the default rule extrapolates Omega_i
