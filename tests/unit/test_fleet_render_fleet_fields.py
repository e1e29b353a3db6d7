"""`fleet render` and the topology's own `fleet` object: the fields the testbed's fleet mode
reads (replay, result_timeout_s) reach the rendered testbed.json, agent.replay_path is only the
fallback for replay, and a field the render cannot honour is refused with one line before
anything is written."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from agent.cli import main
from agent.testbed.fleet import fleet_settings
from agent.testbed.topology import DEFAULT_TOPOLOGY, load_topology

NODES = ["cam1", "cam2", "w1a", "w1b", "w2a", "w2b", "w3a", "w3b", "w4a", "w4b"]


def _inventory(tmp_path):
    path = tmp_path / "hosts.txt"
    path.write_text("".join("%s 10.0.0.%d\n" % (n, 10 + i) for i, n in enumerate(NODES)))
    return str(path)


def _replay(path):
    np.savez(str(path), x=np.zeros((4, 1, 28, 28), np.float32), y=np.arange(4))
    return str(path)


def _topology(tmp_path, fleet=None, agent=None, folder=""):
    obj = json.loads(open(DEFAULT_TOPOLOGY).read())
    if fleet is not None:
        obj["fleet"] = fleet
    obj["agent"] = dict(obj.get("agent") or {}, **(agent or {}))
    path = tmp_path / folder / "topology.json"
    path.write_text(json.dumps(obj))
    return str(path)


def _render(tmp_path, topology, *extra):
    return main(["fleet", "render", "--topology", topology, "--inventory", _inventory(tmp_path),
                 "--out", str(tmp_path / "out"), "--root", str(tmp_path / "root")] + list(extra))


def _drive(tmp_path):
    return json.loads((tmp_path / "out" / "testbed.json").read_text())["fleet"]


def test_the_topologys_replay_and_result_timeout_reach_testbed_json(tmp_path, capsys,
                                                                     monkeypatch):
    """A topology's fleet.replay and fleet.result_timeout_s are kept in testbed.json (the
    replay set made absolute: testbed.json lies in another folder), over agent.replay_path,
    and the testbed's fleet mode reads them from there. A relative replay path is the
    topology file's, as its other paths are, not the current folder's."""
    (tmp_path / "t").mkdir()
    ours = _replay(tmp_path / "t" / "ours.npz")
    theirs = _replay(tmp_path / "sources.npz")
    monkeypatch.chdir(str(tmp_path))  # not the topology's folder
    topo = _topology(tmp_path, {"policy": "cf", "replay": "ours.npz", "result_timeout_s": 70,
                                "comment": "the test set"}, {"replay_path": theirs}, "t")
    assert _render(tmp_path, topo, "--emulate") == 0
    capsys.readouterr()
    fleet = _drive(tmp_path)
    assert fleet["replay"] == ours and fleet["result_timeout_s"] == 70
    assert fleet["policy"] == "cf" and fleet["comment"] == "the test set"
    settings = fleet_settings(load_topology(str(tmp_path / "out" / "testbed.json")))
    assert settings["replay"] == ours and settings["result_timeout_s"] == 70.0


def test_agent_replay_path_is_the_fallback_for_the_testbeds_replay_set(tmp_path, capsys):
    """Without fleet.replay, testbed.json's replay set is the sources' (agent.replay_path);
    without either it names none (the testbed then uses the demo set)."""
    theirs = _replay(tmp_path / "sources.npz")
    assert _render(tmp_path, _topology(tmp_path, agent={"replay_path": theirs})) == 0
    assert _drive(tmp_path)["replay"] == theirs
    assert _render(tmp_path, _topology(tmp_path, {"result_timeout_s": 9})) == 0
    capsys.readouterr()
    fleet = _drive(tmp_path)
    assert "replay" not in fleet and fleet["result_timeout_s"] == 9


def test_a_client_among_the_renders_keypairs_is_kept(tmp_path, capsys):
    """fleet.client naming one of the render's --client keypairs is the one testbed.json's
    fleet mode connects with."""
    topo = _topology(tmp_path, {"client": "laptop"})
    assert _render(tmp_path, topo, "--client", "workstation", "--client", "laptop") == 0
    capsys.readouterr()
    assert _drive(tmp_path)["client"] == "laptop"


@pytest.mark.parametrize("fleet, extra, says", [
    ({"emulated": True}, (), "fleet.emulated: true, but the render runs without --emulate"),
    ({"client": "laptop"}, (), "fleet.client: 'laptop' is not a keypair this render writes"),
    ({"keys_dir": "elsewhere"}, (), "fleet.keys_dir: the render writes it ('keys'"),
    ({"clients": {"cam1": "tcp://10.9.9.9:1", "cam2": "tcp://10.9.9.9:2"}}, (),
     "fleet.clients: the render writes it"),
    ({"result_timeout_s": 0}, (), "fleet.result_timeout_s: must be > 0 seconds, got 0"),
    ({"replay": 7}, (), "fleet.replay: must be the path of an .npz file"),
    ({"replay": "/no/such/test.npz"}, (), "fleet.replay: /no/such/test.npz is no file"),
    ({"replay_set": "x.npz"}, (), "fleet: unknown field(s) ['replay_set']"),
    ({"result_timeout_s": 70}, ("--rate", "5"),
     "fleet.result_timeout_s: with --rate the sources make their own load"),
])
def test_a_fleet_field_the_render_cannot_honour_is_refused_in_one_line(tmp_path, capsys, fleet,
                                                                       extra, says):
    """A topology fleet field the render would have to drop or contradict (a mismatched
    emulated, client, keys_dir or clients; a bad result_timeout_s or replay; an unknown field;
    replay or result_timeout_s when --rate writes no testbed.json) is one error line naming the
    topology file and the field; nothing is written."""
    topo = _topology(tmp_path, fleet)
    assert _render(tmp_path, topo, *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edge-agent fleet render: error: %s: " % topo), err
    assert says in err[0]
    assert not os.path.lexists(str(tmp_path / "out"))
