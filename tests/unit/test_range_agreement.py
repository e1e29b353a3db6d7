"""Capacities, link rates and service times accepted at load are ones the agents' messages
carry: a node config, topology or scenario below the wire's least rate (DTO-EE's MIN_RATE), or
with a stage that takes a worker over a day (the most service time a peer's heartbeat may
claim), is refused when it is read, naming the field, instead of starting agents whose
neighbours then drop every message of the slow one."""

from __future__ import annotations

import copy
import json
import os
import re
from types import SimpleNamespace

import pytest

from agent.config.checks import (MAX_INTERVAL_S, MIN_RATE, RATE_RANGE, service_time_problem)
from agent.config.node import ConfigError, parse_config
from tests.unit.test_config_checks import _worker as _worker_config
from agent.node.peerstate import heartbeat_problem
from agent.policies.dtoee import protocol
from agent.scenario.format import load_scenario, parse_scenario, save_scenario
from agent.policies.setting import ScenarioError
from agent.testbed.presets import TOPOLOGY_DIR
from agent.testbed.topology import DEFAULT_TOPOLOGY, TopologyError, load_topology, parse_topology
from agent.testbed.topology_bundle import StageInfo, check_against_bundle

SCENARIO = {"stages": [{"flops": 2.0e9, "input_bytes": 1.0e5, "exit": False},
                       {"flops": 1.0e9, "input_bytes": 5.0e5, "exit": False}],
            "remaining": [1.0, 1.0],
            "sources": [{"id": "ed0", "rate": 2.0}],
            "workers": [{"id": "w1", "stage": 1, "capacity": 1e11},
                        {"id": "w2", "stage": 2, "capacity": 1e11,
                         "power_modes": {"fast": 1e11, "slow": 5e10}}],
            "links": [{"from": "ed0", "to": "w1", "rate": 1e7},
                      {"from": "w1", "to": "w2", "rate": 1e7}]}


def _topology():
    with open(DEFAULT_TOPOLOGY, encoding="utf-8") as f:
        return json.load(f)


def _status(capacity):
    return protocol.Status("w1", 0, 0.0, capacity, 0.0, 0.0, 1, {}, 0)


def test_the_least_rate_at_load_is_the_wire_s():
    """Rule: the least capacity or link rate a file may give is the least a DTO-EE status
    may carry: a status at it passes the wire's check, one below is refused there."""
    assert MIN_RATE == protocol.MIN_RATE == RATE_RANGE[0]
    protocol.check_status(_status(RATE_RANGE[0]))
    with pytest.raises(ValueError, match="capacity_flops_s"):
        protocol.check_status(_status(RATE_RANGE[0] / 2))


def test_a_node_config_capacity_below_the_wire_s_least_is_refused():
    """Rule: ``emulate_capacity_flops`` is 0 (off) or in RATE_RANGE; 1e-3 FLOP/s, whose
    statuses every neighbour dropped, is refused naming the field and the range."""
    with pytest.raises(ConfigError) as info:
        parse_config(_worker_config(emulate_capacity_flops=1e-3))
    assert str(info.value) == "config.emulate_capacity_flops: must be in [1, 1e+24], got 0.001"
    assert parse_config(_worker_config(emulate_capacity_flops=MIN_RATE)).emulate_capacity_flops \
        == MIN_RATE


@pytest.mark.parametrize("section,key", [("workers", "emulate_capacity_flops"),
                                         ("links", "rate_bytes_s"),
                                         ("links", "config_rate_bytes_s")])
def test_a_topology_rate_below_the_wire_s_least_is_refused(section, key):
    """Rule: a topology's emulated capacities and link rates (its agents' priors too) are in
    RATE_RANGE when it is read; MIN_RATE itself is accepted."""
    obj = _topology()
    obj[section][1][key] = 0.5
    with pytest.raises(TopologyError, match=re.escape(
            "%s[1].%s: must be in [1, 1e+24], got 0.5" % (section, key))):
        parse_topology(obj)
    obj[section][1][key] = MIN_RATE
    parse_topology(obj)


def _stages(*flops):
    return [StageInfo(f, 1000.0, i < len(flops) - 1) for i, f in enumerate(flops)]


def test_a_topology_stage_over_a_day_is_refused_naming_the_worker_and_stage():
    """Rule: an emulated worker whose stage (alpha_h / its capacity) takes more than
    MAX_INTERVAL_S is refused before the run, naming the worker's field and the stage; one at
    exactly a day is accepted, as a peer accepts that service time."""
    obj = _topology()
    h = max(w["stage"] for w in obj["workers"])
    flops = [1e6] * h
    i = min((k for k, w in enumerate(obj["workers"]) if w["stage"] == 2),
            key=lambda k: obj["workers"][k]["emulate_capacity_flops"])  # stage 2's slowest
    flops[1] = obj["workers"][i]["emulate_capacity_flops"] * MAX_INTERVAL_S
    check_against_bundle(parse_topology(obj), _stages(*flops))
    flops[1] *= 1.01
    with pytest.raises(TopologyError) as info:
        check_against_bundle(parse_topology(obj, path="t.json"), _stages(*flops))
    text = str(info.value)
    assert text.startswith("t.json: workers[%d].emulate_capacity_flops: stage 2: " % i), text
    assert "above a day (86400 s" in text and "\n" not in text


