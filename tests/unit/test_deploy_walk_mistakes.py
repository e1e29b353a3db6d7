"""The deploy walkthrough's likely mistakes each get one line that names the option and the fix:
an ``install --instance`` given the config's file name, or a node id with no config beside
the configs already in /etc/edge-agent (a typo, or another device's files), and a
``calibrate --state-dir`` that is a file. Real installs under --root in tmp_path (no pip, no
users or systemd touched) and real calibrate runs up to their checks."""

from __future__ import annotations

import os

from agent.cli import main


def _install(root, *extra):
    return main(["install", "--root", str(root), "--no-pip", "--no-enable", "--jetson", "no"]
                + list(extra))


def test_install_refuses_a_config_file_name_as_instance_and_writes_nothing(tmp_path, capsys):
    """``--instance fast.toml`` would enable edge-agent@fast.toml, which reads fast.toml.toml:
    refused (exit 2) before anything is written, naming the node id to give instead."""
    root = tmp_path / "root"
    assert _install(root, "--instance", "fast.toml") == 2
    err = capsys.readouterr().err
    assert "--instance 'fast.toml': give the node id (fast), not its config's file name" in err
    assert not root.exists()


def test_install_names_the_configs_there_when_the_instance_has_none(tmp_path, capsys):
    """Installed again after the rendered files are copied, an ``--instance`` with no config
    while other node configs are there is a WARNING naming them (a mistyped id, or another
    device's files); the first install, before any config is copied, has no such line."""
    root = tmp_path / "root"
    assert _install(root, "--instance", "fast") == 0
    assert "WARNING" not in capsys.readouterr().out
    etc = root / "etc" / "edge-agent"
    (etc / "fast.toml").write_text("node_id = \"fast\"\n")
    (etc / "slow.toml").write_text("node_id = \"slow\"\n")
    assert _install(root, "--instance", "fats") == 0
    out = capsys.readouterr().out
    warning = [ln for ln in out.splitlines() if "WARNING" in ln]
    assert warning == ["# WARNING: --instance fats: %s holds no fats.toml but the config(s) of "
                       "fast, slow: a mistyped node id, or another device's files? "
                       "edge-agent@fats exits 78 until its config is there" % etc]
    assert _install(root, "--instance", "fast") == 0
    assert "WARNING" not in capsys.readouterr().out  # its config is there: nothing to say


def test_calibrate_state_dir_that_is_a_file_is_named_as_such(tmp_path, capsys):
    """A ``--state-dir`` naming a file (or a path below one) is refused (exit 2) in one line
    naming --state-dir and the file, not as a folder it could not create."""
    env = tmp_path / "calibrate.env"
    env.write_text("EDGE_AGENT_BUNDLE=/opt/edge-agent/bundle\n")
    for state_dir in (env, env / "sub"):
        assert main(["calibrate", "--bundle", str(tmp_path / "bundle"), "--state-dir",
                     str(state_dir), "--seconds", "1"]) == 2
        err = capsys.readouterr().err
        assert ("--state-dir: %s is a file, not a directory; give another --state-dir" % env
                in err), err
    assert os.listdir(str(tmp_path)) == ["calibrate.env"]
