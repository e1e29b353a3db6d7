"""`edge-agent scenario topology`: the scenario a testbed topology is, so that plan and simulate
predict what a testbed run measures; and simulate's results.json names the link model it
simulated."""

from __future__ import annotations

import json
import logging
import os

import pytest

from agent.cli import main
from agent.commands.testbed import parse_rates
from agent.policies.model import SIM_DEFAULT_LINK_MODEL
from agent.policies.registry import plan
from agent.scenario.format import load_scenario
from agent.testbed.columns import model_delay
from agent.testbed.driver import load_bundle_for
from agent.testbed.exits import default_remaining
from agent.testbed.local import bundle_stages
from agent.testbed.topology import DEFAULT_TOPOLOGY, load_topology
from agent.testbed.topology_bundle import capacity_tasks_s
from engines.exit_profile import load_exit_profile

# one source, a fast stage-2 worker behind a slow link and a slow one behind a fast link
SMALL = {
    "bundle": "demo", "tradeoff": 0.8, "thresholds": {"1": 0.7, "2": 0.7, "3": 0.7},
    "knobs": {"dtoee": {"headroom_target": 0.85, "step_scale": 1.0}},
    "sources": [{"id": "cam", "share": 1.0}],
    "workers": [{"id": "w1", "stage": 1, "emulate_capacity_flops": 2.0e6},
                {"id": "w2a", "stage": 2, "emulate_capacity_flops": 6.0e6},
                {"id": "w2b", "stage": 2, "emulate_capacity_flops": 2.0e6},
                {"id": "w3", "stage": 3, "emulate_capacity_flops": 6.0e6},
                {"id": "w4", "stage": 4, "emulate_capacity_flops": 2.0e7}],
    "links": [{"from": "cam", "to": "w1", "rate_bytes_s": 1.6e6},
              {"from": "w1", "to": "w2a", "rate_bytes_s": 1.0e5},
              {"from": "w1", "to": "w2b", "rate_bytes_s": 1.6e6},
              {"from": "w2a", "to": "w3", "rate_bytes_s": 8.0e5},
              {"from": "w2b", "to": "w3", "rate_bytes_s": 8.0e5},
              {"from": "w3", "to": "w4", "rate_bytes_s": 1.6e6}],
}


def _testbed(topology):
    """What the testbed itself reads of a topology: (topology, bundle, stages, capacity)."""
    topo = load_topology(topology)
    bundle = load_bundle_for(topo)
    stages = bundle_stages(bundle)
    return topo, bundle, stages, capacity_tasks_s(topo, stages, default_remaining(topo, bundle))


def _write(tmp_path, name, *extra):
    out = str(tmp_path / name)
    assert main(["scenario", "topology", "--out", out] + list(extra)) == 0
    return out


@pytest.fixture(scope="module")
def default_scenario(tmp_path_factory):
    """The default topology's scenario at the default --total-rate (60%)."""
    return _write(tmp_path_factory.mktemp("default"), "default.json")


def test_the_default_topology_at_60_percent_with_the_agents_knobs(default_scenario):
    """Rule: with no --topology and no --total-rate it writes the testbed's default topology at
    60% of its capacity, rounded as the testbed's rates are, split by the sources' shares; the
    workers' emulated capacities and the links' emulated rates; the bundle's exit profile next
    to it; the topology's threshold as every exit's start, links as shared servers, baselines
    at fixed thresholds, the topology's DTO-EE knobs."""
    topo, bundle, stages, cap = _testbed(None)
    (total,) = parse_rates("60%", cap)
    sc = load_scenario(default_scenario)
    assert [(s.id, s.rate) for s in sc.sources] == [(s.id, s.share * total)
                                                    for s in topo.sources]
    assert [(w.id, w.stage, w.capacity) for w in sc.workers] == [
        (w.id, w.stage, w.emulate_capacity_flops) for w in topo.workers]
    assert [(l.src, l.dst, l.rate) for l in sc.links] == [
        (l.src, l.dst, l.rate_bytes_s) for l in topo.links]
    assert [(s.flops, s.input_bytes, s.exit) for s in sc.stages] == [
        (s.flops, s.input_bytes, s.has_exit) for s in stages]
    assert sc.tradeoff == topo.tradeoff
    assert dict(sc.knobs) == dict(topo.knobs["dtoee"], link_model="shared",
                                  baseline_thresholds="fixed", initial_threshold=0.8)
    written = os.path.splitext(default_scenario)[0] + ".exit_profile.npz"
    assert json.load(open(default_scenario))["exit_profile"] == os.path.basename(written)
    assert (load_exit_profile(written).confidence ==
            load_exit_profile(bundle.exit_profile_path).confidence).all()
    assert DEFAULT_TOPOLOGY in sc.comment


