"""The scenario knob ``baseline_thresholds``: the baselines' planners (cf, bf, ngto, ga) tune
exit thresholds as the DTO-EE paper's baselines do ("tuned", the default) or route only at the
scenario's initial thresholds, as a node's cf and bf run ("fixed"); plan and simulate only."""

from __future__ import annotations

import json

import pytest

from agent.cli import main
from agent.config.node import ConfigError, load_config
from agent.policies import registry
from agent.policies.baselines import plans
from agent.policies.setting import ScenarioError
from agent.scenario.format import load_scenario
from agent.sim import SimConfig, simulate
from agent.testbed.topology import TopologyError, load_topology
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR

BASELINES = ("cf", "bf", "ngto", "ga")
# the exit thresholds and model delays (s) the planners chose on SMALL before the knob existed
TUNED_BEFORE = {
    "cf": ({1: 0.55, 2: 0.65, 3: 0.5}, 0.16394823603774075),
    "bf": ({1: 0.4, 2: 0.6, 3: 0.5}, 0.13247775451965843),
    "ngto": ({1: 0.55, 2: 0.65, 3: 0.5}, 0.16289663610763916),
    "ga": ({1: 0.55, 2: 0.65, 3: 0.5}, 0.16395385071357163),
}


def _small(knobs=None) -> dict:
    """The demo bundle on one source and five workers (two at stage 2: a fast one behind a slow
    link, a slow one behind a fast link) at 60% of its capacity, with the demo exit profile."""
    bundle = load_bundle(DEMO_BUNDLE_DIR)
    return {
        "stages": [{"flops": s.flops, "input_bytes": s.input_bytes, "exit": s.has_exit}
                   for s in bundle.stages],
        "exit_profile": bundle.exit_profile_path,
        "tradeoff": 0.8,
        "sources": [{"id": "cam", "rate": 19.032513860149294}],
        "workers": [{"id": "w1", "stage": 1, "capacity": 2.0e6},
                    {"id": "w2a", "stage": 2, "capacity": 6.0e6},
                    {"id": "w2b", "stage": 2, "capacity": 2.0e6},
                    {"id": "w3", "stage": 3, "capacity": 6.0e6},
                    {"id": "w4", "stage": 4, "capacity": 2.0e7}],
        "links": [{"from": "cam", "to": "w1", "rate": 1.6e6},
                  {"from": "w1", "to": "w2a", "rate": 1.0e5},
                  {"from": "w1", "to": "w2b", "rate": 1.6e6},
                  {"from": "w2a", "to": "w3", "rate": 8.0e5},
                  {"from": "w2b", "to": "w3", "rate": 8.0e5},
                  {"from": "w3", "to": "w4", "rate": 1.6e6}],
        "knobs": dict({"headroom_target": 0.85, "step_scale": 1.0}, **(knobs or {})),
    }


def _load(tmp_path, knobs=None, name="small.json"):
    path = tmp_path / name
    path.write_text(json.dumps(_small(knobs)))
    return load_scenario(str(path))


@pytest.mark.parametrize("policy", BASELINES)
def test_fixed_routes_only_at_the_scenarios_initial_threshold(tmp_path, policy):
    """Rule: with ``baseline_thresholds`` "fixed" every baseline keeps every exit at the
    scenario's ``initial_threshold`` and only routes: its plan is the one it makes when given
    those thresholds."""
    sc = _load(tmp_path, {"baseline_thresholds": "fixed", "initial_threshold": 0.7})
    got = registry.plan(sc, policy)
    assert got.thresholds == {1: 0.7, 2: 0.7, 3: 0.7}
    given = {1: 0.7, 2: 0.7, 3: 0.7}
    fn = {"cf": plans.cf_routing, "bf": plans.bf_routing, "ngto": plans.ngto,
          "ga": lambda s, thresholds: plans.ga(s, thresholds, staleness=1)}[policy]
    assert got.to_json() == fn(sc, thresholds=given).to_json()


@pytest.mark.parametrize("policy", BASELINES)
def test_tuned_is_the_default_and_plans_as_before(tmp_path, policy):
    """Rule: "tuned" is the default: a scenario without the knob and one with "tuned" get the
    same plan, the thresholds and model delay the planners gave before the knob existed."""
    plain = registry.plan(_load(tmp_path), policy)
    tuned = registry.plan(_load(tmp_path, {"baseline_thresholds": "tuned"}, "t.json"), policy)
    assert tuned.to_json() == plain.to_json()
    thresholds, delay_s = TUNED_BEFORE[policy]
    assert plain.thresholds == thresholds
    assert plain.delay_s == pytest.approx(delay_s, rel=1e-6)


def test_fixed_bf_overloads_the_worker_behind_the_fast_link_as_the_agents_bf_does(tmp_path):
    """Rule: at the agents' thresholds (0.8) bandwidth-first sends stage 2's tasks by link rate
    and overloads the slow worker (the model's delay is infinite); tuned, it lowers the
    thresholds until it fits, which no node's bf can do."""
    fixed = registry.plan(_load(tmp_path, {"baseline_thresholds": "fixed"}), "bf")
    tuned = registry.plan(_load(tmp_path, name="t.json"), "bf")
    assert fixed.thresholds == {1: 0.8, 2: 0.8, 3: 0.8} and fixed.delay_s == float("inf")
    assert tuned.delay_s < 1.0