def test_a_worker_holding_several_stages_is_checked_at_each():
    """Rule: a worker that holds stages 1..2 (``last_stage``) is refused when its second
    stage alone takes over a day at its emulated capacity."""
    obj = {"sources": [{"id": "cam", "share": 1.0}],
           "workers": [{"id": "n1", "stage": 1, "last_stage": 2, "emulate_capacity_flops": 10.0}],
           "links": [{"from": "cam", "to": "n1"}]}
    topo = parse_topology(obj)
    check_against_bundle(topo, _stages(1e3, 1e3))
    with pytest.raises(TopologyError, match=r"workers\[0\]\.emulate_capacity_flops: stage 2: "):
        check_against_bundle(topo, _stages(1e3, 1e7))


def test_the_capacity_a_refusal_asks_for_is_one_that_passes():
    """Rule: the "give at least" figure (rounded up, 3 digits) is itself accepted, and the
    service time it gives is one a peer's heartbeat may claim."""
    for flops in (2.21e9, 981450.0, 1e24, 3.3e7):
        why = service_time_problem(flops, 1.0)
        need = float(re.search(r"give at least ([0-9.e+]+) FLOP/s", why).group(1))
        assert service_time_problem(flops, need) == ""
        peer = SimpleNamespace(stages=(1, 1))
        fields = {"stage": 1, "role": "worker", "service_time_s": flops / need}
        assert heartbeat_problem(fields, peer, 2) == ""
    fields = {"stage": 1, "role": "worker", "service_time_s": MAX_INTERVAL_S * 1.01}
    assert "service_time_s" in heartbeat_problem(fields, SimpleNamespace(stages=(1, 1)), 2)


@pytest.mark.parametrize("path,value,message", [
    (("workers", 0, "capacity"), 0.5, "workers[0].capacity: must be in [1, 1e+24], got 0.5"),
    (("links", 1, "rate"), 1e-3, "links[1].rate: must be in [1, 1e+24], got 0.001"),
    (("workers", 0, "capacity"), 2e4,
     "workers[0].capacity: 2e+09 FLOP at 20000 FLOP/s is a service time of 1e+05 s, "
     "above a day (86400 s, the most a peer accepts); give at least 2.32e+04 FLOP/s"),
])
def test_a_scenario_capacity_or_link_rate_agents_cannot_carry_is_refused(path, value, message):
    """Rule: a scenario's capacities and link rates are in RATE_RANGE and each worker's stage
    takes at most a day; the error is the field's, one line."""
    obj = copy.deepcopy(SCENARIO)
    section, i, key = path
    obj[section][i][key] = value
    with pytest.raises(ScenarioError) as info:
        parse_scenario(obj)
    assert str(info.value) == message


def test_a_power_mode_capacity_is_held_to_the_same_rules():
    """Rule: each power mode's capacity is a capacity: in RATE_RANGE, its stage within a day."""
    obj = copy.deepcopy(SCENARIO)
    obj["workers"][1]["power_modes"]["slow"] = 0.5
    with pytest.raises(ScenarioError, match=re.escape("workers[1].power_modes.slow: must be in "
                                                      "[1, 1e+24], got 0.5")):
        parse_scenario(obj)
    obj["workers"][1]["power_modes"]["slow"] = 1e3
    with pytest.raises(ScenarioError, match=re.escape("workers[1].power_modes.slow: 1e+09 FLOP "
                                                      "at 1000 FLOP/s is a service time")):
        parse_scenario(obj)


def test_a_scenario_agents_cannot_serve_is_not_written(tmp_path):
    """Rule: ``save_scenario`` refuses what ``load_scenario`` would (a generated setting with
    a too-slow device), writing nothing; a servable one round-trips."""
    good = parse_scenario(copy.deepcopy(SCENARIO))
    slow = good.workers[0].__class__(**dict(vars(good.workers[0]), capacity=10.0))
    bad = good.__class__(**dict(vars(good), workers=(slow,) + good.workers[1:]))
    target = tmp_path / "s.json"
    with pytest.raises(ScenarioError, match=r"workers\[0\]\.capacity: .* above a day"):
        save_scenario(str(target), bad)
    assert not target.exists()
    save_scenario(str(target), good)
    assert load_scenario(str(target)).workers == good.workers


def test_no_shipped_topology_gives_a_rate_or_stage_the_agents_refuse():
    """Rule: every shipped topology loads, and on the demo bundle's stages none of its
    emulated workers takes over a day per stage."""
    from agent.testbed.driver import load_bundle_for
    from agent.testbed.local import bundle_stages

    names = sorted(n for n in os.listdir(TOPOLOGY_DIR) if n.endswith(".json"))
    assert names
    for name in names:
        topo = load_topology(os.path.join(TOPOLOGY_DIR, name))
        if topo.bundle == "demo":
            check_against_bundle(topo, bundle_stages(load_bundle_for(topo)))


def test_a_wide_capacity_spread_is_printed_in_g_style():
    """Rule: the testbed's "emulated:" line gives the capacity spread as %g (3 digits), so a
    range as wide as the one allowed reads 3.9e+10x, not 39000000000.0x."""
    obj = _topology()
    for w in obj["workers"]:
        w["emulate_capacity_flops"] = 1.0
    obj["workers"][0]["emulate_capacity_flops"] = 3.9e10
    line = parse_topology(obj).emulation_summary()
    assert "(1..3.9e+10 FLOP/s, 3.9e+10x spread)" in line, line
