"""A policy added as one module plus one registry row runs everywhere a built-in one does: on
real agent processes, in the simulator and in ``plan`` (the toy ``round-robin`` policy)."""

from __future__ import annotations

import json

import pytest

from agent.cli import main
from agent.config.node import ConfigError, dump_config, load_config
from agent.errors import UsageError
from agent.policies import registry
from agent.scenario.format import load_scenario
from agent.sim import SimConfig, simulate
from tests.integration.agent_cluster import Cluster, build_two_stage_bundle
from tests.integration.toy_policy import NAME, register

WORKERS = ("w1a", "w1b", "w1c")


@pytest.fixture(autouse=True)
def toy_registered():
    register()
    yield
    registry.unregister(NAME)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_two_stage_bundle(str(tmp_path_factory.mktemp("tiny")))


class ToyCluster(Cluster):
    launcher = ("-m", "tests.integration.toy_agent")  # registers round-robin, then the CLI


def _scenario(tmp_path) -> str:
    """One source, three stage-1 workers, one stage-2 worker; fixed remaining ratios."""
    obj = {"stages": [{"flops": 1e9, "input_bytes": 1e4, "exit": True},
                      {"flops": 1e9, "input_bytes": 1e4, "exit": False}],
           "remaining": [0.5, 1.0],
           "sources": [{"id": "s1", "rate": 3.0}],
           "workers": [{"id": w, "stage": 1, "capacity": 2e10} for w in WORKERS]
           + [{"id": "w2", "stage": 2, "capacity": 4e10}],
           "links": [{"from": "s1", "to": w, "rate": 1e7} for w in WORKERS]
           + [{"from": w, "to": "w2", "rate": 1e7} for w in WORKERS],
           "tradeoff": 0.5}
    path = tmp_path / "s.json"
    path.write_text(json.dumps(obj))
    return str(path)


def test_toy_policy_routes_tasks_in_turn_on_real_agents(bundle, tmp_path):
    """Agents started with the toy registered by their launcher: every task completes, and once
    the source has heard all three stage-1 workers it hands tasks to them in turn: the last 30
    of 75 tasks (created from 4.5 s on, well after every worker's first heartbeat, even on a
    loaded machine), in creation order, cycle w1a, w1b, w1c (random routing would almost
    never), 10 each.
    The node reports the toy as its policy and its split in stats.json."""
    c = ToyCluster(str(tmp_path), bundle, {"s1": 0, "w1a": 1, "w1b": 1, "w1c": 1, "w2": 2},
                   policy=NAME, thresholds=(0.01, 1.0))  # every task exits at stage 1
    try:
        for n in WORKERS + ("w2",):
            c.start(n)
        c.wait_for(lambda: all(c.stats(n) for n in WORKERS), 60, "workers up")
        c.start("s1", arrival_rate_tasks_s=10.0, max_tasks=75)
        c.wait_for(lambda: c.finished("s1", 75), 90, "75 tasks answered")
    finally:
        c.stop_all()
    recs = sorted(c.records("s1"), key=lambda r: r["created_mono"])
    assert len(recs) == 75 and all(r["status"] == "completed" for r in recs)
    # the first tasks may leave before every worker's first heartbeat reached the source
    late = [r["worker"] for r in recs[-30:]]
    assert all(late[i] == late[i % 3] for i in range(30)) and set(late[:3]) == set(WORKERS), late
    assert {w: late.count(w) for w in WORKERS} == {w: 10 for w in WORKERS}
    stats = c.stats("s1")
    assert stats["policy"] == NAME and set(stats["routing"]) == set(WORKERS)
    assert sum(stats["routing"].values()) == pytest.approx(1.0)


def test_toy_policy_knobs_are_checked_in_the_node_config(bundle, tmp_path):
    """The toy's own knob parser runs on policy_knobs: a typo is refused with a hint."""
    c = ToyCluster(str(tmp_path), bundle, {"s1": 0, "w1a": 1, "w2": 2}, policy=NAME)
    path = tmp_path / "s1.toml"
    for knobs in ({"strat": 1}, {"start": 1}):
        path.write_text(dump_config(c.config("s1", policy_knobs=knobs)))
        if "strat" in knobs:
            with pytest.raises(ConfigError, match=r"config\.policy_knobs\.strat: unknown field "
                                                  r"\(did you mean 'start'\?\)"):
                load_config(str(path))
        else:
            assert load_config(str(path)).policy_knobs == {"start": 1}


def test_toy_policy_in_the_simulator_splits_tasks_in_turn(tmp_path):
    """Simulated, the toy sends each node's tasks to its successors in turn: the three
    stage-1 workers get the source's tasks within one of each other, all tasks complete; the
    ``simulate`` command accepts the name too."""
    sc = load_scenario(_scenario(tmp_path))
    policy = registry.make_sim_policy(NAME)
    res = simulate(sc, policy, SimConfig(duration_s=100.0, warmup_s=0.0, seed=2))
    sent = policy.turns.sent["s1"]
    assert set(sent) == set(WORKERS) and max(sent.values()) - min(sent.values()) <= 1
    summary = res.summary()
    assert summary["completed"] == sum(sent.values()) > 200
    assert sum(policy.turns.sent[w].get("w2", 0) for w in WORKERS) > 0  # stage 2 used too
    out = tmp_path / "sim"
    assert main(["simulate", "--scenario", _scenario(tmp_path), "--policies", NAME,
                 "--duration", "30", "--warmup", "1", "--no-plots", "--out", str(out)]) == 0
    rows = json.loads((out / "results.json").read_text())["rates"]
    assert [r["policy"] for r in rows] == [NAME] and rows[0]["completed"] > 50


def test_toy_policy_plans_the_uniform_split(tmp_path, capsys):
    """``plan --policy round-robin`` prints the toy's plan: every successor 1/|L_i|."""
    assert main(["plan", "--scenario", _scenario(tmp_path), "--policy", NAME, "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["policy"] == NAME
    assert obj["routing"]["s1"] == pytest.approx({w: 1 / 3 for w in WORKERS})
    assert all(obj["routing"][w] == {"w2": 1.0} for w in WORKERS)
    assert obj["delay_s"] > 0


def test_toy_plan_with_an_exit_profile_keeps_the_initial_threshold_at_every_exit(tmp_path,
                                                                                   capsys):
    """On a scenario with an exit profile (the paper's ResNet101 setting, as the docs' s.json)
    ``plan --policy round-robin`` answers with the starting threshold at every exit stage."""
    path = str(tmp_path / "s.json")
    assert main(["scenario", "paper-resnet101", "-o", path]) == 0
    capsys.readouterr()
    assert main(["plan", "--scenario", path, "--policy", NAME, "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    exits = load_scenario(path).exit_profile.early_exit_stages
    assert exits and {int(h): v for h, v in obj["thresholds"].items()} == {
        h: 0.8 for h in exits}
    assert 0 < obj["accuracy"] < 1


def test_unregistered_toy_is_an_unknown_policy_listing_the_known_ones(tmp_path):
    """Without its row the name is unknown everywhere, with one line listing the known ones."""
    registry.unregister(NAME)
    with pytest.raises(UsageError, match=r"--policy: unknown policy 'round-robin' \(known: dtoee"):
        registry.plan(load_scenario(_scenario(tmp_path)), NAME)
