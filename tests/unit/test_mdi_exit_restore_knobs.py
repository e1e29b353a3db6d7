"""MDI-Exit's saved state across a restart (agent/policies/mdi_exit/agent.py), through the
node's real state file (agent.ops.state.StateStore)."""

import pytest

from agent.ops.state import StateStore
from agent.policies.api import NodeView
from agent.policies.registry import make_policy


def source_view(output_queue=0):
    return NodeView(node_id="s", role="source", stage=0, num_stages=2, last_stage=0,
                    peer_stages={}, stage_flops=(1e9, 1e9), stage_input_bytes=(1e4, 1e4),
                    exit_stages=(1,), successors=(), predecessors=(), link_rate_bytes_s={},
                    input_queue=0, output_queue=output_queue, service_time_s=0.0, alive=set())


def policy(**knobs):
    return make_policy("mdi-exit", {1: 0.8}, knobs, seed=0)


def restarted(before, tmp_path, **knobs):
    """A policy with ``knobs`` that restores what ``before`` saved to a state file."""
    store = StateStore(str(tmp_path))
    store.save(before.snapshot(), force=True)
    after = policy(**knobs)
    after.restore(StateStore(str(tmp_path)).load())
    return after


def test_a_restart_that_turns_alg3_and_alg4_on_starts_from_their_knobs(tmp_path):
    """A run without admission control or threshold adaptation saves no mu or T_e of theirs:
    a restart that turns them on starts Alg. 3 at ``initial_interarrival_s`` and Alg. 4 at
    ``threshold``, not at the earlier run's unadapted 1 s and 0.8."""
    after = restarted(policy(), tmp_path, admission_control=True, initial_interarrival_s=0.05,
                      threshold_adaptation=True, threshold=0.95)
    assert after.admission.interarrival_s == 0.05
    assert after.thresholds() == {1: 0.95}
    src = source_view()
    assert [after.admit(src, t) for t in (0.0, 0.05, 0.1)] == [True, True, True]


def test_a_restart_that_keeps_alg3_and_alg4_on_continues_from_their_adapted_values(tmp_path):
    """With Algs. 3-4 on in both runs, the adapted mu (1 s -> 1.2 s, long queues) and T_e
    (0.8 -> 0.64) are taken back."""
    knobs = dict(admission_control=True, threshold_adaptation=True)
    before = policy(**knobs)
    long_queue = source_view(output_queue=40)
    before.on_tick(long_queue, 0.0)
    before.on_tick(long_queue, 1.0)
    after = restarted(before, tmp_path, **knobs)
    assert after.admission.interarrival_s == pytest.approx(1.2)
    assert after.thresholds() == {1: pytest.approx(0.64)}


def test_a_restart_that_turns_alg3_and_alg4_off_uses_the_fixed_knobs(tmp_path):
    """Adapted values of a run with Algs. 3-4 on do not leak into a run with them off: every
    arrival is admitted and the heads use the fixed ``threshold``."""
    knobs = dict(admission_control=True, threshold_adaptation=True)
    before = policy(**knobs)
    long_queue = source_view(output_queue=40)
    before.on_tick(long_queue, 0.0)
    before.on_tick(long_queue, 1.0)
    after = restarted(before, tmp_path, threshold=0.9)
    assert after.thresholds() == {1: 0.9}
    assert all(after.admit(source_view(), t) for t in (0.0, 0.01, 0.02))
    assert after.snapshot()["interarrival_s"] is None
