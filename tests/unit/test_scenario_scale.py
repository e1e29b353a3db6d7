"""Scenario handling in linear time gives the same answers: the node index (stage and device
per id), the compiled successor table (each offloader's edges in file order) and the
shared-device check of ``parse_scenario`` on a generated network with uneven fan-outs."""

from __future__ import annotations

import dataclasses

import pytest

from agent.policies.model import compile_network
from agent.policies.setting import ScenarioError
from agent.scenario.format import parse_scenario, scenario_to_json
from agent.scenario.paper import paper_scenario


def test_node_index_and_successor_table_match_a_per_node_reference():
    """stage_of/device_of answer per node as the node lists say, and every offloader row of
    the successor table holds exactly its links, in file order (padding -1)."""
    sc = paper_scenario("paper-bert", seed=3, num_sources=40, workers_per_stage=30,
                        num_samples=200)
    sc = dataclasses.replace(sc, workers=tuple(
        dataclasses.replace(w, device="dev%d" % (i // 2) if i % 7 == 0 else "")
        for i, w in enumerate(sc.workers)))
    for s in sc.sources:
        assert sc.stage_of(s.id) == 0 and sc.device_of(s.id) == s.id
    for w in sc.workers:
        assert sc.stage_of(w.id) == w.stage and sc.device_of(w.id) == (w.device or w.id)
    with pytest.raises(KeyError):
        sc.stage_of("nobody")
    net = compile_network(sc)
    assert list(net.stage) == [sc.stage_of(n) for n in net.ids]
    assert list(net.stage) == sorted(net.stage)  # sources first, then workers by stage
    widths = set()
    for r, node in enumerate(net.offloaders):
        row = [e for e in net.slots[r] if e >= 0]
        want = [l.dst for l in sc.links if l.src == net.ids[node]]
        assert [net.ids[net.edge_dst[e]] for e in row] == want
        assert all(e == -1 for e in net.slots[r][len(row):])
        widths.add(len(row))
    assert len(widths) > 1 and net.slots.shape[1] == max(widths)


def test_parse_rejects_a_device_serving_one_stage_twice_or_with_two_capacities():
    """Workers on one device share its processor: the check still finds a clash between any
    two of them, however far apart in the file."""
    obj = scenario_to_json(paper_scenario("paper-resnet101", seed=0, num_sources=5,
                                          num_samples=200, workers_per_stage=6), "p.npz")
    obj.pop("exit_profile")
    obj["remaining"] = [1.0] * len(obj["stages"])
    first, last = obj["workers"][0], obj["workers"][-1]
    first["device"] = last["device"] = "box"
    last["capacity"], last["power_modes"] = first["capacity"], first["power_modes"]
    parse_scenario(obj)  # different stages, same capacity: fine
    last["capacity"] = first["capacity"] * 2
    with pytest.raises(ScenarioError, match="share one processor"):
        parse_scenario(obj)
    same_stage = [w for w in obj["workers"] if w["stage"] == first["stage"]][-1]
    last["device"], same_stage["device"] = "", "box"
    same_stage["capacity"], same_stage["power_modes"] = first["capacity"], first["power_modes"]
    with pytest.raises(ScenarioError, match="already serves stage"):
        parse_scenario(obj)
