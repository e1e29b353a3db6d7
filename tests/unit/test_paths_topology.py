"""Names and paths a topology and `fleet render` hand on: a topology's node ids follow the node
config's rule (1-64 ASCII letters, digits, '.', '_', '-', first a letter or digit), refused
naming the file and the field; `fleet render` reads the topology from its file whatever its
name holds (a " (" in a folder, a shipped ``-noee`` variant whose shown name carries a label),
prints the command that drives the fleet shell-quoted, and writes none of the topology's
``agent`` paths (the workstation's) into a device config; `install --bundle` takes an absolute
path only, as `fleet render --bundle` does. Real files in tmp_path."""

from __future__ import annotations

import json
import os
import shlex

import pytest

from agent.cli import main
from agent.config.node import load_config
from agent.testbed.topology import TopologyError, load_topology, parse_topology


def _topology(folder, source="cam1", **over):
    """A one-source, four-worker topology of the demo bundle in ``folder/topo.json``."""
    ids = [source, "w1", "w2", "w3", "w4"]
    obj = {"bundle": "demo", "sources": [{"id": source, "share": 1.0}],
           "workers": [{"id": w, "stage": i + 1} for i, w in enumerate(ids[1:])],
           "links": [{"from": a, "to": b} for a, b in zip(ids, ids[1:])]}
    obj.update(over)
    os.makedirs(str(folder), exist_ok=True)
    path = os.path.join(str(folder), "topo.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f)
    return path


def _inventory(folder, source="cam1"):
    path = os.path.join(str(folder), "hosts.txt")
    with open(path, "w") as f:
        f.write("%s 10.0.0.1\nw1 10.0.0.2\nw2 10.0.0.3\nw3 10.0.0.4\nw4 10.0.0.5\n" % source)
    return path


@pytest.mark.parametrize("node_id", ["cam.01", "Cam-01", "1st-node_A", "c" * 64])
def test_topology_ids_of_the_node_config_rule_are_accepted(tmp_path, node_id):
    """Rule: an id a node config takes (dots, a leading digit, 64 characters) is a topology
    id too."""
    assert load_topology(_topology(tmp_path, node_id)).node_ids()[0] == node_id


@pytest.mark.parametrize("node_id", ["c\u00e4m", "-w1", ".w1", "c" * 65, "", "w 1", 7])
def test_topology_ids_outside_the_node_config_rule_are_refused_naming_file_and_field(
        tmp_path, node_id):
    """Rule: a non-ASCII id, one starting with '-' or '.', one over 64 characters, an empty
    one, one with a space or no string: one line naming the file, the field and the rule."""
    path = _topology(tmp_path, node_id)
    with pytest.raises(TopologyError) as exc:
        load_topology(path)
    text = str(exc.value)
    assert text.startswith(path + ": sources[0].id: must be 1-64 characters of letters, "
                                  "digits, '.', '_' or '-', starting with a letter or digit"), text
    assert len(text.splitlines()) == 1


def test_a_duplicate_topology_id_is_still_refused():
    """Rule: ids are unique across sources and workers."""
    obj = json.loads(json.dumps({"sources": [{"id": "w1", "share": 1.0}],
                                 "workers": [{"id": "w1", "stage": 1}], "links": []}))
    with pytest.raises(TopologyError, match=r"workers\[0\].id: duplicate node id"):
        parse_topology(obj)


def test_a_dotted_id_renders_into_a_loadable_device_config(tmp_path, capsys):
    """Rule: an id with a dot (cam.01) passes the topology and the node config alike: its
    device config loads."""
    topo = _topology(tmp_path, "cam.01")
    out = tmp_path / "out"
    assert main(["fleet", "render", "--topology", topo, "--inventory",
                 _inventory(tmp_path, "cam.01"), "--out", str(out), "--root",
                 str(tmp_path / "root")]) == 0
    cfg = load_config(str(out / "devices" / "cam.01" / "etc" / "edge-agent" / "cam.01.toml"))
    assert cfg.node_id == "cam.01"


def _render(tmp_path, topo, out, capsys, *extra):
    rc = main(["fleet", "render", "--topology", topo, "--inventory", _inventory(tmp_path),
               "--out", str(out), "--root", str(tmp_path / "root")] + list(extra))
    captured = capsys.readouterr()
    return rc, captured.out.strip().splitlines(), captured.err


def test_a_topology_in_a_folder_named_with_a_parenthesis_renders(tmp_path, capsys):
    """Rule: the render reads the topology from its own file, never from a name it shows:
    a file under "fr (copy)/" renders, and testbed.json holds the file's object with the
    render's fleet; the last line's command, split as a shell splits it, names testbed.json."""
    topo = _topology(tmp_path / "fr (copy)", comment="mine")
    out = tmp_path / "fr (copy)" / "out put"
    rc, lines, err = _render(tmp_path, topo, out, capsys)
    assert rc == 0, err
    with open(str(out / "testbed.json")) as f:
        drive = json.load(f)
    assert drive["comment"] == "mine" and drive["fleet"]["policy"] == "dtoee"
    assert lines[-1].startswith("drive load from here: ")
    argv = shlex.split(lines[-1][len("drive load from here: "):])
    assert argv[:3] == ["edge-agent", "testbed", "--topology"]
    assert argv[3] == str(out / "testbed.json") and argv[4:6] == ["--policies", "dtoee"]


def test_a_shipped_noee_variant_renders_from_its_file_with_its_knob(tmp_path, capsys):
    """Rule: a shipped `<name>-noee` topology, shown as "FILE (name)", renders from FILE with
    early exit off in testbed.json's knobs."""
    inv = tmp_path / "hosts.txt"
    topo = load_topology("mdi-2-node-noee")
    assert topo.path.endswith(" (mdi-2-node-noee)") and os.path.isfile(topo.file)
    inv.write_text("".join("%s 10.0.0.%d\n" % (n, i + 1) for i, n in enumerate(topo.node_ids())))
    out = tmp_path / "out"
    rc = main(["fleet", "render", "--topology", "mdi-2-node-noee", "--inventory", str(inv),
               "--out", str(out), "--root", str(tmp_path / "root"), "--policy", "mdi-exit"])
    assert rc == 0, capsys.readouterr().err
    with open(str(out / "testbed.json")) as f:
        assert json.load(f)["knobs"]["mdi-exit"]["early_exit"] is False


def test_the_topologys_agent_paths_stay_off_the_devices_and_are_named(tmp_path, capsys):
    """Rule: agent paths the render sets nothing for on a node (a source's capacity_profile,
    a worker's client_keys_dir) are written into no device config; the summary names every
    agent path not carried (the render's own device paths stand for the others); the
    workstation's testbed.json keeps them, absolute, as the topology file meant them."""
    agent = {"capacity_profile": "calib.json", "client_keys_dir": "ck",
             "allowed_keys_dir": "fleetkeys"}
    topo = _topology(tmp_path, agent=agent)
    out = tmp_path / "out"
    rc, lines, err = _render(tmp_path, topo, out, capsys)
    assert rc == 0, err
    for node in ("cam1", "w1", "w4"):
        with open(str(out / "devices" / node / "etc" / "edge-agent" / (node + ".toml"))) as f:
            text = f.read()
        assert str(tmp_path) + "/" not in text.replace(str(tmp_path / "root"), ""), node
    assert ("agent.capacity_profile, agent.allowed_keys_dir, agent.client_keys_dir: "
            "workstation paths, not written into the device configs") in "\n".join(lines)
    with open(str(out / "testbed.json")) as f:
        kept = json.load(f)["agent"]
    assert kept == {k: str(tmp_path / v) for k, v in agent.items()}


def test_install_refuses_a_relative_bundle_as_fleet_render_does(tmp_path, capsys):
    """Rule: install --bundle my-bundle (relative) is exit 2 with one line (the calibration
    unit runs from /); nothing is written; an absolute one goes into calibrate.env."""
    root = tmp_path / "root"
    root.mkdir()
    rc = main(["install", "--root", str(root), "--no-pip", "--no-enable", "--bundle",
               "my-bundle"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == ["edge-agent install: error: --bundle: the bundle's path on the "
                               "device must be absolute (the calibration unit runs from /), "
                               "got 'my-bundle'"]
    assert os.listdir(str(root)) == []
    assert main(["install", "--root", str(root), "--no-pip", "--no-enable", "--jetson", "no",
                 "--bundle", "/srv/bundle"]) == 0
    env = (root / "etc" / "edge-agent" / "calibrate.env").read_text()
    assert "EDGE_AGENT_BUNDLE=/srv/bundle\n" in env
