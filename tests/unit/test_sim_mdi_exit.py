"""MDI-Exit in the simulator: nodes holding several stages (shared devices), the MDI-Exit
topologies, and the policy running through the simulator's per-task hook."""

import pytest

from agent.scenario import ScenarioError, parse_scenario
from agent.sim import SimConfig, SimPolicy, simulate


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
