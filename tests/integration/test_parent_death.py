"""An agent started by the testbed stops when the testbed is killed outright (``--parent-pid``).

The testbed stops its agents itself on Ctrl-C, SIGTERM or an error; a SIGKILL (or the kernel's
out-of-memory killer) gives it no chance to. Its agents are started with ``run --parent-pid``,
which asks the kernel for SIGTERM at the parent's exit: they drain and stop as under
``systemctl stop``. Real processes: a parent Python process starts a real worker agent through
``agent.testbed.procs.LocalAgents`` (as the testbed does) and is then SIGKILLed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from agent.errors import EXIT_CONFIG
from agent.testbed.procs import LocalAgents
from engines.demo import DEMO_BUNDLE_DIR

from .agent_cluster import REPO, Cluster

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the parent-death signal is Linux's (prctl)")

PARENT = """
import sys, time
from agent.config.node import load_config
from agent.testbed.procs import LocalAgents
agents = LocalAgents(sys.argv[1], fresh=False)
agents.write({"w4": load_config(sys.argv[2])})
print(agents.start(["w4"], 120.0)[0].pid, flush=True)
time.sleep(600)
"""


def _gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie nobody reaped counts: it runs no more)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def test_agents_stop_cleanly_when_their_testbed_is_sigkilled(tmp_path):
    """SIGKILL of the process that started an agent: the agent gets SIGTERM from the kernel,
    logs its clean stop and exits; nothing is left serving."""
    cluster = Cluster(str(tmp_path / "cfg"), str(DEMO_BUNDLE_DIR), {"s1": 0, "w4": 4})
    cfg = cluster.config("w4")  # the last stage: its one peer, the source, need not run
    os.makedirs(cfg.state_dir, exist_ok=True)
    LocalAgents(str(tmp_path / "cfg"), fresh=False).write({"w4": cfg})
    run_dir = str(tmp_path / "run")
    os.makedirs(run_dir)
    parent = subprocess.Popen([sys.executable, "-c", PARENT, run_dir,
                               str(tmp_path / "cfg" / "w4.toml")],
                              stdout=subprocess.PIPE, cwd=REPO, text=True)
    agent_pid = 0
    try:
        line = parent.stdout.readline()
        assert line.strip().isdigit(), "the parent did not start the agent: %r" % line
        agent_pid = int(line)
        assert not _gone(agent_pid)
        parent.kill()
        parent.wait(30)
        end = time.monotonic() + 60.0
        while not _gone(agent_pid) and time.monotonic() < end:
            time.sleep(0.1)
        assert _gone(agent_pid), "the agent still runs after its parent was SIGKILLed"
        with open(os.path.join(run_dir, "w4.log"), encoding="utf-8") as f:
            log = f.read()
        assert "stopped: " in log, log[-2000:]
        assert "Traceback" not in log, log[-2000:]
    finally:
        if parent.poll() is None:
            parent.kill()
        if agent_pid and not _gone(agent_pid):
            os.kill(agent_pid, signal.SIGKILL)


def test_parent_pid_that_is_not_the_parent_is_refused(tmp_path):
    """``--parent-pid`` naming a process that is not the agent's parent (gone already, or a
    mistake) is one error line and the start-up fault status, before anything is loaded."""
    config = tmp_path / "node.toml"
    config.write_text("not read\n")
    other = os.getppid()  # alive, and the test's parent, not the agent's
    out = subprocess.run([sys.executable, "-m", "agent", "run", "--config", str(config),
                          "--parent-pid", str(other)],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == EXIT_CONFIG, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "--parent-pid %d" % other in lines[0], out.stderr
    assert "not this agent's parent" in lines[0]
