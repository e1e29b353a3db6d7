"""How ``calibrate`` recognises an agent's command line and says what runs: ``edge-agent run
--config FILE`` as the console script or ``python -m agent``, with global options before
``run`` and ``--config=FILE``; no other command counts. The refusal names each agent, its
pid and unit, and the way to stop it that fits (systemd or kill)."""

from __future__ import annotations

from agent.ops.running import _agent_config, agents_running_text


def test_the_agents_command_line_forms_give_their_config_and_others_none():
    """Rule: console script, ``-m agent``, ``--log-level X`` and ``--config=`` forms give the
    config; testbed, calibrate and a run without --config give ""."""
    venv = "/opt/edge-agent/venv/bin/"
    assert _agent_config([venv + "python", venv + "edge-agent", "run", "--config",
                          "/etc/edge-agent/w1.toml"]) == "/etc/edge-agent/w1.toml"
    assert _agent_config(["python3", "-m", "agent", "--log-level", "DEBUG", "run",
                          "--config=w1.toml"]) == "w1.toml"
    assert _agent_config(["python3", "-m", "agent", "testbed", "--config", "x.toml"]) == ""
    assert _agent_config([venv + "edge-agent", "calibrate", "--bundle", "b"]) == ""
    assert _agent_config([venv + "edge-agent", "run"]) == ""
    assert _agent_config(["sleep", "run", "--config", "x.toml"]) == ""


def test_systemd_agents_are_told_to_stop_through_the_target_and_others_by_pid():
    """Rule: an agent in an edge-agent@ unit is stopped with the target (or the calibration
    unit does it); an agent started by hand is named with its config and the kill."""
    unit = agents_running_text([(41, "/etc/edge-agent/w1.toml", "edge-agent@w1.service")],
                               "/var/lib/edge-agent")
    assert unit.startswith("agent w1 (pid 41, edge-agent@w1.service) is running with its "
                           "state in /var/lib/edge-agent:")
    assert "sudo systemctl stop edge-agent.target" in unit
    assert "sudo systemctl start edge-agent-calibrate" in unit and "--force" in unit
    hand = agents_running_text([(41, "/srv/w1.toml", ""), (42, "/srv/w2.toml", "")], "/srv/st")
    assert hand.startswith("agents w1 (pid 41, /srv/w1.toml), w2 (pid 42, /srv/w2.toml) are "
                           "running with their state in /srv/st")
    assert "stop them first (kill 41 42)" in hand
