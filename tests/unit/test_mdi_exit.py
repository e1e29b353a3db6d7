"""MDI-Exit policy (agent/policies/mdi_exit/rules.py): one test per branch of Algs. 1-4, the rule in
each test's name."""

import math

import numpy as np
import pytest

from agent.errors import UsageError
from agent.policies.mdi_exit import rules as mx
from engines.exit_profile import softmax_confidence

P = mx.MdiExitParams()  # paper defaults: T_O=50, T_Q1=10, T_Q2=30, alpha=.2, beta=.1, zeta=.2


def nb(id="m", input_len=0, compute_delay_s=1.0, transfer_delay_s=0.0):
    return mx.NeighbourState(id, input_len, compute_delay_s, transfer_delay_s)


def never_draw():
    raise AssertionError("no random draw expected on this branch")


# --- parameters ---------------------------------------------------------------------------

def test_params_defaults_are_the_papers_section_v_values():
    assert (P.output_queue_limit, P.queue_low, P.queue_high) == (50, 10, 30)
    assert (P.alpha, P.beta, P.zeta) == (0.2, 0.1, 0.2)


@pytest.mark.parametrize("field,value", [
    ("alpha", 0.05),  # alpha must exceed beta
    ("alpha", 1.0), ("beta", 0.0), ("zeta", 1.5),
    ("queue_high", 5),  # below queue_low
    ("output_queue_limit", -1), ("threshold", 0.0), ("min_threshold", 1.2),
    ("adapt_interval_s", 0), ("max_interarrival_s", 1e-4), ("early_exit", 1),
    ("alpha", float("nan")), ("queue_low", "10"),
])
def test_params_out_of_range_value_raises_usage_error_naming_the_field(field, value):
    with pytest.raises(UsageError, match=r"^mdi-exit\.%s: " % field):
        mx.MdiExitParams(**{field: value})


def test_params_threshold_below_floor_rejected_only_with_threshold_adaptation():
    assert mx.MdiExitParams(threshold=0.3).threshold == 0.3
    with pytest.raises(mx.MdiExitParamsError, match=r"mdi-exit\.threshold: .*min_threshold"):
        mx.MdiExitParams(threshold=0.3, threshold_adaptation=True)


def test_params_from_knobs_keeps_defaults_and_names_knob_path_in_errors():
    p = mx.params_from_knobs({"alpha": 0.3, "admission_control": True})
    assert p.alpha == 0.3 and p.admission_control and p.beta == 0.1
    assert mx.params_from_knobs(None) == P
    with pytest.raises(mx.MdiExitParamsError, match=r"^knobs\.mdi-exit\.T_O: unknown field"):
        mx.params_from_knobs({"T_O": 3})
    with pytest.raises(mx.MdiExitParamsError, match=r"^knobs\.mdi-exit\.zeta: must be in"):
        mx.params_from_knobs({"zeta": -0.1})
    assert mx.params_dict(p)["alpha"] == 0.3


@pytest.mark.parametrize("knob", ["adapt_interval_s", "state_interval_s",
                                  "initial_interarrival_s", "max_interarrival_s"])
def test_a_period_knob_is_at_most_a_day_as_every_node_period(knob):
    """Rule: the MDI-Exit periods are in [0.001, 86400] s, as the node config's are, and its
    inter-arrival gaps in [1e-06, 86400] s: 1e9 s (a
    queue state never published, held tasks never offered again) is refused, naming it (a
    start of a day needs a max_interarrival_s of a day: the start lies within the bounds)."""
    with pytest.raises(mx.MdiExitParamsError,
                       match=r"^knobs\.mdi-exit\.%s: must be in \[(0\.001|1e-06), 86400\]"
                       % knob):
        mx.params_from_knobs({knob: 1e9})
    day = {"max_interarrival_s": 86400} if knob == "initial_interarrival_s" else {}
    assert getattr(mx.params_from_knobs(dict(day, **{knob: 86400})), knob) == 86400


# --- eqs. (1)-(2) ------------------------------------------------------------------------

def test_head_confidence_is_max_softmax_and_argmax():
    logits = np.array([[1.0, 3.0, 0.5]], dtype=np.float32)
    conf, cls = mx.head_confidence(logits)
    e = np.exp([1.0, 3.0, 0.5])
    assert cls == 1 and conf == pytest.approx(e.max() / e.sum())
    assert conf == pytest.approx(float(softmax_confidence(logits)[0][0]))


