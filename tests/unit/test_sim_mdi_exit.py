"""MDI-Exit in the simulator: nodes holding several stages (shared devices), the MDI-Exit
topologies, and the policy running through the simulator's per-task hook."""

import dataclasses
import json

import numpy as np
import pytest

from agent.cli import main as cli_main
from agent.commands.scenario import MDI_SETTINGS
from agent.errors import UsageError
from agent.scenario.format import load_scenario, parse_scenario
from agent.policies.setting import ScenarioError
from agent.scenario.paper import paper_scenario
from agent.sim import SimConfig, SimPolicy, simulate
from agent.policies.mdi_exit.sim import MdiExitSimPolicy
from agent.policies.registry import make_sim_policy as make_policy
from agent.scenario.mdi import mdi_topology, topology_names


def _two_stage(device_a="", device_b="", cap_b=1e9, rate=0.6):
    return {
        "stages": [{"flops": 1e9, "input_bytes": 1e3, "exit": False},
                   {"flops": 1e9, "input_bytes": 1e3, "exit": False}],
        "remaining": [1.0, 1.0],
        "sources": [{"id": "s", "rate": rate}],
        "workers": [{"id": "a", "stage": 1, "capacity": 1e9, "device": device_a},
                    {"id": "b", "stage": 2, "capacity": cap_b, "device": device_b}],
        "links": [{"from": "s", "to": "a", "rate": 1e9}, {"from": "a", "to": "b", "rate": 1e9}],
    }


def test_scenario_device_shared_by_two_stages_must_give_one_capacity():
    with pytest.raises(ScenarioError, match=r"^workers\[1\]\.capacity: workers on device 'n'"):
        parse_scenario(_two_stage("n", "n", cap_b=2e9))
    with pytest.raises(ScenarioError, match=r"^workers\[0\]\.device: must be a string"):
        parse_scenario(_two_stage(device_a=3))
    sc = parse_scenario(_two_stage("n", "n"))
    assert sc.device_of("a") == sc.device_of("b") == "n" and sc.device_of("s") == "s"


def test_sim_stages_on_one_device_share_its_capacity():
    """Load 0.6 per stage is stable on two devices but overloads one device holding both."""
    cfg = SimConfig(duration_s=300.0, discipline="fifo", drain_limit_s=5.0, seed=1)
    apart = simulate(parse_scenario(_two_stage()), SimPolicy(), cfg).summary()
    shared = simulate(parse_scenario(_two_stage("n", "n")), SimPolicy(), cfg).summary()
    assert apart["unfinished"] == 0 and apart["mean_delay_s"] < 10.0
    assert shared["unfinished"] > 0.1 * shared["tasks"]


# --- MDI-Exit through the simulator's per-task hook ---------------------------------------

MODEL = paper_scenario("paper-resnet101", seed=0, num_sources=1, num_samples=500)
FIFO = dict(discipline="fifo", slot_s=1000.0, drain_limit_s=120.0)


def _run(topology, rate, duration_s=60.0, warmup_s=0.0, **knobs):
    sc = mdi_topology(topology, MODEL, 2e10, 12.5e6, rate, knobs={"mdi-exit": knobs})
    policy = MdiExitSimPolicy()
    result = simulate(sc, policy, SimConfig(duration_s=duration_s, warmup_s=warmup_s, **FIFO))
    return result, policy


@pytest.mark.parametrize("topology", topology_names())
def test_mdi_exit_every_topology_completes_every_task(topology):
    """No task is lost: every created task is completed (none unfinished or rejected)."""
    result, _ = _run(topology, rate=1.5)
    s = result.summary()
    assert s["tasks"] > 50 and s["completed"] == s["tasks"]
    if topology.endswith("-noee"):
        assert s["exit_fraction"] == {"4": 1.0}  # no-exit variant: all run to the final stage
    else:
        assert float(s["exit_fraction"].get("4", 0.0)) < 1.0


def test_mdi_exit_circular_topology_offloads_only_to_the_next_node():
    sc = mdi_topology("3-node-circular", MODEL, 2e10, 12.5e6, 1.0)
    assert sorted(sc.successors("n1/2")) == ["n1/3", "n2/3"]
    assert sorted(sc.successors("n3/1")) == ["n1/2", "n3/2"]
    assert sc.successors("n1/src") == ["n1/1"] and sc.device_of("n1/src") == "n1"


