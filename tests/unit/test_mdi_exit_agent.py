"""MDI-Exit behind the agent's policy interface (agent/policies/mdi_exit/agent.py), driven with a NodeView
as the node loop fills it; control messages go through the real wire encoder."""

import pytest

from agent.protocol import wire
from agent.errors import UsageError
from agent.policies.api import NodeView, TaskInfo
from agent.policies.registry import make_policy
from agent.protocol.wire import Kind


def view(role="worker", stage=1, output_queue=0, input_queue=0, peers=None, last_stage=0):
    peers = peers or {}
    return NodeView(node_id="n", role=role, stage=stage, num_stages=3, last_stage=last_stage,
                    peer_stages={m: (1, 3) for m in peers},
                    stage_flops=(1e9, 1e9, 1e9), stage_input_bytes=(1e4, 1e4, 1e4),
                    exit_stages=(1, 2), successors=tuple(peers), predecessors=(),
                    link_rate_bytes_s={m: 1e6 for m in peers}, input_queue=input_queue,
                    output_queue=output_queue, service_time_s=0.05, alive=set(peers),
                    peer_state={m: {"input_queue": q, "service_time_s": g}
                                for m, (q, g) in peers.items()})


TASK = TaskInfo("t1", 2, 10000)  # 10 ms on a 1 MB/s link


def policy(**knobs):
    return make_policy("mdi-exit", {1: 0.7, 2: 0.8}, knobs, seed=0)


def test_agent_alg2_sends_to_the_neighbour_with_a_shorter_queue_when_output_longer():
    p = policy()
    # O_n = 2 + this task = 3 > I_a = 1; b's queue (5) is not shorter than O_n
    assert p.choose_successor(TASK, view(output_queue=2, peers={"a": (1, 0.1), "b": (5, 0.1)})) \
        == "a"


def test_agent_alg2_keeps_the_task_when_no_neighbour_queue_is_shorter():
    p = policy()
    assert p.choose_successor(TASK, view(output_queue=0, peers={"a": (1, 0.1)})) is None


def test_agent_alg2_counts_tasks_sent_until_the_neighbour_publishes_again():
    p = policy()
    v = view(output_queue=0, peers={"a": (0, 0.1)})
    assert p.choose_successor(TASK, v) == "a"  # O_n = 1 > I_a = 0
    assert p.choose_successor(TASK, v) is None  # I_a is now 0 + 1 sent, not < O_n = 1
    msg = wire.decode(wire.encode(Kind.QUEUE_STATE, "a", {
        "role": "worker", "stage": 2, "capacity_flops": 1e9, "input_queue": 0,
        "output_queue": 0, "service_time_s": 0.1}))
    p.on_control(msg, v, 0.0)
    assert p.choose_successor(TASK, v) == "a"


def test_agent_alg2_skips_successors_already_tried_for_the_task():
    p = policy()
    v = view(output_queue=5, peers={"a": (0, 0.1), "b": (1, 0.1)})
    assert p.choose_successor(TASK, v, exclude=["a"]) == "b"


def test_agent_fixed_threshold_is_the_knob_at_every_exit_and_no_exit_variant_sets_none():
    """Rule: without threshold adaptation every exit applies the knob ``threshold`` (default
    0.8), not the configured per-exit thresholds (0.7, 0.8 here); no early exit sets none."""
    assert policy().thresholds() == {1: 0.8, 2: 0.8}
    assert policy(threshold=0.65).thresholds() == {1: 0.65, 2: 0.65}
    assert policy(early_exit=False).thresholds() == {}


def test_agent_alg4_moves_every_head_to_one_threshold_from_the_queue_total():
    p = policy(threshold_adaptation=True, threshold=0.9, min_threshold=0.5)
    assert p.thresholds() == {1: 0.9, 2: 0.9}
    p.on_tick(view(input_queue=40), 0.0)  # first tick starts the adaptation clock
    p.on_tick(view(input_queue=40), 1.0)  # I_n + O_n = 40 > T_Q2: lower by zeta
    assert p.thresholds()[1] == pytest.approx(0.72)
    p.on_tick(view(input_queue=0), 1.5)  # before adapt_interval_s: unchanged
    assert p.thresholds()[1] == pytest.approx(0.72)


def test_agent_alg3_adapts_mu_from_the_queue_total_and_keeps_the_configured_arrival_rate():
    """Alg. 3 moves mu by the queue band; the Poisson gap stays the configured one (None)."""
    p = policy(admission_control=True, initial_interarrival_s=0.5)
    src = view(role="source", stage=0, output_queue=0)
    assert p.snapshot()["interarrival_s"] == 0.5
    p.on_tick(src, 0.0)
    p.on_tick(src, 1.0)  # queue below T_Q1: mu - alpha mu
    assert p.snapshot()["interarrival_s"] == pytest.approx(0.4)
    assert p.interarrival_s(src, 1.0) is None  # the camera does not slow down
    assert policy().interarrival_s(src, 0.0) is None  # admission off: configured rate


def test_agent_alg3_admits_an_arrival_only_when_mu_passed_since_the_last_admitted_one():
    p = policy(admission_control=True, initial_interarrival_s=0.5)
    src = view(role="source", stage=0)
    assert [p.admit(src, t) for t in (0.0, 0.2, 0.49, 0.5, 0.9, 1.1)] == \
        [True, False, False, True, False, True]
    assert all(policy().admit(src, t) for t in (0.0, 0.1, 0.2))  # admission off: all admitted
    assert p.admit(view(), 1.2)  # a worker never refuses


