"""What ``plan`` says of an overloaded routing: one warning line naming the busiest worker or
link with its utilisation and the least any routing reaches, no numpy RuntimeWarning, and every
worker's utilisation beside the links' in the text and JSON output. And the testbed's check of
its agents before a run: a warning every agent gives is said once, naming them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from agent.cli import main
from agent.policies.model import compile_network, link_delays, link_loads

LINKS = [("ed0", "w1a"), ("ed0", "w1b"), ("w1a", "w2a"), ("w1a", "w2b"), ("w1b", "w2a"),
         ("w1b", "w2b")]


def _scenario(tmp_path, rate=400.0, input_bytes=1e6, link_rate=125e6, capacity=1e12,
              flops=1e9, name="s.json"):
    """Two stages of two workers each behind links of ``link_rate`` bytes/s: at the
    defaults, 1 MB tensors at 400 tasks/s over gigabit links (every link past its rate)."""
    obj = {"stages": [{"flops": flops, "input_bytes": input_bytes, "exit": True},
                      {"flops": flops, "input_bytes": input_bytes, "exit": False}],
           "remaining": [0.5, 1.0], "sources": [{"id": "ed0", "rate": rate}],
           "workers": [{"id": w, "stage": int(w[1]), "capacity": capacity}
                       for w in ("w1a", "w1b", "w2a", "w2b")],
           "links": [{"from": a, "to": b, "rate": link_rate} for a, b in LINKS],
           "tradeoff": 0.5}
    path = tmp_path / name
    path.write_text(json.dumps(obj))
    return str(path)


def test_an_overloaded_fast_link_prints_no_runtime_warning(tmp_path):
    """Rule: ``plan`` on links past their rate (1 MB tensors, 125 MB/s, 400 tasks/s) prints
    its own warning and no numpy RuntimeWarning (a real process, warnings made errors)."""
    path = _scenario(tmp_path)
    env = dict(os.environ, PYTHONPATH=os.getcwd(), PYTHONWARNINGS="error::RuntimeWarning")
    out = subprocess.run([sys.executable, "-m", "agent", "plan", "-s", path, "-p", "cf"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert "RuntimeWarning" not in out.stderr and "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edge-agent plan: warning: "), lines


def test_link_delays_past_capacity_are_inf_without_a_warning():
    """Rule: under the "shared" link model a link at or past its rate has an infinite delay
    and the others L/(r - L), computed with no RuntimeWarning."""
    from agent.scenario.format import parse_scenario

    obj = {"stages": [{"flops": 1e9, "input_bytes": 1e6, "exit": False}], "remaining": [1.0],
           "sources": [{"id": "ed0", "rate": 100.0}],
           "workers": [{"id": "w1", "stage": 1, "capacity": 1e12},
                       {"id": "w2", "stage": 1, "capacity": 1e12}],
           "links": [{"from": "ed0", "to": "w1", "rate": 1e3}, {"from": "ed0", "to": "w2",
                                                               "rate": 1e12}]}
    net = compile_network(parse_scenario(obj))
    flows = np.array([50.0, 50.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = link_delays(net, flows)
    load = link_loads(net, flows)
    assert got[0] == np.inf
    assert got[1] == pytest.approx(load[1] / (net.edge_rate[1] - load[1]))


def test_the_warning_names_the_busiest_worker_and_its_utilisation(tmp_path, capsys):
    """Rule: an overloaded routing's warning names the busiest worker (here the one stage-1
    worker every task reaches) with its utilisation, and the least any routing reaches."""
    path = tmp_path / "one.json"
    path.write_text(json.dumps({
        "stages": [{"flops": 1e9, "input_bytes": 1e5, "exit": True},
                   {"flops": 1e9, "input_bytes": 5e4, "exit": False}],
        "remaining": [0.5, 1.0], "sources": [{"id": "ed0", "rate": 12.0}],
        "workers": [{"id": "w1a", "stage": 1, "capacity": 1e10},
                    {"id": "w2a", "stage": 2, "capacity": 1e10},
                    {"id": "w2b", "stage": 2, "capacity": 1e10}],
        "links": [{"from": "ed0", "to": "w1a", "rate": 1e8},
                  {"from": "w1a", "to": "w2a", "rate": 1e7},
                  {"from": "w1a", "to": "w2b", "rate": 1e7}]}))
    assert main(["plan", "-s", str(path)]) == 0
    captured = capsys.readouterr()
    assert captured.err.strip() == (
        "edge-agent plan: warning: the dtoee routing overloads worker w1a (utilisation "
        "1.200); the least possible utilisation of the busiest worker or link is 1.200 (no "
        "routing fits)")
    assert "  stage 1      w1a 1.200\n  stage 2      w2a 0.300  w2b 0.300" in captured.out


def test_the_warning_names_a_link_and_counts_the_others_past_their_rate(tmp_path, capsys):
    """Rule: when links are the overloaded ones the busiest link is named as "A -> B" and
    the others at or past 1 are counted."""
    assert main(["plan", "-s", _scenario(tmp_path), "-p", "cf"]) == 0
    err = capsys.readouterr().err
    assert "the cf routing overloads link ed0 -> w1a (utilisation 1.673) and 1 more worker " \
           "or link at or past 1; " in err
    assert "least possible utilisation of the busiest worker or link is 1.673 (no routing " \
           "fits)" in err


@pytest.mark.parametrize("rate,input_bytes,link_rate,capacity,flops", [
    (1e-9, 2e15, 1.0, 1e12, 1e9),  # 2 PB tensors at 1e-9 tasks/s over 1 B/s links
    (1e24, 1.0, 1e24, 1e24, 1e-9)])  # 1-byte tensors (wire overhead) at 1e24 tasks/s
def test_the_least_utilisation_does_not_depend_on_the_scale_of_the_rates(
        tmp_path, capsys, rate, input_bytes, link_rate, capacity, flops):
    """Rule: the least possible utilisation is computed on rates relative to the total, so at
    a total of 1e-9 tasks/s (once "0.000" beside an overload: the LP's absolute tolerance took
    every flow for zero) or 1e24 (once "inf": the LP found no solution) it is what the
    symmetric setting's even split, the cf routing here, gives its busiest link."""
    assert main(["plan", "-s", _scenario(tmp_path, rate, input_bytes, link_rate, capacity,
                                         flops), "-p", "cf"]) == 0
    err = capsys.readouterr().err
    used = float(err.split("(utilisation ")[1].split(")")[0])
    least = float(err.split("busiest worker or link is ")[1].split(" ")[0])
    assert used > 1.0 and least == used and "(no routing fits)" in err, err


