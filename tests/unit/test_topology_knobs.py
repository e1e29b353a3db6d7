"""A topology's knob tables and its ``agent`` table are read when the file is read, as every
agent's config reads them: each knob table as its policy's ``policy_knobs`` whether or not a
run names that policy, a table of a name no node runs refused with the names that do, and
every error names the topology file (as given) and the key path in it, in ``testbed`` and in
``fleet render`` alike."""

from __future__ import annotations

import json

import pytest

from agent.cli import main
from agent.testbed import runtopo
from agent.testbed.topology import (DEFAULT_TOPOLOGY, TopologyError, load_topology,
                                    parse_topology, shipped_presets)

NODES = ["cam1", "cam2", "w1a", "w1b", "w2a", "w2b", "w3a", "w3b", "w4a", "w4b"]


def _topology(tmp_path, change, name="topo.json"):
    """The shipped default topology, changed by ``change``, written to ``tmp_path/name``."""
    with open(DEFAULT_TOPOLOGY) as f:
        obj = json.load(f)
    change(obj)
    path = tmp_path / name
    path.write_text(json.dumps(obj))
    return str(path)


def _inventory(tmp_path, extra=""):
    path = tmp_path / "hosts.txt"
    path.write_text("".join("%s 10.0.0.%d%s\n" % (n, 10 + i, extra if n == "cam1" else "")
                            for i, n in enumerate(NODES)))
    return str(path)


BAD = [  # (change, the key path and what is wrong)
    (lambda t: t["knobs"]["dtoee"].update(step="fast"),
     "knobs.dtoee.step: must be one of default|paper|joint, got 'fast'"),
    (lambda t: t["agent"].update(status_interval_s=-1),
     "agent.status_interval_s: must be in [0.001, 86400], got -1"),
    (lambda t: t["agent"].update(records_keep_files=10 ** 6),
     "agent.records_keep_files: must be an integer in [1, 1000]"),
    (lambda t: t["agent"].update(polcy="x"), "agent.polcy: unknown field"),
]


@pytest.mark.parametrize("change,message", BAD)
def test_testbed_names_the_topology_file_and_key_of_a_bad_knob_or_agent_field(
        tmp_path, capsys, change, message):
    """Rule: a bad knob or ``agent`` field stops ``testbed`` with one line naming the topology
    file as given and the key path in it (it named only ``testbed node cam1.``), exit 2, and
    no run folder."""
    path = _topology(tmp_path, change)
    out = tmp_path / "out"
    rc = main(["testbed", "--topology", path, "--out", str(out), "--policies", "dtoee",
               "--rates", "1", "--duration", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "error: %s: %s" % (path, message) in err[0], err
    assert "testbed node" not in err[0] and not out.exists()


@pytest.mark.parametrize("change,message", BAD)
def test_fleet_render_names_the_topology_file_and_key_of_a_bad_knob_or_agent_field(
        tmp_path, capsys, change, message):
    """Rule: ``fleet render`` says a bad knob or ``agent`` field as ``testbed`` does: the
    topology file and the key path in it (it named only ``fleet node cam1.``); nothing is
    written."""
    path = _topology(tmp_path, change)
    rc = main(["fleet", "render", "--topology", path, "--inventory", _inventory(tmp_path),
               "--out", str(tmp_path / "out"), "--root", str(tmp_path / "root")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "error: %s: %s" % (path, message) in err[0], err
    assert not (tmp_path / "out").exists()


def test_fleet_render_names_the_agent_field_a_rendered_config_refuses(tmp_path, capsys):
    """Rule: an ``agent`` value wrong only with what the render sets for a device (a public
    metrics host once the inventory gives cam1 a metrics port) names the topology file, the
    ``agent`` field and the node."""
    path = _topology(tmp_path, lambda t: t["agent"].update(metrics_host="0.0.0.0"))
    rc = main(["fleet", "render", "--topology", path,
               "--inventory", _inventory(tmp_path, " metrics=9465"),
               "--out", str(tmp_path / "out"), "--root", str(tmp_path / "root")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "error: %s: agent.metrics_host: '0.0.0.0' is not a loopback" % path in err[0]
    assert err[0].endswith("(fleet node cam1)"), err


@pytest.mark.parametrize("knobs,message", [
    ({"mdi-exit": {"threshold": 7}}, "knobs.mdi-exit.threshold: must be in (0, 1], got 7"),
    ({"cf": {"bogus": 1}}, "knobs.cf.bogus: unknown field"),
    ({"fixed": {"routing": 5}}, "knobs.fixed.routing: must be a table"),
    ({"mlci": {"k": -1}}, "knobs.mlci.k: must be > 0, got -1"),
    ({"dimee": {"nope": 1}}, "knobs.dimee.nope: unknown field"),
])
def test_knob_tables_of_policies_the_run_does_not_name_are_checked(tmp_path, knobs, message):
    """Rule: every knob table is read as its policy's ``policy_knobs`` when the file is read,
    whatever policies a run names (a dtoee-only topology's bad ``knobs.mdi-exit`` passed
    silently until mdi-exit was run), with the file and key path in the error."""
    path = _topology(tmp_path, lambda t: t["knobs"].update(knobs))
    with pytest.raises(TopologyError) as err:
        load_topology(path)
    assert str(err.value).startswith("%s: %s" % (path, message)), err.value


def test_a_knob_table_of_no_policy_a_node_runs_is_refused_with_the_known_names(tmp_path):
    """Rule: a knob table under a name no node policy has (a typo, or a simulator-only
    policy) is refused with the names a node runs, not ignored."""
    for name in ("dtoe", "ngto"):
        path = _topology(tmp_path, lambda t: t["knobs"].update({name: {}}))
        with pytest.raises(TopologyError) as err:
            load_topology(path)
        assert str(err.value).startswith("%s: knobs.%s: no such policy on a node" % (path, name))
        assert "dtoee, cf, bf, mdi-exit" in str(err.value)


@pytest.mark.parametrize("name", [None] + shipped_presets() + ["mdi-2-node-noee"])
def test_every_shipped_topology_passes_the_knob_and_agent_checks(name):
    """Rule: the embedded default and every shipped topology (and a -noee variant) load with
    their knob tables and ``agent`` tables read as a node reads them."""
    topo = load_topology(name)
    assert topo.node_ids()


def test_a_run_folders_copy_is_read_without_the_knob_checks(tmp_path):
    """Rule: ``report`` reads a run folder's copy of its topology without reading the knob
    tables as a node would (the run was made with them; a later, stricter policy must not make
    an earlier run unreadable); a topology file given to ``testbed`` is read with them."""
    obj = json.loads(open(DEFAULT_TOPOLOGY).read())
    obj["knobs"]["mdi-exit"] = {"threshold": 7}
    with pytest.raises(TopologyError):
        parse_topology(obj, str(tmp_path), "topo.json")
    (tmp_path / runtopo.TOPOLOGY_COPY).write_text(json.dumps(obj))
    topo, note = runtopo.run_topology(str(tmp_path), "default")
    assert note is None and topo.knobs["mdi-exit"] == {"threshold": 7}
