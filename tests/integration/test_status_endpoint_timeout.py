"""`edge-agent status --endpoints` with endpoints that do not answer costs one --timeout in
all (docs/cli.md, status): each endpoint is read once, the reads at once, within --timeout;
the name of a node comes with that read, not from a read of its own before it. Real
subprocess, real sockets on loopback."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading

from agent.testbed.procs import free_ports


class SilentEndpoint:
    """A TCP endpoint that takes connections and never answers (a hung metrics server),
    noting how many it took and the most it held open at once."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(16)
        self.text = "127.0.0.1:%d" % port
        self.accepted = 0
        self.lock = threading.Lock()
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed at the end of the test
                return
            with self.lock:
                self.accepted += 1
                self.conns.append(conn)  # kept open: the reader waits for an answer

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


def test_silent_endpoints_are_each_read_once_and_the_command_ends():
    """Rule: ``status --endpoints`` with five endpoints that never answer ends on its own
    with exit status 1, each endpoint "timed out" under the text given, each connected to
    exactly once (the reads that named the nodes, one after the other with a fixed 2 s each,
    made it twice and took 10 s with --timeout 0.5)."""
    silent = [SilentEndpoint(p) for p in free_ports(5)]
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
