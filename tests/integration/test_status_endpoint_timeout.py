"""`edge-agent status --endpoints` with endpoints that do not answer costs one --timeout in
all (docs/cli.md, status): each endpoint is read once, the reads at once, within --timeout;
the name of a node comes with that read, not from a read of its own before it. Real
subprocess, real sockets on loopback."""

from __future__ import annotations

import subprocess
import sys

from tests.unit.stub_endpoint import StubEndpoint


def test_silent_endpoints_are_each_read_once_and_the_command_ends():
    """Rule: ``status --endpoints`` with five endpoints that never answer ends on its own
    with exit status 1, each endpoint "timed out" under the text given, each connected to
    exactly once (the reads that named the nodes, one after the other with a fixed 2 s each,
    made it twice and took 10 s with --timeout 0.5)."""
    silent = [StubEndpoint() for _ in range(5)]
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "agent", "status", "--timeout", "0.5", "--endpoints"]
            + [e.text for e in silent],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    finally:
        for e in silent:
            e.close()
    out, err = proc.stdout.decode(), proc.stderr.decode(errors="replace")
    assert proc.returncode == 1, (proc.returncode, err)
    assert "Traceback" not in err
    assert "0/5 nodes answering" in out
    for e in silent:
        assert "%s: timed out (http://%s/metrics)" % (e.text, e.text) in out
    assert [e.accepted for e in silent] == [1] * 5
