"""Data-path liveness on a real network (namespaces): a data connection across a link that is
blackholed is closed by the heartbeats and rebuilt when the link returns, and messages flow
again. Needs root or user namespaces (and iproute2); skips with the reason where neither works.
"""

import json
import os
import subprocess
import sys

from agent.testbed import netns
from tests.integration.test_testbed_netns import REPO, _wrapper


def test_a_data_connection_stalled_by_a_blackholed_link_is_rebuilt_and_messages_flow_again():
    """Two devices, the agents' own Transport on both ends, b blackholed for 4 s: the sender
    sees its connection drop (LINK_DOWN) while b is cut off, a new one come up (LINK_UP) after
    the link returns, and b answers again; no namespace is left. (The seconds are figures for
    docs/network.md, not asserted beyond a generous bound.)"""
    wrap = _wrapper()
    env = dict(os.environ, PYTHONPATH=REPO)
    out = subprocess.run(wrap + [sys.executable, "-m", "agent.testbed.livecheck", "--kind",
                                 "blackhole", "--down", "4"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=180,
                         universal_newlines=True)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["answered_before"], got
    assert got["drops"] >= 1 and got["link_down_after_s"] is not None, got
    assert got["ups"] >= 1 and got["link_up_after_return_s"] is not None, got
    assert got["answer_after_return_s"] is not None and got["answer_after_return_s"] < 25.0, got
    assert got["left"] == []
    if not wrap:
        assert not [ns for ns in netns.testbed_namespaces() if ns.startswith(got["prefix"])]