@pytest.mark.parametrize("policy", ["cf", "bf"])
def test_plan_gives_the_testbeds_model_column_on_the_default_topology(default_scenario, policy):
    """Rule: plan's model delay for the agents' baselines (routing at the topology's
    thresholds) on the written scenario is the testbed's own "model ms" column
    (``columns.model_delay``) for that topology, rate and routing, to 1e-9."""
    topo, bundle, stages, cap = _testbed(None)
    (total,) = parse_rates("60%", cap)
    res = plan(load_scenario(default_scenario), policy)
    want = model_delay(topo, stages, total, res.routing, default_remaining(topo, bundle, policy))
    assert want is not None and res.delay_s == pytest.approx(want, rel=1e-9)


def test_plan_gives_the_testbeds_model_column_on_a_topology_file(tmp_path):
    """Rule: the same on a topology file at a rate in tasks/s and its own thresholds (0.7):
    cf's delay is the model column's, and bf overloads a worker in both (the model column has
    no delay, plan an infinite one)."""
    topo_path = tmp_path / "small.json"
    topo_path.write_text(json.dumps(SMALL))
    out = _write(tmp_path, "s.json", "--topology", str(topo_path), "--total-rate", "18.5")
    topo, bundle, stages, _ = _testbed(str(topo_path))
    sc = load_scenario(out)
    assert sc.knobs["initial_threshold"] == 0.7 and sc.sources[0].rate == 18.5
    cf = plan(sc, "cf")
    assert cf.thresholds == {1: 0.7, 2: 0.7, 3: 0.7}
    want = model_delay(topo, stages, 18.5, cf.routing, default_remaining(topo, bundle, "cf"))
    assert cf.delay_s == pytest.approx(want, rel=1e-9)
    bf = plan(sc, "bf")
    assert bf.delay_s == float("inf")
    assert model_delay(topo, stages, 18.5, bf.routing,
                       default_remaining(topo, bundle, "bf")) is None


