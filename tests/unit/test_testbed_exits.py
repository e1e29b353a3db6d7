"""The capacity a testbed prints, and ``N%`` rates, follow the exits the agents will take.

On ``mdi-local-noee`` (the ``mdi-exit`` knob ``early_exit`` false) the testbed printed 7.4
tasks/s, the capacity with exits, while the node serves about 2.66 whole tasks/s (4e6 FLOP/s
for 1.5e6 FLOP): a rate of "50%" was about 140% load.
"""

from __future__ import annotations

import dataclasses

import pytest

from agent.commands.testbed import with_mdi_mode
from agent.testbed.driver import load_bundle_for
from agent.testbed.exits import initial_thresholds
from agent.testbed.local import bundle_stages, default_remaining
from agent.testbed.topology import load_topology
from agent.testbed.topology_bundle import capacity_tasks_s


def _capacity(topo, policy=None):
    bundle = load_bundle_for(topo)
    return capacity_tasks_s(topo, bundle_stages(bundle), default_remaining(topo, bundle, policy))


def test_without_early_exit_every_task_runs_every_stage_and_capacity_is_whole_tasks():
    """Rule: with the mdi-exit knob early_exit false, I_h is 1 at every stage and the capacity
    is the node's FLOP/s over the whole model's FLOP."""
    topo = load_topology("mdi-local-noee")
    bundle = load_bundle_for(topo)
    assert default_remaining(topo, bundle) == [1.0] * len(bundle.stages)
    whole = sum(s.flops for s in bundle_stages(bundle))
    assert _capacity(topo) == pytest.approx(4e6 / whole, rel=1e-6)
    assert _capacity(topo) < 0.5 * _capacity(load_topology("mdi-local"))


def test_the_mdi_exit_knobs_change_only_the_mdi_exit_policys_remaining():
    """Rule: a rate's model fallback for another policy keeps the topology's thresholds, since
    only mdi-exit reads its knobs; mdi-exit's own runs have no exits."""
    topo = load_topology("mdi-local-noee")
    bundle = load_bundle_for(topo)
    assert default_remaining(topo, bundle, "cf") == default_remaining(
        load_topology("mdi-local"), bundle)
    assert default_remaining(topo, bundle, "mdi-exit") == [1.0] * len(bundle.stages)


def test_threshold_adaptation_starts_every_exit_at_the_knob_threshold():
    """Rule: with threshold_adaptation on (--mdi-mode adapt) mdi-exit starts each exit at the
    knob ``threshold``, as the policy does, not at the topology's thresholds."""
    topo = with_mdi_mode(load_topology("mdi-local"), "adapt")
    knob = topo.knobs["mdi-exit"]["threshold"]
    assert initial_thresholds(topo, [1, 2, 3]) == {1: knob, 2: knob, 3: knob}
    assert initial_thresholds(topo, [1, 2, 3], "cf") == dict(topo.thresholds)


def test_a_topology_without_mdi_exit_knobs_keeps_its_thresholds():
    """Rule: the capacity of a topology that sets no mdi-exit knobs is at its own thresholds."""
    topo = load_topology("default")
    assert "mdi-exit" not in topo.knobs
    assert initial_thresholds(topo, [1, 2, 3]) == {1: 0.8, 2: 0.8, 3: 0.8}
    off = dataclasses.replace(topo, knobs=dict(topo.knobs, **{"mdi-exit": {"early_exit": False}}))
    assert initial_thresholds(off, [1, 2, 3]) is None
