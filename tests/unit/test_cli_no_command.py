"""A bare ``edge-agent`` (no command) prints a short usage: one usage line, the commands with
their one-line help and a hint to ``edge-agent COMMAND --help``, exit status 2 (nothing was
asked); ``edge-agent --help`` still prints the whole page, exit status 0."""

from __future__ import annotations

import os
import subprocess
import sys

from agent import cli


def _agent(*argv):
    """`python -m agent ARGV`, argparse's page width fixed at 80 columns."""
    return subprocess.run([sys.executable, "-m", "agent"] + list(argv), capture_output=True,
                          text=True, env=dict(os.environ, COLUMNS="80"))


def test_no_command_prints_a_short_usage_with_every_command_and_a_hint_and_exits_2():
    """Rule: `python -m agent` alone exits 2 with a usage line, each offered command once
    with its help on one line of at most 80 columns, and the `COMMAND --help` hint; none of
    --help's option descriptions."""
    done = _agent()
    assert done.returncode == 2
    lines = done.stdout.splitlines()
    assert lines[0] == "usage: edge-agent [--version] [--log-level LEVEL] COMMAND [ARGS]"
    listed = [line.split()[0] for line in lines if line.startswith("  ")]
    assert listed == [n for n in cli.COMMANDS if cli._load(n) is not None]
    assert all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]
    assert "'edge-agent COMMAND --help'" in done.stdout
    assert "--log-level {DEBUG" not in done.stdout and "show this help" not in done.stdout
    assert len(lines) < len(listed) + 10


def test_global_options_without_a_command_are_the_same_short_usage():
    """Rule: a global option but no command (`--log-level DEBUG`) is still no command: the
    same short usage, exit 2."""
    bare, with_level = _agent(), _agent("--log-level", "DEBUG")
    assert (with_level.returncode, with_level.stdout) == (2, bare.stdout)


def test_help_still_prints_the_whole_page_and_exits_0(monkeypatch):
    """Rule: `edge-agent --help` is argparse's full page (global options, every command),
    unchanged, exit 0."""
    monkeypatch.setenv("COLUMNS", "80")  # the page's width, as in the subprocess
    done = _agent("--help")
    assert done.returncode == 0
    assert done.stdout == cli.build_parser().format_help()
    assert "--log-level {DEBUG,INFO,WARNING,ERROR}" in done.stdout