def test_agent_idle_worker_reclaims_a_held_task_only_with_an_empty_input_queue():
    assert policy().reclaim(view(last_stage=3, input_queue=0, output_queue=1))
    assert not policy().reclaim(view(last_stage=3, input_queue=1, output_queue=1))
    assert not policy().reclaim(view(last_stage=3, input_queue=0, output_queue=0))
    assert not policy(reclaim_when_idle=False).reclaim(view(last_stage=3, output_queue=1))
    assert not policy().reclaim(view(role="source", stage=0, output_queue=1))


def test_agent_tick_publishes_queue_state_the_wire_accepts():
    p = policy()
    out = p.on_tick(view(input_queue=3, output_queue=2), 0.0)
    assert len(out) == 1 and out[0].kind == Kind.QUEUE_STATE and out[0].dest == wire.BROADCAST
    frames = wire.encode(out[0].kind, "n", out[0].fields)
    msg = wire.decode(frames)
    assert msg.fields["input_queue"] == 3 and msg.fields["service_time_s"] == 0.05


def test_agent_bad_knob_is_a_usage_error_naming_policy_knobs_field():
    with pytest.raises(UsageError, match=r"^policy_knobs\.zeta: must be in \(0, 1\)"):
        policy(zeta=2.0)


def test_agent_snapshot_restores_adapted_threshold_and_rate():
    p = policy(threshold_adaptation=True, admission_control=True)
    p.on_tick(view(input_queue=40), 0.0)
    p.on_tick(view(input_queue=40), 1.0)
    src = view(role="source", stage=0, output_queue=40)
    p.on_tick(src, 2.0)  # source: mu + zeta mu
    q = policy(threshold_adaptation=True, admission_control=True)
    q.restore(p.snapshot())
    assert q.thresholds() == p.thresholds()
    assert q.snapshot()["interarrival_s"] == p.snapshot()["interarrival_s"] == pytest.approx(1.2)


# --- a worker holding several stages (last_stage) -----------------------------------------

def test_agent_alg1_keeps_next_stage_local_when_input_queue_empty():
    v = view(last_stage=3, input_queue=0, output_queue=5, peers={"a": (0, 0.1)})
    assert policy().keep_local(TASK, v)


def test_agent_alg1_keeps_next_stage_local_when_output_queue_exceeds_T_O():
    v = view(last_stage=3, input_queue=4, output_queue=51, peers={"a": (0, 0.1)})
    assert policy().keep_local(TASK, v)


def test_agent_alg1_queues_next_stage_for_offload_when_input_busy_and_output_at_most_T_O():
    v = view(last_stage=3, input_queue=4, output_queue=50, peers={"a": (0, 0.1)})
    assert not policy().keep_local(TASK, v)
    assert policy().keep_local(TASK, view(last_stage=3, input_queue=4))  # no neighbour


def test_agent_alg2_on_a_multi_stage_node_offloads_with_probability_of_its_own_wait():
    # O_n = 2 + 1 > I_a = 1; I_n Gamma_n = 2 * 0.05 = 0.1 <= D + I_a Gamma_a = 0.01 + 0.1
    v = view(last_stage=3, input_queue=2, output_queue=2, peers={"a": (1, 0.1)})
    p = policy()
    p.rng.random = lambda: 0.95  # above p = 0.1 / 0.11
    assert p.choose_successor(TASK, v) is None
    p.rng.random = lambda: 0.5
    assert p.choose_successor(TASK, v) == "a"


def test_agent_alg3_starts_from_the_rate_the_fed_nodes_can_serve_unless_mu_is_configured():
    """Without ``initial_interarrival_s`` a source's first mu is the interval its stage-1 nodes
    serve together (Gamma 0.1 s and 0.05 s: 1/30 s) once heard, not 1 s (which would starve
    the fleet for many adaptation periods); a configured mu is left to Alg. 3 alone."""
    src = view(role="source", stage=0, peers={"a": (0, 0.1), "b": (0, 0.05)})
    p = policy(admission_control=True)
    assert p.snapshot()["interarrival_s"] == 1.0
    p.on_tick(src, 0.0)
    assert p.snapshot()["interarrival_s"] == pytest.approx(1.0 / 30.0)
    q = policy(admission_control=True, initial_interarrival_s=0.5)
    q.on_tick(src, 0.0)
    assert q.snapshot()["interarrival_s"] == 0.5


def test_agent_alg3_seed_from_nodes_faster_than_the_floor_starts_at_the_floor():
    """Stage-1 nodes that together serve faster than ``min_interarrival_s`` (two at 1.5 ms:
    0.75 ms) start mu at that floor, not at the 1 s default (the seed was refused as out of
    bounds, and Alg. 3 then needed about 31 periods to come down)."""
    src = view(role="source", stage=0, peers={"a": (0, 0.0015), "b": (0, 0.0015)})
    p = policy(admission_control=True, min_interarrival_s=0.001)
    p.on_tick(src, 0.0)
    assert p.snapshot()["interarrival_s"] == 0.001
