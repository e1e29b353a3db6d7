"""The console script: every subcommand offers --help, and misuse is one line with exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agent import cli


@pytest.mark.parametrize("command", cli.COMMANDS)
def test_every_subcommand_is_offered_and_has_help(command, capsys):
    """Each name in COMMANDS has a module, and `edge-agent NAME --help` prints usage, exit 0."""
    assert cli._load(command) is not None, "agent/commands/%s.py is missing" % command
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--help"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("usage: edge-agent " + command)


def test_python_dash_m_agent_is_the_console_script():
    """`python -m agent --version` runs the same entry point as `edge-agent`."""
    out = subprocess.run([sys.executable, "-m", "agent", "--version"], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "edge-agent " + __import__("agent").__version__


def test_no_subcommand_prints_help_and_exits_2(capsys):
    """A bare `edge-agent` lists the subcommands and fails (nothing was asked)."""
    assert cli.main([]) == 2
    assert "testbed" in capsys.readouterr().out