def test_json_gives_every_worker_s_utilisation_and_keeps_the_link_keys(tmp_path, capsys):
    """Rule: ``plan --json`` keeps ``link_utilisation`` and adds ``worker_utilisation``
    ({worker: lambda/mu}), the workers' load under the printed routing."""
    assert main(["plan", "-s", _scenario(tmp_path, rate=40.0), "-p", "cf", "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert set(obj["link_utilisation"]) == {"ed0", "w1a", "w1b"}
    workers = obj["worker_utilisation"]
    assert set(workers) == {"w1a", "w1b", "w2a", "w2b"}
    # each worker's load: its arrival rate times alpha over mu; stage 2 gets half the tasks
    phi1 = {w: 40.0 * obj["routing"]["ed0"][w] for w in ("w1a", "w1b")}
    for w in ("w1a", "w1b"):
        assert workers[w] == pytest.approx(phi1[w] * 1e9 / 1e12)
    assert workers["w2a"] + workers["w2b"] == pytest.approx(40.0 * 0.5 * 1e9 / 1e12)


def test_a_warning_every_agent_gives_is_said_once_with_the_agents(caplog):
    """Rule: the testbed's check of each agent's config before a run says a warning that
    several agents give (mdi-exit's unused thresholds, from all 10 agents of the default
    topology with thresholds 1) once, with the count and the agents' names, not ten times."""
    import logging

    from agent.testbed.driver import load_bundle_for
    from agent.testbed.prerun import NAMED_AGENTS, check_node_configs
    from agent.testbed.topology import DEFAULT_TOPOLOGY, parse_topology

    with open(DEFAULT_TOPOLOGY, encoding="utf-8") as f:
        obj = json.load(f)
    obj["thresholds"] = {"1": 1.0, "2": 1.0, "3": 1.0}
    topo = parse_topology(obj, os.path.dirname(DEFAULT_TOPOLOGY))
    with caplog.at_level(logging.WARNING):
        check_node_configs(topo, load_bundle_for(topo), ["mdi-exit"], [5.0], 1.0, 0)
    said = [r.getMessage() for r in caplog.records if "are not used" in r.getMessage()]
    ids = topo.node_ids()
    assert len(ids) == 10 > NAMED_AGENTS
    assert said == ["mdi-exit applies policy_knobs.threshold = 0.8 at every exit; the configured "
                    "thresholds (stage 1: 1, stage 2: 1, stage 3: 1) are not used (10 agents: "
                    "%s and 2 more)" % ", ".join(ids[:NAMED_AGENTS])]
    assert logging.getLogger("agent").propagate  # held only while the agents are checked