# --- Alg. 1 ------------------------------------------------------------------------------

def test_alg1_exits_when_confidence_reaches_threshold():
    assert mx.next_step(0.9, 0.8, input_len=5, output_len=0, params=P) == mx.EXIT


def test_alg1_confidence_equal_to_threshold_exits_under_the_projects_single_rule():
    # the paper writes C > T_e; the project's one rule (should_exit) is C >= T_e
    assert mx.next_step(0.8, 0.8, 5, 0, P) == mx.EXIT


def test_alg1_below_threshold_keeps_task_local_when_input_queue_empty():
    assert mx.next_step(0.5, 0.8, input_len=0, output_len=3, params=P) == mx.LOCAL


def test_alg1_below_threshold_keeps_task_local_when_output_queue_exceeds_T_O():
    assert mx.next_step(0.5, 0.8, input_len=4, output_len=51, params=P) == mx.LOCAL


def test_alg1_below_threshold_queues_for_offload_when_input_busy_and_output_at_most_T_O():
    assert mx.next_step(0.5, 0.8, input_len=4, output_len=50, params=P) == mx.OFFLOAD
    assert mx.next_step(0.5, 0.8, input_len=1, output_len=0, params=P) == mx.OFFLOAD


def test_alg1_stage_without_exit_head_never_exits():
    assert mx.next_step(None, 0.1, 4, 0, P) == mx.OFFLOAD


def test_alg1_final_stage_always_answers():
    assert mx.next_step(0.01, 0.99, 4, 0, P, final=True) == mx.EXIT


def test_alg1_no_exit_variant_never_exits_early():
    p = mx.MdiExitParams(early_exit=False)
    assert mx.next_step(1.0, 0.5, 0, 0, p) == mx.LOCAL


def test_alg1_node_without_neighbours_keeps_every_task():
    assert mx.next_step(0.5, 0.8, 4, 0, P, has_neighbours=False) == mx.LOCAL


def test_alg1_idle_node_reclaims_a_held_task_only_with_empty_input_and_the_knob_on():
    assert mx.should_reclaim(0, 2, P)
    assert not mx.should_reclaim(1, 2, P)  # input not empty
    assert not mx.should_reclaim(0, 0, P)  # nothing held
    assert not mx.should_reclaim(0, 1, mx.MdiExitParams(reclaim_when_idle=False))


def test_alg2_offloads_when_output_longer_than_neighbour_input_and_local_wait_longer():
    # O_n=3 > I_m=1 and I_n*G_n = 4*1 > D + I_m*G_m = 0.5 + 1*1
    m = nb(input_len=1, compute_delay_s=1.0, transfer_delay_s=0.5)
    assert mx.offload_probability(3, 4, 1.0, m) == 1.0
    assert mx.choose_neighbour(3, 4, 1.0, [m], never_draw) == "m"


def test_alg2_offloads_with_probability_local_over_remote_wait_when_neighbour_slower():
    # O_n=3 > I_m=2, I_n*G_n = 2*1 = 2 <= D + I_m*G_m = 1 + 2*1.5 = 4 -> p = 0.5
    m = nb(input_len=2, compute_delay_s=1.5, transfer_delay_s=1.0)
    assert mx.offload_probability(3, 2, 1.0, m) == pytest.approx(0.5)
    assert mx.choose_neighbour(3, 2, 1.0, [m], lambda: 0.49) == "m"
    assert mx.choose_neighbour(3, 2, 1.0, [m], lambda: 0.5) is None


def test_alg2_never_offloads_when_output_not_longer_than_neighbour_input():
    m = nb(input_len=3, compute_delay_s=0.001, transfer_delay_s=0.0)
    assert mx.offload_probability(3, 100, 1.0, m) == 0.0
    assert mx.choose_neighbour(3, 100, 1.0, [m], never_draw) is None


def test_alg2_neighbour_with_zero_expected_delay_takes_task():
    assert mx.offload_probability(1, 0, 1.0, nb(input_len=0, transfer_delay_s=0.0)) == 1.0


