"""A variant policy refuses a knob it fixes when given another value, instead of replacing it
without a word: ``tabi`` fixes MLCI's ``tau`` at 0, ``mlci-noens`` its ``ensemble`` at false,
``dimee-f`` DIMEE's ``adaptive`` at false. The value the variant fixes is accepted. This holds
for a node's ``policy_knobs`` (what ``run`` builds) and for knobs given to the variant's name
in the simulator; a scenario's shared ``knobs.mlci`` / ``knobs.dimee`` section is the base
policy's own, which the variants compare against (``simulate --policies mlci,tabi``)."""

from __future__ import annotations

import dataclasses

import pytest

from agent.errors import UsageError
from agent.policies import registry
from agent.policies.sim_api import SlotView
from agent.scenario.tiered import dimee_demo, mlci_demo

# (variant, knob, value the variant fixes, another value, base policy, as a file spells it)
FIXED = [("tabi", "tau", 0.0, 0.5, "mlci", "0"),
         ("mlci-noens", "ensemble", False, True, "mlci", "false"),
         ("dimee-f", "adaptive", False, True, "dimee", "false")]


@pytest.mark.parametrize("name,key,fixed,other,base,spelled", FIXED)
def test_a_node_refuses_a_knob_its_variant_fixes_set_otherwise(name, key, fixed, other, base,
                                                               spelled):
    """Rule: building the node policy (as run does) with policy_knobs giving the fixed knob
    another value fails with one line naming policy_knobs.KEY, the variant, the value it
    fixes, the policy that takes the knob and the value given."""
    with pytest.raises(UsageError) as err:
        registry.make_policy(name, {}, {key: other})
    assert str(err.value) == ('policy_knobs.%s: %s fixes it at %s (use policy "%s" to set it), '
                              "got %r" % (key, name, spelled, base, other))


@pytest.mark.parametrize("name,key,fixed,other,base,spelled", FIXED)
def test_the_config_check_refuses_a_knob_its_variant_fixes_as_the_node_does(
        name, key, fixed, other, base, spelled):
    """Rule: the knob check a config load, doctor and the testbed's topology check run
    (registry.check_agent_knobs) refuses the same knob with the same line, so a fleet is not
    started only for its agents to exit 78; the fixed value passes it."""
    with pytest.raises(UsageError) as err:
        registry.check_agent_knobs(name, {key: other})
    assert str(err.value) == ('policy_knobs.%s: %s fixes it at %s (use policy "%s" to set it), '
                              "got %r" % (key, name, spelled, base, other))
    registry.check_agent_knobs(name, {key: fixed})


@pytest.mark.parametrize("name,key,fixed,other,base,spelled", FIXED)
def test_the_value_a_variant_fixes_is_accepted_and_in_force(name, key, fixed, other, base,
                                                            spelled):
    """Rule: giving the knob the very value the variant fixes is accepted, and that value is
    what the policy runs with; without the knob the variant's value is in force too."""
    for knobs in ({key: fixed}, {}):
        assert getattr(registry.make_policy(name, {}, knobs).params, key) == fixed


@pytest.mark.parametrize("name,key,fixed,other,base,spelled", FIXED)
def test_the_base_policy_takes_the_knob(name, key, fixed, other, base, spelled):
    """Rule: the policy the message points to takes the same knob and runs with it."""
    assert getattr(registry.make_policy(base, {}, {key: other}).params, key) == other


def test_an_integer_zero_is_tabis_fixed_tau_and_a_boolean_is_no_number():
    """Rule: tau = 0 (an integer) is the 0 tabi fixes; a value of another type is refused by
    the knob's own type check first (no "fixes it" message for a wrong type)."""
    assert registry.make_policy("tabi", {}, {"tau": 0}).params.tau == 0.0
    with pytest.raises(UsageError, match=r"policy_knobs\.tau: must be a finite number"):
        registry.make_policy("tabi", {}, {"tau": False})


@pytest.mark.parametrize("name,scenario,key,other", [
    ("tabi", mlci_demo, "tau", 0.5), ("dimee-f", dimee_demo, "adaptive", True)])
def test_the_simulator_refuses_knobs_given_to_the_variant_and_keeps_the_shared_section(
        name, scenario, key, other):
    """Rule: in the simulator, a knob given to the variant's own name with another value than
    it fixes is refused at its first slot, naming NAME.KEY; the same value in the scenario's
    shared section (knobs.mlci / knobs.dimee, the base policy's) is the base's, and the
    variant runs with its fixed value."""
    sc = scenario()
    row = registry.lookup(name, "--policies", "sim")
    with pytest.raises(UsageError, match=r"^%s\.%s: %s fixes it at " % (name, key, name)):
        row.sim(name, None, {name: {key: other}}).start_slot(SlotView(0, 0.0, sc, None))
    base = "mlci" if name == "tabi" else "dimee"
    shared = dict(sc.knobs)
    shared[base] = dict(shared.get(base) or {}, **{key: other})
    pol = row.sim(name, None, {})
    pol.start_slot(SlotView(0, 0.0, dataclasses.replace(sc, knobs=shared), None))
    assert getattr(pol.params, key) != other
