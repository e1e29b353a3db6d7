"""`edge-agent status --watch` ends on Ctrl-C with exit status 0 (docs/cli.md: "with --watch,
which only Ctrl-C ends: 0"), also when Ctrl-C lands while an endpoint is being read, which is
most of each round when a node does not answer (a read waits up to --timeout)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time

from agent.testbed.procs import free_ports


class SilentEndpoint:
    """A TCP endpoint that takes connections and never answers: a hung metrics server."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(16)
        self.accepted = []
        self.changed = threading.Condition()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed at the end of the test
                return
            with self.changed:
                self.accepted.append(conn)  # kept open: the reader waits for an answer
                self.changed.notify_all()

    def wait_for(self, n: int, limit_s: float) -> bool:
        """True once ``n`` connections were taken (False after ``limit_s``, a generous bound)."""
        end = time.monotonic() + limit_s
        with self.changed:
            while len(self.accepted) < n and time.monotonic() < end:
                self.changed.wait(1.0)
            return len(self.accepted) >= n

    def close(self) -> None:
        self.sock.close()
        for c in self.accepted:
            c.close()


def test_ctrl_c_during_a_watch_read_exits_0():
    """Rule: ``status --watch`` ends on SIGINT with status 0 wherever it lands; a SIGINT while
    an endpoint is read (not in the pause between rounds) ended it with 130."""
    endpoint = SilentEndpoint(free_ports(1)[0])
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "status", "--endpoints",
         "127.0.0.1:%d" % endpoint.sock.getsockname()[1], "--timeout", "300", "--watch", "1"],
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
