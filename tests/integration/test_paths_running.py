"""``calibrate``'s guard finds the agents that keep their state under its folder as the agents
read their configs, and only the agents: a ``state_dir`` written ``~/...`` is the agent's
user's home, and a wrapper process whose command line holds an agent's (``timeout 300
edge-agent run ...``, ``sudo -u USER edge-agent run ...``) is not counted, the agent under it
is. The agents are real processes with an agent's command line (the console script's form,
``python .../edge-agent run --config FILE``) that only sleep."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys

import psutil
import pytest

from agent.ops.running import _agent_config, running_agents

SCRIPT = "import time\nprint('up', flush=True)\ntime.sleep(300)\n"


def _agent(tmp_path, state_dir, prefix=()):
    """Start ``[prefix] python tmp_path/bin/edge-agent run --config etc/w1.toml`` in
    ``tmp_path``, w1's config naming ``state_dir``; returns the Popen once it is up."""
    (tmp_path / "bin").mkdir(exist_ok=True)
    (tmp_path / "bin" / "edge-agent").write_text(SCRIPT)
    (tmp_path / "etc").mkdir(exist_ok=True)
    (tmp_path / "etc" / "w1.toml").write_text('node_id = "w1"\nstate_dir = "%s"\n' % state_dir)
    proc = subprocess.Popen(list(prefix) + [sys.executable, str(tmp_path / "bin" / "edge-agent"),
                                            "run", "--config", "etc/w1.toml"],
                            cwd=str(tmp_path), stdout=subprocess.PIPE)
    assert proc.stdout.readline() == b"up\n"  # its command line is in /proc from here
    return proc


def _stop(proc):
    for child in psutil.Process(proc.pid).children(recursive=True):
        child.kill()
    proc.kill()
    proc.wait()


def test_a_state_dir_under_the_agents_home_is_found_by_its_expanded_path(tmp_path):
    """Rule: state_dir = "~/NAME/w1" is the agent's user's home/NAME/w1, as the agent reads
    it: calibrate's folder home/NAME finds the agent (nothing is made there)."""
    name = "edge-agent-guard-%d" % os.getpid()
    home = pwd.getpwuid(os.getuid()).pw_dir
    proc = _agent(tmp_path, "~/%s/w1" % name)
    try:
        found = running_agents(os.path.join(home, name))
    finally:
        _stop(proc)
    assert found == [(proc.pid, str(tmp_path / "etc" / "w1.toml"), "")]
    assert not os.path.lexists(os.path.join(home, name))


@pytest.mark.parametrize("prefix", [["timeout", "300"], ["sudo", "-u", "#%d" % os.getuid()]])
def test_a_wrapper_around_an_agent_is_not_counted_the_agent_is(tmp_path, prefix):
    """Rule: only a process that is the agent (the console script, or python running it or
    ``-m agent``) counts: the timeout or sudo process above it is not listed, the python
    process under it is."""
    if shutil.which(prefix[0]) is None:
        pytest.skip("%s is not installed here" % prefix[0])
    if prefix[0] == "sudo" and subprocess.run(["sudo", "-n", "true"]).returncode != 0:
        pytest.skip("sudo needs a password here")
    proc = _agent(tmp_path, str(tmp_path / "state" / "w1"), prefix)
    try:
        (agent,) = psutil.Process(proc.pid).children()
        found = running_agents(str(tmp_path / "state"))
    finally:
        _stop(proc)
    assert [pid for pid, _, _ in found] == [agent.pid]


def test_command_lines_of_wrappers_and_agents():
    """Rule: an agent's command line is the console script (argv[0]), python running it
    (argv[1]) or python -m agent; the same words after another program are not."""
    run = ["run", "--config", "/etc/edge-agent/w1.toml"]
    for argv in (["/opt/edge-agent/venv/bin/edge-agent"] + run,
                 ["/usr/bin/python3.8", "/opt/edge-agent/venv/bin/edge-agent"] + run,
                 ["python3", "-m", "agent"] + run):
        assert _agent_config(argv) == "/etc/edge-agent/w1.toml", argv
    for argv in (["timeout", "60", "edge-agent"] + run,
                 ["sudo", "-u", "edge-agent", "/opt/edge-agent/venv/bin/edge-agent"] + run,
                 ["bash", "-c", "edge-agent run --config x.toml"],
                 ["nohup", "python3", "-m", "agent"] + run,
                 ["python3", "-u", "/tmp/other.py", "edge-agent"] + run):
        assert _agent_config(argv) == "", argv
