"""`edge-agent install --root DIR` (a rehearsal on this machine) ends with the commands that
stand for the units' `systemctl start` lines, which would act on this machine's own agents:
the calibration unit's and the agent unit's commands with the paths under DIR, the agent
command being the one the rendered sheets' `rehearsal:` lines name. Real installs under
--root in tmp_path (no pip, no users or units touched)."""

from __future__ import annotations

import os
import re
import shlex

from agent.cli import main
from agent.commands.install_files import next_steps
from agent.fleet.render_notes import REHEARSAL_AGENT


def _hint(root, capsys, *extra):
    """Install under ``root`` for instance fast (no config written yet): the closing hint."""
    assert main(["install", "--root", str(root), "--no-pip", "--no-enable", "--jetson", "no",
                 "--instance", "fast"] + list(extra)) == 0
    return capsys.readouterr().out.strip().splitlines()[-1]


def _commands(hint):
    """The hint's backquoted commands that are no `systemctl` or `doctor` line, as argv."""
    return [shlex.split(c) for c in re.findall(r"`([^`]+)`", hint)
            if not c.startswith(("systemctl", "doctor"))]


def test_under_root_the_hint_gives_the_rehearsal_commands_in_place_of_systemctl(
        tmp_path, capsys):
    """Rule: under --root, the hint says to run, in place of `systemctl start
    edge-agent-calibrate` and `systemctl start edge-agent@fast`, the calibration under the
    root's state folder with calibrate.env's bundle and arguments, then the agent with the
    root's config, both with this machine's edge-agent, not the root venv's, whose scripts
    name the device's /opt path (as the sheets' rehearsal lines: ``REHEARSAL_AGENT``), as oneself without sudo; a root with a space in
    its path is quoted so each command splits as meant."""
    root = tmp_path / "re hearsal"
    hint = _hint(root, capsys, "--bundle", "/opt/b")
    assert hint.startswith("# next: write %s/etc/edge-agent/fast.toml" % root)
    assert "rehearsal under %s (--root)" % root in hint and "without sudo" in hint
    assert re.search(r"in place of `systemctl start edge-agent-calibrate` and `systemctl start "
                     r"edge-agent@fast`, which act on this machine's own agents", hint), hint
    calibrate, start = _commands(hint)
    run = [REHEARSAL_AGENT]
    assert calibrate == run + ["calibrate", "--bundle", "/opt/b", "--state-dir",
                               os.path.join(str(root), "var/lib/edge-agent"), "--modes", "all"]
    assert start == run + ["run", "--config", os.path.join(str(root), "etc/edge-agent/fast.toml")]


def test_the_rehearsal_calibration_is_what_the_kept_calibrate_env_says(tmp_path, capsys):
    """Rule: run again over a calibrate.env that names another bundle and the rendered
    arguments (the sheet's copy step put a worker's there), the hint's calibration is the one
    the unit would run: that file's bundle and EDGE_AGENT_CALIBRATE_ARGS."""
    root = tmp_path / "root"
    _hint(root, capsys)
    env = root / "etc/edge-agent/calibrate.env"
    env.write_text("EDGE_AGENT_BUNDLE=/srv/bundle\nEDGE_AGENT_CALIBRATE_ARGS=--modes all "
                   "--backend onnxruntime --precision fp32 --threads 1\n")
    calibrate, _ = _commands(_hint(root, capsys, "--bundle", "/opt/other"))
    assert calibrate[calibrate.index("--bundle") + 1] == "/srv/bundle"
    assert calibrate[-8:] == ["--modes", "all", "--backend", "onnxruntime", "--precision",
                              "fp32", "--threads", "1"]


def test_on_the_device_the_hint_names_the_units_and_no_rehearsal(tmp_path):
    """Rule: installing into /, the hint names the units' `systemctl start` lines, calibration
    first, and no rehearsal command (``install_files.next_steps``, as install calls it)."""
    hint = next_steps("/etc/edge-agent/fast.toml", "fast", "/", str(tmp_path / "none.env"),
                      "/opt/edge-agent/bundle", "--modes all")
    assert hint.endswith("calibrate a worker (`systemctl start edge-agent-calibrate`), then "
                         "`systemctl start edge-agent@fast`"), hint
    assert "rehearsal" not in hint and _commands(hint) == []
