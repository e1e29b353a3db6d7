"""Every device path a ``SHEET.txt`` names is where the node's config puts it: under the
render's ``--root`` (a rehearsal on one machine), ``/`` on devices. Its copy step, chown lines,
install line and doctor commands, run as written (without sudo), work on the rendered files."""

from __future__ import annotations

import json
import os
import shlex
import subprocess

from agent.cli import main
from agent.config.node import load_config

DEVICE_PATHS = ("/etc/edge-agent", "/var/lib/edge-agent", "/opt/edge-agent",
                "/var/cache/edge-agent")


def _render(tmp_path, *root):
    topo = tmp_path / "topo.json"
    topo.write_text(json.dumps({
        "bundle": "demo", "sources": [{"id": "cam", "share": 1.0}],
        "workers": [{"id": "w1", "stage": 1, "last_stage": 4}],
        "links": [{"from": "cam", "to": "w1"}]}), encoding="utf-8")
    inv = tmp_path / "hosts.txt"
    inv.write_text("cam 10.0.0.10\nw1 10.0.0.11 user=jetson\n", encoding="utf-8")
    assert main(["fleet", "render", "--topology", str(topo), "--inventory", str(inv), "--out",
                 str(tmp_path / "out"), "--policy", "mdi-exit"] + list(root)) == 0
    return {n: (tmp_path / "out" / "devices" / n / "SHEET.txt").read_text()
            for n in ("cam", "w1")}


def _line(sheet, part):
    found = [ln.strip() for ln in sheet.splitlines() if part in ln]
    assert len(found) == 1, (part, sheet)
    return found[0]


def test_with_root_every_device_path_on_the_sheet_is_under_it(tmp_path, capsys):
    """Rule: with --root R, no device path on a sheet is outside R (the workstation's copy of
    the files aside): the copy step, the chown lines, install --root R, the doctor commands
    (R's venv, R's state dir, R's node config) all name R's paths, as the configs do."""
    root = str(tmp_path / "root")
    sheets = _render(tmp_path, "--root", root)
    out = str(tmp_path / "out")
    for n, sheet in sheets.items():
        cfg = load_config(os.path.join(out, "devices", n, "etc", "edge-agent", n + ".toml"))
        assert cfg.state_dir.startswith(root + "/var/lib/edge-agent/")
        rest = sheet.replace(os.path.join(out, "devices", n, "etc", "edge-agent"), "")
        for p in DEVICE_PATHS:
            rest = rest.replace(root + p, "")
        assert not [p for p in DEVICE_PATHS if p in rest], sheet
        assert _line(sheet, "agent install") == (
            "sudo python3 -m agent install --root %s --instance %s" % (root, n))
        assert _line(sheet, "doctor --config") == (
            "sudo -u edge-agent %s/opt/edge-agent/venv/bin/edge-agent doctor --config "
            "%s/etc/edge-agent/%s.toml" % (root, root, n))
    # the device check reads the device's own bundle, not the demo one doctor defaults to
    assert ("edge-agent doctor --bundle %s/opt/edge-agent/bundle --state-dir "
            "%s/var/lib/edge-agent" % (root, root)) in sheets["w1"]


def test_the_sheets_device_steps_run_as_written_under_the_root(tmp_path, capsys):
    """Rule: the sheet's copy step, run as written without sudo (the device's files as
    edge-agent-files in a scratch home), puts the node config where the sheet's doctor
    --config line names it, and the keys where its chown line names them."""
    root = tmp_path / "root"
    sheet = _render(tmp_path, "--root", str(root))["cam"]
    home = tmp_path / "home"
    home.mkdir()
    subprocess.run(["cp", "-r", str(tmp_path / "out" / "devices" / "cam" / "etc" / "edge-agent"),
                    str(home / "edge-agent-files")], check=True)
    os.makedirs(str(root / "etc" / "edge-agent"))  # what `install --root` makes
    copy = _line(sheet, "cp -r edge-agent-files/.").replace("sudo ", "")
    subprocess.run(["sh", "-c", copy], cwd=str(home), check=True)
    config = shlex.split(_line(sheet, "doctor --config"))[-1]
    assert load_config(config).node_id == "cam"
    keys = shlex.split(_line(sheet, "chown -R edge-agent:edge-agent"))[-1]
    assert sorted(os.listdir(keys)) == ["cam.key", "cam.key_secret"]


def test_without_root_the_sheet_names_the_devices_own_paths(tmp_path, capsys):
    """Rule: without --root (/), the sheet names /etc/edge-agent and the installed venv, and
    install takes no --root."""
    sheet = _render(tmp_path)["w1"]
    assert _line(sheet, "agent install") == "sudo python3 -m agent install --instance w1"
    assert _line(sheet, "doctor --config") == ("sudo -u edge-agent /opt/edge-agent/venv/bin/"
                                               "edge-agent doctor --config "
                                               "/etc/edge-agent/w1.toml")
    assert _line(sheet, "cp -r edge-agent-files/.") == (
        "sudo rm -rf /etc/edge-agent/fleet && sudo cp -r edge-agent-files/. /etc/edge-agent/ "
        "&& rm -r edge-agent-files")
    assert "sudo chown -R edge-agent:edge-agent /etc/edge-agent/keys" in sheet
