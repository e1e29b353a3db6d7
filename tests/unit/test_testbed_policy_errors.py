"""What an agent's start-up refuses in a testbed (its config checked against the bundle, its
policy made and configured, its replay set read) is said as the topology's own errors are: one
line naming the topology file as given, the field in it the value came from
(``knobs.<policy>.<field>``, ``workers[i].<field>``, ``agent.<field>``) and the agent
(``(testbed node N)``); exit 2 and no run folder. Real topology files and the demo bundle;
no agent is started."""

from __future__ import annotations

import json

import numpy as np
import pytest

from agent.cli import main
from agent.errors import UsageError
from agent.testbed.nodeparts import agent_start_error
from agent.testbed.topology import DEFAULT_TOPOLOGY, TopologyError, load_topology


def _topology(tmp_path, change=None, name="topo.json"):
    """The shipped default topology, changed by ``change``, written to ``tmp_path/name``."""
    with open(DEFAULT_TOPOLOGY) as f:
        obj = json.load(f)
    if change is not None:
        change(obj)
    path = tmp_path / name
    path.write_text(json.dumps(obj))
    return str(path)


def _testbed(tmp_path, capsys, topology, policy):
    """``testbed`` on ``topology`` with ``policy``: (exit status, stderr lines, out folder)."""
    out = tmp_path / "out"
    rc = main(["testbed", "--topology", topology, "--policies", policy, "--rates", "1",
               "--duration", "1", "--out", str(out), "--no-plots"])
    return rc, capsys.readouterr().err.strip().splitlines(), out


@pytest.mark.parametrize("policy,field,what", [
    ("dimee", "knobs.dimee.tiers", "worker 'w1a' is in no tier"),
    ("mlci", "knobs.mlci.levels", "worker 'w1a' is in no level"),
])
def test_a_policy_knob_an_agent_refuses_names_the_file_the_knob_and_the_agent(
        tmp_path, capsys, policy, field, what):
    """Rule: a placement a policy refuses through its knob (DIMEE's tiers, MLCI's levels, here
    the defaults, on a chain of workers in none) is ``FILE: knobs.<policy>.<knob>: ...
    (testbed node w1a)``; it said only ``policy_knobs.tiers: ...``, no file, no node."""
    path = _topology(tmp_path)
    rc, err, out = _testbed(tmp_path, capsys, path, policy)
    assert rc == 2 and len(err) == 1, err
    assert "error: %s: %s: %s" % (path, field, what) in err[0], err
    assert err[0].endswith("(testbed node w1a)") and "policy_knobs" not in err[0], err
    assert not out.exists()


def test_a_worker_the_policy_cannot_place_names_the_workers_own_field(tmp_path, capsys):
    """Rule: DTO-EE on a worker holding several stages (a topology's ``last_stage``) is
    ``FILE: workers[i].last_stage: policy dtoee: ... (testbed node ID)``, i the worker's
    place in the file."""
    def wide(obj):  # w3a and w4a become one worker holding stages 3-4
        obj["workers"] = [w for w in obj["workers"] if w["stage"] < 4]
        for w in obj["workers"]:
            if w["stage"] == 3:
                w["last_stage"] = 4
        obj["links"] = [l for l in obj["links"] if not l["to"].startswith("w4")]
    path = _topology(tmp_path, wide)
    index = [w["id"] for w in json.loads(open(path).read())["workers"]].index("w3a")
    rc, err, out = _testbed(tmp_path, capsys, path, "dtoee")
    assert rc == 2 and len(err) == 1, err
    assert "error: %s: workers[%d].last_stage: policy dtoee: DTO-EE models one stage per " \
           "worker" % (path, index) in err[0], err
    assert err[0].endswith("(testbed node w3a)"), err
    assert not out.exists()


def test_a_replay_set_a_source_refuses_names_the_agent_field_and_the_source(tmp_path, capsys):
    """Rule: a replay set (the topology's ``agent.replay_path``) that does not fit the
    bundle's input is ``FILE: agent.replay_path: ... (testbed node cam1)``, the first source
    that reads it."""
    np.savez(str(tmp_path / "mine.npz"), x=np.zeros((4, 3, 16, 16), np.float32),
             y=np.arange(4))
    path = _topology(tmp_path, lambda t: t["agent"].update(replay_path="mine.npz"))
    rc, err, out = _testbed(tmp_path, capsys, path, "cf")
    assert rc == 2 and len(err) == 1, err
    assert "error: %s: agent.replay_path: %s has x (4, 3, 16, 16)" % (
        path, tmp_path / "mine.npz") in err[0], err
    assert err[0].endswith("(testbed node cam1)") and not out.exists(), err


def test_an_agents_words_are_said_at_the_topologys_field_they_name(tmp_path):
    """Rule: ``agent_start_error`` maps the node-config field an agent's refusal starts with
    to the topology's (``policy_knobs`` -> ``knobs.<policy>``, a worker's ``last_stage`` and
    ``terminal`` -> ``workers[i]``, a field of the ``agent`` table -> ``agent.<field>``), and
    keeps words that name no field as they are; always with the file and the agent, as a
    ``TopologyError`` (exit 2)."""
    topo = load_topology(_topology(tmp_path))
    assert "heartbeat_interval_s" in topo.agent
    cases = [
        ("policy_knobs.routing: x", "w1a", "fixed", "knobs.fixed.routing: x"),
        ("policy_knobs: y", "cam1", "cf", "knobs.cf: y"),
        ("terminal: stage 1 has no head", "w1b", "dimee",
         "workers[%d].terminal: stage 1 has no head" % [w.id for w in topo.workers].index("w1b")),
        ("heartbeat_interval_s: too long", "cam2", "cf", "agent.heartbeat_interval_s: too long"),
        ("policy dimee: the bundle has no exit profile", "w2a", "dimee",
         "policy dimee: the bundle has no exit profile"),
        ("peers: a stage-1 worker needs a peer", "w1a", "cf",
         "peers: a stage-1 worker needs a peer"),
    ]
    for text, node, policy, said in cases:
        got = agent_start_error(topo, UsageError(text), node, policy)
        assert isinstance(got, TopologyError)
        assert str(got) == "%s: %s (testbed node %s)" % (topo.path, said, node)
