"""`edge-agent status --watch` ends on Ctrl-C with exit status 0 (docs/cli.md: "with --watch,
which only Ctrl-C ends: 0"), also when Ctrl-C lands while an endpoint is being read, which is
most of each round when a node does not answer (a read waits up to --timeout)."""

from __future__ import annotations

import signal
import subprocess
import sys

from tests.unit.stub_endpoint import StubEndpoint


def test_ctrl_c_during_a_watch_read_exits_0():
    """Rule: ``status --watch`` ends on SIGINT with status 0 wherever it lands; a SIGINT while
    an endpoint is read (not in the pause between rounds) ended it with 130."""
    endpoint = StubEndpoint()
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "status", "--endpoints",
         endpoint.text, "--timeout", "300", "--watch", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # the round's one read of the endpoint (it names the node too): it waits up to 300 s
        # for an answer that never comes
        assert endpoint.wait_for(1, 120.0), "status never read the endpoint"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        endpoint.close()
    assert proc.returncode == 0, (proc.returncode, err.decode(errors="replace"))
    assert b"Traceback" not in err
