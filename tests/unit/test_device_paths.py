"""The agent's device paths have one home, ``agent.ops.paths`` (the state folder is
``agent.ops.state.DEFAULT_STATE_DIR``): the shipped unit files, ``install`` and ``fleet render``
(files, sheets and help) all name those paths."""

from __future__ import annotations

import json
import os
import re

import pytest

from agent.cli import main
from agent.commands.install import unit_dir
from agent.config.node import load_config
from agent.ops.paths import BUNDLE, CACHE, ETC, PREFIX, VENV, VENV_BIN, as_service_user
from agent.ops.state import DEFAULT_STATE_DIR


def _unit(name: str) -> str:
    with open(os.path.join(unit_dir(), name), encoding="utf-8") as f:
        return f.read()


def test_the_shipped_unit_files_name_the_same_device_paths():
    """Rule: the units run the agent from VENV_BIN with its config in ETC, read calibrate.env
    from ETC, and systemd's State-, Cache- and ConfigurationDirectory=edge-agent are
    DEFAULT_STATE_DIR, CACHE and ETC."""
    agent = _unit("edge-agent@.service")
    assert "\nExecStart=%s/edge-agent run --config %s/%%i.toml\n" % (VENV_BIN, ETC) in agent
    calib = _unit("edge-agent-calibrate.service")
    assert "\nEnvironmentFile=%s/calibrate.env\n" % ETC in calib
    assert "\nExecStart=%s/edge-agent calibrate " % VENV_BIN in calib
    dirs = dict(re.findall(r"^(State|Cache|Configuration)Directory=(\S+)$", calib, re.M))
    assert "/var/lib/" + dirs["State"] == DEFAULT_STATE_DIR
    assert "/var/cache/" + dirs["Cache"] == CACHE
    assert "/etc/" + dirs["Configuration"] == ETC
    assert VENV_BIN == VENV + "/bin" and VENV.startswith(PREFIX + "/") \
        and BUNDLE.startswith(PREFIX + "/")


def test_install_makes_the_folders_and_names_the_bundle_of_the_paths_module(tmp_path, capsys):
    """Rule: install --root R makes R's ETC (keys/, fleet/) and PREFIX, writes BUNDLE into a new
    calibrate.env, and a profile in the state folder is made with VENV_BIN's script."""
    root = tmp_path / "root"
    assert main(["install", "--root", str(root), "--no-pip", "--jetson", "no",
                 "--no-enable"]) == 0
    capsys.readouterr()
    etc = root / ETC.lstrip("/")
    assert (etc / "keys").is_dir() and (etc / "fleet").is_dir()
    assert (root / PREFIX.lstrip("/")).is_dir()
    assert "\nEDGE_AGENT_BUNDLE=%s\n" % BUNDLE in (etc / "calibrate.env").read_text()
    assert as_service_user("edge-agent calibrate", DEFAULT_STATE_DIR + "/calibration.json") == \
        "sudo -u edge-agent %s/edge-agent calibrate" % VENV_BIN


def test_fleet_render_puts_the_bundle_cache_and_venv_at_the_paths_modules_places(tmp_path,
                                                                               capsys):
    """Rule: without --bundle a rendered config's bundle is R's BUNDLE, its engine cache R's
    CACHE and its state under R's DEFAULT_STATE_DIR; the sheet's doctor runs R's VENV_BIN."""
    topo = tmp_path / "topo.json"
    topo.write_text(json.dumps({
        "bundle": "demo", "sources": [{"id": "cam", "share": 1.0}],
        "workers": [{"id": "w1", "stage": 1, "last_stage": 4}],
        "links": [{"from": "cam", "to": "w1"}]}), encoding="utf-8")
    inv = tmp_path / "hosts.txt"
    inv.write_text("cam 10.0.0.10\nw1 10.0.0.11\n", encoding="utf-8")
    root = str(tmp_path / "root")
    assert main(["fleet", "render", "--topology", str(topo), "--inventory", str(inv), "--out",
                 str(tmp_path / "out"), "--policy", "mdi-exit", "--root", root]) == 0
    capsys.readouterr()
    dev = tmp_path / "out" / "devices" / "w1"
    cfg = load_config(str(dev / ETC.lstrip("/") / "w1.toml"))
    assert cfg.bundle == root + BUNDLE
    assert cfg.engine_cache_dir == root + CACHE
    assert cfg.state_dir.startswith(root + DEFAULT_STATE_DIR + "/")
    assert "sudo -u edge-agent %s%s/edge-agent doctor" % (root, VENV_BIN) in \
        (dev / "SHEET.txt").read_text()


@pytest.mark.parametrize("argv,paths", [
    (["fleet", "render", "--help"], (BUNDLE, ETC, DEFAULT_STATE_DIR)),
    (["install", "--help"], (BUNDLE, ETC)),
])
def test_the_help_names_the_paths_of_the_paths_module(argv, paths, capsys, monkeypatch):
    """Rule: the --bundle, --root and --instance help texts name the paths module's paths."""
    monkeypatch.setenv("COLUMNS", "400")  # no path cut at a line end
    with pytest.raises(SystemExit):
        main(argv)
    out = capsys.readouterr().out
    for p in paths:
        assert p in out, (p, out)
