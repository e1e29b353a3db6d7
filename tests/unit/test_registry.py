"""The policy registry: one table of names; each part asks it for its factory and the knobs."""

from __future__ import annotations

import ast
import pathlib

import pytest

from agent.errors import UsageError
from agent.policies import registry
from agent.policies.api import AgentPolicy
from agent.policies.setting import ScenarioError
from agent.policies.sim_api import PlannerPolicy

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_each_part_gets_the_names_that_run_there():
    """Agent, simulator and plan names come from the same rows."""
    assert set(registry.names("agent")) == {"dtoee", "cf", "bf", "mdi-exit", "fixed", "dimee",
                                            "dimee-f", "mlci", "tabi", "mlci-noens"}
    assert set(registry.names("sim")) == {"dtoee", "dtoee-cX", "cf", "bf", "ngto", "ga",
                                          "mdi-exit", "dimee", "dimee-f", "mlci", "tabi",
                                          "mlci-noens", "tier-cloud", "tier-edge",
                                          "tier-mobile", "tier-random", "tier-oracle"}
    assert set(registry.names("planner")) == {"dtoee", "cf", "bf", "ngto", "ga", "optimum",
                                              "dimee", "dimee-f", "mlci", "tabi", "mlci-noens"}
    for name in registry.names("agent"):
        assert isinstance(registry.make_policy(name, {1: 0.8}, {}), AgentPolicy)


def test_unknown_name_is_one_line_listing_the_known_ones():
    """Every part reports an unknown name the same way, listing what it can run."""
    with pytest.raises(UsageError, match=r"^--policies: unknown policy 'magic' \(known: dtoee, "
                                         r"dtoee-cX, cf, bf, ngto, ga, mdi-exit, dimee, "
                                         r"dimee-f, mlci, tabi, mlci-noens, tier-cloud, "
                                         r"tier-edge, tier-mobile, tier-random, tier-oracle\)$"):
        registry.make_sim_policy("magic")
    with pytest.raises(UsageError, match=r"^--policies: policy 'fixed' cannot run in the "
                                         r"simulator \(these can: "):
        registry.make_sim_policy("fixed")
    with pytest.raises(UsageError, match=r"^policy: policy 'ga' cannot run on a node: "):
        registry.make_policy("ga", {}, {})


def test_fixed_threshold_family_is_matched_by_its_pattern():
    """``dtoee-cX`` names a family: X in (0, 1] gives a planner policy, others are refused."""
    assert isinstance(registry.make_sim_policy("dtoee-c0.7", rounds=5), PlannerPolicy)
    with pytest.raises(UsageError, match=r"the fixed threshold must be in \(0, 1\]"):
        registry.make_sim_policy("dtoee-c1.5")


def test_scenario_knob_no_policy_reads_is_refused_with_a_hint():
    """A scenario's knobs are shared by all policies: a key none of them reads is a typo."""
    registry.check_scenario_knobs({"step": "paper", "ga_staleness": 2, "mdi-exit": {}})
    with pytest.raises(ScenarioError, match=r"^knobs\.ga_stalenes: unknown field \(did you "
                                            r"mean 'ga_staleness'\?\)"):
        registry.check_scenario_knobs({"ga_stalenes": 2})


@pytest.mark.parametrize("name,value", [("mdi-exit", 5), ("dimee", [1]), ("mlci", "x")])
def test_a_policys_knob_section_that_is_not_an_object_is_refused(name, value):
    """A scenario's section for one policy (``mdi-exit``, ``dimee``, ``mlci``) is an object
    {knob: value}: anything else is a ScenarioError naming it (it was a TypeError inside the
    simulator, or ignored by plan)."""
    with pytest.raises(ScenarioError, match=r"^knobs\.%s: must be an object" % name):
        registry.check_scenario_knobs({name: value})


def test_agent_knobs_name_the_path_given():
    """The knob check names the field by the path the caller gives (config or code)."""
    with pytest.raises(UsageError, match=r"^policy_knobs\.rounds: not used by a node"):
        registry.make_policy("dtoee", {1: 0.8}, {"rounds": 5})
    with pytest.raises(UsageError, match=r"^x\.policy_knobs\.colour: unknown field"):
        registry.check_agent_knobs("bf", {"colour": 1}, "x.policy_knobs")


def test_register_adds_a_row_and_refuses_a_silent_overwrite():
    """A row added at run time is found by name; the same name twice needs ``replace``; a row
    that cannot run on a node must say why."""
    row = registry.PolicyRow("toy-x", "test row", not_in_agent="a test row",
                             planner=lambda s, q: None)
    registry.register(row)
    try:
        assert registry.lookup("toy-x", "--policy", "planner") is row
        with pytest.raises(ValueError, match="already registered"):
            registry.register(row)
        registry.register(row, replace=True)
        with pytest.raises(ValueError, match="not_in_agent"):
            registry.register(registry.PolicyRow("toy-y", "no reason"))
    finally:
        registry.unregister("toy-x")
    assert "toy-x" not in registry.names()


def test_api_imports_no_policy_folder():
    """``api`` is the interface the policy folders import: it imports none of them (no circle)."""
    tree = ast.parse((ROOT / "agent" / "policies" / "api.py").read_text(encoding="utf-8"))
    mods = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
    mods += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    folders = [p.name for p in (ROOT / "agent" / "policies").iterdir() if p.is_dir()
               and (p / "__init__.py").exists()]
    assert folders and not [m for m in mods for f in folders
                            if m.startswith("agent.policies." + f)]
    assert "agent.policies.registry" not in mods


def test_dimee_and_mlci_run_on_nodes_in_the_simulator_and_in_plan():
    """DIMEE and MLCI run everywhere under their own names: the agent adapters on nodes, the
    per-task adapters in the simulator."""
    for name in ("dimee", "dimee-f", "mlci", "tabi", "mlci-noens"):
        assert registry.make_policy(name, {}, {}).name == name
        policy = registry.make_sim_policy(name)
        assert policy.name == name and policy.tiered and policy.per_task
    registry.check_scenario_knobs({"dimee": {}, "mlci": {}})


def test_the_simulators_ga_runs_with_the_scenarios_ga_staleness_as_plan_does():
    """Rule: ``ga_staleness`` is read by ``simulate`` as by ``plan`` (it had always run GA with
    staleness 1), and a bad value is refused when the scenario is checked, not only by plan."""
    import dataclasses

    from agent.policies.baselines.plans import ga
    from agent.policies.sim_api import decision_from_result
    from agent.scenario.paper import paper_scenario

    base = paper_scenario("paper-bert", seed=3, num_sources=6, num_samples=400)
    for staleness in (0, 8):
        sc = dataclasses.replace(base, knobs=dict(base.knobs, ga_staleness=staleness))
        planner = registry.make_sim_policy("ga")._planner
        want = decision_from_result(ga(sc, staleness=staleness))
        assert planner(sc, None).routing == want.routing
    with pytest.raises(ScenarioError,
                       match=r"^knobs\.ga_staleness: must be an integer in \[0, 100000\]"):
        registry.check_scenario_knobs({"ga_staleness": "x"})
