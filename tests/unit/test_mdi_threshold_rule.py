"""MDI-Exit has one exit threshold T_e per node, the knob ``threshold`` (fixed without
``threshold_adaptation``, Alg. 4's start with it), on a node as in the simulator: for the same
knobs a node's ``thresholds()`` and the simulator's ``threshold()`` agree at every exit, whatever
per-exit thresholds the node config gives (those had held on a node without adaptation, so
``simulate`` and ``testbed`` exited differently on the same knobs). Configured thresholds that
differ from the knob are named in a WARNING when the node starts."""

import math

import pytest

from agent.policies.mdi_exit import rules as mx
from agent.policies.mdi_exit.agent import MdiExitPolicy
from tests.unit.test_mdi_exit_parity import set_queues, simulator, worker_view

CONFIGURED = {1: 0.7, 2: 0.8, 3: 0.6}  # a node config's per-exit thresholds, all unlike the knob
SIM_NODES = ("n1/1", "n1/2", "n1/3", "n2/1", "n2/2", "n2/3")  # the 2-node topology's exits


def _sim_thresholds(sim, sp):
    """{(node, exit stage): threshold} the simulator applies at every exit check."""
    return {(n, int(n[-1])): sp.threshold(n, int(n[-1]), sim) for n in SIM_NODES}


@pytest.mark.parametrize("knobs,want", [
    ({}, 0.8),  # the knob's default
    ({"threshold": 0.65}, 0.65),
    ({"threshold": 0.9, "threshold_adaptation": True}, 0.9),  # Alg. 4 starts at the knob
    ({"threshold": 0.7, "admission_control": True}, 0.7),
    ({"threshold": 0.7, "early_exit": False}, None),  # no head exits
])
def test_a_node_and_the_simulator_apply_the_same_threshold_for_the_same_knobs(knobs, want):
    """Rule: at start, every exit of a node applies ``rules.exit_threshold`` of its knobs, as
    every exit of the simulator does; the configured per-exit thresholds play no part."""
    node = MdiExitPolicy(CONFIGURED, knobs)
    sim, sp = simulator("2-node", knobs)
    assert mx.exit_threshold(node.params, node.params.threshold) == want
    if want is None:
        assert node.thresholds() == {}
        assert set(_sim_thresholds(sim, sp).values()) == {math.inf}
    else:
        assert node.thresholds() == {1: want, 2: want, 3: want}
        assert set(_sim_thresholds(sim, sp).values()) == {want}


@pytest.mark.parametrize("adapt", [False, True])
def test_a_node_and_the_simulator_keep_agreeing_as_alg4_runs_on_the_same_queues(adapt):
    """Rule: fed the same queue total I_n + O_n every tick, a node's thresholds and its device's
    threshold in the simulator stay equal after every run of Alg. 4 (with adaptation they move
    down, up and hold; without it they stay at the knob)."""
    knobs = {"threshold": 0.9, "threshold_adaptation": adapt, "adapt_interval_s": 1.0}
    node = MdiExitPolicy(CONFIGURED, knobs)
    sim, sp = simulator("local", knobs)
    seen = []
    for k in range(9):
        t = float(k)
        queued = 40 if k < 4 else 5 if k < 7 else 30  # high, low, exactly T_Q2
        set_queues(sim, t, inputs={"n1/1": queued})
        sp.on_tick(sim)
        node.on_tick(worker_view(queued, 0), t)
        th = node.thresholds()
        assert set(th) == {1, 2, 3} and len(set(th.values())) == 1
        for h in (1, 2, 3):
            assert sp.threshold("n1/%d" % h, h, sim) == pytest.approx(th[h])
        seen.append(th[1])
    if adapt:
        assert seen[3] < seen[0] and seen[6] > seen[3] and seen[8] == seen[7]
    else:
        assert seen == [0.9] * 9


def test_configured_thresholds_that_differ_from_the_knob_are_named_in_one_warning(caplog):
    """Rule: a node whose configured thresholds differ from the fixed knob ``threshold`` logs
    one WARNING naming both (a setting with no effect is said); none when they agree, when no
    head exits, or when Alg. 4 sets the threshold (threshold_adaptation)."""
    with caplog.at_level("WARNING", logger="agent.policies.mdi_exit.agent"):
        MdiExitPolicy(CONFIGURED, {"threshold": 0.75})
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["mdi-exit applies policy_knobs.threshold = 0.75 at every exit; the "
                     "configured thresholds (stage 1: 0.7, stage 2: 0.8, stage 3: 0.6) are not "
                     "used"]
    caplog.clear()
    with caplog.at_level("WARNING", logger="agent.policies.mdi_exit.agent"):
        MdiExitPolicy({1: 0.75, 2: 0.75}, {"threshold": 0.75})
        MdiExitPolicy(CONFIGURED, {"early_exit": False})
        MdiExitPolicy(CONFIGURED, {"threshold_adaptation": True, "threshold": 0.9})
    assert caplog.records == []
