"""A node taken out of the topology must leave every device's allow-list: copying a newer
render only adds files, so the sheets' copy step replaces ``/etc/edge-agent/fleet`` (the
render's alone) and keeps what else is there (keys, hand-added client keys); a render over an
earlier one names the nodes it drops and what to run, on the console and on every sheet, and
lists the keypairs it keeps of nodes no longer in the fleet."""

from __future__ import annotations

import json
import os
import subprocess

from agent.cli import main
from agent.config.node import load_config
from agent.net.security import load_public_key, security_from_config


def _topology(tmp_path, workers, name):
    """A source and a chain of stages; ``workers``: (id, stage) pairs, each stage fed by every
    worker of the one before."""
    obj = {"bundle": "demo", "sources": [{"id": "cam", "share": 1.0}],
           "workers": [{"id": w, "stage": s} for w, s in workers], "links": []}
    stage = dict(workers, cam=0)
    for a in stage:
        obj["links"] += [{"from": a, "to": b} for b in stage if stage[b] == stage[a] + 1]
    path = tmp_path / name
    path.write_text(json.dumps(obj), encoding="utf-8")
    return str(path)


def _inventory(tmp_path, nodes, name):
    path = tmp_path / name
    path.write_text("".join("%s 10.0.0.%d\n" % (n, 10 + i) for i, n in enumerate(nodes)),
                    encoding="utf-8")
    return str(path)


FIVE = [("w1a", 1), ("w1b", 1), ("w1c", 1), ("w2", 2)]


def _render(tmp_path, capsys, workers, tag):
    nodes = ["cam"] + [w for w, _ in workers]
    rc = main(["fleet", "render", "--topology", _topology(tmp_path, workers, tag + ".json"),
               "--inventory", _inventory(tmp_path, nodes, tag + ".txt"),
               "--out", str(tmp_path / "out"), "--root", str(tmp_path / "root")])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return captured.out


def _copy_as_the_sheet_says(tmp_path, node):
    """Run the sheet's copy step as written, without sudo (its paths are under the render's
    --root, the test's root), with the device's rendered files as ``edge-agent-files`` in a
    scratch home folder."""
    sheet = (tmp_path / "out" / "devices" / node / "SHEET.txt").read_text()
    step = [ln.strip() for ln in sheet.splitlines() if "cp -r edge-agent-files/." in ln]
    assert len(step) == 1
    etc = str(tmp_path / "root" / "etc" / "edge-agent")
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    subprocess.run(["cp", "-r", str(tmp_path / "out" / "devices" / node / "etc" / "edge-agent"),
                    str(home / "edge-agent-files")], check=True)
    os.makedirs(etc, exist_ok=True)
    cmd = step[0].replace("sudo ", "")
    subprocess.run(["sh", "-c", cmd], cwd=str(home), check=True)
    return etc


def test_the_sheets_copy_step_takes_a_removed_nodes_key_off_the_device(tmp_path, capsys):
    """Rule: after the copy step of a render without w1c, the device's agent no longer
    accepts w1c's key (its allow-list is the new render's), while the device's own keys and
    a client key added there by hand stay."""
    _render(tmp_path, capsys, FIVE, "t1")
    etc = _copy_as_the_sheet_says(tmp_path, "cam")
    w1c = load_public_key(str(tmp_path / "out" / "keys" / "w1c.key"))
    sec = security_from_config(load_config(os.path.join(etc, "cam.toml")))
    assert w1c in sec.allowed_public_keys
    with open(os.path.join(etc, "clients", "camera2.key"), "w") as f:
        f.write("a client key added on the device\n")
    _render(tmp_path, capsys, [w for w in FIVE if w[0] != "w1c"], "t2")
    _copy_as_the_sheet_says(tmp_path, "cam")
    assert sorted(os.listdir(os.path.join(etc, "fleet"))) == ["cam.key", "w1a.key", "w1b.key",
                                                                "w2.key"]
    sec = security_from_config(load_config(os.path.join(etc, "cam.toml")))
    assert w1c not in sec.allowed_public_keys
    assert sorted(os.listdir(os.path.join(etc, "clients"))) == ["camera2.key", "workstation.key"]
    assert os.path.exists(os.path.join(etc, "keys", "cam.key_secret"))


def test_a_render_over_an_earlier_one_names_the_dropped_nodes_and_what_to_run(tmp_path,
                                                                              capsys):
    """Rule: the console and every sheet of a render that drops w1c name it, the allow-list
    folder and the restart; a later render with the same nodes names no dropped node but still
    lists w1c's kept keypair; a first render says neither."""
    first = _render(tmp_path, capsys, FIVE, "t1")
    assert "no longer in the fleet" not in first and "not in the fleet kept" not in first
    assert "fleet changed" not in (tmp_path / "out/devices/cam/SHEET.txt").read_text()
    out = _render(tmp_path, capsys, [w for w in FIVE if w[0] != "w1c"], "t2")
    line = [ln for ln in out.splitlines() if ln.startswith("no longer in the fleet: w1c;")]
    assert len(line) == 1
    assert "sudo rm -f %s/fleet/w1c.key" % (tmp_path / "root" / "etc" / "edge-agent") in line[0]
    assert "sudo systemctl restart edge-agent.target" in line[0]
    assert "keypairs of nodes not in the fleet kept in %s: w1c" % (tmp_path / "out" / "keys") \
        in out
    for n in ("cam", "w1a", "w1b", "w2"):
        sheet = (tmp_path / "out" / "devices" / n / "SHEET.txt").read_text()
        assert "fleet changed: w1c is no longer in the fleet." in sheet
        assert sheet.index("sudo systemctl restart edge-agent.target") < sheet.index("1. on")
    again = _render(tmp_path, capsys, [w for w in FIVE if w[0] != "w1c"], "t2")
    assert "no longer in the fleet" not in again
    assert "not in the fleet kept in %s: w1c" % (tmp_path / "out" / "keys") in again
    assert "fleet changed" not in (tmp_path / "out/devices/cam/SHEET.txt").read_text()
