"""A client key a render no longer writes stays on the source's device: the sheets' copy step
only adds to ``/etc/edge-agent/clients`` (keys may be put there by hand) and a source reads that
folder only at start. A render over an earlier one that drops a client names it, on the console
and on that source's sheet, with the command that deletes the key and restarts the source."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

from agent.cli import main
from agent.config.node import load_config
from agent.net.security import load_allowed_keys, load_public_key


def _files(tmp_path):
    topo = tmp_path / "topo.json"
    topo.write_text(json.dumps({
        "bundle": "demo", "sources": [{"id": "cam", "share": 1.0}],
        "workers": [{"id": "w1", "stage": 1}, {"id": "w2", "stage": 2}],
        "links": [{"from": "cam", "to": "w1"}, {"from": "w1", "to": "w2"}]}), encoding="utf-8")
    inv = tmp_path / "hosts.txt"
    inv.write_text("cam 10.0.0.10\nw1 10.0.0.11 user=jetson\nw2 10.0.0.12 user=jetson\n",
                   encoding="utf-8")
    return str(topo), str(inv)


def _render(tmp_path, capsys, *clients):
    topo, inv = _files(tmp_path)
    args = ["fleet", "render", "--topology", topo, "--inventory", inv,
            "--out", str(tmp_path / "out"), "--root", str(tmp_path / "root")]
    for c in clients:
        args += ["--client", c]
    rc = main(args)
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return captured.out


def _sheet(tmp_path, node):
    return (tmp_path / "out" / "devices" / node / "SHEET.txt").read_text()


def _on_device(tmp_path, line):
    """Run a sheet's command line as written, without sudo or systemctl (its paths are the
    device's under the render's --root, as the configs' are)."""
    etc = str(tmp_path / "root" / "etc" / "edge-agent")
    cmd = line.strip().split(" && sudo systemctl")[0].replace("sudo ", "")
    subprocess.run(["sh", "-c", cmd], cwd=str(tmp_path / "home"), check=True)
    return etc


def _copy_as_the_sheet_says(tmp_path, node):
    step = [ln for ln in _sheet(tmp_path, node).splitlines() if "cp -r edge-agent-files/." in ln]
    assert len(step) == 1
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    subprocess.run(["cp", "-r", str(tmp_path / "out" / "devices" / node / "etc" / "edge-agent"),
                    str(home / "edge-agent-files")], check=True)
    os.makedirs(str(tmp_path / "root" / "etc" / "edge-agent"), exist_ok=True)
    return _on_device(tmp_path, step[0])


def _allowed_clients(etc):
    """The client keys the source's agent would allow at start (as ``build_node`` loads them)."""
    cfg = load_config(os.path.join(etc, "cam.toml"))
    return set(load_allowed_keys(cfg.client_keys_dir))


def test_a_dropped_client_is_named_with_the_command_that_takes_its_key_off(tmp_path, capsys):
    """Rule: a render without --client tablet, over one with it, prints `no longer a client:
    tablet` with `rm` of its key and a restart of the source's unit, and the source's sheet
    (only it) says the same; the copy step alone leaves tablet allowed, the sheet's command
    takes it off while the workstation's key and one added by hand stay."""
    first = _render(tmp_path, capsys, "workstation", "tablet")
    assert "no longer a client" not in first
    etc = _copy_as_the_sheet_says(tmp_path, "cam")
    tablet = load_public_key(str(tmp_path / "out" / "keys" / "clients" / "tablet.key"))
    mine = load_public_key(str(tmp_path / "out" / "keys" / "w1.key"))
    shutil.copyfile(str(tmp_path / "out" / "keys" / "w1.key"),  # a key put there by hand
                    os.path.join(etc, "clients", "camera2.key"))
    assert tablet in _allowed_clients(etc)

    out = _render(tmp_path, capsys, "workstation")
    rm = "sudo rm -f %s/clients/tablet.key && sudo systemctl reload edge-agent@cam" % etc
    lines = [ln for ln in out.splitlines() if ln.startswith("no longer a client: tablet;")]
    assert len(lines) == 1 and lines[0].endswith("on cam: " + rm)
    sheet = _sheet(tmp_path, "cam")
    assert "clients changed: tablet is no longer a client of cam" in sheet
    assert sheet.index("   " + rm) < sheet.index("1. on the workstation")
    assert "no longer a client" not in _sheet(tmp_path, "w1")
    assert "clients changed" not in _sheet(tmp_path, "w2")

    _copy_as_the_sheet_says(tmp_path, "cam")
    assert tablet in _allowed_clients(etc)  # the copy step only adds to clients/
    _on_device(tmp_path, rm)
    assert sorted(os.listdir(os.path.join(etc, "clients"))) == ["camera2.key", "workstation.key"]
    assert tablet not in _allowed_clients(etc) and mine in _allowed_clients(etc)

    again = _render(tmp_path, capsys, "workstation")
    assert "no longer a client" not in again
    assert "clients changed" not in _sheet(tmp_path, "cam")


def test_sources_that_make_their_own_load_drop_every_client_key(tmp_path, capsys):
    """Rule: rendering with --rate over a client-mode render names every client key the
    earlier render wrote for the source (the source no longer serves clients), and two
    dropped keys are deleted by one command."""
    _render(tmp_path, capsys, "workstation", "tablet")
    topo, inv = _files(tmp_path)
    assert main(["fleet", "render", "--topology", topo, "--inventory", inv, "--out",
                 str(tmp_path / "out"), "--root", str(tmp_path / "root"), "--rate", "2"]) == 0
    out = capsys.readouterr().out
    assert ("no longer a client: tablet, workstation; cam still answers them until their keys "
            "are deleted there") in out
    etc = tmp_path / "root" / "etc" / "edge-agent"
    assert ("sudo rm -f %s/clients/tablet.key %s/clients/workstation.key && sudo systemctl "
            "reload edge-agent@cam" % (etc, etc)) in out
