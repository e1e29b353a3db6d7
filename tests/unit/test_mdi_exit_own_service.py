"""MDI-Exit's ``count_own_service`` knob (agent/policies/mdi_exit/offload.py): Alg. 2 compares
the delay until the task is done, (I_n + 1) Gamma_n kept against D_nm + (I_m + 1) Gamma_m sent,
instead of the paper's waiting times; a node that cannot run the stage holds the task for its
fastest neighbour. Off by default (the paper's rule)."""

import math

import numpy as np
import pytest

from agent.policies.api import TaskInfo
from agent.policies.mdi_exit import rules as mx
from agent.policies.mdi_exit.sim import MdiExitSimPolicy
from agent.policies.registry import make_policy
from agent.scenario.format import parse_scenario
from agent.sim import SimConfig, simulate
from tests.unit.test_mdi_exit_agent import view


def nb(id, input_len, compute_delay_s, transfer_delay_s=0.1):
    return mx.NeighbourState(id, input_len, compute_delay_s, transfer_delay_s)


def never_draw():
    raise AssertionError("no probabilistic draw expected")


FAST_BUSY = nb("fast", 1, 0.1)  # waits 0.1 + 0.1 s, done after 0.1 + 0.2 s
SLOW_IDLE = nb("slow", 0, 1.0)  # waits 0.1 s, done after 0.1 + 1.0 s


def test_knob_is_off_by_default_and_parsed_like_the_other_booleans():
    assert mx.MdiExitParams().count_own_service is False
    assert mx.params_from_knobs(None).count_own_service is False
    assert mx.params_from_knobs({"count_own_service": True}).count_own_service is True
    assert mx.params_dict(mx.MdiExitParams())["count_own_service"] is False
    with pytest.raises(mx.MdiExitParamsError,
                       match=r"^knobs\.mdi-exit\.count_own_service: must be true or false"):
        mx.params_from_knobs({"count_own_service": 1})
    with pytest.raises(mx.MdiExitParamsError, match=r"count_own_service"):
        mx.params_from_knobs({"count_own_services": True})  # unknown, the close name is said


def test_node_policy_knob_errors_name_the_policy_knobs_field():
    with pytest.raises(mx.MdiExitParamsError,
                       match=r"^policy_knobs\.count_own_service: must be true or false"):
        make_policy("mdi-exit", {1: 0.8}, {"count_own_service": "yes"}, seed=0)


def test_delays_add_the_tasks_own_run_only_with_the_knob():
    assert mx.local_delay_s(3, 0.5) == pytest.approx(1.5)  # I_n Gamma_n
    assert mx.local_delay_s(3, 0.5, True) == pytest.approx(2.0)  # (I_n + 1) Gamma_n
    assert mx.remote_delay_s(SLOW_IDLE) == pytest.approx(0.1)  # D_nm + I_m Gamma_m
    assert mx.remote_delay_s(SLOW_IDLE, True) == pytest.approx(1.1)  # D_nm + (I_m + 1) Gamma_m
    assert mx.local_delay_s(0, math.inf) == math.inf  # cannot run it: never, not NaN


def test_probability_weighs_the_own_run_on_a_slow_neighbour():
    """I_n Gamma_n = 2 > D + I_m Gamma_m = 0.5 sends at once (paper); with the own runs,
    3 against 10.5, the task goes with probability 3 / 10.5."""
    slow = nb("slow", 0, 10.0, transfer_delay_s=0.5)
    assert mx.offload_probability(3, 2, 1.0, slow) == 1.0
    assert mx.offload_probability(3, 2, 1.0, slow, True) == pytest.approx(3.0 / 10.5)
    assert mx.offload_probability(0, 2, 1.0, slow, True) == 0.0  # the gate O_n > I_m stays


def test_neighbours_are_tried_by_completion_time_with_the_knob():
    """A node that can run the stage, with a long queue: both neighbours take the task with
    probability 1; the paper tries the idle slow one first (waits 0.1 s), the knob the busy
    fast one (done after 0.3 s, the slow one after 1.1 s)."""
    args = (5, 20, 0.1, [SLOW_IDLE, FAST_BUSY], never_draw)
    assert mx.choose_neighbour(*args) == "slow"
    assert mx.choose_neighbour(*args, count_own_service=True) == "fast"


def test_node_that_cannot_run_the_stage_holds_the_task_for_its_fastest_neighbour():
    """O_n = 1 is not above the fast neighbour's I_m = 1: the paper's rule hands the task to the
    idle slow one; with the knob it stays in O_n, with no draw, until the fast one passes the
    gate (O_n = 2)."""
    nbrs = [FAST_BUSY, SLOW_IDLE]
    assert mx.choose_neighbour(1, 1, math.inf, nbrs, never_draw) == "slow"
    assert mx.choose_neighbour(1, 1, math.inf, nbrs, never_draw, True) is None
    assert mx.choose_neighbour(2, 1, math.inf, nbrs, never_draw, True) == "fast"
    # when the fast one's queue makes it the slower of the two, the slow one takes it
    crowded = nb("fast", 10, 0.1)  # done after 0.1 + 1.1 s
    assert mx.choose_neighbour(1, 1, math.inf, [crowded, SLOW_IDLE], never_draw, True) == "slow"
    assert mx.choose_neighbour(1, 1, math.inf, [], never_draw, True) is None


