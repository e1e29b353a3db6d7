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
import subprocess
import sys
import threading
from typing import Callable, Dict, List, Optional, Sequence, Tuple

# The server: reads JSON requests, one a line, and forks a child for each that runs `python -m
# agent` with the request's argv in its cwd; answers one JSON line as each child ends (SIGKILL
# past the request's timeout). SIGCHLD wakes it (no polling: on a loaded machine a poll loop
# waits for its turn on a core at every tick).
_SERVER = r"""
import json, os, runpy, select, signal, sys, time
import agent.cli, agent.commands.run, agent.config.node, agent.node.build, agent.ops.sdnotify
import agent.ops.malloc, engines.ort_backend  # what `agent run` imports before its checks
wake_r, wake_w = os.pipe()
os.set_blocking(wake_w, False)
signal.set_wakeup_fd(wake_w)
signal.signal(signal.SIGCHLD, lambda signum, frame: None)
print(json.dumps({"ready": True}), flush=True)
running, pending, reading = {}, b"", True  # running: pid -> [id, start, deadline, killed]
while reading or running:
    now = time.monotonic()
    waits = [r[2] - now for r in running.values() if not r[3]]
    ready = select.select([0, wake_r] if reading else [wake_r], [], [],
                          max(0.0, min(waits)) if waits else None)[0]
    if wake_r in ready:
        os.read(wake_r, 4096)
    if 0 in ready:
        data = os.read(0, 65536)
        reading = bool(data)
        pending += data
    while b"\n" in pending:
        line, pending = pending.split(b"\n", 1)
        req = json.loads(line)
        pid = os.fork()
        if pid == 0:  # the run: default signals, fresh stdio, its cwd and argv, `python -m agent`
            os.setpgid(0, 0)
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.close(wake_r)
            os.close(wake_w)
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
        running[pid] = [req["id"], time.monotonic(), time.monotonic() + req["timeout_s"], False]
    for pid, r in running.items():
        if not r[3] and time.monotonic() > r[2]:  # past its timeout: it and what it started
            os.killpg(pid, signal.SIGKILL)
            r[3] = True
    while running:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            break
        ident, start, _, killed = running.pop(pid)
        rc = None if killed else (os.WEXITSTATUS(status) if os.WIFEXITED(status)
                                  else -os.WTERMSIG(status))
        print(json.dumps({"id": ident, "rc": rc, "took_s": time.monotonic() - start}),
              flush=True)
"""


class ForkedAgent:
    """A server that forks ``python -m agent`` runs (see the module doc)."""

    def __init__(self, cwd: str, env: Dict[str, str], log_path: str,
                 start_timeout_s: float = 120.0):
        self._log_path = log_path  # the server's own stderr
        with open(log_path, "w") as log:
            self._proc = subprocess.Popen([sys.executable, "-c", _SERVER], cwd=cwd, env=env,
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=log, text=True)
        timer = threading.Timer(start_timeout_s, self._proc.kill)
        timer.start()
        try:
            first = self._proc.stdout.readline()
        finally:
            timer.cancel()
        if not first:
            raise RuntimeError("the agent fork server did not start:\n%s" % self._log())

    def run_many(self, runs: Sequence[Tuple[List[str], str, str]], timeout_s: float,
                 at_once: int, done: Callable[[int], None] = lambda i: None,
                 ) -> List[Tuple[Optional[int], str, float]]:
        """(exit status or None if killed past ``timeout_s``, stderr, seconds) of each run
        (argv, cwd, out prefix) of ``python -m agent <argv>`` in ``cwd``, ``at_once`` at a
        time; a run's stdout and stderr go to <out prefix>.out and .err; ``done(i)`` is called
        as run i ends."""
        results: Dict[int, Tuple[Optional[int], str, float]] = {}
        sent = 0
        while len(results) < len(runs):
            while sent < len(runs) and sent - len(results) < at_once:
                argv, cwd, prefix = runs[sent]
                self._proc.stdin.write(json.dumps(
                    {"id": sent, "argv": argv, "cwd": cwd, "stdout": prefix + ".out",
                     "stderr": prefix + ".err", "timeout_s": timeout_s}) + "\n")
                self._proc.stdin.flush()
                sent += 1
            line = self._proc.stdout.readline()
            if not line:
                raise RuntimeError("the agent fork server died:\n%s" % self._log())
            got = json.loads(line)
            i = got["id"]
            done(i)
            with open(runs[i][2] + ".err", errors="replace") as f:
                results[i] = (got["rc"], f.read(), got["took_s"])
        return [results[i] for i in range(len(runs))]

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
