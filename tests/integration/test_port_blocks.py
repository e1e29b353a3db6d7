"""Port blocks outlive the process that claimed them while a child handed their ports lives
(``agent.testbed.ports``).

A testbed claims a block of ports and hands them to its agents; an agent outlives a killed
testbed by its drain and may still bind then. When the claim died with the testbed, another
process (a test worker on its next block) could be handed the same ports and find them taken
("Address already in use", one CI run). Real processes: a claimer that starts an agent process
(``AgentProcess``, a sleeping stand-in for the agent) and exits at once, as a SIGKILL leaves it.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from agent.testbed import ports

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# where the ephemeral range starts too low for a block, free_ports takes the kernel's ports
pytestmark = pytest.mark.skipif(
    ports._ephemeral_start() - ports.LOWEST_PORT < ports.PORT_BLOCK,
    reason="the kernel's ephemeral port range leaves no room for port blocks here")

# free_ports, then an agent process handed the claim, then exit with no clean-up of any kind
CLAIMER = r"""
import os, sys
from agent.testbed.ports import free_ports
from agent.testbed.procs import AgentProcess
port = free_ports(1)[0]
folder = sys.argv[1]
agent = AgentProcess("a", os.path.join(folder, "a.toml"), os.path.join(folder, "a.log"),
                     os.path.join(folder, "notify.sock"), python=sys.executable,
                     launcher=("-c", "import time\ntime.sleep(120)\n"))
print(port, agent.pid, flush=True)
os._exit(0)
"""


def _block_is_claimed(block: int) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        s.bind("\0edge-agent-ports-%d" % block)
        return False
    except OSError as exc:
        assert exc.errno == errno.EADDRINUSE, exc
        return True
    finally:
        s.close()


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie of init's (the claimer is gone) still answers kill(0): read its state
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_an_agent_keeps_its_ports_block_claimed_after_the_claimer_exits(tmp_path):
    """Rule: a block whose ports a process handed to an agent process stays claimed (no other
    process can claim it, so none is handed those ports) while that agent lives after the
    claimer is gone, and is free again once the agent exits."""
    env = dict(os.environ, PYTHONPATH=REPO)
    out = subprocess.run([sys.executable, "-c", CLAIMER, str(tmp_path)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    port, agent_pid = (int(v) for v in out.stdout.split())
    block = (port - ports.LOWEST_PORT) // ports.PORT_BLOCK
    try:
        assert not _gone(agent_pid), "the stand-in agent ended early"
        assert _block_is_claimed(block), "block %d was freed with its agent alive" % block
    finally:
        os.kill(agent_pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while not _gone(agent_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    deadline = time.monotonic() + 30
    while _block_is_claimed(block) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _block_is_claimed(block), "block %d still claimed with its agent gone" % block


def test_claim_fds_are_this_process_blocks():
    """Rule: ``claim_fds`` gives the sockets whose names claim the blocks this process's
    ports came from."""
    port = ports.free_ports(1)[0]
    block = (port - ports.LOWEST_PORT) // ports.PORT_BLOCK
    names = []
    for fd in ports.claim_fds():
        s = socket.socket(fileno=os.dup(fd))
        try:
            names.append(s.getsockname())
        finally:
            s.close()
    assert ("\0edge-agent-ports-%d" % block).encode() in names, names