def test_mdi_exit_offloads_to_neighbours_when_the_source_node_is_busy():
    result, _ = _run("3-node-mesh", rate=6.0)
    s = result.summary()
    # one node alone serves ~2.5 tasks/s: finishing 6/s needs the neighbours
    assert s["completed"] == s["tasks"] and s["mean_delay_s"] < 5.0


def test_mdi_exit_admission_control_admits_more_on_more_nodes():
    """Alg. 3 with a fixed threshold: admitted rate local < 2-node < 3-node mesh (paper Fig. 3)."""
    admitted = []
    for topology in ("local", "2-node", "3-node-mesh"):
        result, _ = _run(topology, rate=100.0, duration_s=120.0, warmup_s=40.0,
                         admission_control=True)
        s = result.summary()
        assert s["unfinished"] == 0 and s["rejected"] > 0
        admitted.append((s["tasks"] - s["rejected"]) / 80.0)
    assert admitted[0] < admitted[1] < admitted[2]
    assert admitted[2] > 2.0 * admitted[0]


def test_mdi_exit_threshold_adaptation_lowers_threshold_only_where_queues_grow():
    """Alg. 4 at a fixed Poisson rate: one node drops its threshold towards the floor and loses
    accuracy; three nodes keep it high (paper Fig. 5)."""
    knobs = dict(threshold_adaptation=True, threshold=0.9, min_threshold=0.4)
    local, lp = _run("local", rate=3.0, duration_s=120.0, warmup_s=40.0, **knobs)
    mesh, mp = _run("3-node-mesh", rate=3.0, duration_s=120.0, warmup_s=40.0, **knobs)
    low = [h["thresholds"]["n1"] for h in lp.history if h["t_s"] >= 40.0]
    assert np.mean(low) < 0.9 and min(low) < 0.7 and min(low) >= 0.4
    assert all(h["thresholds"]["n1"] == 1.0 for h in mp.history if h["t_s"] >= 40.0)
    assert local.summary()["accuracy"] < mesh.summary()["accuracy"]
    assert mesh.summary()["completed"] == mesh.summary()["tasks"]


def test_mdi_exit_runs_on_the_dtoee_setting_where_each_worker_holds_one_stage():
    """Sources without a processor and one-stage workers: every task is offloaded, none lost."""
    sc = paper_scenario("paper-resnet101", seed=1, num_sources=5, num_samples=500)
    s = simulate(sc, make_policy("mdi-exit"), SimConfig(duration_s=40.0, slot_s=1000.0)).summary()
    assert s["tasks"] > 100 and s["completed"] == s["tasks"]


def test_mdi_exit_knob_errors_name_the_scenario_field():
    with pytest.raises(UsageError, match=r"^knobs\.mdi-exit\.alpha: must be greater than beta"):
        mdi_topology("2-node", MODEL, 2e10, 12.5e6, 1.0, knobs={"mdi-exit": {"alpha": 0.05}})
    sc = dataclasses.replace(mdi_topology("2-node", MODEL, 2e10, 12.5e6, 1.0),
                             knobs={"mdi-exit": {"T_O": 3}})
    with pytest.raises(UsageError, match=r"^knobs\.mdi-exit\.T_O: unknown field"):
        simulate(sc, MdiExitSimPolicy(), SimConfig(duration_s=1.0))


def test_scenario_and_simulate_commands_run_mdi_exit_on_an_mdi_topology(tmp_path, capsys):
    assert set(MDI_SETTINGS) == {"mdi-" + t for t in topology_names()}
    path = str(tmp_path / "m2.json")
    assert cli_main(["scenario", "mdi-2-node", "--samples", "200", "-o", path]) == 0
    assert load_scenario(path).device_of("n2/3") == "n2"
    out = str(tmp_path / "out")
    assert cli_main(["simulate", "--scenario", path, "--policies", "mdi-exit", "--duration",
                     "30", "--warmup", "5", "--discipline", "fifo", "--out", out,
                     "--no-plots"]) == 0
    with open(tmp_path / "out" / "results.json") as f:
        row = json.load(f)["rates"][0]
    assert row["policy"] == "mdi-exit" and row["completed"] == row["tasks"] > 0