def test_alg2_a_node_that_cannot_run_the_stage_offloads_even_to_an_overflowing_neighbour():
    """A source (own wait inf) offloads with probability 1 even when a neighbour's expected
    delay I_m Gamma_m overflows to inf: inf / inf must not become a NaN no draw accepts."""
    m = nb(input_len=2, compute_delay_s=1e308, transfer_delay_s=0.01)
    assert mx.offload_probability(5, 1, math.inf, m) == 1.0
    assert mx.choose_neighbour(5, 1, math.inf, [m], lambda: 0.999) == "m"


def test_alg2_sure_neighbour_preferred_over_probabilistic_one_then_lowest_delay():
    maybe = nb("a", input_len=0, transfer_delay_s=10.0)  # p = 4/10
    sure_slow = nb("b", input_len=1, compute_delay_s=1.0, transfer_delay_s=2.0)  # 3 < 4
    sure_fast = nb("c", input_len=1, compute_delay_s=1.0, transfer_delay_s=1.0)  # 2 < 4
    assert mx.choose_neighbour(5, 4, 1.0, [maybe, sure_slow, sure_fast], never_draw) == "c"


def test_alg2_probabilistic_neighbours_drawn_in_order_of_expected_delay():
    far = nb("far", input_len=0, transfer_delay_s=8.0)  # p = 2/8
    near = nb("near", input_len=0, transfer_delay_s=4.0)  # p = 2/4
    draws = iter([0.9, 0.1])  # near refuses (0.9 >= .5), far accepts (0.1 < .25)
    assert mx.choose_neighbour(3, 2, 1.0, [far, near], lambda: next(draws)) == "far"
    rng = np.random.default_rng(0)
    picks = [mx.choose_neighbour(3, 2, 1.0, [near], rng.random) for _ in range(4000)]
    assert 0.45 < picks.count("near") / 4000.0 < 0.55


# --- Alg. 3 ------------------------------------------------------------------------------

def test_alg3_queues_below_T_Q1_shorten_interarrival_by_alpha():
    assert mx.adapt_interarrival(1.0, 9, P) == pytest.approx(0.8)


def test_alg3_queues_between_T_Q1_and_T_Q2_shorten_interarrival_by_beta():
    assert mx.adapt_interarrival(1.0, 20, P) == pytest.approx(0.9)


def test_alg3_queues_above_T_Q2_lengthen_interarrival_by_zeta():
    assert mx.adapt_interarrival(1.0, 31, P) == pytest.approx(1.2)


def test_alg3_queues_exactly_at_T_Q1_or_T_Q2_leave_interarrival_unchanged():
    assert mx.adapt_interarrival(1.0, 10, P) == 1.0
    assert mx.adapt_interarrival(1.0, 30, P) == 1.0


def test_alg3_interarrival_stays_within_its_bounds():
    p = mx.MdiExitParams(min_interarrival_s=0.5, max_interarrival_s=2.0)
    assert mx.adapt_interarrival(0.55, 0, p) == 0.5
    assert mx.adapt_interarrival(1.9, 100, p) == 2.0


# --- Alg. 4 ------------------------------------------------------------------------------

def test_alg4_queues_below_T_Q1_raise_threshold_by_alpha():
    assert mx.adapt_threshold(0.5, 0, P) == pytest.approx(0.6)


def test_alg4_queues_between_T_Q1_and_T_Q2_raise_threshold_by_beta():
    assert mx.adapt_threshold(0.5, 15, P) == pytest.approx(0.55)


def test_alg4_threshold_never_exceeds_one():
    assert mx.adapt_threshold(0.9, 0, P) == 1.0
    assert mx.adapt_threshold(0.95, 15, P) == 1.0


def test_alg4_queues_above_T_Q2_lower_threshold_by_zeta():
    assert mx.adapt_threshold(0.9, 40, P) == pytest.approx(0.72)


def test_alg4_lowered_threshold_stops_at_floor_T_e_min():
    p = mx.MdiExitParams(min_threshold=0.7)
    assert mx.adapt_threshold(0.8, 40, p) == 0.7


def test_alg4_queues_exactly_at_T_Q1_or_T_Q2_leave_threshold_unchanged():
    assert mx.adapt_threshold(0.8, 10, P) == 0.8
    assert mx.adapt_threshold(0.8, 30, P) == 0.8
