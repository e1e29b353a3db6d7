"""``python -m agent ...`` runs forked from one interpreter that has already imported the agent.

Each run is a real process of its own (pid, working directory, stdin/stdout/stderr, exit status)
that runs the ``agent`` package's ``__main__`` exactly as ``python -m agent`` does (``runpy``,
uncaught exceptions and ``SystemExit`` handled by the interpreter, exit handlers run), forked
from a server interpreter that has done the interpreter start and the imports up to the node's
config checks once. That start (0.7 s of CPU a run) is most of a run that exits on a start-up
fault: a table of fifty such faults pays it once instead of fifty times. The server and its runs
have the environment the server was started with.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from typing import Dict, List, Optional, Tuple

# The server: reads one JSON request a line, forks a child that runs `python -m agent` with its
# argv in its cwd, waits for it (SIGKILL past the request's timeout) and answers one JSON line.
_SERVER = r"""
import json, os, runpy, signal, sys, time
import agent.cli, agent.commands.run, agent.config.node, agent.node.build, agent.ops.sdnotify
import agent.ops.malloc, engines.ort_backend  # what `agent run` imports before its checks
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the run: fresh stdio, its own cwd and argv, then `python -m agent`
        os.setpgid(0, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)  # the server's handler is not the run's
        fds = [os.open(os.devnull, os.O_RDONLY),
               os.open(req["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
               os.open(req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)]
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(req["cwd"])
        sys.argv = ["-m"] + req["argv"]
        runpy.run_module("agent", run_name="__main__", alter_sys=True)
        sys.exit(0)
    killed = []

    def kill(signum, frame, pid=pid):  # past the timeout: the run and anything it started
        try:
            os.killpg(pid, signal.SIGKILL)
            killed.append(True)
        except ProcessLookupError:  # it ended just now
            pass

    signal.signal(signal.SIGALRM, kill)
    signal.setitimer(signal.ITIMER_REAL, req["timeout_s"])
    status = os.waitpid(pid, 0)[1]  # retried after the alarm's handler (PEP 475)
    signal.setitimer(signal.ITIMER_REAL, 0)
    took_s = time.monotonic() - start
    rc = None if killed else (os.WEXITSTATUS(status) if os.WIFEXITED(status)
                              else -os.WTERMSIG(status))
    print(json.dumps({"rc": rc, "took_s": took_s}), flush=True)
"""


class ForkedAgent:
    """A server that forks ``python -m agent`` runs (see the module doc); one run at a time."""

    def __init__(self, cwd: str, env: Dict[str, str], log_path: str,
                 start_timeout_s: float = 120.0):
        self._log_path = log_path  # the server's own stderr
        with open(log_path, "w") as log:
            self._proc = subprocess.Popen([sys.executable, "-c", _SERVER], cwd=cwd, env=env,
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=log, text=True)
        self._lock = threading.Lock()
        timer = threading.Timer(start_timeout_s, self._proc.kill)
        timer.start()
        try:
            first = self._proc.stdout.readline()
        finally:
            timer.cancel()
        if not first:
            raise RuntimeError("the agent fork server did not start:\n%s" % self._log())

    def run(self, argv: List[str], cwd: str, out_prefix: str,
            timeout_s: float) -> Tuple[Optional[int], str, float]:
        """(exit status or None if killed past ``timeout_s``, stderr, seconds) of
        ``python -m agent <argv>`` run in ``cwd``; its stdout and stderr go to
        ``out_prefix``.out and .err."""
        req = {"argv": argv, "cwd": cwd, "stdout": out_prefix + ".out",
               "stderr": out_prefix + ".err", "timeout_s": timeout_s}
        with self._lock:
            self._proc.stdin.write(json.dumps(req) + "\n")
            self._proc.stdin.flush()
            line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError("the agent fork server died:\n%s" % self._log())
        got = json.loads(line)
        with open(req["stderr"], errors="replace") as f:
            return got["rc"], f.read(), got["took_s"]

    def close(self) -> None:
        """End the server (its runs have all been waited for)."""
        self._proc.stdin.close()
        try:
            self._proc.wait(30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc.stdout.close()

    def _log(self) -> str:
        with open(self._log_path, errors="replace") as f:
            return f.read()[-3000:]

    def __enter__(self) -> "ForkedAgent":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