def test_dtoee_ignores_the_knob(tmp_path):
    """Rule: the knob is the baselines' (cf, bf, ngto, ga): DTO-EE tunes its thresholds with or
    without it."""
    fixed = registry.plan(_load(tmp_path, {"baseline_thresholds": "fixed"}), "dtoee", rounds=20)
    plain = registry.plan(_load(tmp_path, name="t.json"), "dtoee", rounds=20)
    assert fixed.to_json() == plain.to_json()


def test_the_simulators_baselines_read_it_too(tmp_path):
    """Rule: simulate's cf plans each slot as plan does: "fixed" keeps the initial thresholds
    in force, "tuned" moves them."""
    def thresholds(sc):
        res = simulate(sc, registry.make_sim_policy("cf"),
                       SimConfig(duration_s=4.0, slot_s=2.0, seed=1, link_model="shared"))
        return [{int(h): c for h, c in s["thresholds"].items()} for s in res.slots]

    fixed = thresholds(_load(tmp_path, {"baseline_thresholds": "fixed"}))
    tuned = thresholds(_load(tmp_path, name="t.json"))
    assert fixed and all(t == {1: 0.8, 2: 0.8, 3: 0.8} for t in fixed)
    assert all(t == TUNED_BEFORE["cf"][0] for t in tuned)


@pytest.mark.parametrize("value", ["adaptive", "Fixed", 1, True, None])
def test_a_bad_value_is_one_line_naming_the_knob_and_its_values(tmp_path, capsys, value):
    """Rule: any value but "tuned" or "fixed" is refused, naming the knob and both values, by
    the scenario check and by plan and simulate on a file (exit 2, one line)."""
    with pytest.raises(ScenarioError,
                       match=r"^knobs\.baseline_thresholds: must be one of tuned\|fixed, got "):
        registry.check_scenario_knobs({"baseline_thresholds": value})
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_small({"baseline_thresholds": value})))
    for argv in (["plan", "-s", str(path), "-p", "cf"],
                 ["simulate", "--scenario", str(path), "--out", str(tmp_path / "o")]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(path) in err[0]
        assert "knobs.baseline_thresholds: must be one of tuned|fixed" in err[0]


def test_the_knob_is_known_to_the_baselines_rows_only():
    """Rule: cf, bf, ngto and ga read the knob (a scenario with it passes the typo check);
    DTO-EE's row does not list it."""
    for name in BASELINES:
        assert "baseline_thresholds" in registry.lookup(name, "test").scenario_knobs
    assert "baseline_thresholds" not in registry.lookup("dtoee", "test").scenario_knobs
    registry.check_scenario_knobs({"baseline_thresholds": "fixed"})


NODE = """node_id = "w1"
role = "worker"
stage = 1
bundle = "bundle"
state_dir = "state"
control_bind = "tcp://127.0.0.1:5551"
data_bind = "tcp://127.0.0.1:5552"
policy = "%s"

[policy_knobs]
baseline_thresholds = "fixed"

[[peers]]
id = "s1"
stage = 0
control_address = "tcp://127.0.0.1:5541"
data_address = "tcp://127.0.0.1:5542"

[[peers]]
id = "w2"
stage = 2
control_address = "tcp://127.0.0.1:5561"
data_address = "tcp://127.0.0.1:5562"
"""


@pytest.mark.parametrize("policy", ["cf", "bf"])
def test_a_node_config_refuses_it_saying_its_baselines_keep_their_thresholds(tmp_path, policy):
    """Rule: plan and simulate only: in a node's policy_knobs the knob would be without effect,
    so the config check refuses it as it refuses DTO-EE's planner-only knobs, saying why."""
    path = tmp_path / "node.toml"
    path.write_text(NODE % policy)
    with pytest.raises(ConfigError, match=r"config\.policy_knobs\.baseline_thresholds: not used "
                                          r"by a node: a node's cf and bf keep the thresholds"):
        load_config(str(path))


def test_a_topology_refuses_it_in_a_baselines_knobs(tmp_path):
    """Rule: a topology's knobs.cf go to every cf agent's policy_knobs, so the knob is refused
    there too, naming the file and the field."""
    path = tmp_path / "topo.json"
    path.write_text(json.dumps({
        "knobs": {"cf": {"baseline_thresholds": "fixed"}},
        "sources": [{"id": "cam", "share": 1.0}],
        "workers": [{"id": "w%d" % h, "stage": h} for h in range(1, 5)],
        "links": [{"from": "cam", "to": "w1"}, {"from": "w1", "to": "w2"},
                  {"from": "w2", "to": "w3"}, {"from": "w3", "to": "w4"}]}))
    with pytest.raises(TopologyError, match=r"knobs\.cf\.baseline_thresholds: not used by a "
                                            r"node: a node's cf and bf keep"):
        load_topology(str(path))

