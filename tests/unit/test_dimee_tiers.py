"""DIMEE's ``tiers`` knob: one reader (``rules.parse_tiers``) for the simulator, where a tier
names scenario devices, and for a node, where it names node ids. Both accept the same forms
(one name or a list per tier, a tier left out holding none) and refuse the same faults; each
has its default in one place (``rules.SCENARIO_TIERS``, ``rules.NODE_TIERS``)."""

from __future__ import annotations

import json

import pytest

from agent.cli import main
from agent.config.jsonfile import toml_loads
from agent.policies.dimee import rules as DR
from agent.policies.dimee.agent import DimeePolicy, parse_agent_knobs
from agent.policies.dimee.sim import tier_devices
from agent.policies.setting import ScenarioError
from agent.scenario.format import load_scenario
from agent.scenario.tiered import dimee_demo

FORMS = [
    # (tiers as written, {tier: names} read back)
    ({"mobile": "a", "edge": ["b", "c"], "cloud": ["d"]},
     {"mobile": ("a",), "edge": ("b", "c"), "cloud": ("d",)}),
    ({"cloud": "d"}, {"mobile": (), "edge": (), "cloud": ("d",)}),
    ({"mobile": [], "edge": ["b"], "cloud": "d"}, {"mobile": (), "edge": ("b",), "cloud": ("d",)}),
]


@pytest.mark.parametrize("raw,tiers", FORMS)
def test_the_simulator_and_a_node_read_every_form_of_the_tiers_knob_alike(raw, tiers):
    """Rule: a tier given as one name or as a list, or left out, reads the same on a node
    (node ids) as in the simulator (devices)."""
    assert DimeePolicy({}, {"tiers": raw}).tiers == tiers
    assert tier_devices({"tiers": raw}) == {n: DR.TIERS.index(t)
                                            for t, names in tiers.items() for n in names}


def test_a_node_config_may_name_one_node_per_tier_without_a_list():
    """Rule: ``tiers = {mobile = "m1", ...}`` in a node config's TOML is read as a one-node
    list, as the simulator reads a device name (it was refused on a node before)."""
    knobs = toml_loads('[policy_knobs.tiers]\nmobile = "m1"\nedge = ["e1", "e2"]\n'
                       'cloud = "c1"\n')["policy_knobs"]
    _, tiers = parse_agent_knobs(knobs)
    assert tiers == {"mobile": ("m1",), "edge": ("e1", "e2"), "cloud": ("c1",)}


def test_a_scenario_file_may_give_each_tier_as_one_device(tmp_path):
    """Rule: a dimee-demo scenario file whose tiers name one device each (no list) loads and
    puts its devices in the same tiers as the list form."""
    path = tmp_path / "s.json"
    assert main(["scenario", "dimee-demo", "--out", str(path)]) == 0
    obj = json.loads(path.read_text())
    listed = tier_devices(obj["knobs"]["dimee"])
    obj["knobs"]["dimee"]["tiers"] = {t: names[0] for t, names in
                                      obj["knobs"]["dimee"]["tiers"].items()}
    path.write_text(json.dumps(obj))
    sc = load_scenario(str(path))
    assert tier_devices(sc.knobs["dimee"]) == listed == {"mob": 0, "edge": 1, "cloud": 2}


def test_each_side_has_its_default_and_the_demo_scenario_uses_the_simulators():
    """Rule: without the knob a node's tiers are the node ids mobile, edge, cloud (the shipped
    dimee topology's workers) and the simulator's the devices mob, edge, cloud, which are the
    devices of dimee-demo's workers and the tiers its scenario writes."""
    assert DimeePolicy({}, {}).tiers == {t: (t,) for t in DR.TIERS} == dict(DR.NODE_TIERS)
    assert tier_devices({}) == {"mob": 0, "edge": 1, "cloud": 2}
    sc = dimee_demo()
    assert sc.knobs["dimee"]["tiers"] == {t: list(d) for t, d in DR.SCENARIO_TIERS.items()}
    assert {w.device for w in sc.workers} == {d for ds in DR.SCENARIO_TIERS.values() for d in ds}


BAD = [
    # (tiers, what the message says after "<where>.tiers")
    (["a"], ": must be an object with keys among mobile, edge, cloud, got ['a']"),
    ({"space": ["x"]}, ": must be an object with keys among mobile, edge, cloud"),
    ({"mobile": 3}, ".mobile: must be a %s or a list of them, got 3"),
    ({"edge": ["b", ""]}, ".edge: must be a %s or a list of them"),
    ({"mobile": ["a"], "cloud": ["b", "a"]}, ": 'a' is in both the mobile and the cloud tier"),
]


@pytest.mark.parametrize("raw,says", BAD, ids=lambda v: str(v)[:30])
def test_both_sides_refuse_the_same_faults_naming_the_field(raw, says):
    """Rule: a tiers knob that is no object, names an unknown tier, gives a tier no name or
    list of names, or puts one name in two tiers is refused in one line naming the field, by
    a node (DimeeParamsError, policy_knobs.tiers) and by the simulator (ScenarioError)."""
    with pytest.raises(DR.DimeeParamsError) as node:
        DimeePolicy({}, {"tiers": raw})
    with pytest.raises(ScenarioError) as sim:
        tier_devices({"tiers": raw})
    for exc, where, member in ((node, "policy_knobs.tiers", "node id"),
                               (sim, "knobs.dimee.tiers", "device name")):
        msg = str(exc.value)
        assert msg.startswith(where + (says % member if "%s" in says else says)), msg
        assert "\n" not in msg