def _refused(tmp_path, capsys, argv, needle):
    before = sorted(os.listdir(str(tmp_path)))
    assert main(["scenario"] + argv + ["--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[-1], err
    assert sorted(os.listdir(str(tmp_path))) == before


def _topology(tmp_path, **change):
    path = tmp_path / "t.json"
    obj = json.loads(json.dumps(SMALL))
    for key, value in change.items():
        obj[key] = value
    path.write_text(json.dumps(obj))
    return str(path)


def test_thresholds_that_differ_per_stage_are_refused_naming_the_field(tmp_path, capsys):
    """Rule: a scenario starts every exit at one threshold, so a topology whose thresholds
    differ per stage is refused, naming its file and field; nothing is written."""
    path = _topology(tmp_path, thresholds={"1": 0.7, "2": 0.8})
    _refused(tmp_path, capsys, ["topology", "--topology", path],
             path + ": thresholds: 1: 0.7, 2: 0.8, 3: 0.8 differ per stage")


def test_a_worker_without_an_emulated_capacity_is_refused(tmp_path, capsys):
    """Rule: a scenario needs every worker's capacity; the field is named."""
    workers = [dict(w) for w in SMALL["workers"]]
    del workers[2]["emulate_capacity_flops"]
    path = _topology(tmp_path, workers=workers)
    _refused(tmp_path, capsys, ["topology", "--topology", path],
             path + ": workers[2].emulate_capacity_flops: missing")


@pytest.mark.parametrize("name, needle", [
    ("mdi-local", "holds stages 1..4; a scenario has one stage per worker"),
    ("dimee", "answers every task; a scenario has one stage per worker"),
])
def test_topologies_whose_nodes_are_not_one_stage_each_are_refused(tmp_path, capsys, name,
                                                                   needle):
    """Rule: MDI-Exit's nodes (several stages each) and DIMEE's tiers (answering every task)
    are not DTO-EE's one stage per worker: refused, naming the worker."""
    _refused(tmp_path, capsys, ["topology", "--topology", name], needle)


@pytest.mark.parametrize("argv, needle", [
    (["topology", "--rate", "3"], "--rate: tasks/s per source of the other settings; the "
                                  "topology setting takes --total-rate"),
    (["topology", "--total-rate", "10,20"], "--total-rate: one rate, got '10,20'"),
    (["topology", "--total-rate", "fast"], "--total-rate: 'fast' is not a number"),
    (["topology", "--total-rate", "0"], "--total-rate: '0' must be > 0"),
    (["topology", "--seed", "3"], "--seed: applies to paper-* and mdi-* settings, not topology"),
    (["paper-bert", "--topology", "default"],
     "--topology: applies to the topology setting, not paper-bert"),
    (["paper-bert", "--total-rate", "5"],
     "--total-rate: applies to the topology setting, not paper-bert"),
])
def test_options_of_the_wrong_setting_or_rate_are_one_line_errors(tmp_path, capsys, argv,
                                                                  needle):
    """Rule: --total-rate (a total over all sources) is the topology setting's rate, --rate
    (per source) the others'; an option a setting does not use is refused naming it."""
    _refused(tmp_path, capsys, argv, needle)


def _simulate(tmp_path, scenario, *extra):
    out = tmp_path / ("o%d" % len(list(tmp_path.glob("o*"))))
    assert main(["simulate", "--scenario", scenario, "--policies", "cf", "--duration", "3",
                 "--warmup", "1", "--no-plots", "--out", str(out)] + list(extra)) == 0
    return json.loads((out / "results.json").read_text())["config"]["link_model"]


def test_simulates_results_json_records_the_link_model_it_used(tmp_path, default_scenario):
    """Rule: results.json's config.link_model is the model simulated: --link-model, else the
    scenario's knob (shared in a topology's scenario), else the simulator's default (delay,
    the paper's), never null."""
    obj = json.load(open(default_scenario))
    del obj["knobs"]["link_model"]
    obj["exit_profile"] = os.path.join(os.path.dirname(default_scenario), obj["exit_profile"])
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(obj))
    assert _simulate(tmp_path, default_scenario) == "shared"
    assert _simulate(tmp_path, str(plain)) == SIM_DEFAULT_LINK_MODEL == "delay"
    assert _simulate(tmp_path, default_scenario, "--link-model", "delay") == "delay"
    assert _simulate(tmp_path, str(plain), "--link-model", "shared") == "shared"


def test_a_topologys_other_link_model_is_said_and_the_scenario_keeps_the_testbeds(tmp_path,
                                                                                  caplog):
    """Rule: a topology whose knobs.dtoee sets link_model "delay" (its agents plan with it)
    gets a scenario whose links are the testbed's ("shared", one link model for the links and
    the plans), and one WARNING naming the topology's knob and what plan -p dtoee then does."""
    with open(DEFAULT_TOPOLOGY) as f:
        obj = json.load(f)
    obj["knobs"]["dtoee"]["link_model"] = "delay"
    topo = tmp_path / "delay.json"
    topo.write_text(json.dumps(obj))
    out = tmp_path / "s.json"
    with caplog.at_level(logging.WARNING):
        assert main(["scenario", "topology", "--topology", str(topo), "-o", str(out)]) == 0
    assert load_scenario(str(out)).knobs["link_model"] == "shared"
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(said) == 1 and "knobs.dtoee.link_model 'delay'" in said[0], said
    assert "plan -p dtoee on it plans as agents with link_model 'shared' would" in said[0]