def test_equally_fast_neighbours_past_the_gate_share_the_least_delay():
    """Ties count as fastest: the first (by id) is gated out, the other of equal delay takes it."""
    a, b = nb("a", 1, 0.25, transfer_delay_s=0.5), nb("b", 0, 0.5, transfer_delay_s=0.5)
    assert mx.remote_delay_s(a, True) == mx.remote_delay_s(b, True) == 1.0
    assert mx.choose_neighbour(1, 1, math.inf, [a, b], never_draw, True) == "b"


# --- the agent adapter --------------------------------------------------------------------

def agent_view(peers, output_queue=0, last_stage=0, input_queue=0):
    """A stage-1 worker (holding stages 1..``last_stage``) whose successors ``peers`` publish
    {id: (I_m, Gamma_m)}; every link carries the 10 kB task in 10 ms."""
    v = view(output_queue=output_queue, input_queue=input_queue, peers=peers,
             last_stage=last_stage)
    v.peer_stages = {m: (2, 3) for m in peers}  # the successors hold the later stages
    return v


TASK = TaskInfo("t1", 2, 10000)
PEERS = {"fast": (1, 0.1), "slow": (0, 1.0)}


@pytest.mark.parametrize("own, expected", [(False, "slow"), (True, None)])
def test_agent_one_stage_worker_holds_for_the_fast_successor_with_the_knob(own, expected):
    p = make_policy("mdi-exit", {1: 0.8}, {"count_own_service": own}, seed=0)
    assert p.choose_successor(TASK, agent_view(PEERS)) == expected


def test_agent_worker_holding_the_stage_tries_successors_by_completion_time_with_the_knob():
    """I_n = 10, Gamma_n = 0.05: both successors take the task at once; the paper picks the idle
    slow one, the knob the busy fast one."""
    view = agent_view({"fast": (2, 0.1), "slow": (0, 1.0)}, output_queue=4, last_stage=3,
                      input_queue=10)
    paper = make_policy("mdi-exit", {1: 0.8}, {}, seed=0)
    own = make_policy("mdi-exit", {1: 0.8}, {"count_own_service": True}, seed=0)
    assert paper.choose_successor(TASK, view) == "slow"
    assert own.choose_successor(TASK, view) == "fast"


# --- the simulator adapter ----------------------------------------------------------------

def mixed_fleet(knobs=None):
    """One source, two stage-1 workers (w1b ten times slower), two equal stage-2 workers."""
    stage1 = [{"id": "w1a", "stage": 1, "capacity": 1e10},
              {"id": "w1b", "stage": 1, "capacity": 1e9}]
    stage2 = [{"id": "w2a", "stage": 2, "capacity": 1e10},
              {"id": "w2b", "stage": 2, "capacity": 1e10}]
    links = [{"from": "ed0", "to": w["id"], "rate": 1e6} for w in stage1]
    links += [{"from": a["id"], "to": b["id"], "rate": 1e7} for a in stage1 for b in stage2]
    sc = {"stages": [{"flops": 1e9, "input_bytes": 1e5, "exit": True},
                     {"flops": 1e9, "input_bytes": 5e4, "exit": False}],
          "remaining": [0.5, 1.0], "sources": [{"id": "ed0", "rate": 5.0}],
          "workers": stage1 + stage2, "links": links, "tradeoff": 0.5}
    if knobs is not None:
        sc["knobs"] = {"mdi-exit": knobs}
    return parse_scenario(sc)


def test_simulator_reads_the_knob_from_the_scenario_and_keeps_the_slow_worker_idle():
    """At 5 tasks/s the fast stage-1 worker (10 tasks/s) is never ten tasks deep, so with the
    knob the ten-times slower one answers no task and every task is faster than one slow run;
    the paper's rule sends it a task whenever the fast one is busy."""
    cfg = SimConfig(duration_s=60.0, seed=0)
    runs = {}
    for own in (False, True):
        policy = MdiExitSimPolicy()
        runs[own] = simulate(mixed_fleet({"count_own_service": own}), policy, cfg)
        assert policy.params.count_own_service is own
    slow = 1  # w1b's worker index
    assert np.count_nonzero(runs[False].answered_by == slow) > 0
    assert np.count_nonzero(runs[True].answered_by == slow) == 0
    delays = {own: r.finished_s - r.created_s for own, r in runs.items()}
    assert np.nanmax(delays[True]) < 1.0 + 0.1 < np.nanmax(delays[False])
    assert runs[True].summary()["mean_delay_s"] < runs[False].summary()["mean_delay_s"]


def test_simulator_default_keeps_the_papers_rule():
    """No knob: the same run as ``count_own_service = false`` (the task order, draws and
    answers are identical)."""
    cfg = SimConfig(duration_s=30.0, seed=1)
    plain = simulate(mixed_fleet(), MdiExitSimPolicy(), cfg)
    off = simulate(mixed_fleet({"count_own_service": False}), MdiExitSimPolicy(), cfg)
    np.testing.assert_array_equal(plain.finished_s, off.finished_s)
    np.testing.assert_array_equal(plain.answered_by, off.answered_by)
